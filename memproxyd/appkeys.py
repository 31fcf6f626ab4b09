"""Typed application keys, declared in one place."""
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
