"""A fake OpenAI-wire upstream: a real aiohttp app that records what it receives.

Behaviour is chosen by the upstream model name, so concurrent tests never interfere:

* ``ok`` (or anything else): a chat completion whose reply is ``echo: <last user text>``;
* ``status-<N>``: answers status N with an OpenAI error body;
* ``slow-<ms>``: waits that long before answering;
* ``midstream-fail``: streams two chunks, then drops the connection;
* ``stall``: streams one chunk, then stops sending (for read timeouts);
* ``echo-system``: the reply also echoes every system message received, one per line (as a
  model repeating its prompt would, injected memory block included);
* ``extract-fixed``: a fixed memory extraction (``memory/distill.py``'s JSON): the first
  memory offered whose text mentions "codename" is updated, and a fact about tabs is added;
* ``stream_options.include_usage``: a stream ends with OpenAI's usage-only event;
* ``garbage-chunk``: a stream with malformed chunks mid-way: ``{"choices": [null]}`` and a
  JSON array nested too deep for any parser.

Streamed replies are recorded too: ``sent`` is the exact bytes of the reply body.

Every response sets a ``sess`` cookie unique to the first request that had none; the cookie a
request presents is recorded, which is how tests see whose session a call used.
"""
from __future__ import annotations

import asyncio
import json
import time
import uuid

from aiohttp import web

RECORDS = web.AppKey("records", list)


def last_user_text(messages: list) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                return " ".join(p["text"] for p in content
                                if isinstance(p, dict) and isinstance(p.get("text"), str))
            return str(content)
    return ""


def completion(model: str, text: str) -> dict:
    return {"id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()),
            "model": model, "choices": [{"index": 0, "finish_reason": "stop",
                                         "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}


def chunk(model: str, delta: dict, finish: str | None = None) -> bytes:
    body = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0,
            "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return f"data: {json.dumps(body)}\n\n".encode()


GARBAGE = (b'data: {"choices": [null]}\n\n',
           b"data: " + b"[" * 100_000 + b"]" * 100_000 + b"\n\n")


def without_usage_event(sent: bytes) -> bytes:
    """``sent`` as a client that did not ask for usage receives it through memproxyd, which
    asks for the usage event on its behalf and does not relay it."""
    events = sent.split(b"\n\n")
    return b"\n\n".join(e for e in events if not (e.startswith(b"data: {")
                                                 and b'"choices": []' in e))


def _record(request: web.Request, body: dict) -> tuple[str, dict]:
    cookie = request.cookies.get("sess")
    record = {"path": request.path, "headers": dict(request.headers), "json": body,
              "cookie": cookie, "sent": b""}
    request.app[RECORDS].append(record)
    return cookie or uuid.uuid4().hex, record


def extraction(messages: list) -> str:
    offered = json.loads(last_user_text(messages)).get("existing", [])
    facts = [{"text": "The team indents with tabs.", "action": "add"}]
    target = next((m["id"] for m in offered if "codename" in m["text"]), None)
    if target:
        facts.append({"text": "The deploy target codename is BLUEFIN.", "action": "update",
                      "id": target})
    return json.dumps({"facts": facts})


def reply_text(model: str, messages: list) -> str:
    if model == "extract-fixed":
        return extraction(messages)
    text = "echo: " + last_user_text(messages)
    if model == "echo-system":
        text += "".join(f"\n{m['content']}" for m in messages
                        if m.get("role") == "system" and isinstance(m.get("content"), str))
    return text


async def chat(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    cookie, record = _record(request, body)
    model = body.get("model", "")
    if model.startswith("status-"):
        status = int(model.split("-")[1])
        return web.json_response({"error": {"message": f"fake failure {status}",
                                            "type": "fake_error", "code": "fake"}}, status=status)
    if model.startswith("slow-"):
        await asyncio.sleep(int(model.split("-")[1]) / 1000)
    text = reply_text(model, body.get("messages", []))
    if not body.get("stream"):
        response = web.json_response(completion(model, text))
        response.set_cookie("sess", cookie)
        return response
    response = web.StreamResponse(headers={"content-type": "text/event-stream"})
    response.set_cookie("sess", cookie)
    await response.prepare(request)

    async def send(data: bytes) -> None:
        record["sent"] += data
        await response.write(data)

    await send(chunk(model, {"role": "assistant", "content": ""}))
    for word in text.split(" "):
        await send(chunk(model, {"content": word + " "}))
        if model == "midstream-fail":
            request.transport.close()
            return response
        if model == "stall":
            await asyncio.sleep(5)
        if model == "garbage-chunk":
            for garbage in GARBAGE:
                await send(garbage)
    await send(chunk(model, {}, "stop"))
    if (body.get("stream_options") or {}).get("include_usage"):
        # OpenAI's final usage event: no choices, the whole call's usage
        usage = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0,
                 "model": model, "choices": [], "usage": completion(model, "")["usage"]}
        await send(f"data: {json.dumps(usage)}\n\n".encode())
    await send(b"data: [DONE]\n\n")
    return response


async def embeddings(request: web.Request) -> web.Response:
    body = await request.json()
    _record(request, body)
    inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
    return web.json_response({"object": "list", "model": body.get("model"), "data": [
        {"object": "embedding", "index": i, "embedding": [float(len(str(t))), 1.0, 0.5]}
        for i, t in enumerate(inputs)], "usage": {"prompt_tokens": 1, "total_tokens": 1}})


def create_app() -> web.Application:
    app = web.Application()
    app[RECORDS] = []
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/embeddings", embeddings)
    return app
