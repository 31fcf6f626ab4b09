"""The application factory: the daemon and the tests build the same app from a ``Config``.
The composition root: the one core module that imports every layer (``api/``, ``proxy/``,
``observe/``, ``memory/``) to put them together.

Resources are opened and closed in ``cleanup_ctx``, in order: sessions, then memory (store,
outbox, delivery worker). Teardown runs in reverse: the outbox is flushed while the sessions
it needs are still open.
"""
from __future__ import annotations

import asyncio
import logging
import os
from typing import AsyncIterator

from aiohttp import web

from memproxyd import appkeys
from memproxyd.api import (admin, anthropic, gemini, health, memories, openai, openapi,
                           responses, ui, usage)
from memproxyd.api.middleware import gateway_middleware, on_response_prepare
from memproxyd.config import Config
from memproxyd.cookies import session_dir
from memproxyd.listeners import Listeners
from memproxyd.memory.journal import Journal
from memproxyd.memory.service import MemoryService, NoMemory
from memproxyd.observe import metrics, record
from memproxyd.proxy import catalog, translate
from memproxyd.sessions import SessionManager
from memproxyd.state import RuntimeState

log = logging.getLogger(__name__)


def create_app(config: Config) -> web.Application:
    app = web.Application(client_max_size=config.server.max_body_bytes,
                          middlewares=[record.observe_middleware, gateway_middleware])
    app.on_response_prepare.append(on_response_prepare)
    state = RuntimeState.from_config(config)
    app[appkeys.STATE] = state
    app[appkeys.LISTENERS] = Listeners(state)
    app[appkeys.METRICS] = metrics.Metrics()
    app[appkeys.CATALOG] = catalog.Catalog()
    app.on_response_prepare.append(record.add_trace_header)
    app.cleanup_ctx.append(_sessions_ctx)
    if config.usage.enabled:
        app.cleanup_ctx.append(_ledger_ctx)
    if config.tracing.otlp_endpoint:
        app.cleanup_ctx.append(_spans_ctx)
    if config.memory.backend == "off":
        app[appkeys.MEMORY] = NoMemory()
    else:
        app.cleanup_ctx.append(_memory_ctx)
    health.add_routes(app)
    openai.add_routes(app)
    anthropic.add_routes(app)
    responses.add_routes(app)
    gemini.add_routes(app)
    memories.add_routes(app)
    admin.add_routes(app)
    openapi.add_routes(app)
    usage.add_routes(app)
    metrics.add_routes(app)
    ui.add_routes(app)
    return app


def warm_up(config: Config) -> None:
    """Once the daemon is ready: import litellm on a thread if the config will need it."""
    translate.preload(config)


async def _spans_ctx(app: web.Application) -> AsyncIterator[None]:
    from memproxyd.observe.otel import SpanExporter
    exporter = SpanExporter.create(app[appkeys.STATE].config.tracing)
    if exporter is not None:
        app[appkeys.SPANS] = exporter
    yield
    if exporter is not None:
        await asyncio.to_thread(exporter.close)   # flushes the last batch (blocking I/O)


async def _ledger_ctx(app: web.Application) -> AsyncIterator[None]:
    from memproxyd.observe.ledger import Ledger
    config = app[appkeys.STATE].config
    config.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    ledger = Ledger(config.state_dir / "usage.db", retention_days=config.usage.retention_days,
                    flush_seconds=config.usage.flush_seconds)
    await ledger.open()
    app[appkeys.LEDGER] = ledger
    yield
    await ledger.close()


async def _sessions_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[appkeys.STATE].config
    sessions = SessionManager(max_sessions=config.server.max_sessions,
                              idle_ttl=config.server.session_idle_ttl,
                              cookie_dir=session_dir(config.state_dir))
    await sessions.start()
    app[appkeys.SESSIONS] = sessions
    yield
    await sessions.close()


def _make_store(app: web.Application, db=None):
    config = app[appkeys.STATE].config
    if config.memory.backend == "supermemory":
        from memproxyd.memory.supermemory import SupermemoryStore
        return SupermemoryStore(config.supermemory)
    if config.memory.backend == "postgres":
        from memproxyd.memory.postgres.store import PostgresStore
        return PostgresStore(db, embedder=_embedder(app),
                             vector_weight=config.memory.vector_weight)
    from memproxyd.memory.sqlite.store import SqliteStore
    # searches in a process of their own, beside the event loop (search_worker.py)
    return SqliteStore(config.state_dir / "memory.db", embedder=_embedder(app),
                       search_process=True, vector_weight=config.memory.vector_weight)


