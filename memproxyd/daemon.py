"""The ``memproxyd`` entry point and the daemon's one lifecycle.

``serve(config, shutdown)`` runs until the ``shutdown`` awaitable completes (injected, so
tests never send signals); ``main`` wires it to SIGTERM/SIGINT (a second one forces exit) and
SIGHUP (reload). Shutdown is bounded and ordered: stop accepting, drain in-flight requests for
``shutdown_timeout`` seconds, then close memory (outbox flush) and sessions.

Exit codes: 0 clean stop, 2 invalid config or a port that cannot be bound.
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import socket
import sys
import time
from typing import Awaitable

import attrs
from aiohttp import web

from memproxyd import __version__, appkeys, logs
from memproxyd.addresses import is_loopback
from memproxyd.app import create_app, warm_up
from memproxyd.config import Config, ConfigError, find_config_path, load_config, resolve_secret
from memproxyd.errors import ApiError

log = logging.getLogger("memproxyd")
EXIT_OK, EXIT_CONFIG = 0, 2


class StartupError(Exception):
    """The daemon cannot start (port taken, unsafe bind); the message says why."""


def sd_notify(message: str) -> None:
    """systemd's readiness protocol (Type=notify); a no-op outside systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.sendto(message.encode(), address)
        except OSError as exc:
            log.warning("sd_notify failed error=%s", exc)


def check_bind_safety(config: Config) -> None:
    keys = [k for k in (resolve_secret(k) for k in config.auth.keys) if k]
    if not is_loopback(config.server.host) and not keys:
        raise StartupError(f"refusing to bind {config.server.host}: no [auth] keys are "
                           "configured; set keys or bind 127.0.0.1")


async def serve(config: Config, shutdown: Awaitable, *, on_ready=None,
                reload_path=None) -> int:
    check_bind_safety(config)
    started = time.perf_counter()
    app = create_app(config)
    # handler_cancellation: a client that disconnects cancels its handler, and so the
    # upstream call it is waiting on (aiohttp leaves handlers running by default)
    runner = web.AppRunner(app, handle_signals=False, access_log=None,
                           shutdown_timeout=config.server.shutdown_timeout,
                           handler_cancellation=True,
                           # from a connection's start or its last response to a request's
                           # whole headers (aiohttp closes a connection idle that long)
                           keepalive_timeout=config.server.idle_timeout)
    await runner.setup()
    try:
        site = web.TCPSite(runner, config.server.host, config.server.port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            raise StartupError(f"cannot listen on {config.server.host}:{config.server.port}: "
                               f"{exc.strerror or exc}") from None
        state = app[appkeys.STATE]
        state.gateway_ports.update(s.getsockname()[1] for s in site._server.sockets)
        if reload_path is not None:
            state.reload = lambda: reload(app, reload_path)
        await app[appkeys.LISTENERS].start(runner)
        log.info("memproxyd ready version=%s address=%s:%s seconds=%.3f", __version__,
                 config.server.host, sorted(state.gateway_ports)[0],
                 time.perf_counter() - started)
        sd_notify("READY=1")
        if on_ready is not None:
            on_ready(app)
        warm_up(config)
        await shutdown
        sd_notify("STOPPING=1")
        log.info("memproxyd stopping")
    finally:
        await app[appkeys.LISTENERS].close()
        await runner.cleanup()
    log.info("memproxyd stopped")
    return EXIT_OK


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="memproxyd", description="memory gateway daemon")
    parser.add_argument("--config", help="config file (default: $MEMPROXYD_CONFIG, "
                        "/etc/memproxyd/memproxyd.toml, the packaged default)")
    parser.add_argument("--check", action="store_true", help="validate the config and exit")
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING, ERROR")
    parser.add_argument("--log-format", choices=("json", "text"))
    parser.add_argument("--version", action="version", version=__version__)
    return parser.parse_args(argv)


# The daemon allocates much per request and keeps a large long-lived heap (the memory index):
# at CPython's defaults (700, 10, 10) the collector runs every few requests and rescans that
# heap often. Measured at concurrency 32 (scripts/bench.py's load): +5 % requests/s with
# memory off, +11 % with memory on. Cyclic garbage waits a little longer to be freed.
GC_THRESHOLDS = (20_000, 20, 20)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    path = find_config_path(args.config)
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(f"memproxyd: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.check:
        print(f"memproxyd: {path}: ok ({len(config.model_list)} models)")
        return EXIT_OK
    logs.configure(args.log_format or config.server.log_format,
                   args.log_level or config.server.log_level)
    os.umask(0o077)   # what the daemon creates (database, WAL, registry) is the owner's alone
    log.info("config loaded path=%s", path)
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        return asyncio.run(_run(config, path))
    except StartupError as exc:
        log.error("%s", exc)
        print(f"memproxyd: {exc}", file=sys.stderr)
        return EXIT_CONFIG


async def _run(config: Config, path) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    app_ref: list[web.Application] = []

    def on_stop_signal() -> None:
        if stop.is_set():
            log.warning("second stop signal: exiting now")
            os._exit(1)
        stop.set()

    reloads: set[asyncio.Task] = set()

    def on_hup() -> None:
        if app_ref:
            task = asyncio.create_task(_reload_from_signal(app_ref[0], path))
            reloads.add(task)
            task.add_done_callback(reloads.discard)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_stop_signal)
    loop.add_signal_handler(signal.SIGHUP, on_hup)
    return await serve(config, stop.wait(), on_ready=app_ref.append, reload_path=path)


# Read once at start; a reload reports a change to them as needing a restart.
RESTART_KEYS = (
    "server.host", "server.port", "server.state_dir", "server.max_body_bytes",
    "server.max_sessions", "server.session_idle_ttl", "server.shutdown_timeout",
    "server.idle_timeout", "server.log_format", "server.log_level", "memory.backend",
    "memory.embedding_model",
    "memory.extract_model",
    "supermemory", "postgres", "usage", "tracing",
)


def restart_needed(old: Config, new: Config) -> list[str]:
    def value(config: Config, key: str):
        for part in key.split("."):
            config = getattr(config, part)
        return config
    return [key for key in RESTART_KEYS if value(old, key) != value(new, key)]


async def reload(app: web.Application, path) -> dict:
    """Re-read the config and the registry (SIGHUP, ``memproxyctl reload``). A config that is
    invalid, or would leave a non-loopback listener without keys, changes nothing."""
    state = app[appkeys.STATE]
    async with state.reload_lock:
        try:
            config = load_config(path)
            restart = restart_needed(state.config, config)
            # listeners keep the address the daemon bound; the rest applies at once
            config = attrs.evolve(config, server=attrs.evolve(
                config.server, host=state.config.server.host, port=state.config.server.port))
            check_bind_safety(config)
        except (ConfigError, StartupError) as exc:
            log.error("reload refused: %s", exc)
            raise ApiError(400, f"reload refused: {exc}", "config_invalid") from None
        state.apply(config)
        await app[appkeys.LISTENERS].reconcile()
    if restart:
        log.warning("config reloaded; these keys apply after a restart: %s", ", ".join(restart))
    log.info("config reloaded path=%s", path)
    return {"reloaded": True, "needs_restart": restart}


async def _reload_from_signal(app: web.Application, path) -> None:
    try:
        await reload(app, path)
    except ApiError:
        pass   # already logged
    except Exception:
        log.exception("reload failed")
