"""The OpenAPI 3.1 document of the gateway, memory and admin APIs, served at ``/openapi.json``.

Hand-kept, and tested to match the routes both ways (``tests/test_openapi.py``): every
operation here resolves to a route, every route is described here. Request bodies describe
what ``validate.py`` checks; unknown fields are allowed, as they pass through.
"""
from __future__ import annotations

from aiohttp import web

from memproxyd import __version__

OBJ = {"type": "object"}
ANY_OBJECT = {"type": "object", "additionalProperties": True}
USER_ID = {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._@:-]{0,127}$"}
PART = {"type": "object", "required": ["type"], "properties": {"type": {"type": "string"}}}
TEXT_OR_PARTS = {"anyOf": [{"type": "string"}, {"type": "array", "items": PART}]}


def _body(required: list[str], properties: dict) -> dict:
    return {"type": "object", "required": required, "properties": properties,
            "additionalProperties": True}


CHAT = _body(["model", "messages"], {
    "model": {"type": "string"},
    "messages": {"type": "array", "minItems": 1, "maxItems": 10000, "items": _body(["role"], {
        # known: system developer user assistant tool function; others go to the upstream
        "role": {"type": "string"},
        "content": TEXT_OR_PARTS, "name": {"type": "string"}})},
    "stream": {"type": "boolean"}, "max_tokens": {"type": "integer", "minimum": 1},
    "temperature": {"type": "number"}, "tools": {"type": "array", "items": OBJ}})
MESSAGES = _body(["model", "messages", "max_tokens"], {
    "model": {"type": "string"}, "max_tokens": {"type": "integer", "minimum": 1},
    "messages": {"type": "array", "minItems": 1, "items": _body(["role", "content"], {
        # user, assistant, and system (Claude Code's default model); others go upstream
        "role": {"type": "string"}, "content": TEXT_OR_PARTS})},
    "system": TEXT_OR_PARTS, "stream": {"type": "boolean"}})
COUNT_TOKENS = {**MESSAGES, "required": ["model", "messages"]}
RESPONSES = _body(["model"], {
    "model": {"type": "string"},
    "input": {"anyOf": [{"type": "string"}, {"type": "array", "items": OBJ}]},
    "instructions": {"type": "string"}, "stream": {"type": "boolean"},
    "max_output_tokens": {"type": "integer", "minimum": 1},
    "previous_response_id": {"type": "string"}})
COMPLETIONS = _body(["model", "prompt"], {
    "model": {"type": "string"},
    "prompt": {"anyOf": [{"type": "string"}, {"type": "array", "minItems": 1}]},
    "suffix": {"type": "string"}, "stream": {"type": "boolean"},
    "max_tokens": {"type": "integer", "minimum": 1}})
EMBEDDINGS = _body(["model", "input"], {
    "model": {"type": "string"},
    "input": {"anyOf": [{"type": "string"}, {"type": "array", "minItems": 1}]}})
GEMINI_CONTENT = _body([], {"role": {"type": "string"}, "parts": {"type": "array", "items": OBJ}})
GEMINI = _body([], {"contents": {"type": "array", "items": GEMINI_CONTENT},
                    "systemInstruction": GEMINI_CONTENT, "tools": {"type": "array", "items": OBJ},
                    "generationConfig": OBJ})
SCOPE = {"type": "string", "enum": ["project", "personal"]}
MEMORY = _body(["content"], {"content": {"type": "string", "minLength": 1},
                             "metadata": ANY_OBJECT, "pinned": {"type": "boolean"},
                             "created_at": {"type": "string", "format": "date-time"},
                             "key": {"type": "string", "minLength": 1, "maxLength": 200}})
MEMORY_ADD = {"anyOf": [_body(["content"], {"user_id": USER_ID, "scope": SCOPE,
                                            **MEMORY["properties"]}),
                        _body(["memories"], {"user_id": USER_ID, "scope": SCOPE, "memories": {
                            "type": "array", "minItems": 1, "maxItems": 1000,
                            "items": MEMORY}})]}
SEARCH = _body(["query"], {"user_id": USER_ID, "query": {"type": "string", "minLength": 1},
                           "limit": {"type": "integer", "minimum": 1, "maximum": 100},
                           "scope": SCOPE})
EDIT = _body([], {"user_id": USER_ID, "scope": SCOPE, **MEMORY["properties"]})
PROMOTE = _body([], {"user_id": USER_ID})
PROJECT = _body(["name"], {"name": {"type": "string"}, "port": {"type": "integer"},
                           "description": {"type": "string"}})


