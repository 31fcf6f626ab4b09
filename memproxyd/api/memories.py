"""The memory HTTP API: the same auth as the gateway; on a project port ``user_id`` is the
project and naming another one is refused (403).

    POST   /v1/memories               {"user_id", "content", "metadata"?, "created_at"?, "key"?}
                                      or {"user_id", "memories": [{"content", ...}]}
                                      → 201 {"data": [memory]}
                                      created_at: when it happened (ISO 8601, default now);
                                      key: an item whose key the user has stored already
                                      is not stored again (the stored one is returned)
    POST   /v1/memories/search        {"user_id", "query", "limit"?} → {"results": [...]}
    GET    /v1/memories?user_id=&limit=&cursor=   → {"data": [...], "next_cursor", "total"}
    GET    /v1/memories/{id}?user_id=             → memory
    PATCH  /v1/memories/{id}          {"user_id", "content"?, "metadata"?, "pinned"?} → memory
                                      (re-indexed at once; metadata replaced as a whole)
    POST   /v1/memories/{id}/promote  {"user_id"} → the memory, now in the personal scope
    GET    /v1/memories/injections?user_id=&conversation=|trace_id=
                                      → {"data": [turn]}: each turn's block and its memories
    DELETE /v1/memories/{id}?user_id=             → {"deleted": true}
    DELETE /v1/memories?user_id=&all=true         → {"deleted": N}  (also drops the user's
                                                     exchanges not yet delivered)

Every route takes ``scope``: ``project`` (the default: the user id's own memories) or
``personal`` (the ``[memory] personal`` user id's, reachable from every project port, since
every project's blocks show them). A memory is returned with ``pinned`` and its ``scope``;
a new one may be ``pinned`` too.

Bad input (missing user id, empty or oversized content, limit out of range, a cursor the
store did not hand out, unknown id, another user's id, a personal scope not configured) is a
4xx with a clear message, and nothing is written.
"""
from __future__ import annotations

import datetime
import json
import time
from typing import Any

import attrs
from aiohttp import web

from memproxyd import appkeys
from memproxyd.api.validate import read_json
from memproxyd.appkeys import PROJECT
from memproxyd.errors import ApiError
from memproxyd.identity import validate_user_id
from memproxyd.memory.base import InvalidCursor, MemoryError_, NewMemory, NotSupported, RetryLater
from memproxyd.memory.redact import redact, redact_value
from memproxyd.memory.scopes import NoPersonalScope

MAX_BATCH = 1000
MAX_SEARCH_LIMIT = 100
MAX_LIST_LIMIT = 1000
MAX_QUERY_CHARS = 10_000        # a search string; recall itself uses [memory] max_query_chars
MAX_METADATA_BYTES = 16_384     # one memory's metadata, as JSON
MAX_KEY_CHARS = 200             # an item's idempotency key
FUTURE_SLACK = 86_400           # seconds: a created_at this far ahead is a clock, not a typo


SCOPES = ("project", "personal")


def _owner(request: web.Request, given: Any, scope: Any) -> str:
    """The user id a call acts on: ``_user_id``'s, or with ``scope: personal`` the personal
    scope's (on any port: its memories are in every project's blocks)."""
    if scope in (None, "", "project"):
        return _user_id(request, given)
    if scope not in SCOPES:
        raise ApiError(400, "'scope' must be 'project' or 'personal'", "invalid_scope")
    personal = _service(request).scopes.personal()
    if personal is None:
        raise ApiError(409, "no personal scope: set [memory] personal to a user id that is "
                       "not a project's name", "no_personal_scope")
    return personal


def _json(request: web.Request, memory, with_score: bool = False) -> dict[str, Any]:
    personal = _service(request).scopes.personal()
    return {**memory.to_json(with_score),
            "scope": "personal" if memory.user_id == personal else "project"}


def _user_id(request: web.Request, given: Any) -> str:
    project = request[PROJECT]
    if project is not None:
        if given not in (None, "", project):
            raise ApiError(403, f"this port serves project {project!r} only", "wrong_user_id")
        return project
    if not given:
        raise ApiError(400, "'user_id' is required", "missing_user_id")
    return validate_user_id(given)


def _limit(value: Any, default: int, maximum: int) -> int:
    if value is None or value == "":
        return default
    try:
        limit = int(value)
    except (TypeError, ValueError):
        limit = 0
    if isinstance(value, bool) or not 1 <= limit <= maximum:
        raise ApiError(400, f"'limit' must be an integer from 1 to {maximum}", "invalid_limit")
    return limit


def _new_memory(item: Any, max_chars: int, redact_secrets: bool) -> NewMemory:
    if not isinstance(item, dict):
        raise ApiError(400, "each memory must be an object with 'content'", "invalid_memory")
    content = _content(item.get("content"), max_chars, redact_secrets)
    return NewMemory(content, _metadata(item.get("metadata", {}), redact_secrets),
                     _key(item.get("key")), _created_at(item.get("created_at")),
                     pinned=_pinned(item.get("pinned", False)))


