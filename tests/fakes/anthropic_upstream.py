"""A fake Anthropic Messages upstream: a real aiohttp app that records what it receives and
what it sends.

Behaviour is chosen by words in the upstream model name, so concurrent tests never interfere:

* anything: a message whose text is ``echo: <last user text>`` (text blocks joined);
* ``think``: a thinking block (thinking_delta + signature_delta), the text block and a
  ``tool_use`` block whose input streams as input_json_delta pieces;
* ``status-<N>``: status N with Anthropic's error body (429 adds ``retry-after``; 529 is
  ``overloaded_error``);
* ``slow-<ms>``: waits that long before answering;
* ``midstream``: streams message_start and one delta, then drops the connection.

``/v1/messages/count_tokens`` answers ``{"input_tokens": <characters of messages / 4>}``.
Every request is recorded as ``{"path", "query", "headers", "json", "sent"}``; ``sent`` is the
exact bytes of the reply body, so tests can compare them with what their client received.
Replies are deterministic (no clocks, no random ids) for the same request.
"""
from __future__ import annotations

import asyncio
import hashlib
import json

from aiohttp import web

RECORDS = web.AppKey("records", list)
SIGNATURE = "c2lnbmF0dXJlLWZha2U="
_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error",
                403: "permission_error", 404: "not_found_error", 413: "request_too_large",
                429: "rate_limit_error", 500: "api_error", 529: "overloaded_error"}


def last_user_text(messages: list) -> str:
    for message in reversed(messages):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        texts = [b.get("text", "") for b in content if b.get("type") == "text"]
        if texts:
            return " ".join(texts)
    return ""


def blocks_for(model: str, text: str) -> list[dict]:
    blocks: list[dict] = []
    if "think" in model:
        blocks.append({"type": "thinking", "thinking": "Let me think. The user wants an echo.",
                       "signature": SIGNATURE})
    blocks.append({"type": "text", "text": text})
    if "think" in model:
        blocks.append({"type": "tool_use", "id": "toolu_fake01", "name": "lookup",
                       "input": {"query": text, "limit": 3, "deep": {"ok": True}}})
    return blocks


def message(model: str, body: dict) -> dict:
    text = "echo: " + last_user_text(body.get("messages", []))
    blocks = blocks_for(model, text)
    digest = hashlib.sha1(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]
    return {"id": f"msg_fake{digest}", "type": "message", "role": "assistant", "model": model,
            "content": blocks,
            "stop_reason": "tool_use" if blocks[-1]["type"] == "tool_use" else "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": 12, "output_tokens": 7,
                      "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}


def sse(event: dict) -> bytes:
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()


def _pieces(text: str, size: int) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)] or [""]


def _block_events(index: int, block: dict) -> list[dict]:
    kind = block["type"]
    if kind == "thinking":
        start = {"type": "thinking", "thinking": "", "signature": ""}
        deltas = [{"type": "thinking_delta", "thinking": p} for p in _pieces(block["thinking"], 12)]
        deltas.append({"type": "signature_delta", "signature": block["signature"]})
    elif kind == "text":
        start = {"type": "text", "text": ""}
        deltas = [{"type": "text_delta", "text": p} for p in _pieces(block["text"], 8)]
    else:
        start = {**block, "input": {}}
        deltas = [{"type": "input_json_delta", "partial_json": p}
                  for p in ["", *_pieces(json.dumps(block["input"]), 7)]]
    return ([{"type": "content_block_start", "index": index, "content_block": start}]
            + [{"type": "content_block_delta", "index": index, "delta": d} for d in deltas]
            + [{"type": "content_block_stop", "index": index}])


def stream_events(reply: dict) -> list[dict]:
    """The full SSE sequence for a message, as Anthropic sends it."""
    start = {**reply, "content": [], "stop_reason": None,
             "usage": {**reply["usage"], "output_tokens": 1}}
    events = [{"type": "message_start", "message": start}, {"type": "ping"}]
    for index, block in enumerate(reply["content"]):
        events += _block_events(index, block)
    events.append({"type": "message_delta",
                   "delta": {"stop_reason": reply["stop_reason"], "stop_sequence": None},
                   "usage": {"output_tokens": reply["usage"]["output_tokens"]}})
    events.append({"type": "message_stop"})
    return events


def _record(request: web.Request, body: object) -> dict:
    record = {"path": request.path, "query": request.query_string,
              "headers": dict(request.headers), "json": body, "sent": b""}
    request.app[RECORDS].append(record)
    return record


def error_reply(status: int) -> web.Response:
    body = {"type": "error", "error": {"type": _ERROR_TYPES.get(status, "api_error"),
                                       "message": f"fake failure {status}"}}
    headers = {"retry-after": "7", "request-id": "req_fake"} if status == 429 else {}
    return web.json_response(body, status=status, headers=headers)


async def messages(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    record = _record(request, body)
    model = str(body.get("model", ""))
    if "status-" in model:
        response = error_reply(int(model.split("status-")[1][:3]))
        record["sent"] = response.body
        return response
    if "slow-" in model:
        await asyncio.sleep(int(model.split("slow-")[1].split("-")[0]) / 1000)
    reply = message(model, body)
    if not body.get("stream"):
        response = web.json_response(reply, headers={"request-id": "req_fake"})
        record["sent"] = response.body
        return response
    response = web.StreamResponse(headers={"content-type": "text/event-stream",
                                           "cache-control": "no-cache", "request-id": "req_fake"})
    await response.prepare(request)
    events = stream_events(reply)
    if "midstream" in model:
        events = events[:4]
    for event in events:
        data = sse(event)
        record["sent"] += data
        await response.write(data)
    if "midstream" in model:
        request.transport.close()
        return response
    await response.write_eof()
    return response


async def count_tokens(request: web.Request) -> web.Response:
    body = await request.json()
    record = _record(request, body)
    response = web.json_response({"input_tokens": len(json.dumps(body.get("messages"))) // 4})
    record["sent"] = response.body
    return response


def create_app() -> web.Application:
    app = web.Application()
    app[RECORDS] = []
    app.router.add_post("/v1/messages", messages)
    app.router.add_post("/v1/messages/count_tokens", count_tokens)
    return app
