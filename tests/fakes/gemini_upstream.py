"""A fake Gemini API (Google AI Studio's ``generativelanguage`` wire) on loopback.

``POST /v1beta/models/{model}:generateContent | :streamGenerateContent | :countTokens`` (and
the same under ``/v1``); the
model name picks the behaviour:

* ``status-<code>``: that status with Google's error body;
* ``midstream-fail``: a stream that drops the connection after its first event;
* ``no-key-check`` aside, a request without ``x-goog-api-key: sk-upstream-secret`` is a 400
  ``API_KEY_INVALID``, as Google answers a wrong key;
* anything else answers ``echo: <the last user text>`` (``:streamGenerateContent?alt=sse``:
  the text in two events, ``usageMetadata`` on each, ``\\r\\n\\r\\n`` framing as Google's).

Every request is kept in ``app[RECORDS]`` as ``{"path", "query", "headers", "json"}``.
"""
from __future__ import annotations

import json

from aiohttp import web

RECORDS = web.AppKey("gemini_records", list)
KEY = "sk-upstream-secret"
USAGE = {"promptTokenCount": 21, "candidatesTokenCount": 4, "totalTokenCount": 25,
         "cachedContentTokenCount": 5}


def _error(status: int, message: str, reason: str) -> web.Response:
    return web.json_response({"error": {"code": status, "message": message,
                                        "status": reason}}, status=status)


def _last_text(body: dict) -> str:
    for content in reversed(body.get("contents") or []):
        if content.get("role", "user") == "user":
            texts = [p["text"] for p in content.get("parts") or () if "text" in p]
            if texts:
                return texts[-1]
    return ""


def _reply(text: str, model: str, usage: dict | None = USAGE) -> dict:
    reply = {"candidates": [{"content": {"parts": [{"text": text}], "role": "model"},
                             "finishReason": "STOP", "index": 0}],
             "modelVersion": model, "responseId": "fake-response-1"}
    if usage:
        reply["usageMetadata"] = usage
    return reply


async def models(request: web.Request) -> web.StreamResponse:
    model, _, method = request.match_info["target"].rpartition(":")
    body = await request.json()
    request.app[RECORDS].append({"path": request.path, "query": dict(request.query),
                                 "headers": dict(request.headers), "json": body})
    if model.startswith("status-"):
        status = int(model.split("-")[1])
        return _error(status, f"fake failure {status}", "RESOURCE_EXHAUSTED")
    if request.headers.get("x-goog-api-key") != KEY or "key" in request.query:
        return _error(400, "API key not valid. Please pass a valid API key.", "INVALID_ARGUMENT")
    if method == "countTokens":
        return web.json_response({"totalTokens": 7})
    text = f"echo: {_last_text(body)}"
    if method == "generateContent":
        return web.json_response(_reply(text, model))
    if request.query.get("alt") != "sse":
        return web.json_response([_reply(text, model)])
    response = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await response.prepare(request)
    half = len(text) // 2
    for piece, usage in ((text[:half], None), (text[half:], USAGE)):
        event = _reply(piece, model, usage)
        await response.write(f"data: {json.dumps(event)}\r\n\r\n".encode())
        if model == "midstream-fail":
            request.transport.close()
            return response
    await response.write_eof()
    return response


def create_app() -> web.Application:
    app = web.Application()
    app[RECORDS] = []
    app.router.add_post("/v1beta/models/{target}", models)
    app.router.add_post("/v1/models/{target}", models)
    return app
