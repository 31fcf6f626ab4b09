"""A fake Supermemory v5 API behind a fake Cloudflare, as a real aiohttp app.

It answers the requests the pinned ``supermemory==5.0.1`` SDK sends (``/ns/{namespace}/...``)
with the response shapes the SDK parses, keeps documents per namespace, and records every
request. Like Cloudflare it hands each client a ``cf_clearance`` cookie and challenges (403 +
HTML page) a request that carries another client's (or an unknown) cookie, and a cookie-less
request from a client that has presented its cookie before. Until a client has presented its
cookie once, its cookie-less requests pass: its first concurrent requests cannot have it yet.
Every response, a 403 included, sets the client's cookie (a solved challenge).

**Client identification.** Cloudflare tells clients apart by IP and TLS fingerprint, which a
loopback test cannot vary. The fake's client is, first match wins: the ``x-fake-client``
header (a test sets it on a user's ``httpx.AsyncClient.headers``); the ``x-sm-user-id`` header
(Memory Router calls); the namespace in the path (so a daemon under test needs no plumbing:
one user = one namespace = one client); the API key.

    async with serve_fake_supermemory() as fake:
        client = AsyncSupermemory(api_key=fake.api_key, base_url=fake.url, http_client=...)
        await client.add("ns-a", content="hello", id="k1")
        assert fake.state.documents["ns-a"]["k1"]["content"] == "hello"

Fault modes, switched on ``fake.state``: ``down`` (503 HTML page + ``Retry-After``),
``rate_limited`` (429 JSON + ``Retry-After``), ``delay`` (seconds before answering).
"""
from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import time
from typing import Any, AsyncIterator

import attrs
from aiohttp import web

CLIENT_HEADER = "x-fake-client"
COOKIE = "cf_clearance"
NAMESPACE_RE = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
CHALLENGE_PAGE = ("<!DOCTYPE html><html><head><title>Just a moment...</title></head>"
                  "<body>Checking your browser before accessing api.supermemory.ai."
                  "</body></html>")
DOWN_PAGE = ("<!DOCTYPE html><html><head><title>api.supermemory.ai | 503: Service "
             "unavailable</title></head><body>Error 503 Ray ID: 8f00fake</body></html>")


@attrs.define
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    json: Any
    client: str
    cookie: str | None
    status: int = 0


@attrs.define
class FakeState:
    api_keys: set[str] = attrs.field(factory=lambda: {"sm-test-key"})
    documents: dict[str, dict[str, dict]] = attrs.field(factory=dict)   # namespace → id → doc
    requests: list[Recorded] = attrs.field(factory=list)
    clearance: dict[str, str] = attrs.field(factory=dict)               # client → cookie value
    presented: set[str] = attrs.field(factory=set)     # clients that sent their cookie back
    cookie_max_age: int = 3600
    down: bool = False
    rate_limited: bool = False
    retry_after: int = 7
    delay: float = 0.0

    def paths(self, prefix: str = "") -> list[str]:
        return [r.path for r in self.requests if r.path.startswith(prefix)]

    def challenged(self) -> list[Recorded]:
        return [r for r in self.requests if r.status == 403]


STATE = web.AppKey("fake_supermemory_state", FakeState)
BODY = web.RequestKey("fake_supermemory_body", object)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


# -- Cloudflare ---------------------------------------------------------------------------

def _client_of(request: web.Request) -> str:
    for header in (CLIENT_HEADER, "x-sm-user-id"):
        if request.headers.get(header):
            return request.headers[header]
    if "namespace" in request.match_info:
        return "ns:" + request.match_info["namespace"]
    return "key:" + request.headers.get("Authorization", "").removeprefix("Bearer ")


def _challenge(state: FakeState, client: str, cookie: str | None) -> bool:
    """True when Cloudflare would block: someone else's (or an unknown) cookie, or no cookie
    from a client that has sent its own before."""
    mine = state.clearance.setdefault(client, f"{client}.{secrets.token_hex(8)}")
    if cookie == mine:
        state.presented.add(client)
        return False
    return cookie is not None or client in state.presented


def _fault(state: FakeState) -> web.Response | None:
    headers = {"Retry-After": str(state.retry_after)}
    if state.down:
        return web.Response(status=503, text=DOWN_PAGE, content_type="text/html",
                            headers=headers)
    if state.rate_limited:
        return web.json_response({"error": "Too many requests"}, status=429, headers=headers)
    return None


