"""A fake OpenAI-wire and Anthropic-wire upstream that misbehaves on purpose: a real aiohttp app
on loopback for the fault tests. Behaviour is chosen by the upstream model name:

* ``hang-stream``: one SSE chunk, then nothing; records when the gateway closes the
  connection (``closed`` in its record), which is how a test sees the call cancelled;
* ``midstream``: the first SSE chunk, then a dropped connection;
* ``bad-json``: status 200, ``application/json``, a body that is not JSON;
* ``bad-sse``: status 200, ``text/event-stream``, bytes that are no SSE at all, then a close;
* ``limited``: 429 with ``retry-after: 7`` and OpenAI's error body;
* ``flaky-<N>``: the first N requests (per model) answer 503, later ones succeed;
* ``fail-<status>``: always that status;
* anything else: a normal reply naming the model (``answered by <model>``), JSON or SSE.

Every request is recorded as ``{"path", "model", "json", "closed"}``.
"""
from __future__ import annotations

import asyncio
import json
from collections import Counter

from aiohttp import web

RECORDS = web.AppKey("records", list)
COUNTS = web.AppKey("counts", Counter)


def _reply(path: str, model: str) -> dict:
    text = f"answered by {model}"
    if path.endswith("/messages"):
        return {"id": "msg_f", "type": "message", "role": "assistant", "model": model,
                "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
                "stop_sequence": None, "usage": {"input_tokens": 1, "output_tokens": 1}}
    return {"id": "chatcmpl-f", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": text}}]}


def _chunks(path: str, model: str) -> list[bytes]:
    if path.endswith("/messages"):
        events = [{"type": "message_start", "message": {**_reply(path, model), "content": []}},
                  {"type": "content_block_start", "index": 0,
                   "content_block": {"type": "text", "text": ""}},
                  {"type": "content_block_delta", "index": 0,
                   "delta": {"type": "text_delta", "text": f"answered by {model}"}},
                  {"type": "content_block_stop", "index": 0},
                  {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                   "usage": {"output_tokens": 1}},
                  {"type": "message_stop"}]
        return [f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events]
    delta = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": model,
             "choices": [{"index": 0, "delta": {"content": f"answered by {model}"},
                          "finish_reason": None}]}
    return [f"data: {json.dumps(delta)}\n\n".encode(), b"data: [DONE]\n\n"]


def _error(status: int, headers: dict | None = None) -> web.Response:
    return web.json_response({"error": {"message": f"fake failure {status}",
                                        "type": "fake_error", "code": "fake"}},
                             status=status, headers=headers)


async def _hang(request: web.Request, record: dict) -> web.StreamResponse:
    response = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await response.prepare(request)
    await response.write(_chunks(request.path, "hang")[0])
    for _ in range(200):                      # 10 s at most
        if request.transport is None or request.transport.is_closing():
            record["closed"] = True
            break
        await asyncio.sleep(0.05)
    return response


async def handle(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    model = str(body.get("model", ""))
    record = {"path": request.path, "model": model, "json": body, "closed": False}
    request.app[RECORDS].append(record)
    request.app[COUNTS][model] += 1
    if model == "hang-stream":
        return await _hang(request, record)
    if model == "midstream" and body.get("stream"):
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        await response.write(_chunks(request.path, model)[0])
        request.transport.close()
        return response
    if model == "bad-json":
        return web.Response(body=b'{"id": "x", "choices": [', content_type="application/json")
    if model == "limited":
        return _error(429, {"retry-after": "7"})
    if model.startswith("fail-"):
        return _error(int(model.split("-")[1]))
    if model.startswith("flaky-") and request.app[COUNTS][model] <= int(model.split("-")[1]):
        return _error(503)
    if model == "bad-sse":
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"\x00\x01 this is not server-sent events {{{\n")
        request.transport.close()
        return response
    if not body.get("stream"):
        return web.json_response(_reply(request.path, model))
    response = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await response.prepare(request)
    for chunk in _chunks(request.path, model):
        await response.write(chunk)
    await response.write_eof()
    return response


def create_app() -> web.Application:
    app = web.Application()
    app[RECORDS] = []
    app[COUNTS] = Counter()
    app.router.add_post("/v1/chat/completions", handle)
    app.router.add_post("/v1/messages", handle)
    return app
