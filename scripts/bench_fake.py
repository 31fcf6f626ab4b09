"""A fast fake upstream for the benchmarks: OpenAI and Anthropic wire, JSON and SSE.

    python scripts/bench_fake.py PORT        # serves until killed

Replies are built once at import; a request costs one JSON parse (to read ``stream``).
"""
from __future__ import annotations

import json
import sys

from aiohttp import web

WORDS = ("The ", "answer ", "is ", "42.")
OPENAI_REPLY = {"id": "x", "object": "chat.completion", "created": 0, "model": "m",
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": "".join(WORDS)}}],
                "usage": {"prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14}}
ANTHROPIC_REPLY = {"id": "msg_bench", "type": "message", "role": "assistant", "model": "m",
                   "content": [{"type": "text", "text": "".join(WORDS)}],
                   "stop_reason": "end_turn", "stop_sequence": None,
                   "usage": {"input_tokens": 9, "output_tokens": 5}}


def openai_events() -> list[bytes]:
    chunks = [{"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "m",
               "choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}]}
              for w in WORDS]
    chunks.append({"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "m",
                   "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    return [f"data: {json.dumps(c)}\n\n".encode() for c in chunks] + [b"data: [DONE]\n\n"]


def anthropic_events() -> list[bytes]:
    events = [
        {"type": "message_start", "message": {**ANTHROPIC_REPLY, "content": [],
                                              "stop_reason": None}},
        {"type": "content_block_start", "index": 0,
         "content_block": {"type": "text", "text": ""}},
        *({"type": "content_block_delta", "index": 0,
           "delta": {"type": "text_delta", "text": w}} for w in WORDS),
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
         "usage": {"output_tokens": 5}},
        {"type": "message_stop"}]
    return [f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events]


def handler(reply: dict, events: list[bytes]):
    payload = json.dumps(reply).encode()
    stream_body = b"".join(events)

    async def handle(request: web.Request) -> web.StreamResponse:
        if not (await request.json()).get("stream"):
            return web.Response(body=payload, content_type="application/json")
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        await response.write(stream_body)
        await response.write_eof()
        return response
    return handle


def create_app() -> web.Application:
    app = web.Application()
    for path in ("/v1/chat/completions", "/chat/completions"):
        app.router.add_post(path, handler(OPENAI_REPLY, openai_events()))
    app.router.add_post("/v1/messages", handler(ANTHROPIC_REPLY, anthropic_events()))
    app.router.add_get("/health", lambda request: web.json_response({"status": "ok"}))
    return app


def main() -> int:
    web.run_app(create_app(), host="127.0.0.1", port=int(sys.argv[1]), print=None,
                access_log=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
