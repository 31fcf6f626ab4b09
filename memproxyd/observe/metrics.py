"""Prometheus metrics (prometheus-client), on one registry per app, served at ``/metrics``.

Labels are bounded by configuration, never by what clients send: ``route`` is the matched
route pattern (``unmatched`` otherwise), ``model`` a ``model_list`` name (a wildcard entry is
its pattern, ``claude-*``), ``project`` a registered project or ``gateway``.
"""
from __future__ import annotations

import collections
import time

from aiohttp import web
from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge,
                               Histogram, generate_latest)

from memproxyd import appkeys
from memproxyd.errors import ApiError

LATENCY_BUCKETS = (.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120)
OVERHEAD_BUCKETS = (.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1)


class Metrics:
    def __init__(self):
        r = self.registry = CollectorRegistry()
        self.requests = Counter("memproxy_requests", "Requests answered",
                                ["route", "status", "model", "project"], registry=r)
        self.latency = Histogram("memproxy_request_duration_seconds", "Whole request time",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.overhead = Histogram("memproxy_overhead_seconds", "Time spent in memproxyd, "
                                  "upstream excluded", ["route"], buckets=OVERHEAD_BUCKETS,
                                  registry=r)
        self.ttft = Histogram("memproxy_time_to_first_token_seconds", "Request start to the "
                              "first reply byte of a stream", ["model"],
                              buckets=LATENCY_BUCKETS, registry=r)
        self.upstream_errors = Counter("memproxy_upstream_errors", "Model calls answered "
                                       "with an error status", ["model", "status"], registry=r)
        self.memory = Counter("memproxy_memory_calls", "Model calls by memory outcome",
                              ["status"], registry=r)
        self.recall = Histogram("memproxy_memory_recall_seconds", "Memory searches on the "
                                "request path", buckets=OVERHEAD_BUCKETS + (2.5,), registry=r)
        self.outbox_failures = Counter("memproxy_outbox_delivery_failures",
                                       "Outbox deliveries that failed (retried later)",
                                       registry=r)
        self.outbox_depth = Gauge("memproxy_outbox_depth", "Memories waiting in the outbox",
                                  registry=r)
        self.sessions = Gauge("memproxy_active_sessions", "User sessions open", registry=r)
        self.listeners = Gauge("memproxy_listeners", "Project listeners by state", ["state"],
                               registry=r)

    def timed_store(self, store):
        """``store`` with its searches timed (the memory service's recall)."""
        return _TimedStore(store, self.recall)

    def count_failures(self, outbox) -> None:
        """Count the outbox's failed deliveries (it reports each through ``failed``)."""
        failed = outbox.failed

        async def counted(*args, **kwargs):
            self.outbox_failures.inc()
            return await failed(*args, **kwargs)
        outbox.failed = counted


class _TimedStore:
    def __init__(self, store, histogram: Histogram):
        self._store = store
        self._histogram = histogram

    async def search(self, *args, **kwargs):
        return await self._timed(self._store.search(*args, **kwargs))

    async def recall(self, *args, **kwargs):
        return await self._timed(self._store.recall(*args, **kwargs))

    async def _timed(self, searching):
        started = time.perf_counter()
        try:
            return await searching
        finally:
            self._histogram.observe(time.perf_counter() - started)

    def search_now(self, *args, **kwargs):
        started = time.perf_counter()
        found = self._store.search_now(*args, **kwargs)
        if found is not None:
            self._histogram.observe(time.perf_counter() - started)
        return found

    def __getattr__(self, name):
        return getattr(self._store, name)


async def _refresh(app: web.Application, metrics: Metrics) -> None:
    """Gauges read at scrape time."""
    memory = app[appkeys.MEMORY]
    outbox = getattr(memory, "outbox", None)
    if outbox is not None:
        metrics.outbox_depth.set(await outbox.count())
    sessions = app.get(appkeys.SESSIONS)
    metrics.sessions.set(len(sessions) if sessions is not None else 0)
    states = collections.Counter(item["state"] for item in app[appkeys.LISTENERS].status())
    for state in ("listening", "failed"):
        metrics.listeners.labels(state).set(states.get(state, 0))


async def scrape(request: web.Request) -> web.Response:
    """Gateway port only: the series name every project, and a project's port is that
    project's alone (its clients must not learn the others' names, models or traffic)."""
    if request.get(appkeys.PROJECT) is not None:
        raise ApiError(404, "/metrics is served on the gateway port only", "not_found")
    metrics = request.app[appkeys.METRICS]
    await _refresh(request.app, metrics)
    return web.Response(body=generate_latest(metrics.registry),
                        headers={"content-type": CONTENT_TYPE_LATEST})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/metrics", scrape)
