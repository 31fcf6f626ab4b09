"""The application factory: the daemon and the tests build the same app from a ``Config``."""
from __future__ import annotations

from typing import AsyncIterator

from aiohttp import web

from memproxyd import admin, appkeys, gateway
from memproxyd.config import Config
from memproxyd.cookies import session_dir
from memproxyd.listeners import Listeners
from memproxyd.memory.service import NoMemory
from memproxyd.middleware import gateway_middleware
from memproxyd.sessions import SessionManager
from memproxyd.state import RuntimeState


def create_app(config: Config) -> web.Application:
    app = web.Application(client_max_size=config.server.max_body_bytes,
                          middlewares=[gateway_middleware])
    state = RuntimeState.from_config(config)
    app[appkeys.STATE] = state
    app[appkeys.LISTENERS] = Listeners(state)
    app[appkeys.MEMORY] = NoMemory()
    app.cleanup_ctx.append(_sessions_ctx)
    gateway.add_routes(app)
    admin.add_routes(app)
    return app


async def _sessions_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[appkeys.STATE].config
    sessions = SessionManager(max_sessions=config.server.max_sessions,
                              idle_ttl=config.server.session_idle_ttl,
                              cookie_dir=session_dir(config.state_dir))
    await sessions.start()
    app[appkeys.SESSIONS] = sessions
    yield
    await sessions.close()
