"""One model call made by memproxyd itself (not relayed for a client): the text of a reply.

Used off the request path, e.g. by the outbox worker to distil memories
(``[memory] extract_model``). Natively for OpenAI- and Anthropic-wire deployments, through
litellm for the rest; always with the user's own session, and the deployment's credentials.

    text = await complete(deployment, session, [{"role": "user", "content": "..."}],
                          system="Reply in JSON.", max_tokens=800)
"""
from __future__ import annotations

import asyncio
import json

import aiohttp

from memproxyd.deployments import Deployment
from memproxyd.errors import ApiError
from memproxyd.memory.base import MemoryError_, RetryLater
from memproxyd.sessions import UserSession


async def complete(dep: Deployment, session: UserSession, messages: list[dict], *,
                   system: str = "", max_tokens: int = 1024) -> str:
    """The reply's text. A failure to reach the model, or its 429/5xx, is ``RetryLater``; a
    reply that cannot be read is ``MemoryError_``."""
    try:
        if dep.wire == "anthropic":
            return await _anthropic(dep, session, messages, system, max_tokens)
        if dep.wire == "openai":
            return await _openai(dep, session, messages, system, max_tokens)
        from memproxyd.proxy import translate
        return await translate.complete_text(dep, session, messages, system, max_tokens)
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        raise RetryLater(f"model {dep.name} unreachable: {type(exc).__name__}") from None
    except ApiError as exc:   # litellm's failures, and a model whose key is not set
        if exc.status in (429, 502, 503, 504) or exc.status >= 500 or \
                exc.code == "model_unavailable":   # a key set at the next start: try later
            raise RetryLater(f"model {dep.name}: {exc.message}") from None
        raise MemoryError_(f"model {dep.name}: {exc.message}") from None


def _headers(dep: Deployment, auth: tuple[str, str]) -> dict[str, str]:
    return {"content-type": "application/json", **({auth[0]: auth[1]} if auth[1] else {}),
            **dep.params.extra_headers}


async def _post(session: UserSession, dep: Deployment, url: str, headers: dict,
                payload: dict) -> dict:
    timeout = aiohttp.ClientTimeout(total=dep.timeout(False))
    async with session.http.post(url, data=json.dumps(payload).encode(), headers=headers,
                                 timeout=timeout) as response:
        body = await response.read()
        if response.status == 429 or response.status >= 500:
            raise RetryLater(f"model {dep.name} answered {response.status}",
                             _retry_after(response.headers.get("retry-after")))
        if response.status != 200:
            raise MemoryError_(f"model {dep.name} answered {response.status}")
    try:
        return json.loads(body)
    except ValueError:
        raise MemoryError_(f"model {dep.name} sent a reply that is not JSON") from None


async def _openai(dep, session, messages, system, max_tokens) -> str:
    key = dep.api_key()
    payload = {"model": dep.upstream_model, "max_tokens": max_tokens,
               "messages": ([{"role": "system", "content": system}] if system else []) + messages}
    reply = await _post(session, dep, f"{dep.api_base}/chat/completions",
                        _headers(dep, ("authorization", f"Bearer {key}" if key else "")), payload)
    try:
        return reply["choices"][0]["message"]["content"] or ""
    except (KeyError, IndexError, TypeError):
        raise MemoryError_(f"model {dep.name} sent no message") from None


async def _anthropic(dep, session, messages, system, max_tokens) -> str:
    base = dep.api_base[:-3] if dep.api_base.endswith("/v1") else dep.api_base
    headers = _headers(dep, ("x-api-key", dep.api_key() or ""))
    headers["anthropic-version"] = "2023-06-01"
    payload = {"model": dep.upstream_model, "max_tokens": max_tokens, "messages": messages,
               **({"system": system} if system else {})}
    reply = await _post(session, dep, f"{base}/v1/messages", headers, payload)
    blocks = reply.get("content") if isinstance(reply, dict) else None
    return "".join(b.get("text", "") for b in blocks or () if isinstance(b, dict)
                   and b.get("type") == "text")


def _retry_after(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None