def _content(content: Any, max_chars: int, redact_secrets: bool) -> str:
    """Checked content, secrets redacted as on every store path."""
    if not isinstance(content, str) or not content.strip():
        raise ApiError(400, "'content' must be a non-empty string", "empty_content")
    if len(content) > max_chars:
        raise ApiError(400, f"'content' is longer than {max_chars} characters",
                       "content_too_long")
    return redact(content) if redact_secrets else content


def _metadata(metadata: Any, redact_secrets: bool) -> dict:
    """Checked metadata; stored and shown like content, so redacted alike."""
    if not isinstance(metadata, dict):
        raise ApiError(400, "'metadata' must be an object", "invalid_metadata")
    if len(json.dumps(metadata)) > MAX_METADATA_BYTES:
        raise ApiError(400, f"'metadata' is larger than {MAX_METADATA_BYTES} bytes as JSON",
                       "metadata_too_large")
    return redact_value(metadata) if redact_secrets else metadata


def _pinned(pinned: Any) -> bool:
    if not isinstance(pinned, bool):
        raise ApiError(400, "'pinned' must be true or false", "invalid_pinned")
    return pinned


def _created_at(value: Any) -> float | None:
    """Unix seconds of an item's ``created_at``: ISO 8601 (``2026-05-01T09:30:00Z``, an
    offset, or none: UTC), from 1970 to a day ahead; None when not given."""
    if value is None:
        return None
    try:
        parsed = datetime.datetime.fromisoformat(value) if isinstance(value, str) else None
        if parsed is not None and parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=datetime.timezone.utc)
        at = parsed.timestamp() if parsed is not None else None
    except (ValueError, OverflowError):      # (year 1 with an offset: before datetime's min)
        at = None
    if at is None:
        raise ApiError(400, "'created_at' must be an ISO 8601 time such as "
                       "2026-05-01T09:30:00Z", "invalid_created_at")
    if not 0 <= at <= time.time() + FUTURE_SLACK:
        raise ApiError(400, "'created_at' must be from 1970 up to now", "invalid_created_at")
    return at


