"""Retries and fallbacks for model calls, in LiteLLM's vocabulary.

    [[model_list]] ... num_retries = 2            # per deployment: 2 more tries after the first
    [router]
    fallbacks = [{"gpt-4o" = ["gpt-4o-mini"]}]   # then these deployments, in order

A try fails over on a connection error, a timeout, 429 or a 5xx; any other 4xx is the
client's and is answered at once. A stream is retried only while nothing has gone out to the
client: once its headers are sent, its fate is its own (an error event at worst). The answer
names the deployment that produced it in ``x-memproxy-deployment``.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

from aiohttp import web

from memproxyd import appkeys
from memproxyd.call import Call
from memproxyd.deployments import Deployment
from memproxyd.errors import ApiError

log = logging.getLogger(__name__)

RETRYABLE = frozenset({408, 429, 500, 502, 503, 504, 529})
MAX_BACKOFF = 2.0     # seconds: a retry waits at most this long on the request path

Forward = Callable[[Call, object, dict, object], Awaitable[web.StreamResponse]]


def chain(call: Call) -> list[str]:
    """The fallback model names of the call's model, in order (``[router] fallbacks``)."""
    for table in call.request.app[appkeys.STATE].config.router.fallbacks:
        if call.deployment.name in table:
            return list(table[call.deployment.name])
    return []


async def forward(call: Call, session, body: dict, tap,
                  pick: Callable[[Deployment], Forward]) -> web.StreamResponse:
    """``pick(deployment)(call, session, body, tap)`` on the call's deployment, its retries,
    then each fallback's; the first answer that is not a retryable failure wins, else the
    last failure."""
    state = call.request.app[appkeys.STATE]
    last: ApiError | web.StreamResponse | None = None
    for index, name in enumerate([call.deployment.name, *chain(call)]):
        if index:
            try:
                dep = state.deployments.lookup(name)
                dep.api_key()              # a fallback without its key is skipped
            except ApiError as exc:
                last = exc
                continue
            log.warning("falling back user_id=%s from=%s to=%s", call.user_id,
                        call.deployment.name, name)
            call.deployment = dep
        outcome = await _tries(call, session, body, tap, pick(call.deployment))
        if not _retryable(outcome):
            return _answer(outcome)
        last = outcome
    return _answer(last)


async def _tries(call: Call, session, body: dict, tap, send: Forward):
    """Up to ``num_retries + 1`` tries on the call's deployment."""
    backoff = call.request.app[appkeys.STATE].config.router.retry_backoff
    outcome: ApiError | web.StreamResponse | None = None
    for attempt in range(call.deployment.params.num_retries + 1):
        if attempt:
            log.info("retrying user_id=%s model=%s attempt=%d status=%s", call.user_id,
                     call.deployment.name, attempt + 1, outcome.status)
            await asyncio.sleep(min(MAX_BACKOFF, backoff * 2 ** (attempt - 1)))
        try:
            outcome = await send(call, session, body, tap)
        except ApiError as exc:
            outcome = exc
        if not _retryable(outcome):
            return outcome
    return outcome


def _retryable(outcome) -> bool:
    if isinstance(outcome, ApiError):
        return outcome.status in RETRYABLE
    return not outcome.prepared and outcome.status in RETRYABLE


def _answer(outcome) -> web.StreamResponse:
    if isinstance(outcome, ApiError):
        raise outcome
    return outcome
