"""W3C trace context: every request has a trace id, and every call made for it carries it.

* ``traceparent`` from the client is continued (its trace id kept, its span our parent);
  without one (or with a malformed one) a new trace starts.
* The trace id goes back in ``x-memproxy-trace-id``, into every log line written while the
  request runs (``LogFilter``), and into the ledger row.
* Every outgoing HTTP call made while the request runs gets ``traceparent`` with the same
  trace id: native forwarding and litellm's calls add ``headers()`` to what they send, and
  the user's httpx client (litellm's OpenAI client, the Supermemory SDK) has
  ``httpx_request_hook``. (aiohttp's ``TraceConfig`` would do it in one place, at the price
  of a signal per chunk of every reply.)
* Spans are exported through OpenTelemetry only when its packages are installed and
  ``[tracing] otlp_endpoint`` is set (``otel.py``); otherwise this module is all there is.

    trace = begin(request.headers.get("traceparent"))   # sets the context for the request
"""
from __future__ import annotations

import contextvars
import logging
import random
import re

import attrs

TRACE_HEADER = "x-memproxy-trace-id"
TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
INVALID_TRACE = "0" * 32


@attrs.frozen
class Trace:
    trace_id: str
    span_id: str                 # this request's span: the parent of outgoing calls
    parent_id: str = ""          # the client's span, when it sent one
    flags: str = "01"

    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{self.flags}"


current: contextvars.ContextVar[Trace | None] = contextvars.ContextVar("memproxy_trace",
                                                                        default=None)


def parse(header: str | None) -> tuple[str, str, str] | None:
    """(trace id, parent span id, flags) of a valid ``traceparent`` version 00, else None."""
    match = TRACEPARENT.fullmatch((header or "").strip().lower())
    if match is None or match.group(1) == INVALID_TRACE or match.group(2) == "0" * 16:
        return None
    return match.group(1), match.group(2), match.group(3)


def begin(traceparent: str | None) -> Trace:
    """The request's trace (continued or new), made current for the request's task."""
    parsed = parse(traceparent)
    # ids need to be unique, not secret: random's generator (as OpenTelemetry's own) is
    # cheaper than a system call for os.urandom on every request
    span_id = f"{random.getrandbits(64) or 1:016x}"
    if parsed is None:
        trace = Trace(f"{random.getrandbits(128) or 1:032x}", span_id)
    else:
        trace = Trace(parsed[0], span_id, parsed[1], parsed[2])
    return use(trace)


def use(trace: Trace) -> Trace:
    """Make ``trace`` the current one (for this task and the tasks it starts)."""
    current.set(trace)
    return trace


def outgoing() -> str | None:
    trace = current.get()
    return trace.traceparent() if trace is not None else None


def headers() -> dict[str, str]:
    """``{"traceparent": ...}`` for a call made for the current request; {} outside one."""
    trace = current.get()
    return {"traceparent": trace.traceparent()} if trace is not None else {}


async def httpx_request_hook(request) -> None:
    """For ``httpx.AsyncClient(event_hooks={"request": [...]})``: adds ``traceparent``."""
    value = outgoing()
    if value is not None:
        request.headers["traceparent"] = value


class LogFilter(logging.Filter):
    """Puts the current trace id on every record (``trace_id``; "-" outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        trace = current.get()
        record.trace_id = trace.trace_id if trace is not None else "-"
        return True