def _param(name: str, where: str = "query", required: bool = False, schema=None) -> dict:
    return {"name": name, "in": where, "required": required or where == "path",
            "schema": schema or {"type": "string"}}


USER_Q = _param("user_id", schema=USER_ID)
SCOPE_Q = _param("scope", schema=SCOPE)
LIMIT_Q = _param("limit", schema={"type": "integer", "minimum": 1, "maximum": 1000})
ID_P = _param("id", "path")
MODEL_Q = _param("model")


def _op(summary: str, body: dict | None = None, params: tuple = (), tag: str = "gateway",
        ok: str = "200") -> dict:
    op = {"summary": summary, "tags": [tag], "parameters": list(params), "responses": {
        ok: {"description": "success", "content": {"application/json": {"schema": OBJ}}},
        "4XX": {"description": "the client's error, in the protocol's own error shape",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/"
                                                                    "Error"}}}}}}
    if body is not None:
        op["requestBody"] = {"required": True,
                             "content": {"application/json": {"schema": body}}}
    return op


def _paths() -> dict:
    paths: dict[str, dict] = {}
    for prefix in ("/v1", ""):
        paths[f"{prefix}/chat/completions"] = {"post": _op("OpenAI chat completion", CHAT)}
        paths[f"{prefix}/completions"] = {"post": _op("Legacy completion", COMPLETIONS)}
        paths[f"{prefix}/models"] = {"get": _op(
            "Configured models; wildcard entries as the models their upstream serves; "
            "Anthropic's shape when the request carries anthropic-version")}
        paths[f"{prefix}/embeddings"] = {"post": _op("OpenAI embeddings", EMBEDDINGS)}
        responses = f"{prefix}/responses"
        paths[responses] = {"post": _op("OpenAI Responses API", RESPONSES)}
        for action in ("compact", "input_tokens"):
            paths[f"{responses}/{action}"] = {"post": _op(f"Responses {action}", RESPONSES)}
        paths[f"{responses}/{{id}}"] = {"get": _op("A stored response", None, (ID_P, MODEL_Q)),
                                        "delete": _op("Delete a stored response", None,
                                                      (ID_P, MODEL_Q))}
        paths[f"{responses}/{{id}}/cancel"] = {"post": _op("Cancel a background response",
                                                           None, (ID_P, MODEL_Q))}
        paths[f"{responses}/{{id}}/input_items"] = {"get": _op("A stored response's input",
                                                               None, (ID_P, MODEL_Q))}
    paths["/v1/messages"] = {"post": _op("Anthropic Messages", MESSAGES)}
    paths["/v1/messages/count_tokens"] = {"post": _op("Anthropic token count", COUNT_TOKENS)}
    target = _param("target", "path")   # {model}:generateContent | :streamGenerateContent
    alt = _param("alt", schema={"enum": ["sse", "json"]})  # | :countTokens
    paths["/v1beta/models"] = {"get": _op("Gemini API: configured models")}
    for version in ("v1beta", "v1"):   # v1: the google-genai SDK's default
        paths[f"/{version}/models/{{target}}"] = {
            "get": _op("Gemini API: one model", None, (target,)),
            "post": _op("Gemini API: generateContent, streamGenerateContent (alt=sse), "
                        "countTokens", GEMINI, (target, alt))}
    paths["/health"] = {"get": {**_op("Liveness (no auth)", tag="health"), "security": []}}
    paths["/health/readiness"] = {"get": _op("Readiness, memory and outbox, models whose key "
                                               "is unset", tag="health")}
    paths["/openapi.json"] = {"get": {**_op("This document", tag="health"), "security": []}}
    paths.update(_memory_paths())
    paths.update(_admin_paths())
    paths.update(_observability_paths())
    return paths


USAGE_Q = (_param("project"), _param("since"), _param("by"), _param("rows"))