def _make_outbox(config: Config, store, db=None):
    """The local outbox in the memory file; with postgres, the shared one in the database
    (the local file then holds what arrives while the database is unreachable). For the
    SQLite store with nothing to call before storing (no embedding or extract model),
    exchanges go straight into the store (``DirectOutbox``)."""
    from memproxyd.memory.outbox import DirectOutbox, Outbox
    memory = config.memory
    if memory.backend == "sqlite" and not memory.embedding_model and not memory.extract_model:
        return DirectOutbox(config.state_dir / "memory.db", store)
    local = Outbox(config.state_dir / "memory.db")
    if db is None:
        return local
    from memproxyd.memory.postgres.outbox import PostgresOutbox
    return PostgresOutbox(db, local, lease_seconds=config.postgres.outbox_lease_seconds)


def _embedder(app: web.Application):
    """Vectors through the ``embedding_model`` deployment, or None (lexical only)."""
    name = app[appkeys.STATE].config.memory.embedding_model
    if not name:
        return None

    async def embed(texts: list[str], session) -> list[list[float]]:
        deployment = app[appkeys.STATE].deployments.lookup(name)
        result = await translate.embed(deployment, session, {"input": texts})
        return [item["embedding"] for item in result["data"]]
    return embed


def _delivery_store(app: web.Application, store):
    """What the outbox worker writes to: the store, or with ``extract_model`` a wrapper that
    distils each turn into facts through that deployment (``memory/distill.py``)."""
    name = app[appkeys.STATE].config.memory.extract_model
    if not name:
        return store
    from memproxyd.memory.distill import DistillingStore

    async def complete(user_id: str, messages: list[dict], system: str, session) -> str:
        from memproxyd.proxy.internal_call import complete as model_call
        deployment = app[appkeys.STATE].deployments.lookup(name)
        return await model_call(deployment, session, messages, system=system)
    return DistillingStore(store, complete)


def make_private(state_dir) -> None:
    """The state dir (memories, outbox, registry, cookie jars) is the owner's alone: 0700,
    and its files 0600, also when an older version or another umask created them."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(state_dir, 0o700)
    for path in state_dir.iterdir():
        if path.is_file() and not path.is_symlink():
            os.chmod(path, 0o600)


def _make_journal(config: Config, db=None):
    """The injection journal's store: PostgreSQL when the memories are there (every gateway
    on the database shares it), else a SQLite file of its own in the state dir (the
    Supermemory backend too: the journal is this gateway's own). Not the memories' file:
    its writes would take that file's one write lock from the remembered exchanges."""
    if db is not None:
        from memproxyd.memory.postgres.journal import PgJournal
        return PgJournal(db)
    from memproxyd.memory.sqlite.journal import SqliteJournal
    return SqliteJournal(config.state_dir / "journal.db")


async def _memory_ctx(app: web.Application) -> AsyncIterator[None]:
    from memproxyd.memory.outbox import OutboxWorker
    config = app[appkeys.STATE].config
    make_private(config.state_dir)
    sessions = app[appkeys.SESSIONS]
    db = None
    if config.memory.backend == "postgres":
        from memproxyd.memory.postgres.db import PgDatabase
        db = PgDatabase(config.postgres)
        await db.open()            # an unreachable server is a state, not a startup failure
    store = _make_store(app, db)
    outbox = _make_outbox(config, store, db)
    journal = _make_journal(config, db)
    await store.open()
    await outbox.open()
    await journal.open()
    delivery = _delivery_store(app, store)
    worker = OutboxWorker(outbox, lambda: delivery, sessions,
                          retry_max_seconds=config.memory.outbox_retry_max_seconds)
    await worker.start()
    watch = app[appkeys.METRICS]   # recall latency, failed deliveries (metrics.py)
    watch.count_failures(outbox)
    app[appkeys.MEMORY] = MemoryService(app[appkeys.STATE], watch.timed_store(store), outbox,
                                        sessions, Journal(journal))
    yield
    left = await worker.flush(config.server.shutdown_timeout)
    if left:
        log.warning("outbox not empty at shutdown entries=%d (delivered at next start)", left)
    await worker.close()
    await journal.close()
    await outbox.close()
    await store.close()
    if db is not None:
        await db.close()
