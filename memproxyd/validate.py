"""Request validation: what the gateway itself reads, and what litellm would choke on, is
checked before any deployment, memory or upstream work. Unknown fields pass through untouched.

    body = parse_json(await request.read())   # JSON object, bounded depth, valid text
    chat(body)                                 # ApiError(400, "'messages[1]': expected an
                                               #   object, got an integer", "invalid_type")

A malformed request is the client's error: a 400 in the protocol's own error shape (the
middleware picks it by route), never a 5xx from an upstream or from litellm. Checks are a
table per endpoint (field → checker); a checker raises ``Invalid`` naming the field's path.
"""
from __future__ import annotations

import json
import re
from typing import Any, Callable

from memproxyd.errors import ApiError

# Bounds no honest client reaches, so a hostile body cannot make the gateway or litellm
# recurse, loop or allocate without limit. The body size itself is [server] max_body_bytes.
MAX_DEPTH = 100            # nesting of objects and arrays
MAX_MESSAGES = 10_000      # messages (chat, Anthropic) or input items (Responses)
MAX_INT = 2 ** 53          # integers beyond JSON's exact range are no token counts

# A \uD800-\uDFFF escape that is not half of a pair decodes to a string no UTF-8 encoder
# (SQLite, an upstream) accepts; the regex only decides whether the exact walk is needed.
_HIGH = rb"\\u[dD][89abAB][0-9a-fA-F]{2}"
_LOW = rb"\\u[dD][c-fC-F][0-9a-fA-F]{2}"
_MAYBE_LONE = re.compile(_HIGH + rb"(?!" + _LOW + rb")|(?<!" + _HIGH + rb")" + _LOW)


class Invalid(ApiError):
    def __init__(self, path: str, message: str, code: str = "invalid_type"):
        super().__init__(400, f"'{path}': {message}", code)
        self.path = path
        self.field = re.split(r"[.\[]", path, maxsplit=1)[0]   # the top-level field


Check = Callable[[Any, str], None]