def _observability_paths() -> dict:
    """The usage ledger, metrics and the web page (``api/usage``, ``observe/metrics``, ``api/ui``)."""
    return {
        "/v1/usage": {"get": _op("Usage ledger: calls, tokens, cost, latency", None, USAGE_Q,
                                 tag="usage")},
        "/metrics": {"get": _op("Prometheus metrics", tag="usage")},
        "/ui": {"get": _op("The web page (loopback or admin key)", tag="admin")},
        "/ui/{name}": {"get": _op("The web page's assets", None, (_param("name", "path"),),
                                  tag="admin")},
        "/admin/usage": {"get": _op("Usage of any project (the page's)", None, USAGE_Q,
                                    tag="admin")},
        "/admin/memories": {"get": _op("A user's memories (the page's)", None,
                                       (USER_Q, SCOPE_Q, LIMIT_Q, _param("cursor")),
                                       tag="admin"),
                            "post": _op("Store memories (the page's)", MEMORY_ADD,
                                        tag="admin", ok="201")},
        "/admin/memories/search": {"post": _op("Search a user's memories (the page's)",
                                               SEARCH, tag="admin")},
        "/admin/memories/{id}": {"delete": _op("Forget one memory (the page's)", None,
                                               (ID_P, USER_Q, SCOPE_Q), tag="admin"),
                                 "patch": _op("Edit or pin one memory (the page's)", EDIT,
                                              (ID_P,), tag="admin")},
        "/admin/memories/{id}/promote": {"post": _op(
            "Move one memory to the personal scope (the page's)", PROMOTE, (ID_P,),
            tag="admin")},
        "/admin/memories/injections": {"get": _op(
            "Why a block was injected (the page's)", None,
            (USER_Q, _param("conversation"), _param("trace_id")), tag="admin")},
    }


def _memory_paths() -> dict:
    return {
        "/v1/memories": {
            "post": _op("Store memories", MEMORY_ADD, tag="memory", ok="201"),
            "get": _op("List memories, newest first, and how many there are", None,
                       (USER_Q, SCOPE_Q, LIMIT_Q, _param("cursor")), tag="memory"),
            "delete": _op("Forget every memory of a user", None,
                          (USER_Q, _param("all", required=True, schema={"enum": ["true"]})),
                          tag="memory")},
        "/v1/memories/search": {"post": _op("Search memories", SEARCH, tag="memory")},
        "/v1/memories/injections": {"get": _op(
            "Why a block was injected: each turn's block and its memories", None,
            (USER_Q, _param("conversation"), _param("trace_id")), tag="memory")},
        "/v1/memories/{id}": {"get": _op("One memory", None, (ID_P, USER_Q, SCOPE_Q),
                                         tag="memory"),
                              "patch": _op("Edit one memory (content, metadata, pinned); "
                                           "re-indexed at once", EDIT, (ID_P,), tag="memory"),
                              "delete": _op("Forget one memory", None, (ID_P, USER_Q, SCOPE_Q),
                                            tag="memory")},
        "/v1/memories/{id}/promote": {"post": _op(
            "Move one memory to the personal scope (same id, text, time)", PROMOTE, (ID_P,),
            tag="memory")},
    }


def _admin_paths() -> dict:
    return {
        "/admin/projects": {"get": _op("Projects", tag="admin"),
                            "post": _op("Add a project", PROJECT, tag="admin", ok="201")},
        "/admin/projects/{name}": {"delete": _op("Remove a project", None,
                                                 (_param("name", "path"),), tag="admin")},
        "/admin/status": {"get": _op("Listeners, sessions, memory, outbox", tag="admin")},
        "/admin/reload": {"post": _op("Re-read config and registry", tag="admin")},
        "/admin/outbox/retry": {"post": _op("Requeue the outbox's dead letters", tag="admin")},
    }


def document() -> dict:
    error = {"oneOf": [
        {"type": "object", "required": ["error"], "properties": {"error": _body(
            ["message", "type"], {"message": {"type": "string"}, "type": {"type": "string"},
                                  "code": {"type": ["string", "null"]}})}},
        {"type": "object", "required": ["type", "error"], "properties": {
            "type": {"const": "error"}, "error": _body(["type", "message"], {
                "type": {"type": "string"}, "message": {"type": "string"}})}},
        {"type": "object", "required": ["error"], "properties": {"error": _body(   # Google's
            ["code", "message", "status"], {"code": {"type": "integer"},
                                            "message": {"type": "string"},
                                            "status": {"type": "string"}})}}]}
    return {
        "openapi": "3.1.0",
        "info": {"title": "memproxyd", "version": __version__,
                 "description": "A local memory gateway: OpenAI, Anthropic and Gemini wire "
                                "protocols, per-project memory, admin API (loopback or x-admin-key)."},
        "paths": _paths(),
        "components": {"schemas": {"Error": error}, "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
            "googApiKey": {"type": "apiKey", "in": "header", "name": "x-goog-api-key"}}},
        "security": [{"bearer": []}, {"apiKey": []}, {"googApiKey": []}, {}],
    }


async def serve(request: web.Request) -> web.Response:
    return web.json_response(document())


def add_routes(app: web.Application) -> None:
    app.router.add_get("/openapi.json", serve)
