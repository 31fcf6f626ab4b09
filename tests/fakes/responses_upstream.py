"""A fake OpenAI upstream for the Responses API and legacy completions: a real aiohttp app that
records what it receives and the exact bytes it sends back (``sent``).

``POST /v1/responses`` answers ``echo: <last user input text>``; behaviour by model name:

* ``ok`` (or anything else): one message item; streamed as OpenAI does (response.created,
  response.in_progress, output_item.added, content_part.added, output_text.delta per word,
  output_text.done, content_part.done, output_item.done, response.completed), every event
  with its ``sequence_number``, plus one event type no SDK knows (``response.fake_extension``)
  and a field no SDK knows (``fake_vendor_field``);
* ``tool-call``: the message and then a ``function_call`` item (``lookup``);
* ``echo-instructions``: the reply also repeats the ``instructions`` it received;
* ``status-<N>``: status N with an OpenAI error body;
* ``midstream-fail``: streams a few events, then drops the connection.

Responses are kept, so ``GET/DELETE /v1/responses/{id}``, ``.../cancel`` and
``.../input_items`` answer as OpenAI does (404 for an unknown id); ``GET`` with
``?stream=true`` replays the stored response's events.

``POST /v1/responses/compact`` answers one ``compaction`` item (Codex's remote compaction),
``POST /v1/responses/input_tokens`` a count (a quarter of the input's JSON length).

``POST /v1/completions`` answers ``echo: <prompt>`` as JSON or SSE (``data: [DONE]`` last).

Every answer sets a ``sess`` cookie (the one presented, else a new one); each record keeps the
cookie its request carried, which is how tests see whose session a call used.
"""
from __future__ import annotations

import json
import time
import uuid

from aiohttp import web

RECORDS = web.AppKey("records", list)
STORED = web.AppKey("stored", dict)   # response id → (response, input items)


def _record(request: web.Request, body: dict | None) -> dict:
    record = {"method": request.method, "path": request.path, "query": request.query_string,
              "headers": dict(request.headers), "json": body, "sent": b"",
              "cookie": request.cookies.get("sess")}
    request.app[RECORDS].append(record)
    return record


def input_items(value) -> list[dict]:
    if isinstance(value, str):
        return [{"type": "message", "role": "user",
                 "content": [{"type": "input_text", "text": value}]}]
    return [item for item in value or () if isinstance(item, dict)]


