"""Typed application and request keys, declared in one place."""
from __future__ import annotations

from aiohttp import web

from memproxyd.state import RuntimeState

STATE = web.AppKey("state", RuntimeState)
SESSIONS = web.AppKey("sessions", object)    # sessions.SessionManager
MEMORY = web.AppKey("memory", object)        # memory.service.MemoryService | NoMemory
LISTENERS = web.AppKey("listeners", object)  # listeners.Listeners
METRICS = web.AppKey("metrics", object)    # metrics.Metrics
LEDGER = web.AppKey("ledger", object)      # ledger.Ledger (absent with [usage] enabled = false)
SPANS = web.AppKey("spans", object)        # otel.SpanExporter (only with [tracing] set up)
CATALOG = web.AppKey("catalog", object)    # proxy.catalog.Catalog: upstream model lists

# request keys, set by the gateway middleware (api/middleware.py) on every request
USER_ID = web.RequestKey("user_id", str)
STARTED = web.RequestKey("started", float)   # perf_counter when the request reached us
PROJECT = web.RequestKey("project", object)   # str | None
PREPARED = web.RequestKey("prepared", web.StreamResponse)   # headers already sent