def _kind(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
             list: "an array", dict: "an object", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def parse_json(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 saying what is wrong with it."""
    try:
        body = json.loads(raw, parse_constant=_reject_constant)
    except RecursionError:
        raise ApiError(400, f"the request body is nested deeper than {MAX_DEPTH} levels",
                       "invalid_json") from None
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "could not parse the request body as JSON", "invalid_json") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object", "invalid_json")
    _check_tree(body, exact_text=bool(_MAYBE_LONE.search(raw)))
    return body


def _check_tree(body: dict, exact_text: bool) -> None:
    """Depth within ``MAX_DEPTH``; with ``exact_text``, every string encodable as UTF-8."""
    stack: list[tuple[Any, int]] = [(body, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ApiError(400, f"the request body is nested deeper than {MAX_DEPTH} levels",
                           "invalid_json")
        items = value.values() if isinstance(value, dict) else value
        if exact_text and isinstance(value, dict):
            items = [*value.keys(), *items]
        for item in items:
            if isinstance(item, (dict, list)):
                stack.append((item, depth + 1))
            elif exact_text and isinstance(item, str):
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    raise ApiError(400, "the request body holds an unpaired UTF-16 surrogate "
                                        "(\\ud800-\\udfff): not valid text", "invalid_json"
                                   ) from None


# -- checkers -----------------------------------------------------------------------------

def boolean(value: Any, path: str) -> None:
    if not isinstance(value, bool):
        raise Invalid(path, f"expected a boolean, got {_kind(value)}")


def string(value: Any, path: str) -> None:
    if not isinstance(value, str):
        raise Invalid(path, f"expected a string, got {_kind(value)}")


def obj(value: Any, path: str) -> None:
    if not isinstance(value, dict):
        raise Invalid(path, f"expected an object, got {_kind(value)}")


def number(value: Any, path: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Invalid(path, f"expected a number, got {_kind(value)}")


def integer(minimum: int = 0) -> Check:
    def check(value: Any, path: str) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise Invalid(path, f"expected an integer, got {_kind(value)}")
        if not minimum <= value <= MAX_INT:
            raise Invalid(path, f"expected an integer from {minimum} to {MAX_INT}, "
                                f"got {value}", "invalid_value")
    return check


def one_of(*choices: str) -> Check:
    def check(value: Any, path: str) -> None:
        if value not in choices:
            raise Invalid(path, f"expected one of {', '.join(map(repr, choices))}, "
                                f"got {json.dumps(value)[:40]}", "invalid_value")
    return check


def either(*checks: Check, expected: str) -> Check:
    """The first check that passes wins. Otherwise the error from inside the value (an array
    whose third item is wrong says so), else one naming what was expected."""
    def check(value: Any, path: str) -> None:
        deeper = None
        for candidate in checks:
            try:
                candidate(value, path)
                return
            except Invalid as exc:
                if (exc.path != path or exc.code != "invalid_type") and deeper is None:
                    deeper = exc
        raise deeper or Invalid(path, f"expected {expected}, got {_kind(value)}")
    return check


def array(item: Check | None = None, *, min_items: int = 0,
          max_items: int = MAX_MESSAGES) -> Check:
    def check(value: Any, path: str) -> None:
        if not isinstance(value, list):
            raise Invalid(path, f"expected an array, got {_kind(value)}")
        if not min_items <= len(value) <= max_items:
            raise Invalid(path, f"expected {min_items} to {max_items} items, got {len(value)}",
                          "invalid_length")
        if item is not None:
            for index, element in enumerate(value):
                item(element, f"{path}[{index}]")
    return check


def fields(table: dict[str, Check], body: dict, prefix: str = "") -> None:
    """Check each field of ``table`` that ``body`` has and is not null (null = not sent)."""
    for name, check in table.items():
        value = body.get(name)
        if value is not None:
            check(value, f"{prefix}{name}")


def typed_block(text_types: tuple[str, ...]) -> Check:
    """A content part / block: an object with a string ``type``; text ones carry a string."""
    def check(value: Any, path: str) -> None:
        obj(value, path)
        kind = value.get("type")
        string(kind, f"{path}.type")
        if kind in text_types:
            string(value.get("text"), f"{path}.text")
    return check


# -- endpoints ----------------------------------------------------------------------------

STOP = either(string, array(string, max_items=16), expected="a string or an array of strings")
SAMPLING = {"temperature": number, "top_p": number, "stream": boolean, "user": string,
            "metadata": obj}

OPENAI_ROLES = ("system", "developer", "user", "assistant", "tool", "function")
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
    one_of(*OPENAI_ROLES)(message.get("role"), f"{path}.role")
    content = message.get("content")
    if content is None and message["role"] not in ("assistant", "function"):
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
    one_of("user", "assistant")(message.get("role"), f"{path}.role")
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


RESPONSES_ROLES = ("user", "assistant", "system", "developer")
RESPONSES_FIELDS = {
    **SAMPLING, "max_output_tokens": integer(1), "instructions": string,
    "previous_response_id": string, "store": boolean, "background": boolean,
    "parallel_tool_calls": boolean, "tools": array(obj), "include": array(string),
    "tool_choice": either(string, obj, expected="a string or an object"),
    "reasoning": obj, "text": obj,
}


def _input_item(item: Any, path: str) -> None:
    obj(item, path)
    fields({"type": string, "role": one_of(*RESPONSES_ROLES),
            "content": either(string, array(typed_block(("input_text", "output_text"))),
                              expected="a string or an array of content parts")},
           item, f"{path}.")


def responses(body: dict) -> None:
    """``/v1/responses`` and its side calls (``compact``, ``input_tokens``)."""
    codes = {"input": "invalid_input", "instructions": "invalid_instructions"}
    if body.get("input") is None:
        raise ApiError(400, "'input' is required: a string or an array of input items",
                       "missing_input")
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