def last_user_text(items: list[dict]) -> str:
    for item in reversed(items):
        if item.get("role") == "user":
            content = item.get("content")
            if isinstance(content, str):
                return content
            return " ".join(p["text"] for p in content or ()
                            if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def output(model: str, body: dict, items: list[dict]) -> list[dict]:
    text = "echo: " + last_user_text(items)
    if model == "echo-instructions" and isinstance(body.get("instructions"), str):
        text += "\n" + body["instructions"]
    out = [{"id": f"msg_{uuid.uuid4().hex[:12]}", "type": "message", "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}]}]
    if model == "tool-call":
        out.append({"id": f"fc_{uuid.uuid4().hex[:12]}", "type": "function_call",
                    "status": "completed", "call_id": "call_1", "name": "lookup",
                    "arguments": '{"query": "config"}'})
    return out


def response_object(model: str, body: dict, out: list[dict], status: str) -> dict:
    return {"id": f"resp_{uuid.uuid4().hex}", "object": "response",
            "created_at": int(time.time()), "status": status, "model": model,
            "instructions": body.get("instructions"), "output": out,
            "previous_response_id": body.get("previous_response_id"),
            "tools": body.get("tools") or [], "tool_choice": body.get("tool_choice", "auto"),
            "parallel_tool_calls": True, "store": body.get("store", True),
            "fake_vendor_field": {"kept": True},
            "usage": {"input_tokens": 3, "output_tokens": 2, "total_tokens": 5,
                      "input_tokens_details": {"cached_tokens": 0},
                      "output_tokens_details": {"reasoning_tokens": 0}}}


async def create_response(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    record = _record(request, body)
    model = body.get("model", "")
    if model.startswith("status-"):
        status = int(model.split("-")[1])
        return web.json_response({"error": {"message": f"fake failure {status}",
                                            "type": "fake_error", "param": None,
                                            "code": "fake"}}, status=status)
    items = input_items(body.get("input"))
    response = response_object(model, body, output(model, body, items), "completed")
    request.app[STORED][response["id"]] = (response, items)
    if not body.get("stream"):
        payload = json.dumps(response).encode()
        record["sent"] = payload
        return web.Response(body=payload, content_type="application/json")
    fail_after = 4 if model == "midstream-fail" else None
    return await send_events(request, record, response, fail_after)


async def send_events(request: web.Request, record: dict, response: dict,
                      fail_after: int | None = None) -> web.StreamResponse:
    """``response`` as numbered SSE events; the connection dropped after event ``fail_after``."""
    stream = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await stream.prepare(request)
    for number, event in enumerate(events(response)):
        data = json.dumps({**event, "sequence_number": number})
        chunk = f"event: {event['type']}\ndata: {data}\n\n".encode()
        record["sent"] += chunk
        await stream.write(chunk)
        if number == fail_after:
            request.transport.close()
            break
    return stream


def events(response: dict):
    """OpenAI's event sequence for a finished ``response``."""
    yield {"type": "response.created", "response": {**response, "status": "in_progress",
                                                    "output": [], "usage": None}}
    yield {"type": "response.in_progress", "response": {**response, "status": "in_progress",
                                                        "output": [], "usage": None}}
    for index, item in enumerate(response["output"]):
        yield from item_events(index, item)
    yield {"type": "response.fake_extension", "detail": {"unknown": ["to", "every", "SDK"]}}
    yield {"type": "response.completed", "response": response}


def item_events(index: int, item: dict):
    if item["type"] == "function_call":
        yield {"type": "response.output_item.added", "output_index": index,
               "item": {**item, "status": "in_progress", "arguments": ""}}
        yield {"type": "response.function_call_arguments.delta", "item_id": item["id"],
               "output_index": index, "delta": item["arguments"]}
        yield {"type": "response.function_call_arguments.done", "item_id": item["id"],
               "output_index": index, "arguments": item["arguments"]}
        yield {"type": "response.output_item.done", "output_index": index, "item": item}
        return
    text = item["content"][0]["text"]
    where = {"item_id": item["id"], "output_index": index, "content_index": 0}
    yield {"type": "response.output_item.added", "output_index": index,
           "item": {**item, "status": "in_progress", "content": []}}
    yield {"type": "response.content_part.added", **where,
           "part": {"type": "output_text", "text": "", "annotations": []}}
    words = text.split(" ")
    for i, word in enumerate(words):
        yield {"type": "response.output_text.delta", **where, "logprobs": [],
               "delta": word if i == len(words) - 1 else word + " "}
    yield {"type": "response.output_text.done", **where, "text": text, "logprobs": []}
    yield {"type": "response.content_part.done", **where, "part": item["content"][0]}
    yield {"type": "response.output_item.done", "output_index": index, "item": item}


def _stored(request: web.Request):
    found = request.app[STORED].get(request.match_info["id"])
    if found is None:
        raise web.HTTPNotFound(text=json.dumps({"error": {
            "message": "No response found", "type": "invalid_request_error",
            "param": None, "code": None}}), content_type="application/json")
    return found


def _json(request: web.Request, record: dict, value: dict) -> web.Response:
    payload = json.dumps(value).encode()
    record["sent"] = payload
    return web.Response(body=payload, content_type="application/json")


async def get_response(request: web.Request) -> web.StreamResponse:
    """The stored response; with ``?stream=true``, its events replayed (as OpenAI does for a
    background response)."""
    record = _record(request, None)
    response = _stored(request)[0]
    if request.query.get("stream") != "true":
        return _json(request, record, response)
    return await send_events(request, record, response)


async def delete_response(request: web.Request) -> web.Response:
    record = _record(request, None)
    response, _ = _stored(request)
    del request.app[STORED][response["id"]]
    return _json(request, record, {"id": response["id"], "object": "response",
                                   "deleted": True})


async def cancel_response(request: web.Request) -> web.Response:
    record = _record(request, None)
    response, _ = _stored(request)
    return _json(request, record, {**response, "status": "cancelled"})


async def list_input_items(request: web.Request) -> web.Response:
    record = _record(request, None)
    _, items = _stored(request)
    data = [{"id": f"msg_in{i}", **item} for i, item in enumerate(items)]
    return _json(request, record, {"object": "list", "data": data, "has_more": False,
                                   "first_id": data[0]["id"] if data else None,
                                   "last_id": data[-1]["id"] if data else None})


async def compact(request: web.Request) -> web.Response:
    """Codex's remote compaction: the history in, one opaque compaction item out."""
    body = await request.json()
    record = _record(request, body)
    items = input_items(body.get("input"))
    return _json(request, record, {"output": [
        {"type": "compaction", "encrypted_content": f"compacted {len(items)} items"}]})


async def input_tokens(request: web.Request) -> web.Response:
    body = await request.json()
    record = _record(request, body)
    return _json(request, record, {"object": "response.input_tokens",
                                   "input_tokens": len(json.dumps(body.get("input"))) // 4})


async def completions(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    record = _record(request, body)
    prompt = body.get("prompt")
    text = "echo: " + (prompt if isinstance(prompt, str) else json.dumps(prompt))
    model = body.get("model", "")
    base = {"id": "cmpl-fake", "object": "text_completion", "created": int(time.time()),
            "model": model}
    if not body.get("stream"):
        return _json(request, record, {**base, "choices": [
            {"text": text, "index": 0, "logprobs": None, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}})
    stream = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await stream.prepare(request)
    pieces = [(word + " ", None) for word in text.split(" ")] + [("", "stop")]
    for piece, finish in pieces:
        chunk = {**base, "choices": [{"text": piece, "index": 0, "logprobs": None,
                                      "finish_reason": finish}]}
        data = f"data: {json.dumps(chunk)}\n\n".encode()
        record["sent"] += data
        await stream.write(data)
    record["sent"] += b"data: [DONE]\n\n"
    await stream.write(b"data: [DONE]\n\n")
    return stream


async def _session_cookie(request: web.Request, response: web.StreamResponse) -> None:
    """Every answer, JSON or stream, keeps the ``sess`` cookie the caller presented, or
    starts a new one: which cookie a request carries shows whose session made it."""
    # a header, not set_cookie(): aiohttp has already rendered its cookies at this point
    cookie = request.cookies.get("sess") or uuid.uuid4().hex
    response.headers.add("Set-Cookie", f"sess={cookie}; Path=/")


def create_app() -> web.Application:
    app = web.Application()
    app.on_response_prepare.append(_session_cookie)
    app[RECORDS] = []
    app[STORED] = {}
    app.router.add_post("/v1/responses", create_response)
    app.router.add_post("/v1/responses/compact", compact)
    app.router.add_post("/v1/responses/input_tokens", input_tokens)
    app.router.add_get("/v1/responses/{id}", get_response)
    app.router.add_delete("/v1/responses/{id}", delete_response)
    app.router.add_post("/v1/responses/{id}/cancel", cancel_response)
    app.router.add_get("/v1/responses/{id}/input_items", list_input_items)
    app.router.add_post("/v1/completions", completions)
    return app
