"""Errors in the client's own wire protocol, rendered in one place.

OpenAI clients get ``{"error": {"message", "type", "code", "param"}}``; Anthropic clients
(``/v1/messages...``) get ``{"type": "error", "error": {"type", "message"}}``. The protocol is
chosen by route, so a 404 for an unknown model reads naturally in either SDK. The Responses
API (``/v1/responses...``) and legacy completions answer in OpenAI's shape too; only a
Responses stream ends differently: with OpenAI's ``error`` event (``event: error``,
``data: {"type": "error", "code", "message", "param", "sequence_number"}``). The Gemini API
(``/v1beta/...``, and ``/v1/models/{model}:...`` where the google-genai SDK sends it)
answers in Google's shape, ``{"error": {"code", "message", "status"}}``, and
ends a stream with that object as its last ``data:`` event.

A configuration error that no retry can fix (a model whose provider key is not set,
``model_unavailable``; a model the caller may not use, ``model_not_allowed``) is a 400, the
one status the clients were seen to give up on at once. Measured against a loopback server
answering each status: Codex CLI 0.171 sends 1 request on a 400 but 6 on a 401, 403, 404 or
409 and 30 (over 26 s) on a 503; Claude Code 2.1 shows a 400's message as it is, reads a 403
as "Failed to authenticate" and waits on a 401; the OpenAI and Anthropic SDKs retry 408, 409,
429 and 5xx. Such answers also carry ``x-should-retry: false``, which both SDKs (and so
Claude Code) obey before their status rules; Google's status for them is
``FAILED_PRECONDITION``, its own 400 for "the system is not in a state to do this".
"""
from __future__ import annotations

import json
import re

from aiohttp import web

OPENAI = "openai"
ANTHROPIC = "anthropic"
RESPONSES = "responses"        # OpenAI's Responses API: OpenAI errors, its own stream events
COMPLETIONS = "completions"    # OpenAI's legacy completions: OpenAI errors and events
GEMINI = "gemini"              # the Gemini API: Google's errors
GEMINI_PREFIXES = ("/v1beta/", "/v1/models/")   # /v1/models itself is OpenAI's list

CONFIG_CODES = frozenset({"model_unavailable", "model_not_allowed"})   # no retry can fix them
NO_RETRY = {"x-should-retry": "false"}

_SEQUENCE = re.compile(rb'"sequence_number"\s*:\s*(\d+)')

# status → (OpenAI type, Anthropic type)
_TYPES = {
    400: ("invalid_request_error", "invalid_request_error"),
    401: ("authentication_error", "authentication_error"),
    403: ("permission_error", "permission_error"),
    404: ("invalid_request_error", "not_found_error"),
    405: ("invalid_request_error", "invalid_request_error"),
    413: ("invalid_request_error", "request_too_large"),
    429: ("rate_limit_error", "rate_limit_error"),
    502: ("api_error", "api_error"),
    503: ("api_error", "overloaded_error"),
    504: ("timeout_error", "api_error"),
    529: ("api_error", "overloaded_error"),
}

# status → Google's canonical status name (google.rpc.Code)
_GOOGLE_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
                  404: "NOT_FOUND", 405: "INVALID_ARGUMENT", 409: "ABORTED",
                  413: "INVALID_ARGUMENT", 429: "RESOURCE_EXHAUSTED", 499: "CANCELLED",
                  500: "INTERNAL", 501: "UNIMPLEMENTED", 502: "UNAVAILABLE",
                  503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED", 529: "UNAVAILABLE"}


class ApiError(Exception):
    """A failure the client should see with ``status``; ``code`` is OpenAI's machine code."""

    def __init__(self, status: int, message: str, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


def protocol_of(path: str) -> str:
    if path.startswith("/v1/messages"):
        return ANTHROPIC
    if path.startswith(("/v1/responses", "/responses")):
        return RESPONSES
    if path.startswith(GEMINI_PREFIXES):
        return GEMINI
    return OPENAI


def error_body(protocol: str, status: int, message: str, code: str | None = None) -> dict:
    openai_type, anthropic_type = _TYPES.get(status, ("api_error", "api_error"))
    if protocol == ANTHROPIC:
        return {"type": "error", "error": {"type": anthropic_type, "message": message}}
    if protocol == GEMINI:
        google = "FAILED_PRECONDITION" if code in CONFIG_CODES else \
            _GOOGLE_STATUS.get(status, "UNKNOWN")
        return {"error": {"code": status, "message": message, "status": google}}
    return {"error": {"message": message, "type": openai_type, "param": None,
                      "code": code or openai_type}}


def error_response(protocol: str, status: int, message: str, code: str | None = None,
                   headers: dict | None = None) -> web.Response:
    if code in CONFIG_CODES:
        headers = {**NO_RETRY, **(headers or {})}
    return web.json_response(error_body(protocol, status, message, code), status=status,
                             headers=headers)


def sse_error_event(protocol: str, status: int, message: str, before: bytes = b"") -> bytes:
    """The last event of a stream whose upstream failed after the headers were sent.

    ``before`` is the last piece relayed before the failure: Responses events are numbered,
    and the error event takes the number after the last one seen there (0 when none is)."""
    if protocol == RESPONSES:
        numbers = _SEQUENCE.findall(before)
        body = {"type": "error", "code": error_body(OPENAI, status, message)["error"]["code"],
                "message": message, "param": None,
                "sequence_number": int(numbers[-1]) + 1 if numbers else 0}
        return f"event: error\ndata: {json.dumps(body)}\n\n".encode()
    body = json.dumps(error_body(protocol, status, message))
    if protocol == ANTHROPIC:
        return f"event: error\ndata: {body}\n\n".encode()
    return f"data: {body}\n\n".encode()
