"""A fake upstream that bills prompt caching as the providers do (``prompt_cache.py``): a real
aiohttp app on loopback serving ``/v1/messages``, ``/v1/chat/completions`` and
``/v1/responses``, JSON and SSE, in each provider's shapes.

    server = ThreadedServer(caching_upstream.create_app()).start()
    ... # requests; then
    server.app[caching_upstream.RECORDS]   # [{"path", "json", "usage", "reply"}], in order
    server.call(caching_upstream.reset, server.app)   # a cold cache, no records

Usage: Anthropic ``input_tokens`` (after the last breakpoint), ``cache_creation_input_tokens``,
``cache_read_input_tokens``, ``output_tokens``; chat ``prompt_tokens`` (cached included) with
``prompt_tokens_details.cached_tokens``; Responses ``input_tokens`` with
``input_tokens_details.cached_tokens``. Token counts are the model's estimates.

Replies are short and deterministic: ``Noted: <the end of the last user text>``, from the
request alone, so a replayed session gets the same replies on every path.
"""
from __future__ import annotations

import json

from aiohttp import web

from tests.fakes import anthropic_upstream, openai_upstream, responses_upstream
from tests.fakes.prompt_cache import (AnthropicCache, CacheRequestError, OpenAICache,
                                      chat_prompt, estimate_tokens, responses_prompt)

RECORDS = web.AppKey("records", list)
ANTHROPIC = web.AppKey("anthropic_cache", AnthropicCache)
OPENAI = web.AppKey("openai_cache", OpenAICache)
REPLY_CHARS = 48


def reply_text(last_user: str) -> str:
    return "Noted: " + " ".join(last_user.split())[-REPLY_CHARS:]


def _record(request: web.Request, body: dict, usage: dict, text: str) -> dict:
    record = {"path": request.path, "json": body, "usage": usage, "reply": text}
    request.app[RECORDS].append(record)
    return record


async def messages(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    try:
        usage = request.app[ANTHROPIC].bill(body)
    except CacheRequestError as exc:
        return web.json_response({"type": "error", "error": {
            "type": "invalid_request_error", "message": str(exc)}}, status=400)
    text = reply_text(anthropic_upstream.last_user_text(body.get("messages", [])))
    usage["output_tokens"] = estimate_tokens(text)
    _record(request, body, usage, text)
    reply = {"id": f"msg_cache{len(request.app[RECORDS])}", "type": "message",
             "role": "assistant", "model": body.get("model", ""),
             "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
             "stop_sequence": None, "usage": usage}
    if not body.get("stream"):
        return web.json_response(reply)
    events = anthropic_upstream.stream_events(reply)
    # message_start carries the input side; message_delta the final output_tokens
    events[0]["message"]["usage"] = {**usage, "output_tokens": 1}
    return await _stream(request, [anthropic_upstream.sse(e) for e in events])


async def chat(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    model = str(body.get("model", ""))
    cached, prompt = request.app[OPENAI].bill(chat_prompt(body), model,
                                              body.get("prompt_cache_key"))
    text = reply_text(openai_upstream.last_user_text(body.get("messages", [])))
    completion = estimate_tokens(text)
    usage = {"prompt_tokens": prompt, "completion_tokens": completion,
             "total_tokens": prompt + completion,
             "prompt_tokens_details": {"cached_tokens": cached}}
    _record(request, body, usage, text)
    if not body.get("stream"):
        reply = openai_upstream.completion(model, text)
        return web.json_response({**reply, "usage": usage})
    chunks = [openai_upstream.chunk(model, {"role": "assistant", "content": ""}),
              openai_upstream.chunk(model, {"content": text}),
              openai_upstream.chunk(model, {}, "stop")]
    if (body.get("stream_options") or {}).get("include_usage"):
        last = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0,
                "model": model, "choices": [], "usage": usage}
        chunks.append(f"data: {json.dumps(last)}\n\n".encode())
    return await _stream(request, chunks + [b"data: [DONE]\n\n"])


async def responses(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    model = str(body.get("model", ""))
    cached, prompt = request.app[OPENAI].bill(responses_prompt(body), model,
                                              body.get("prompt_cache_key"))
    items = responses_upstream.input_items(body.get("input"))
    text = reply_text(responses_upstream.last_user_text(items))
    output = estimate_tokens(text)
    usage = {"input_tokens": prompt, "output_tokens": output, "total_tokens": prompt + output,
             "input_tokens_details": {"cached_tokens": cached},
             "output_tokens_details": {"reasoning_tokens": 0}}
    _record(request, body, usage, text)
    number = len(request.app[RECORDS])
    out = [{"id": f"msg_cache{number}", "type": "message", "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}]}]
    response = {**responses_upstream.response_object(model, body, out, "completed"),
                "id": f"resp_cache{number}", "usage": usage}
    if not body.get("stream"):
        return web.json_response(response)
    frames = []
    for seq, event in enumerate(responses_upstream.events(response)):
        data = json.dumps({**event, "sequence_number": seq})
        frames.append(f"event: {event['type']}\ndata: {data}\n\n".encode())
    return await _stream(request, frames)


async def _stream(request: web.Request, frames: list[bytes]) -> web.StreamResponse:
    response = web.StreamResponse(headers={"content-type": "text/event-stream",
                                           "cache-control": "no-cache"})
    await response.prepare(request)
    for frame in frames:
        await response.write(frame)
    await response.write_eof()
    return response


def reset(app: web.Application) -> None:
    """A cold cache and no records (between a bench's paths). Call on the server's loop."""
    app[RECORDS].clear()
    app[ANTHROPIC].entries.clear()
    app[OPENAI].prompts.clear()


def create_app(clock=None) -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[RECORDS] = []
    app[ANTHROPIC] = AnthropicCache(clock) if clock else AnthropicCache()
    app[OPENAI] = OpenAICache(clock) if clock else OpenAICache()
    app.router.add_post("/v1/messages", messages)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/responses", responses)
    return app
