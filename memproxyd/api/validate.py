"""Request validation: what the gateway itself reads, and what litellm would choke on, is
checked before any deployment, memory or upstream work. Unknown fields pass through untouched.

Never stricter than the provider: roles and content types memproxyd does not know pass
(Claude Code sends ``system``-role messages inside Anthropic ``messages`` for its default
model), and are the upstream's to judge. What memproxyd reads is checked: a message is an
object with a string ``role``, content is text or an array of typed parts, and a text part
carries its text. A translated (litellm) deployment that cannot take such a message says so
itself (``proxy/translate.py``, ``messages``).

    body = await read_json(request)   # JSON object, bounded depth, valid text
    chat(body)                                 # ApiError(400, "'messages[1]': expected an
                                               #   object, got an integer", "invalid_type")

A malformed request is the client's error: a 400 in the protocol's own error shape (the
middleware picks it by route), never a 5xx from an upstream or from litellm. Checks are a
table per endpoint (field → checker, ``checks.py``).
"""
from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from memproxyd import appkeys
from memproxyd.api.checks import (MAX_INT, Invalid, array, boolean, either, fields, integer,
                                  number, obj, one_of, parse_json, string, typed_block)
from memproxyd.errors import ApiError
from memproxyd.observe.meter import REQUESTED

__all__ = ["read_json", "read_model_call", "parse_json", "chat", "messages", "responses",
           "completions", "embeddings", "gemini"]


async def read_body(request: web.Request) -> bytes:
    """The whole body, as ``request.read()`` reads it (``max_body_bytes`` and all), unless it
    stalls: a client that sends nothing more for ``[server] body_timeout`` seconds gets a 408
    and the connection is closed. A slow client that keeps sending is never cut."""
    idle = request.app[appkeys.STATE].config.server.body_timeout
    reading = asyncio.ensure_future(request.read())
    seen = request.content.total_bytes
    while True:
        done, _ = await asyncio.wait([reading], timeout=idle)
        if done:
            return reading.result()
        if request.content.total_bytes == seen:
            reading.cancel()
            error = ApiError(408, f"the request body stalled: nothing arrived for {idle:g} s",
                             "body_timeout")
            error.close = True
            raise error
        seen = request.content.total_bytes


