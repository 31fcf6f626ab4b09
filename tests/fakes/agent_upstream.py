"""A fake model for real agent CLIs (Claude Code on ``/v1/messages``, Codex CLI on
``/v1/responses``, Gemini CLI on ``/v1beta/models/{model}:...``): a real aiohttp app on loopback that records every request and answers
like a tiny, deterministic model, enough to drive a CLI through a whole turn.

* The human asks to "read the notes": the reply is a tool call (Claude Code's ``Read`` of
  the working directory's ``CLAUDE.md``, Codex's ``exec_command`` with ``cat AGENTS.md``); the next call, whose newest input is the tool's result, gets
  the final text answer. That is an agent loop: several calls for one human turn.
* Otherwise the reply is ``Understood: <the human's last line>``; when the request carries a
  memproxy memory block, the reply quotes its first memory line instead, so a test can see
  that the model was given what an earlier session said.
* Small ``max_tokens`` (quota probes, titles) get a short fixed JSON text.

Records are ``{"path", "json", "headers"}``, kept in ``app[RECORDS]`` and, when ``record_to``
is given, appended to that JSONL file (how ``tests/fixtures/agents/`` was captured).
"""
from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

from aiohttp import web

RECORDS = web.AppKey("records", list)
RECORD_TO = web.AppKey("record_to", object)
WORKDIR = re.compile(r"Primary working directory: (\S+)")
MEMORY_LINE = re.compile(r"<memproxy-memory>.*?\n- \[[^\]]*\] (.*?)\n", re.DOTALL)
_ids = itertools.count(1)


def _record(request: web.Request, body: dict) -> None:
    record = {"path": request.path, "json": body,
              "headers": {k.lower(): v for k, v in request.headers.items()
                          if k.lower() not in ("authorization", "x-api-key")}}
    request.app[RECORDS].append(record)
    target = request.app[RECORD_TO]
    if target is not None:
        with Path(target).open("a") as out:
            out.write(json.dumps(record) + "\n")


def _texts(content) -> list[str]:
    if isinstance(content, str):
        return [content]
    return [b.get("text", "") for b in content or () if isinstance(b, dict)
            and b.get("type") in ("text", "input_text")]


