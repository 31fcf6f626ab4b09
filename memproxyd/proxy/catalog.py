"""What ``GET /v1/models`` lists: every exact ``model_name``, and each wildcard entry
(``claude-*``) as the models it serves, asked of the upstream's own model list.

Only native deployments can be asked (an OpenAI-compatible ``GET {api_base}/models``, an
Anthropic ``GET {api_base}/v1/models``), with the deployment's own key, within
``FETCH_TIMEOUT`` seconds; answers are cached for ``TTL`` seconds (a failure for
``RETRY_AFTER``), so a model picker never waits on a slow provider twice. A wildcard whose
upstream cannot be asked is left out: its pattern is no model a picker could send.

    entries = await catalog.entries(table, session)     # [{"id", "created", "display_name"}]
"""
from __future__ import annotations

import asyncio
import datetime
import fnmatch
import logging
import re
import time

import aiohttp
import attrs

from memproxyd.config import ModelEntry, resolve_secret
from memproxyd.deployments import Deployment, DeploymentTable, wire_of

log = logging.getLogger(__name__)

FETCH_TIMEOUT = 3.0     # seconds for one upstream listing
TTL = 600.0             # seconds an upstream listing is reused
RETRY_AFTER = 60.0      # seconds before a failed listing is asked again
ANTHROPIC_VERSION = "2023-06-01"


@attrs.frozen
class Model:
    id: str
    created: int = 0              # unix seconds
    display_name: str = ""
    available: bool = True
    unavailable_reason: str = ""

    def openai(self) -> dict:
        item = {"id": self.id, "object": "model", "created": self.created,
                "owned_by": "memproxyd", "available": self.available}
        if self.unavailable_reason:
            item["unavailable_reason"] = self.unavailable_reason
        return item

    def anthropic(self) -> dict:
        created = datetime.datetime.fromtimestamp(self.created, datetime.timezone.utc)
        return {"type": "model", "id": self.id, "display_name": self.display_name or self.id,
                "created_at": created.strftime("%Y-%m-%dT%H:%M:%SZ")}


class Catalog:
    """Upstream model lists, cached per (listing URL, key)."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, str], tuple[float, list[Model]]] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    async def models(self, table: DeploymentTable, http: aiohttp.ClientSession) -> list[Model]:
        out = [_exact(name, entry) for name, entry in table.exact.items()]
        seen = {m.id for m in out}
        patterns = [entry for _, entry in table.patterns]
        served = await asyncio.gather(*(self._served(entry, http) for entry in patterns))
        for entry, models in zip(patterns, served):
            for model in models:
                # listed only where a call by that name reaches this entry (exact names and
                # longer patterns win)
                if model.id not in seen and \
                        table.lookup(model.id).entry.model_name == entry.model_name:
                    seen.add(model.id)
                    out.append(model)
        return out

    async def _served(self, entry: ModelEntry, http: aiohttp.ClientSession) -> list[Model]:
        """The models a wildcard entry serves: the upstream's ids it maps to, renamed."""
        wire, upstream = wire_of(entry)
        dep = Deployment(entry.model_name, entry, wire, upstream)
        if wire not in ("openai", "anthropic") or dep.missing_key():
            return []
        listed = await self._listing(dep, http)
        return [attrs.evolve(m, id=name) for m in listed
                if (name := client_name(entry, upstream, m.id)) is not None]

    async def _listing(self, dep: Deployment, http: aiohttp.ClientSession) -> list[Model]:
        key = resolve_secret(dep.params.api_key) if dep.params.api_key else ""
        url = (f"{dep.api_base.removesuffix('/v1')}/v1/models?limit=1000"
               if dep.wire == "anthropic" else f"{dep.api_base}/models")
        cache_key = (url, key or "")
        async with self._locks.setdefault(cache_key, asyncio.Lock()):
            cached = self._cache.get(cache_key)
            if cached and cached[0] > time.monotonic():
                return cached[1]
            try:
                models = await _fetch(http, url, dep, key)
                self._cache[cache_key] = (time.monotonic() + TTL, models)
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError, KeyError,
                    TypeError) as exc:
                log.warning("model listing failed deployment=%s error=%s", dep.name,
                            type(exc).__name__)
                models = []
                self._cache[cache_key] = (time.monotonic() + RETRY_AFTER, models)
            return models


async def _fetch(http: aiohttp.ClientSession, url: str, dep: Deployment,
                 key: str | None) -> list[Model]:
    headers = dict(dep.params.extra_headers)
    if dep.wire == "anthropic":
        headers["anthropic-version"] = ANTHROPIC_VERSION
        if key:
            headers["x-api-key"] = key
    elif key:
        headers["authorization"] = f"Bearer {key}"
    timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT)
    async with http.get(url, headers=headers, timeout=timeout) as response:
        response.raise_for_status()
        data = (await response.json(content_type=None))["data"]
    return [Model(id=item["id"], created=_created(item),
                  display_name=str(item.get("display_name") or ""))
            for item in data if isinstance(item, dict) and isinstance(item.get("id"), str)]


def _created(item: dict) -> int:
    if isinstance(item.get("created"), int):
        return item["created"]
    try:   # Anthropic: RFC 3339
        stamp = str(item.get("created_at", "")).replace("Z", "+00:00")
        return int(datetime.datetime.fromisoformat(stamp).timestamp())
    except ValueError:
        return 0


def client_name(entry: ModelEntry, upstream: str, upstream_id: str) -> str | None:
    """The name a client sends to reach ``upstream_id`` through wildcard ``entry``, or None.

    ``claude-*`` → ``anthropic/*`` passes the whole name on: ``claude-sonnet-4-5`` is listed
    as itself. ``my-*`` → ``openai/gpt-*`` maps ``gpt-4o`` to ``my-4o``."""
    if upstream == "*" or "*" not in upstream:
        name = upstream_id if upstream == "*" else None
    else:
        head, _, tail = upstream.partition("*")
        match = re.fullmatch(re.escape(head) + "(.+)" + re.escape(tail), upstream_id)
        name = entry.model_name.replace("*", match.group(1), 1) if match else None
    return name if name and fnmatch.fnmatchcase(name, entry.model_name) else None


def _exact(name: str, entry: ModelEntry) -> Model:
    missing = Deployment(name, entry, *wire_of(entry)).missing_key()
    return Model(id=name, available=missing is None,
                 unavailable_reason=f"{missing} is not set" if missing else "")


def anthropic_page(models: list[Model]) -> dict:
    """Anthropic's ``GET /v1/models`` shape (Claude Code's gateway model discovery)."""
    data = [m.anthropic() for m in models if m.available]
    return {"data": data, "has_more": False, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None}
