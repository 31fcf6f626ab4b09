"""``GET /v1/usage``: the usage ledger, summed.

    GET /v1/usage?since=7d&by=model&project=alpha     → {"since", "by", "groups": [...]}
    GET /v1/usage?rows=50                              → also the newest 50 rows

Each group: calls, errors, prompt/completion/cached (cache read)/cache_write tokens, cost_usd, latency_p50_ms,
latency_p95_ms. ``by``: ``model`` (default), ``project`` or ``day`` (UTC), or several of
them comma-separated (``day,model``: one group per day and model). ``since``: a
duration (``90m``, ``24h``, ``7d``, ``2w``) or unix seconds; default 7 days.

Who sees what: admins (the gateway port from a loopback peer, or ``x-admin-key``) see every
project and may filter with ``project``; everyone else sees their own user id only, the
project of a project port included.
"""
from __future__ import annotations

import math
import re
import time

from aiohttp import web

from memproxyd import appkeys
from memproxyd.addresses import is_loopback
from memproxyd.api.middleware import local_port
from memproxyd.appkeys import PROJECT, USER_ID
from memproxyd.auth import ADMIN_KEY_HEADER, key_matches
from memproxyd.errors import ApiError
from memproxyd.observe.ledger import GROUPS

DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
DEFAULT_SINCE = "7d"
MAX_ROWS = 1000


def parse_since(value: str, now: float | None = None) -> float:
    """``7d`` → unix seconds seven days ago; a plain number is unix seconds already."""
    now = time.time() if now is None else now
    match = DURATION.fullmatch(value.strip())
    if match:
        return now - float(match.group(1)) * UNIT_SECONDS[match.group(2)]
    try:
        since = float(value)
        if not math.isfinite(since):
            raise ValueError(value)
        return since
    except ValueError:
        raise ApiError(400, "'since' expected a duration such as 24h or 7d, or unix seconds",
                       "invalid_since") from None


def is_admin(request: web.Request) -> bool:
    state = request.app[appkeys.STATE]
    if request.get(PROJECT) or local_port(request) not in state.gateway_ports:
        return False
    return (is_loopback(request.remote)
            or key_matches(request.headers.get(ADMIN_KEY_HEADER), state.guard.admin_keys))


def _rows_limit(request: web.Request) -> int:
    raw = request.query.get("rows", "0")
    if not (raw.isascii() and raw.isdigit()):     # "²" is a digit to str.isdigit
        raise ApiError(400, "'rows' expected a non-negative integer", "invalid_rows")
    return min(int(raw), MAX_ROWS)


async def get_usage(request: web.Request) -> web.Response:
    ledger = request.app.get(appkeys.LEDGER)
    if ledger is None:
        raise ApiError(404, "the usage ledger is off ([usage] enabled = false)", "usage_off")
    by = request.query.get("by", "model")
    names = tuple(by.split(","))
    if len(set(names)) != len(names) or not set(names) <= set(GROUPS):
        raise ApiError(400, f"'by' expected one or more of {', '.join(GROUPS)}, "
                            "comma-separated", "invalid_by")
    since = parse_since(request.query.get("since", DEFAULT_SINCE))
    user_id = request.query.get("project") if is_admin(request) else request[USER_ID]
    body = {"since": since, "by": by, "project": user_id,
            "groups": await ledger.summary(since=since, by=names, user_id=user_id)}
    limit = _rows_limit(request)
    if limit:
        body["rows"] = await ledger.rows(since=since, user_id=user_id, limit=limit)
    return web.json_response(body)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/usage", get_usage)