async def read_json(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object (``parse_json``)."""
    return parse_json(await read_body(request))


async def read_model_call(request: web.Request) -> dict[str, Any]:
    """The body of a model call. From here on a refusal (a malformed field, an unknown model)
    gets its usage ledger row, under the model the client asked for."""
    request[REQUESTED] = ""
    body = await read_json(request)
    request[REQUESTED] = str(body.get("model"))[:200]
    return body


# -- endpoints ----------------------------------------------------------------------------

STOP = either(string, array(string, max_items=16), expected="a string or an array of strings")
SAMPLING = {"temperature": number, "top_p": number, "stream": boolean, "user": string,
            "metadata": obj}

# the known roles whose messages OpenAI refuses without content; other roles pass as sent
CONTENT_REQUIRED = ("system", "developer", "user", "tool")
OPENAI_PART = typed_block(("text",))
OPENAI_CONTENT = either(string, array(OPENAI_PART),
                        expected="a string or an array of content parts")
CHAT_FIELDS = {
    **SAMPLING, "max_tokens": integer(1), "max_completion_tokens": integer(1), "n": integer(1),
    "seed": integer(-MAX_INT), "stop": STOP, "stream_options": obj, "tools": array(obj),
    "tool_choice": either(string, obj, expected="a string or an object"),
    "parallel_tool_calls": boolean, "response_format": obj, "logprobs": boolean,
    "top_logprobs": integer(0), "presence_penalty": number, "frequency_penalty": number,
    "logit_bias": obj,
}


def _openai_message(message: Any, path: str) -> None:
    obj(message, path)
    string(message.get("role"), f"{path}.role")
    content = message.get("content")
    if content is None and message["role"] in CONTENT_REQUIRED:
        raise Invalid(f"{path}.content", "required for this role", "missing_content")
    fields({"content": OPENAI_CONTENT, "name": string, "tool_calls": array(obj),
            "tool_call_id": string}, message, f"{path}.")


def _required_messages(body: dict, label: str = "messages") -> None:
    if not isinstance(body.get("messages"), list) or not body["messages"]:
        raise ApiError(400, f"'{label}' is required and must be a non-empty array",
                       "missing_messages")


def chat(body: dict) -> None:
    """``/v1/chat/completions``."""
    _required_messages(body)
    array(_openai_message)(body["messages"], "messages")
    fields(CHAT_FIELDS, body)


ANTHROPIC_BLOCK = typed_block(("text",))
ANTHROPIC_CONTENT = either(string, array(ANTHROPIC_BLOCK),
                           expected="a string or an array of content blocks")
MESSAGES_FIELDS = {
    **SAMPLING, "max_tokens": integer(1), "top_k": integer(0), "stop_sequences": array(string),
    "system": either(string, array(typed_block(("text",))),
                     expected="a string or an array of text blocks"),
    "tools": array(obj), "tool_choice": obj, "thinking": obj,
}


def _anthropic_message(message: Any, path: str) -> None:
    obj(message, path)
    string(message.get("role"), f"{path}.role")
    if "content" not in message:
        raise Invalid(f"{path}.content", "field required", "missing_content")
    ANTHROPIC_CONTENT(message["content"], f"{path}.content")


def messages(body: dict, *, needs_max_tokens: bool) -> None:
    """``/v1/messages`` (``max_tokens`` required) and ``/v1/messages/count_tokens``."""
    if not isinstance(body.get("messages"), list) or not body["messages"]:
        raise ApiError(400, "messages: field required and must be a non-empty array",
                       "missing_messages")
    if needs_max_tokens and body.get("max_tokens") is None:
        raise ApiError(400, "max_tokens: field required and must be an integer",
                       "missing_max_tokens")
    array(_anthropic_message)(body["messages"], "messages")
    fields(MESSAGES_FIELDS, body)


RESPONSES_FIELDS = {
    **SAMPLING, "max_output_tokens": integer(1), "instructions": string,
    "previous_response_id": string, "store": boolean, "background": boolean,
    "parallel_tool_calls": boolean, "tools": array(obj), "include": array(string),
    "tool_choice": either(string, obj, expected="a string or an object"),
    "reasoning": obj, "text": obj,
}


def _input_item(item: Any, path: str) -> None:
    obj(item, path)
    fields({"type": string, "role": string,
            "content": either(string, array(typed_block(("input_text", "output_text"))),
                              expected="a string or an array of content parts")},
           item, f"{path}.")


def responses(body: dict) -> None:
    """``/v1/responses`` and its side calls (``compact``, ``input_tokens``)."""
    codes = {"input": "invalid_input", "instructions": "invalid_instructions"}
    try:
        fields({"input": either(string, array(_input_item),
                                expected="a string or an array of input items")}, body)
        fields(RESPONSES_FIELDS, body)
    except Invalid as exc:
        exc.code = codes.get(exc.field, exc.code)
        raise


TOKENS = array(integer(0), min_items=1)
PROMPT_ITEM = either(string, integer(0), TOKENS, expected="a string, a token or a token array")
COMPLETION_FIELDS = {
    **SAMPLING, "max_tokens": integer(1), "n": integer(1), "best_of": integer(1),
    "logprobs": integer(0), "echo": boolean, "suffix": string, "stop": STOP,
    "seed": integer(-MAX_INT), "stream_options": obj, "presence_penalty": number,
    "frequency_penalty": number, "logit_bias": obj,
}


def completions(body: dict) -> None:
    """``/v1/completions``: a prompt is a string, strings, tokens, or token lists."""
    if not isinstance(body.get("prompt"), (str, list)):
        raise ApiError(400, "'prompt' is required and must be a string or an array",
                       "missing_prompt")
    if isinstance(body["prompt"], list):
        array(PROMPT_ITEM, min_items=1)(body["prompt"], "prompt")
    fields(COMPLETION_FIELDS, body)


def embeddings(body: dict) -> None:
    """``/v1/embeddings``: ``input`` a string or a non-empty array of strings or tokens."""
    if "input" not in body:
        raise ApiError(400, "'input' is required", "missing_input")
    either(string, array(PROMPT_ITEM, min_items=1),
           expected="a string or a non-empty array")(body["input"], "input")
    fields({"dimensions": integer(1), "encoding_format": one_of("float", "base64"),
            "user": string}, body)


def _gemini_part(part: Any, path: str) -> None:
    obj(part, path)
    fields({"text": string, "thought": boolean, "functionCall": obj}, part, f"{path}.")


def _gemini_content(content: Any, path: str) -> None:
    obj(content, path)
    fields({"role": string, "parts": array(_gemini_part)}, content, f"{path}.")


# what memproxyd (memory, the usage meter) and litellm's adapter read; Google judges the rest
GEMINI_FIELDS = {"contents": array(_gemini_content), "systemInstruction": _gemini_content,
                 "tools": array(obj), "toolConfig": obj, "generationConfig": obj}


def gemini(body: dict) -> None:
    """The Gemini API's ``generateContent`` and ``countTokens`` bodies, where memproxyd reads
    them (contents, their role and parts, a part's text); Google judges the rest, and a
    missing ``contents`` (``countTokens`` may send ``generateContentRequest`` instead)."""
    fields(GEMINI_FIELDS, body)
