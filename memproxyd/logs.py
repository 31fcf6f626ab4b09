"""Logging, configured once by the entry point: JSON lines (python-json-logger) or text.

The access log (``memproxyd.access``, ``[logging] access_log``) is one INFO line per answered
request, its fields as JSON keys (in text, ``key=value`` after the message)::

    {"level": "INFO", "logger": "memproxyd.access", "message": "POST /v1/responses 200",
     "method": "POST", "path": "/v1/responses", "status": 200, "user_id": "alpha",
     "project": "alpha", "model": "gpt-5-codex", "deployment": "gpt-5-codex",
     "memory": "injected", "overhead_ms": 3.1, "upstream_ms": 812.4, "duration_ms": 815.5,
     "trace_id": "4bf9..."}

Only the path (never the query string: the Gemini API can carry ``?key=``), never a body,
header or key. A client that hung up is status 499.
"""
from __future__ import annotations

import logging
import sys

from memproxyd.tracing import LogFilter

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s trace_id=%(trace_id)s"
log = logging.getLogger("memproxyd.http")
ACCESS = logging.getLogger("memproxyd.access")
ACCESS_FIELDS = ("method", "path", "status", "user_id", "project", "model", "deployment",
                 "memory", "overhead_ms", "upstream_ms", "duration_ms")


def access(fields: dict) -> None:
    """One access log line; ``fields``: ``ACCESS_FIELDS``, each a string, number or None."""
    ACCESS.info("%s %s %s", fields["method"], fields["path"], fields["status"], extra=fields)


class TextFormatter(logging.Formatter):
    """``TEXT_FORMAT``; an access line gets its fields as ``key=value`` after it."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if record.name != ACCESS.name:
            return text
        return text + "".join(f" {key}={getattr(record, key, None)}" for key in ACCESS_FIELDS
                              if key not in ("method", "path", "status"))


class ClientErrorFilter(logging.Filter):
    """A request aiohttp's HTTP parser rejects (a NUL byte in a header, a line too long, a
    broken chunk) is the client's error, not the server's: aiohttp logs it at ERROR with a
    traceback (``web_protocol.handle_error``); it becomes one INFO line here. The parser's
    message can quote the offending bytes (a header with a key in it), so only its words
    before any quote are kept."""

    def filter(self, record: logging.LogRecord) -> bool:
        from aiohttp.http_exceptions import HttpProcessingError
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError) or not 400 <= (exc.code or 0) < 500:
            return True
        reason = str(getattr(exc, "message", "") or "").split(":", 1)[0].split("\n", 1)[0]
        log.info("bad request rejected by the HTTP parser status=%s error=%s reason=%s",
                 exc.code, type(exc).__name__, reason[:80])
        return False


def configure(fmt: str = "json", level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.addFilter(LogFilter())   # the request's trace id on every line (or "-")
    if fmt == "json":
        from pythonjsonlogger.json import JsonFormatter
        handler.setFormatter(JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"}))
    else:
        handler.setFormatter(TextFormatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's access log would print every request line; keep it at debug only
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.server").addFilter(ClientErrorFilter())
    for noisy in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
