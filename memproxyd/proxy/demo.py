"""The offline ``demo`` model's replies, made whole: what a real server of each protocol sends.

litellm's ``mock_response`` answers with canned objects: Responses replies claim
``gpt-4.1-2025-04-14`` and an empty ``output_tokens_details`` (Codex rejects the stream:
``missing field 'reasoning_tokens'``), Anthropic replies claim ``claude-sonnet-4-20250514``
and fixed token counts. Here every reply names the model the client asked for, carries a
complete usage object counted from the request and the reply (about four characters a token,
as no tokenizer is involved), and streams as the full event sequence of its protocol.

    reply = demo.responses(body, translated_dict)     # what /v1/responses answers
    events = demo.responses_events(reply)             # and its SSE events, in order
"""
from __future__ import annotations

import json
import time
import uuid
from typing import Any


def tokens(value: Any) -> int:
    """A rough token count of a request or reply part (≈ 4 characters a token)."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return max(1, len(text) // 4)


def _prompt(body: dict, *fields: str) -> int:
    return tokens([body.get(field) for field in fields if body.get(field) is not None])


def chat(body: dict, reply: dict) -> dict:
    """An OpenAI chat completion (or legacy completion) from the demo model."""
    texts = [(c.get("message") or {}).get("content") or c.get("text") or ""
             for c in reply.get("choices") or ()]
    prompt, completion = _prompt(body, "messages", "prompt"), tokens("".join(texts))
    return {**reply, "model": body.get("model") or reply.get("model"),
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                      "total_tokens": prompt + completion,
                      "prompt_tokens_details": {"cached_tokens": 0},
                      "completion_tokens_details": {"reasoning_tokens": 0}}}


def chat_chunk(body: dict, chunk: dict) -> dict:
    return {**chunk, "model": body.get("model") or chunk.get("model")}


def messages(body: dict, reply: dict) -> dict:
    """An Anthropic message from the demo model."""
    text = "".join(b.get("text", "") for b in reply.get("content") or () if isinstance(b, dict))
    return {**reply, "id": f"msg_demo{uuid.uuid4().hex}",
            "model": body.get("model") or reply.get("model"),
            "usage": {"input_tokens": _prompt(body, "system", "messages"),
                      "output_tokens": tokens(text), "cache_creation_input_tokens": 0,
                      "cache_read_input_tokens": 0, "service_tier": "standard"}}


def responses(body: dict, reply: dict) -> dict:
    """An OpenAI Responses object from the demo model."""
    output = reply.get("output") or []
    text = "".join(part.get("text", "") for item in output for part in item.get("content") or ()
                   if isinstance(part, dict))
    prompt, completion = _prompt(body, "instructions", "input"), tokens(text)
    output = [{**item, "id": f"msg_demo{uuid.uuid4().hex}"} for item in output]
    return {**reply, "id": f"resp_demo{uuid.uuid4().hex}", "created_at": int(time.time()),
            "model": body.get("model") or reply.get("model"), "output": output,
            "usage": {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": 0},
                      "output_tokens": completion,
                      "output_tokens_details": {"reasoning_tokens": 0},
                      "total_tokens": prompt + completion}}


def responses_events(reply: dict) -> list[dict]:
    """The SSE events OpenAI sends for ``reply``, with sequence numbers."""
    started = {**reply, "status": "in_progress", "output": [], "usage": None}
    events: list[dict] = [{"type": "response.created", "response": started},
                          {"type": "response.in_progress", "response": started}]
    for index, item in enumerate(reply.get("output") or ()):
        parts = item.get("content") or []
        events.append({"type": "response.output_item.added", "output_index": index,
                       "item": {**item, "status": "in_progress", "content": []}})
        for part_index, part in enumerate(parts):
            where = {"item_id": item["id"], "output_index": index, "content_index": part_index}
            text = part.get("text", "")
            events += [{"type": "response.content_part.added", **where,
                        "part": {**part, "text": ""}},
                       {"type": "response.output_text.delta", **where, "delta": text,
                        "logprobs": []},
                       {"type": "response.output_text.done", **where, "text": text,
                        "logprobs": []},
                       {"type": "response.content_part.done", **where, "part": part}]
        events.append({"type": "response.output_item.done", "output_index": index,
                       "item": item})
    events.append({"type": "response.completed", "response": reply})
    return [{**event, "sequence_number": n} for n, event in enumerate(events)]