def _strings(value) -> list[str]:
    """Every string in a request, in order: what a model reads."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def answer(last_human: str, body: dict, small: bool) -> str:
    """The reply text for a turn that needs no tool: the newest memory block's first line
    where the request carries one (wherever memproxyd placed it), else an echo."""
    if small:
        return '{"title": "Fake title", "isNewTopic": false}'
    remembered = [m.group(1) for text in _strings(body) for m in MEMORY_LINE.finditer(text)]
    if remembered:
        return f"From memory: {remembered[-1]}"
    lines = [line for line in last_human.strip().splitlines() if line.strip()]
    return f"Understood: {lines[-1] if lines else ''}"


# -- Anthropic Messages (Claude Code) ------------------------------------------------------

def _anthropic_reply(body: dict) -> list[dict]:
    # the newest turn; system-role messages (Claude Code's default model) are instructions
    last = next((m for m in reversed(body.get("messages") or []) if m.get("role") != "system"),
                {})
    content = last.get("content")
    if isinstance(content, list) and any(isinstance(b, dict) and b.get("type") == "tool_result"
                                         for b in content):
        return [{"type": "text", "text": "The notes say to use tabs. Done."}]
    human = "\n".join(_texts(content))
    # the environment: in `system` (Claude Code 2.1.197), in a system-role message or a
    # <system-reminder> part of the human's message (2.1.332)
    cwd = WORKDIR.search("\n".join(_strings([body.get("system"), body.get("messages")])))
    if "read the notes" in human.lower() and cwd:
        return [{"type": "text", "text": "Let me look."},
                {"type": "tool_use", "id": f"toolu_{next(_ids):04d}", "name": "Read",
                 "input": {"file_path": f"{cwd.group(1)}/CLAUDE.md"}}]
    small = isinstance(body.get("max_tokens"), int) and body["max_tokens"] <= 64
    return [{"type": "text", "text": answer(human.split("</system-reminder>")[-1], body, small)}]


def _sse(event: dict) -> bytes:
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()


def _anthropic_events(message: dict) -> list[dict]:
    events = [{"type": "message_start",
               "message": {**message, "content": [], "stop_reason": None}}]
    for index, block in enumerate(message["content"]):
        if block["type"] == "text":
            events += [{"type": "content_block_start", "index": index,
                        "content_block": {"type": "text", "text": ""}},
                       {"type": "content_block_delta", "index": index,
                        "delta": {"type": "text_delta", "text": block["text"]}}]
        else:
            events += [{"type": "content_block_start", "index": index,
                        "content_block": {**block, "input": {}}},
                       {"type": "content_block_delta", "index": index,
                        "delta": {"type": "input_json_delta",
                                  "partial_json": json.dumps(block["input"])}}]
        events.append({"type": "content_block_stop", "index": index})
    events += [{"type": "message_delta", "delta": {"stop_reason": message["stop_reason"],
                                                   "stop_sequence": None},
                "usage": {"output_tokens": 9}},
               {"type": "message_stop"}]
    return events


async def messages(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    _record(request, body)
    blocks = _anthropic_reply(body)
    message = {"id": f"msg_fake{next(_ids):04d}", "type": "message", "role": "assistant",
               "model": body.get("model", ""), "content": blocks,
               "stop_reason": "tool_use" if blocks[-1]["type"] == "tool_use" else "end_turn",
               "stop_sequence": None,
               "usage": {"input_tokens": 100, "output_tokens": 9,
                         "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}
    if not body.get("stream"):
        return web.json_response(message)
    response = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await response.prepare(request)
    for event in _anthropic_events(message):
        await response.write(_sse(event))
    await response.write_eof()
    return response


async def count_tokens(request: web.Request) -> web.Response:
    body = await request.json()
    return web.json_response({"input_tokens": len(json.dumps(body)) // 4})


# -- OpenAI Responses (Codex CLI) ----------------------------------------------------------

def _responses_items(body: dict) -> list[dict]:
    items = body.get("input")
    items = [{"type": "message", "role": "user", "content": items}] if isinstance(
        items, str) else list(items or [])
    if items and items[-1].get("type") == "function_call_output":
        return [_message_item("The notes say to use tabs. Done.")]
    human = ""
    for item in reversed(items):
        if item.get("type", "message") == "message" and item.get("role") == "user":
            human = "\n".join(_texts(item.get("content")))
            break
    names = {t.get("name") for t in body.get("tools") or () if isinstance(t, dict)}
    if "read the notes" in human.lower() and "exec_command" in names:
        return [{"type": "function_call", "id": f"fc_{next(_ids):04d}",
                 "call_id": f"call_{next(_ids):04d}", "name": "exec_command",
                 "status": "completed", "arguments": json.dumps({"cmd": "cat AGENTS.md"})}]
    return [_message_item(answer(human, body, False))]


def _message_item(text: str) -> dict:
    return {"type": "message", "id": f"msg_{next(_ids):04d}", "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": text, "annotations": []}]}


async def responses(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    _record(request, body)
    output = _responses_items(body)
    response_obj = {"id": f"resp_{next(_ids):04d}", "object": "response", "created_at": 0,
                    "status": "completed", "model": body.get("model", ""), "output": output,
                    "usage": {"input_tokens": 100, "output_tokens": 9, "total_tokens": 109,
                              "input_tokens_details": {"cached_tokens": 0},
                              "output_tokens_details": {"reasoning_tokens": 0}}}
    if not body.get("stream"):
        return web.json_response(response_obj)
    response = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await response.prepare(request)
    seq = itertools.count()
    created = {**response_obj, "status": "in_progress", "output": []}
    events = [{"type": "response.created", "response": created}]
    for index, item in enumerate(output):
        events.append({"type": "response.output_item.added", "output_index": index,
                       "item": item})
        if item["type"] == "message":
            events.append({"type": "response.output_text.delta", "output_index": index,
                           "content_index": 0, "item_id": item["id"],
                           "delta": item["content"][0]["text"]})
        events.append({"type": "response.output_item.done", "output_index": index,
                       "item": item})
    events.append({"type": "response.completed", "response": response_obj})
    for event in events:
        event["sequence_number"] = next(seq)
        await response.write(_sse(event))
    await response.write_eof()
    return response


# -- Gemini API (Gemini CLI) -----------------------------------------------------------------

GEMINI_WORKDIR = re.compile(r"Workspace Directories:\*\*\n\s*- (/\S+)")


def _gemini_texts(content: dict) -> list[str]:
    return [p["text"] for p in content.get("parts") or () if isinstance(p, dict)
            and isinstance(p.get("text"), str)]


def _gemini_parts(body: dict) -> list[dict]:
    contents = [c for c in body.get("contents") or () if isinstance(c, dict)]
    last = contents[-1] if contents else {}
    if any("functionResponse" in p for p in last.get("parts") or () if isinstance(p, dict)):
        return [{"text": "The notes say to use tabs. Done."}]
    human = "\n".join(_gemini_texts(last))
    everything = "\n".join(t for c in contents for t in _gemini_texts(c))
    system = "\n".join(_gemini_texts(body.get("systemInstruction") or {}))
    names = {d.get("name") for t in body.get("tools") or () if isinstance(t, dict)
             for d in t.get("functionDeclarations") or () if isinstance(d, dict)}
    cwd = GEMINI_WORKDIR.search(everything)
    if "read the notes" in human.lower() and "read_file" in names and cwd:
        return [{"functionCall": {"name": "read_file",
                                  "args": {"file_path": f"{cwd.group(1)}/GEMINI.md"}}}]
    config = body.get("generationConfig") or {}
    if config.get("responseMimeType") == "application/json":   # its JSON side checks
        return [{"text": json.dumps({"next_speaker": "user", "reasoning": "fake",
                                     "title": "Fake title"})}]
    return [{"text": answer(human, f"{system}\n{everything}", False)}]


def _gemini_reply(body: dict, model: str) -> dict:
    parts = _gemini_parts(body)
    return {"candidates": [{"content": {"parts": parts, "role": "model"},
                            "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": 100, "candidatesTokenCount": 9,
                              "totalTokenCount": 109},
            "modelVersion": model, "responseId": f"fake{next(_ids):04d}"}


async def gemini_models(request: web.Request) -> web.StreamResponse:
    """``POST /v1beta/models/{model}:{generateContent|streamGenerateContent|countTokens}``."""
    model, _, action = request.match_info["target"].rpartition(":")
    body = await request.json()
    _record(request, body)
    if action == "countTokens":
        return web.json_response({"totalTokens": len(json.dumps(body)) // 4})
    reply = _gemini_reply(body, model)
    if action == "generateContent":
        return web.json_response(reply)
    response = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await response.prepare(request)
    parts = reply["candidates"][0]["content"]["parts"]
    for index, part in enumerate(parts):   # one event per part, usage on the last
        event = {**reply, "candidates": [{"content": {"parts": [part], "role": "model"},
                                          "index": 0}]}
        if index == len(parts) - 1:
            event["candidates"][0]["finishReason"] = "STOP"
        await response.write(f"data: {json.dumps(event)}\r\n\r\n".encode())
    await response.write_eof()
    return response


def create_app(record_to: str | Path | None = None) -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[RECORDS] = []
    app[RECORD_TO] = record_to
    app.router.add_post("/v1/messages", messages)
    app.router.add_post("/v1/messages/count_tokens", count_tokens)
    app.router.add_post("/v1/responses", responses)
    app.router.add_post("/v1beta/models/{target}", gemini_models)
    add_chat_routes(app)
    return app


# -- OpenAI chat completions (opencode, Continue's cn) -------------------------------------

CHAT_WORKDIR = re.compile(r"(?:Working directory|cwd|current working directory)[^/\n]*?(/\S+)",
                          re.IGNORECASE)


def _chat_reply(body: dict) -> dict:
    """The assistant message for a chat request: a ``read`` tool call when the human asks to
    "read the notes" and a read tool is offered, the final text after the tool's result."""
    messages = body.get("messages") or []
    last = messages[-1] if messages else {}
    if last.get("role") == "tool":
        return {"role": "assistant", "content": "The notes say to use tabs. Done."}
    human = next(("\n".join(_texts(m.get("content"))) for m in reversed(messages)
                  if m.get("role") == "user"), "")
    context = "\n".join("\n".join(_texts(m.get("content"))) for m in messages
                        if m.get("role") in ("system", "developer"))
    tools = {(t.get("function") or {}).get("name") for t in body.get("tools") or ()}
    read = next((name for name in ("read", "read_file", "Read") if name in tools), None)
    cwd = CHAT_WORKDIR.search(context)
    if "read the notes" in human.lower() and read and cwd:
        path = f"{cwd.group(1).rstrip('.,')}/AGENTS.md"
        argument = "filepath" if read == "read_file" else "filePath"
        return {"role": "assistant", "content": None, "tool_calls": [{
            "id": f"call_{next(_ids):04d}", "type": "function",
            "function": {"name": read, "arguments": json.dumps({argument: path})}}]}
    small = bool(re.search(r"title generator|generate a (short )?title", context, re.I))
    return {"role": "assistant", "content": "Fake title" if small else
            answer(human, context + "\n" + human, False)}


