"""The pieces request validation is built from (``validate.py`` has the endpoint tables):
the body parser and one checker per JSON shape, each raising ``Invalid`` (a 400) that names
the field's path and what was expected.

    integer(1)("5", "max_tokens")    # Invalid: "'max_tokens': expected an integer, got a string"
"""
from __future__ import annotations

import json
import math
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


def _finite(text: str) -> float:
    """A JSON number as a float; one beyond a double's range (``1e400``) would be Infinity,
    which JSON has no place for: refused like the ``Infinity`` literal."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:40]} is beyond a double's range")
    return value


def parse_json(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 saying what is wrong with it."""
    try:
        body = json.loads(raw, parse_constant=_reject_constant, parse_float=_finite)
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