@web.middleware
async def cloudflare(request: web.Request, handler) -> web.StreamResponse:
    state = request.app[STATE]
    body = await request.json() if request.can_read_body else None
    client, cookie = _client_of(request), request.cookies.get(COOKIE)
    record = Recorded(request.method, request.path, dict(request.headers), body, client, cookie)
    state.requests.append(record)
    if state.delay:
        await asyncio.sleep(state.delay)
    if _challenge(state, client, cookie):
        response = web.Response(status=403, text=CHALLENGE_PAGE, content_type="text/html")
    else:
        response = _fault(state) or await _api(request, handler, body)
    response.set_cookie(COOKIE, state.clearance[client], max_age=state.cookie_max_age,
                        path="/", httponly=True)
    record.status = response.status
    return response


async def _api(request: web.Request, handler, body: Any) -> web.StreamResponse:
    state = request.app[STATE]
    auth = request.headers.get("Authorization", "")
    if not auth.startswith("Bearer ") or auth[7:] not in state.api_keys:
        return _error(401, "Unauthorized")
    namespace = request.match_info.get("namespace")
    if namespace is not None and not NAMESPACE_RE.match(namespace):
        return _error(400, f"Invalid namespace: {namespace!r}")
    request[BODY] = body
    return await handler(request)


# -- documents ----------------------------------------------------------------------------

def _docs(request: web.Request) -> dict[str, dict]:
    return request.app[STATE].documents.setdefault(request.match_info["namespace"], {})


def _ingest(docs: dict[str, dict], item: dict) -> dict:
    """Store or append one document; an unchanged duplicate is a no-op ("done")."""
    content = item.get("content")
    if not isinstance(content, str) or not content:
        raise ValueError("content is required")
    doc_id = item.get("id") or "doc_" + secrets.token_hex(8)
    doc = docs.get(doc_id)
    if doc is not None and content in doc["content"]:
        return {"id": doc_id, "status": "done"}
    if doc is None:
        docs[doc_id] = doc = {"id": doc_id, "content": "", "metadata": {},
                              "createdAt": _now(), "seq": time.monotonic_ns()}
    doc["content"] = f"{doc['content']}\n{content}" if doc["content"] else content
    doc["metadata"].update(item.get("metadata") or {})
    doc["updatedAt"] = _now()
    return {"id": doc_id, "status": "queued"}


def _system(doc: dict) -> dict:
    return {"status": "done", "dreamingStatus": "done",
            "createdAt": doc["createdAt"], "updatedAt": doc["updatedAt"]}


def _document(doc: dict, content: bool = True) -> dict:
    out = {"id": doc["id"], "title": None, "type": "text", "summary": None,
           "metadata": doc["metadata"], "system": _system(doc)}
    if content:
        out["content"] = doc["content"]
    return out


async def add_document(request: web.Request) -> web.Response:
    try:
        return web.json_response(_ingest(_docs(request), request[BODY] or {}))
    except ValueError as exc:
        return _error(400, str(exc))


async def batch_add(request: web.Request) -> web.Response:
    docs, results, failed = _docs(request), [], []
    for item in (request[BODY] or {}).get("documents", []):
        try:
            results.append(_ingest(docs, item))
        except ValueError as exc:
            failed.append({"id": item.get("id") or "", "status": "error", "error": str(exc)})
    return web.json_response({"results": results + failed, "count": len(results),
                              "failed": len(failed)})


async def get_document(request: web.Request) -> web.Response:
    doc = _docs(request).get(request.match_info["id"])
    if doc is None:
        return _error(404, "Document not found")
    return web.json_response(_document(doc))


async def delete_documents(request: web.Request) -> web.Response:
    docs, count, errors = _docs(request), 0, []
    for doc_id in (request[BODY] or {}).get("ids", []):
        if docs.pop(doc_id, None) is None:
            errors.append({"id": doc_id, "error": "Document not found"})
        else:
            count += 1
    return web.json_response({"count": count, "errors": errors})


# -- memories, search, list, namespaces ---------------------------------------------------
# Each document yields one memory ("m_<doc id>") and one chunk ("c_<doc id>").

async def forget_memories(request: web.Request) -> web.Response:
    docs, matches, errors = _docs(request), [], []
    for mem_id in (request[BODY] or {}).get("ids", []):
        doc = docs.pop(mem_id.removeprefix("m_"), None) if mem_id.startswith("m_") else None
        if doc is None:
            errors.append({"id": mem_id, "error": "Memory not found"})
        else:
            matches.append({"id": mem_id, "memory": doc["content"]})
    return web.json_response({"count": len(matches), "errors": errors, "matches": matches})