async def chat_completions(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    _record(request, body)
    message = _chat_reply(body)
    finish = "tool_calls" if message.get("tool_calls") else "stop"
    base = {"id": f"chatcmpl-fake{next(_ids):04d}", "created": 0,
            "model": body.get("model", "")}
    usage = {"prompt_tokens": 100, "completion_tokens": 9, "total_tokens": 109}
    if not body.get("stream"):
        return web.json_response({**base, "object": "chat.completion", "usage": usage,
                                  "choices": [{"index": 0, "message": message,
                                               "finish_reason": finish}]})
    response = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await response.prepare(request)
    delta = {k: v for k, v in message.items() if v is not None}
    for call_index, call in enumerate(delta.get("tool_calls") or ()):
        call["index"] = call_index
    chunks = [{"index": 0, "delta": delta, "finish_reason": None},
              {"index": 0, "delta": {}, "finish_reason": finish}]
    for choice in chunks:
        chunk = {**base, "object": "chat.completion.chunk", "choices": [choice]}
        await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
    if (body.get("stream_options") or {}).get("include_usage"):
        chunk = {**base, "object": "chat.completion.chunk", "choices": [], "usage": usage}
        await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


MODELS = ("gpt-5-codex", "claude-sonnet-4-5", "claude-haiku-4-5", "fake-chat")


async def models(request: web.Request) -> web.Response:
    """The model list, in Anthropic's shape when asked with ``anthropic-version``."""
    _record(request, {})
    if "anthropic-version" in request.headers:
        data = [{"type": "model", "id": name, "display_name": name.replace("-", " ").title(),
                 "created_at": "2025-09-29T00:00:00Z"} for name in MODELS]
        return web.json_response({"data": data, "has_more": False, "first_id": MODELS[0],
                                  "last_id": MODELS[-1]})
    return web.json_response({"object": "list", "data": [
        {"id": name, "object": "model", "created": 1759104000, "owned_by": "fake"}
        for name in MODELS]})


def add_chat_routes(app: web.Application) -> None:
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_get("/v1/models", models)