def _key(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_KEY_CHARS:
        raise ApiError(400, f"'key' must be a non-empty string of at most {MAX_KEY_CHARS} "
                       "characters", "invalid_key")
    return value


def _store(request: web.Request):
    store = getattr(request.app[appkeys.MEMORY], "store", None)
    if store is None:
        raise ApiError(404, "memory is off ([memory] backend = \"off\")", "memory_off")
    return store


async def _call(request: web.Request, method: str, user_id: str, *args):
    """``store.<method>(user_id, *args, session=...)`` with backend errors as API errors."""
    return await _run(request, user_id, getattr(_store(request), method), *args)


async def _run(request: web.Request, user_id: str, operation, *args):
    async with request.app[appkeys.SESSIONS].lease(user_id) as session:
        try:
            return await operation(user_id, *args, session=session)
        except InvalidCursor:
            raise ApiError(400, "invalid 'cursor'", "invalid_cursor") from None
        except NoPersonalScope as exc:
            raise ApiError(409, str(exc), "no_personal_scope") from None
        except NotSupported as exc:
            raise ApiError(501, str(exc), "not_supported") from None
        except RetryLater as exc:
            raise ApiError(503, f"memory backend unavailable: {exc}", "backend_unavailable",
                           ) from None
        except MemoryError_ as exc:
            raise ApiError(502, f"memory backend failed: {exc}", "backend_error") from None


async def add(request: web.Request) -> web.Response:
    body = await read_json(request)
    user_id = _owner(request, body.get("user_id"), body.get("scope"))
    config = request.app[appkeys.STATE].config.memory
    raw = body["memories"] if "memories" in body else [body]
    if not isinstance(raw, list) or not raw or len(raw) > MAX_BATCH:
        raise ApiError(400, f"'memories' must be a list of 1 to {MAX_BATCH} items",
                       "invalid_memories")
    items = [_new_memory(item, config.max_content_chars, config.redact_secrets) for item in raw]
    created = await _call(request, "add_many", user_id, items)
    if any(item.pinned for item in items):
        _service(request).scopes.changed(user_id)
    return web.json_response({"data": [_json(request, m) for m in created]}, status=201)


async def search(request: web.Request) -> web.Response:
    body = await read_json(request)
    user_id = _owner(request, body.get("user_id"), body.get("scope"))
    query = body.get("query")
    if not isinstance(query, str) or not query.strip():
        raise ApiError(400, "'query' must be a non-empty string", "empty_query")
    if len(query) > MAX_QUERY_CHARS:
        raise ApiError(400, f"'query' is longer than {MAX_QUERY_CHARS} characters",
                       "query_too_long")
    limit = _limit(body.get("limit"), 10, MAX_SEARCH_LIMIT)
    found = await _call(request, "search", user_id, query, limit)
    # a search index knows texts, not pins: they are marked from the user's pins
    pins = {m.id for m in await _run(request, user_id, _service(request).scopes.pins)}
    return web.json_response({"results": [
        {k: v for k, v in _json(request, attrs.evolve(m, pinned=m.id in pins), True).items()
         if k != "user_id"} for m in found]})


def _query_owner(request: web.Request) -> str:
    return _owner(request, request.query.get("user_id"), request.query.get("scope"))


async def list_memories(request: web.Request) -> web.Response:
    user_id = _query_owner(request)
    limit = _limit(request.query.get("limit"), 100, MAX_LIST_LIMIT)
    page, cursor = await _call(request, "list", user_id, limit,
                               request.query.get("cursor") or None)
    total = await _call(request, "count", user_id)
    return web.json_response({"data": [_json(request, m) for m in page], "next_cursor": cursor,
                              "total": total})


async def get(request: web.Request) -> web.Response:
    user_id = _query_owner(request)
    memory = await _call(request, "get", user_id, request.match_info["id"])
    if memory is None:
        raise _not_found(request)
    return web.json_response(_json(request, memory))


def _not_found(request: web.Request) -> ApiError:
    return ApiError(404, f"no memory {request.match_info['id']!r} for this user",
                    "memory_not_found")


async def edit(request: web.Request) -> web.Response:
    """PATCH: what is given of content, metadata and pinned changes; nothing else does."""
    body = await read_json(request)
    user_id = _owner(request, body.get("user_id"), body.get("scope"))
    config = request.app[appkeys.STATE].config.memory
    changes: dict[str, Any] = {}
    if "content" in body:
        changes["content"] = _content(body["content"], config.max_content_chars,
                                      config.redact_secrets)
    if "metadata" in body:
        changes["metadata"] = _metadata(body["metadata"], config.redact_secrets)
    if "pinned" in body:
        changes["pinned"] = _pinned(body["pinned"])
    if not changes:
        raise ApiError(400, "give at least one of 'content', 'metadata', 'pinned'",
                       "nothing_to_change")
    memory = await _run(request, user_id, _edit(request, changes), request.match_info["id"])
    if memory is None:
        raise _not_found(request)
    return web.json_response(_json(request, memory))


def _edit(request: web.Request, changes: dict):
    service = _service(request)

    async def edit_one(user_id: str, memory_id: str, session=None):
        return await service.update(user_id, memory_id, session, **changes)
    return edit_one


async def promote(request: web.Request) -> web.Response:
    """Move one memory of a project (or user) to the personal scope: same id, text, time."""
    body = await read_json(request)
    user_id = _user_id(request, body.get("user_id"))
    memory = await _run(request, user_id, _service(request).promote, request.match_info["id"])
    if memory is None:
        raise _not_found(request)
    return web.json_response(_json(request, memory))


def _service(request: web.Request):
    _store(request)                      # 404 when memory is off
    return request.app[appkeys.MEMORY]


async def delete(request: web.Request) -> web.Response:
    user_id = _query_owner(request)
    # The service, not the store: it also drops the turns whose block showed the memory.
    if not await _run(request, user_id, _service(request).delete, request.match_info["id"]):
        raise ApiError(404, f"no memory {request.match_info['id']!r} for this user",
                       "memory_not_found")
    return web.json_response({"deleted": True})


async def injections(request: web.Request) -> web.Response:
    """Why a block was injected: ``?conversation=KEY`` (every turn) or ``?trace_id=ID`` (the
    conversation of the call that recalled a turn, that turn marked ``this_call``)."""
    user_id = _user_id(request, request.query.get("user_id"))
    conversation = request.query.get("conversation") or None
    trace_id = request.query.get("trace_id") or None
    if conversation is None and trace_id is None:
        raise ApiError(400, "give 'conversation' or 'trace_id'", "missing_conversation")
    found = await _run(request, user_id, _journal_lookup(request), conversation, trace_id)
    return web.json_response({"data": found})


def _journal_lookup(request: web.Request):
    service = _service(request)

    async def lookup(user_id: str, conversation, trace_id, session=None):
        return await service.injections(user_id, conversation=conversation,
                                        trace_id=trace_id, session=session)
    return lookup


async def forget_all(request: web.Request) -> web.Response:
    user_id = _user_id(request, request.query.get("user_id"))
    if request.query.get("all") != "true":
        raise ApiError(400, "deleting every memory of a user needs all=true", "confirm_all")
    _store(request)                      # 404 when memory is off
    # The service, not the store: it also drops the user's exchanges still in the outbox.
    memory = request.app[appkeys.MEMORY]
    return web.json_response({"deleted": await _run(request, user_id, memory.forget_all)})


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/memories", add)
    app.router.add_post("/v1/memories/search", search)
    app.router.add_get("/v1/memories", list_memories)
    app.router.add_delete("/v1/memories", forget_all)
    app.router.add_get("/v1/memories/injections", injections)
    app.router.add_get("/v1/memories/{id}", get)
    app.router.add_patch("/v1/memories/{id}", edit)
    app.router.add_delete("/v1/memories/{id}", delete)
    app.router.add_post("/v1/memories/{id}/promote", promote)