def _score(query: str, content: str) -> float:
    words = set(re.findall(r"\w+", query.lower()))
    found = set(re.findall(r"\w+", content.lower()))
    return len(words & found) / len(words) if words else 0.0


def _result(doc: dict, score: float, mode: str) -> dict:
    chunk = mode == "chunks"
    return {"id": ("c_" if chunk else "m_") + doc["id"],
            "memory": None if chunk else doc["content"],
            "chunk": doc["content"] if chunk else None,
            "metadata": doc["metadata"], "similarity": round(score, 4),
            "isLatest": True, "isInference": False,
            "system": {"createdAt": doc["createdAt"], "updatedAt": doc["updatedAt"]}}


async def search(request: web.Request) -> web.Response:
    body = request[BODY] or {}
    if not body.get("query"):
        return _error(400, "query is required")
    threshold, limit = body.get("threshold") or 0.0, body.get("limit") or 10
    scored = [(_score(body["query"], d["content"]), d) for d in _docs(request).values()]
    hits = sorted((s for s in scored if s[0] > 0 and s[0] >= threshold),
                  key=lambda s: s[0], reverse=True)[:limit]
    mode = body.get("searchMode") or "hybrid"
    return web.json_response({"results": [_result(d, s, mode) for s, d in hits],
                              "searchTime": 1.5})


async def list_resources(request: web.Request) -> web.Response:
    kind = request.match_info["type"]
    page, limit = int(request.query.get("page", 1)), int(request.query.get("limit", 10))
    reverse = request.query.get("order", "desc") == "desc"
    docs = sorted(_docs(request).values(), key=lambda d: d["seq"], reverse=reverse)
    window = docs[(page - 1) * limit: page * limit]
    include = (request[BODY] or {}).get("include") or {}
    out = {"documents": [], "chunks": [], "memories": []}
    if kind == "documents":
        out["documents"] = [_document(d, bool(include.get("content"))) for d in window]
    elif kind == "memories":
        out["memories"] = [{"id": "m_" + d["id"], "memory": d["content"], "metadata": {},
                            "isStatic": False, "isInference": False, "isLatest": True,
                            "isForgotten": False, "version": 1,
                            "system": {"createdAt": d["createdAt"],
                                       "updatedAt": d["updatedAt"]}} for d in window]
    else:
        return _error(400, f"Unsupported list type: {kind}")
    pages = max(1, -(-len(docs) // limit))
    out["pagination"] = {"currentPage": page, "limit": limit, "totalItems": len(docs),
                         "totalPages": pages}
    return web.json_response(out)


async def delete_namespace(request: web.Request) -> web.Response:
    namespace = request.match_info["namespace"]
    docs = request.app[STATE].documents.pop(namespace, {})
    return web.json_response({"status": "deleted", "namespace": namespace,
                              "deletedDocumentsCount": len(docs),
                              "deletedMemoriesCount": len(docs)})


def create_fake_supermemory(state: FakeState | None = None) -> web.Application:
    app = web.Application(middlewares=[cloudflare])
    app[STATE] = state or FakeState()
    ns = "/ns/{namespace}"
    app.router.add_post(f"{ns}/document", add_document)
    app.router.add_post(f"{ns}/document/batch", batch_add)
    app.router.add_get(f"{ns}/document/{{id}}", get_document)
    app.router.add_delete(f"{ns}/document", delete_documents)
    app.router.add_delete(f"{ns}/memories", forget_memories)
    app.router.add_post(f"{ns}/search", search)
    app.router.add_post(f"{ns}/list/{{type}}", list_resources)
    app.router.add_delete(ns, delete_namespace)
    return app


@attrs.frozen
class FakeServer:
    url: str
    state: FakeState
    api_key: str


@contextlib.asynccontextmanager
async def serve_fake_supermemory(state: FakeState | None = None) -> AsyncIterator[FakeServer]:
    """Run the fake on 127.0.0.1, port 0; yields its base URL and state."""
    app = create_fake_supermemory(state)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield FakeServer(f"http://127.0.0.1:{port}", app[STATE], next(iter(app[STATE].api_keys)))
    finally:
        await runner.cleanup()
