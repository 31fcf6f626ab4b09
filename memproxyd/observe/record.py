"""What happened to each request, recorded once it is answered: the trace, the metrics and
the usage ledger row. One middleware around ``middleware.gateway_middleware``, which has
already turned every failure into a response by the time this one sees it.

    app = web.Application(middlewares=[observe_middleware, gateway_middleware])
    app.on_response_prepare.append(add_trace_header)

Nothing here does I/O on the request path: the ledger row is appended to a list that the
ledger's writer commits in batches (``ledger.py``), and even that (with the metrics) runs
in a callback once the reply has been handed to the transport.
"""
from __future__ import annotations

import asyncio
import logging
import time

import attrs
from aiohttp import web

from memproxyd import appkeys, logs, tracing
from memproxyd.appkeys import PROJECT, STARTED, USER_ID
from memproxyd.observe.meter import CALL, METER, REQUESTED, Row

log = logging.getLogger(__name__)
TRACE = web.RequestKey("trace", tracing.Trace)
OVERHEAD_HEADER = "x-memproxy-overhead-ms"
# nginx's 499: the client closed the connection before the reply was complete
CLIENT_GONE = web.StreamResponse(status=499, reason="Client Closed Request")


@web.middleware
async def observe_middleware(request: web.Request, handler):
    exporter = request.app.get(appkeys.SPANS)
    trace = tracing.begin(request.headers.get("traceparent"))
    span = None
    if exporter is not None:    # [tracing]: the span id sent upstream is the exported span's
        span = exporter.start(trace, f"{request.method} {_route(request)}")
        trace = tracing.use(attrs.evolve(trace, span_id=exporter.span_id(span)))
    request[TRACE] = trace
    response = None
    try:
        response = await handler(request)
    except (ConnectionResetError, asyncio.CancelledError) as exc:
        # The client left. After the whole reply (``Call.relayed``), while the stream's end
        # was still to be written, the call was complete; mid-reply it still cost (499).
        call = request.get(CALL)
        if call is not None and call.relayed is not None:
            response = call.relayed
        elif isinstance(exc, ConnectionResetError):
            response = CLIENT_GONE
        else:   # cancelled before anything was complete: no row, but an access line
            _access(request, CLIENT_GONE, 499, time.perf_counter() - request.get(
                STARTED, time.perf_counter()), None)
        raise
    finally:
        if span is not None:
            exporter.end(span, _span_attributes(request, response))
        if response is not None:
            # after the reply is on its way: a JSON answer is written once this returns
            asyncio.get_running_loop().call_soon(_record, request, response,
                                                 time.perf_counter())
    return response


def _span_attributes(request: web.Request, response) -> dict:
    call = request.get(CALL)
    out = {"http.request.method": request.method, "http.route": _route(request),
           "http.response.status_code": response.status if response is not None else 500}
    if call is not None:
        out.update({"gen_ai.request.model": call.deployment.name,
                    "memproxy.memory": call.memory_status, "memproxy.protocol": call.protocol})
    return out


def _record(request: web.Request, response, ended: float) -> None:
    try:
        record(request, response, ended)
    except Exception:   # accounting never fails a call that has been answered
        log.exception("usage record failed path=%s", request.path)


async def add_trace_header(request: web.Request, response: web.StreamResponse) -> None:
    trace = request.get(TRACE)
    if trace is not None:
        response.headers[tracing.TRACE_HEADER] = trace.trace_id


def record(request: web.Request, response: web.StreamResponse, ended: float) -> None:
    """Metrics for every request; a ledger row for every model call (and every refused one)."""
    app = request.app
    started = request.get(STARTED, ended)
    latency = ended - started
    call = request.get(CALL)
    status = response.status
    meter = request.get(METER)
    if meter is not None and not meter.ok:
        status = 502        # the stream ended with an error event
    model = call.deployment.entry.model_name if call is not None else "-"
    project = _project(request)
    route = _route(request)
    overhead = _overhead(response)
    metrics = app.get(appkeys.METRICS)
    if metrics is not None:
        metrics.requests.labels(route, str(status), model, project).inc()
        metrics.latency.labels(route).observe(latency)
        if call is not None:
            _call_metrics(metrics, call, meter, status, overhead, started)
    ledger = app.get(appkeys.LEDGER)
    if ledger is not None and (call is not None or REQUESTED in request):
        ledger.add(_row(request, call, meter, status, latency, overhead, started))
    _access(request, response, status, latency, overhead)


def _access(request: web.Request, response, status: int, latency: float,
            overhead: float | None) -> None:
    """The access log line (``logs.access``), when ``[logging] access_log`` is on."""
    if not request.app[appkeys.STATE].config.logging.access_log:
        return
    call = request.get(CALL)
    upstream = None
    if call is not None and overhead is not None:
        upstream = round(max(latency * 1000 - overhead, 0.0), 3)
    logs.access({
        "method": request.method, "path": request.path, "status": status,
        "user_id": request.get(USER_ID), "project": request.get(PROJECT),
        "model": (call.deployment.name if call is not None else request.get(REQUESTED)) or None,
        "deployment": call.deployment.params.model if call is not None else None,
        "memory": call.memory_status if call is not None else None,
        "overhead_ms": overhead, "upstream_ms": upstream,
        "duration_ms": round(latency * 1000, 3)})


def _call_metrics(metrics, call, meter, status: int, overhead: float | None,
                  started: float) -> None:
    model = call.deployment.entry.model_name
    metrics.memory.labels(call.memory_status).inc()
    if overhead is not None:
        metrics.overhead.labels(_route(call.request)).observe(overhead / 1000)
    if status >= 400:
        metrics.upstream_errors.labels(model, str(status)).inc()
    if meter is not None and meter.stream and meter.first_at is not None:
        metrics.ttft.labels(model).observe(meter.first_at - started)


def _row(request, call, meter, status: int, latency: float, overhead: float | None,
         started: float) -> Row:
    latency_ms = latency * 1000
    ttft = None
    if meter is not None and meter.stream and meter.first_at is not None:
        ttft = (meter.first_at - started) * 1000
    user_id = request.get(USER_ID, "-")
    common = dict(ts=time.time(), user_id=user_id, project=request.get(PROJECT) or "",
                  endpoint=request.path, status=status, latency_ms=round(latency_ms, 3),
                  overhead_ms=overhead, ttft_ms=None if ttft is None else round(ttft, 3),
                  trace_id=request[TRACE].trace_id)
    if call is None:     # refused before any upstream work: unknown model, [access], no key
        return Row(**common, protocol=_protocol(request.path), model=request[REQUESTED],
                   deployment="", upstream_ms=None, memory="off", memories=0)
    upstream = None if overhead is None else round(max(latency_ms - overhead, 0.0), 3)
    return Row(**common, protocol=call.protocol, model=call.deployment.name,
               deployment=call.deployment.params.model, upstream_ms=upstream,
               memory=call.memory_status, memories=call.memories,
               documents=meter.kept if meter is not None else [], entry=call.deployment.entry)


def _overhead(response: web.StreamResponse) -> float | None:
    try:
        return float(response.headers[OVERHEAD_HEADER])
    except (KeyError, ValueError):
        return None


def _route(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def _project(request: web.Request) -> str:
    """A registered project (bounded by the registry) or ``gateway``."""
    project = request.get(PROJECT)
    if project:
        return project
    user_id = request.get(USER_ID)
    projects = request.app[appkeys.STATE].project_ports.values()
    return user_id if user_id in projects else "gateway"


def _protocol(path: str) -> str:
    from memproxyd.errors import protocol_of
    return protocol_of(path)
