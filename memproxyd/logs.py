"""Logging, configured once by the entry point: JSON lines (python-json-logger) or text."""
from __future__ import annotations

import logging
import sys

from memproxyd.tracing import LogFilter

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s trace_id=%(trace_id)s"


def configure(fmt: str = "json", level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.addFilter(LogFilter())   # the request's trace id on every line (or "-")
    if fmt == "json":
        from pythonjsonlogger.json import JsonFormatter
        handler.setFormatter(JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"}))
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's access log would print every request line; keep it at debug only
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    for noisy in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
