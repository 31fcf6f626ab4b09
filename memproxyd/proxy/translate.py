"""The one module that talks to litellm: translation for deployments whose wire protocol is
not the client's (Gemini, Bedrock, Anthropic behind an OpenAI client, mock responses).

litellm is imported on first use (it costs ~5 s and ~210 MB), with the bundled cost map so it
never reaches for the network. Each call gets the caller's own clients: ``client=`` an
``AsyncOpenAI`` on the user's httpx client for OpenAI-style providers, ``shared_session=`` the
user's aiohttp session for the rest. ``litellm.aclient_session`` is never assigned.

Only the OpenAI chat parameters below are taken from a request; credentials, ``api_base`` and
headers come from the deployment alone.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from typing import Any

from aiohttp import web

from memproxyd import tracing
from memproxyd.call import Call
from memproxyd.deployments import Deployment
from memproxyd.errors import ApiError, sse_error_event
from memproxyd.observe import meter
from memproxyd.proxy import demo
from memproxyd.sessions import UserSession

log = logging.getLogger(__name__)

CHAT_PARAMS = frozenset({
    "messages", "temperature", "top_p", "n", "stream", "stream_options", "stop",
    "max_tokens", "max_completion_tokens", "presence_penalty", "frequency_penalty",
    "logit_bias", "user", "response_format", "seed", "tools", "tool_choice",
    "parallel_tool_calls", "logprobs", "top_logprobs", "reasoning_effort", "modalities",
    "audio", "prediction", "service_tier", "functions", "function_call", "thinking",
    "verbosity", "web_search_options",
})
EMBEDDING_PARAMS = frozenset({"input", "dimensions", "encoding_format", "user"})
# Anthropic Messages parameters litellm's adapter translates (``/v1/messages`` → non-Anthropic).
MESSAGES_PARAMS = frozenset({
    "messages", "max_tokens", "system", "metadata", "stop_sequences", "stream", "temperature",
    "thinking", "tool_choice", "tools", "top_k", "top_p", "output_format", "output_config",
})
# Responses API parameters ``litellm.aresponses`` names (``/v1/responses`` → non-OpenAI).
RESPONSES_PARAMS = frozenset({
    "input", "include", "instructions", "max_output_tokens", "prompt", "metadata",
    "parallel_tool_calls", "previous_response_id", "reasoning", "store", "background",
    "stream", "temperature", "text", "tool_choice", "tools", "top_p", "truncation", "user",
    "service_tier", "safety_identifier",
})
COMPLETION_PARAMS = frozenset({
    "prompt", "best_of", "echo", "frequency_penalty", "logit_bias", "logprobs", "max_tokens",
    "n", "presence_penalty", "seed", "stop", "stream", "stream_options", "suffix",
    "temperature", "top_p", "user",
})
_DEPLOYMENT_PARAMS = ("api_version", "organization", "aws_region_name", "aws_access_key_id",
                      "aws_secret_access_key", "vertex_project", "vertex_location")
_OPENAI_STYLE = ("openai/", "azure/", "hosted_vllm/", "openrouter/", "deepseek/", "groq/")

_litellm = None
_import_lock = threading.Lock()


def litellm():
    """Import litellm once, offline (``LITELLM_LOCAL_MODEL_COST_MAP``). Under a lock: two
    threads importing litellm at once (the preload and a first call) break its import."""
    global _litellm
    with _import_lock:
        if _litellm is None:
            os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
            started = time.perf_counter()
            import litellm as module
            module.telemetry = False
            module.suppress_debug_info = True
            # /v1/messages for openai/ models: chat/completions, which every OpenAI-compatible
            # server has, not the Responses API that vLLM, Ollama and most proxies lack.
            module.use_chat_completions_url_for_anthropic_messages = True
            _litellm = module
            log.info("litellm imported seconds=%.2f", time.perf_counter() - started)
    return _litellm


def needed(config) -> bool:
    """Whether a deployment goes through litellm, or the memory embeds (always litellm)."""
    from memproxyd.deployments import wire_of
    return bool(config.memory.embedding_model) or any(
        wire_of(entry)[0] in ("litellm", "gemini") for entry in config.model_list)


def preload(config) -> None:
    """Import litellm on a thread once the daemon is ready, when the config will need it, so
    the first litellm-routed call (the offline ``demo`` model too) does not wait ~5 s. A
    daemon thread: a stop during the import does not wait for it."""
    if _litellm is None and needed(config):
        threading.Thread(target=litellm, name="litellm-import", daemon=True).start()


def deployment_kwargs(dep: Deployment, session: UserSession, stream: bool,
                      headers: dict[str, str] | None = None) -> dict[str, Any]:
    """Provider arguments from the deployment alone (plus gateway-made ``headers``, such as
    the Memory Router's), and the user's own clients."""
    params = dep.params
    # num_retries 0: retries and fallbacks are failover.py's, the same on every path
    kwargs: dict[str, Any] = {"model": params.model, "timeout": dep.timeout(stream),
                              "num_retries": 0}
    key = dep.api_key()
    if key:
        kwargs["api_key"] = key
    if params.api_base:
        kwargs["api_base"] = params.api_base
    if params.mock_response:
        kwargs["mock_response"] = params.mock_response
    headers = {**(headers or {}), **tracing.headers()}   # W3C traceparent
    if params.extra_headers or headers:
        kwargs["extra_headers"] = {**params.extra_headers, **headers}
    for name in _DEPLOYMENT_PARAMS:
        value = getattr(params, name)
        if value:
            kwargs[name] = value
    if params.model.startswith(_OPENAI_STYLE) and not params.mock_response:
        kwargs["client"] = openai_client(session, key, params.api_base, dep.timeout(stream))
    elif not params.mock_response:
        kwargs["client"] = http_handler(session)
    return kwargs


def http_handler(session: UserSession):
    """litellm's HTTP handler on the user's aiohttp session, one per user session.

    Passing ``shared_session=`` alone is not enough: litellm caches one handler per provider
    whose cache key ignores the session, so the first user's session (and cookie jar) would
    serve every later user of that provider (litellm 1.110 ``get_async_httpx_client``).
    """
    handler = session.clients.get("litellm")
    if handler is None:
        litellm()              # first: the package whole, before one of its modules
        from litellm.llms.custom_httpx.http_handler import AsyncHTTPHandler
        handler = AsyncHTTPHandler(shared_session=session.http)
        session.clients["litellm"] = handler
    return handler


def openai_client(session: UserSession, key: str | None, base: str, timeout: float):
    from openai import AsyncOpenAI
    return AsyncOpenAI(api_key=key or "none", base_url=base or None, timeout=timeout,
                       http_client=session.httpx, max_retries=0)


async def chat(call: Call, session: UserSession, body: dict, tap=None) -> web.StreamResponse:
    """``/v1/chat/completions`` through ``litellm.acompletion``."""
    args = {k: v for k, v in body.items() if k in CHAT_PARAMS}
    _check_user_messages(args["messages"])
    args = meter.ask_for_usage(call, args)   # the ledger's tokens; not relayed if not asked
    args.update(deployment_kwargs(call.deployment, session, call.stream,
                                   call.router_headers()))
    result = await _call(call, litellm().acompletion, args)
    mock = bool(call.deployment.params.mock_response)
    if not call.stream:
        return await _whole(call, result, tap, (lambda r: demo.chat(body, r)) if mock else None)
    if mock:
        return await _stream(call, result, tap, encode=lambda chunk: _openai_sse(
            demo.chat_chunk(body, _dump(chunk))))
    return await _stream(call, result, tap)


def _check_user_messages(messages: list) -> None:
    """litellm's own check of user content part types (a chat part it does not translate,
    such as the Responses API's ``input_text``), as the client's 400 before the call: raised
    inside ``acompletion`` it would read as an upstream failure (502)."""
    check = litellm().utils.validate_chat_completion_user_messages   # import under the lock
    try:
        check(messages)
    except Exception as exc:  # litellm raises a bare Exception here
        raise ApiError(400, f"{exc}", "invalid_request_error") from None


def _openai_sse(chunk) -> bytes:
    return f"data: {json.dumps(_dump(chunk))}\n\n".encode()


async def _stream(call: Call, chunks, tap, encode=_openai_sse,
                  done: bytes = b"data: [DONE]\n\n") -> web.StreamResponse:
    response = web.StreamResponse(headers={**call.headers(), "content-type": "text/event-stream",
                                           "cache-control": "no-cache"})
    await response.prepare(call.request)
    ok, data = True, b""
    try:
        async for chunk in chunks:
            data = encode(chunk)
            if tap is not None:
                replaced = tap.feed(data)   # the usage meter may drop an event it asked for
                data = data if replaced is None else replaced
            await response.write(data)
        if done:
            await response.write(done)
    except ConnectionResetError:
        raise   # the client left: nothing to tell it, nothing complete to remember
    except Exception as exc:  # mid-stream failure: end with an error event, never hang
        ok = False
        error = as_api_error(exc)
        log.warning("litellm stream failed user_id=%s model=%s status=%s",
                    call.user_id, call.deployment.name, error.status)
        await response.write(sse_error_event(call.protocol, error.status, error.message,
                                             data))
    if tap is not None:
        await tap.finish(call, ok)
    await response.write_eof()
    return response


async def messages(call: Call, session: UserSession, body: dict, tap=None) -> web.StreamResponse:
    """``/v1/messages`` for a deployment that does not speak Anthropic, through litellm's
    Anthropic-messages adapter; the client gets Anthropic JSON or Anthropic SSE events."""
    args = {k: v for k, v in fold_system_messages(body).items() if k in MESSAGES_PARAMS}
    args.update(deployment_kwargs(call.deployment, session, call.stream,
                                   call.router_headers()))
    result = await _call(call, litellm().anthropic.messages.acreate, args)
    if call.deployment.params.mock_response:
        result = demo.messages(body, json.loads(json.dumps(result, default=_jsonable)))
    if isinstance(result, dict) and call.stream:
        result = _as_events(result)   # mock deployments answer whole messages only
    if not call.stream:
        payload = json.dumps(result, default=_jsonable).encode()
        if tap is not None:
            tap.feed(payload)
            await tap.finish(call, True)
        return web.Response(body=payload, content_type="application/json",
                            headers=call.headers())
    return await _stream(call, result, tap, encode=_anthropic_sse, done=b"")


def fold_system_messages(body: dict) -> dict:
    """``body`` with its ``system``-role messages (Claude Code sends them inside ``messages``
    for some models; Anthropic takes them) moved, in order, to the end of ``system``: litellm's
    adapter knows only user and assistant turns. Any other role it cannot translate: a 400
    naming the limitation. The client's objects are not mutated."""
    messages = body.get("messages") or []
    if all(m.get("role") in ("user", "assistant") for m in messages):
        return body
    kept, folded = [], []
    for index, message in enumerate(messages):
        role = message.get("role")
        if role == "system":
            folded += _text_blocks(message.get("content"))
        elif role in ("user", "assistant"):
            kept.append(message)
        else:
            raise ApiError(400, f"'messages[{index}].role': {str(role)[:40]!r} cannot be "
                                "translated for this deployment (litellm takes user, "
                                "assistant and system messages only)", "unsupported_role")
    return {**body, "messages": kept, "system": [*_text_blocks(body.get("system")), *folded]}


def _text_blocks(content: Any) -> list[dict]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    return [block for block in content or () if block.get("type") == "text"]


def _jsonable(value):
    if hasattr(value, "model_dump"):
        return value.model_dump(exclude_none=True)
    return str(value)


def _anthropic_sse(chunk) -> bytes:
    """litellm's adapters (Anthropic, Google GenAI) yield ready SSE bytes; an Anthropic event
    dict is framed here."""
    if isinstance(chunk, bytes):
        return chunk
    if isinstance(chunk, str):
        return chunk.encode()
    return f"event: {chunk['type']}\ndata: {json.dumps(chunk, default=_jsonable)}\n\n".encode()


async def _as_events(message: dict):
    """A whole Anthropic message as the event sequence a streaming client expects."""
    message = json.loads(json.dumps(message, default=_jsonable))
    counts = message.get("usage") or {}
    yield {"type": "message_start", "message": {**message, "content": [], "stop_reason": None}}
    for index, block in enumerate(message.get("content") or ()):
        if block.get("type") == "text":
            yield {"type": "content_block_start", "index": index,
                   "content_block": {"type": "text", "text": ""}}
            yield {"type": "content_block_delta", "index": index,
                   "delta": {"type": "text_delta", "text": block.get("text", "")}}
        else:
            yield {"type": "content_block_start", "index": index, "content_block": block}
        yield {"type": "content_block_stop", "index": index}
    yield {"type": "message_delta", "delta": {"stop_reason": message.get("stop_reason"),
                                              "stop_sequence": None},
           "usage": {"output_tokens": counts.get("output_tokens", 0)}}
    yield {"type": "message_stop"}


async def responses(call: Call, session: UserSession, body: dict,
                    tap=None) -> web.StreamResponse:
    """``/v1/responses`` through ``litellm.aresponses``: Responses JSON, or Responses SSE
    events (``event: <type>``) ending without ``[DONE]``, as OpenAI sends them."""
    if body.get("input") is None:   # OpenAI may do without (stored prompts); litellm cannot
        raise ApiError(400, "'input' is required for this model: a string or an array of "
                            "input items", "missing_input")
    args = {k: v for k, v in body.items() if k in RESPONSES_PARAMS}
    args.update(deployment_kwargs(call.deployment, session, call.stream,
                                   call.router_headers()))
    if "client" in args:
        # litellm's Responses path takes its own HTTP handler, never an AsyncOpenAI
        args["client"] = http_handler(session)
    result = await _call(call, litellm().aresponses, args)
    if call.deployment.params.mock_response:
        # mock deployments answer whole responses only: made whole, replayed as OpenAI's events
        result = demo.responses(body, _dump(result))
        if call.stream:
            result = _aiter(demo.responses_events(result))
    if call.stream:
        return await _stream(call, result, tap, encode=_responses_sse, done=b"")
    return await _whole(call, result, tap)


async def generate_content(call: Call, session: UserSession, body: dict,
                           tap=None) -> web.StreamResponse:
    """The Gemini API (``:generateContent``, ``:streamGenerateContent``) for a deployment that
    does not speak it: litellm's Google GenAI adapter makes a chat request of the body, the
    chat call goes out with the deployment's own arguments and the user's clients, and the
    reply comes back as Gemini JSON or Gemini SSE (``data:`` events, no ``[DONE]``)."""
    if not isinstance(body.get("contents"), list) or not body["contents"]:
        raise ApiError(400, "'contents' is required for this model: an array of contents",
                       "missing_contents")
    adapter = _genai_adapter()
    fields = {k: body[k] for k in ("systemInstruction", "tools", "toolConfig") if k in body}
    try:
        args = dict(adapter.translate_generate_content_to_completion(
            model=call.deployment.params.model, contents=body["contents"],
            config=body.get("generationConfig"), **fields))
    except Exception as exc:  # noqa: BLE001 - a body litellm cannot translate is the client's
        raise ApiError(400, f"this request cannot be translated for this deployment: "
                            f"{type(exc).__name__}", "untranslatable_request") from None
    args = {k: v for k, v in args.items() if k in CHAT_PARAMS}
    args.update(deployment_kwargs(call.deployment, session, call.stream,
                                   call.router_headers()))
    if call.stream:
        args["stream"] = True
        args["stream_options"] = {"include_usage": True}
    result = await _call(call, litellm().acompletion, args)
    if not call.stream:
        payload = json.dumps(adapter.translate_completion_to_generate_content(result),
                             default=_jsonable).encode()
        if tap is not None:
            tap.feed(payload)
            await tap.finish(call, True)
        return web.Response(body=payload, content_type="application/json",
                            headers=call.headers())
    return await _stream(call, adapter.translate_completion_output_params_streaming(result),
                         tap, encode=_anthropic_sse, done=b"")


def _genai_adapter():
    litellm()
    from litellm.google_genai.adapters.transformation import GoogleGenAIAdapter
    return GoogleGenAIAdapter()


async def text_completion(call: Call, session: UserSession, body: dict,
                          tap=None) -> web.StreamResponse:
    """``/v1/completions`` through ``litellm.atext_completion``; OpenAI's JSON or SSE."""
    args = {k: v for k, v in body.items() if k in COMPLETION_PARAMS}
    args.update(deployment_kwargs(call.deployment, session, call.stream,
                                   call.router_headers()))
    result = await _call(call, litellm().atext_completion, args)
    if call.stream:
        return await _stream(call, result, tap, encode=_completion_sse)
    mock = bool(call.deployment.params.mock_response)
    return await _whole(call, result, tap, (lambda r: demo.chat(body, r)) if mock else None)


def _completion_sse(chunk) -> bytes:
    data = _dump(chunk)
    for choice in data.get("choices") or ():
        choice.setdefault("text", "")   # litellm's last chunk lacks it; OpenAI always sends it
    return f"data: {json.dumps(data)}\n\n".encode()


async def _call(call: Call, function, args: dict):
    sent = time.perf_counter()
    try:
        result = await function(**args)
    except Exception as exc:  # litellm raises its own hierarchy; map by status
        raise as_api_error(exc) from None
    call.upstream_s += time.perf_counter() - sent
    return result


async def _whole(call: Call, result, tap, reshape=None) -> web.Response:
    data = _dump(result)
    payload = json.dumps(reshape(data) if reshape else data).encode()
    if tap is not None:
        tap.feed(payload)
        await tap.finish(call, True)
    return web.Response(body=payload, content_type="application/json", headers=call.headers())


def _dump(value) -> dict:
    if isinstance(value, dict):
        return value
    # litellm's usage objects trip pydantic's serializer warnings; the dump itself is right
    return value.model_dump(exclude_none=True, warnings=False)


def _responses_sse(event) -> bytes:
    data = _dump(event)
    kind = data.get("type")
    kind = getattr(kind, "value", kind)   # litellm types some events with its str enum
    return f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode()


async def _aiter(items):
    for item in items:
        yield item


async def count_tokens(dep: Deployment, texts: list[str]) -> int:
    """Tokens of ``texts`` by litellm's tokenizer for the deployment's model (count_tokens for
    deployments that have no such endpoint)."""
    messages = [{"role": "user", "content": t} for t in texts if t]
    if not messages:
        return 0
    # tokenizing a long conversation takes milliseconds: keep it off the event loop
    return await asyncio.to_thread(litellm().token_counter, model=dep.params.model,
                                   messages=messages)


async def embed(dep: Deployment, session: UserSession, body: dict) -> dict:
    """``/v1/embeddings`` through ``litellm.aembedding``; returns OpenAI's JSON."""
    args = {k: v for k, v in body.items() if k in EMBEDDING_PARAMS}
    args.update(deployment_kwargs(dep, session, False))
    args.pop("num_retries", None)
    try:
        result = await litellm().aembedding(**args)
    except Exception as exc:
        raise as_api_error(exc) from None
    return result.model_dump(exclude_none=True)


async def complete_text(dep: Deployment, session: UserSession, messages: list[dict],
                        system: str, max_tokens: int) -> str:
    """One reply's text through ``litellm.acompletion`` (memproxyd's own calls, such as
    distilling memories); failures as ``ApiError``."""
    args: dict[str, Any] = {"max_tokens": max_tokens, "messages": (
        [{"role": "system", "content": system}] if system else []) + messages}
    args.update(deployment_kwargs(dep, session, False))
    try:
        result = await litellm().acompletion(**args)
    except Exception as exc:
        raise as_api_error(exc) from None
    return result.choices[0].message.content or ""


def as_api_error(exc: Exception) -> ApiError:
    if isinstance(exc, ApiError):
        return exc
    name = type(exc).__name__
    status = getattr(exc, "status_code", None)
    if "Timeout" in name:
        return ApiError(504, f"upstream timed out: {_message(exc)}", "upstream_timeout")
    if "APIConnectionError" in name or not isinstance(status, int):
        return ApiError(502, f"upstream unreachable: {_message(exc)}", "upstream_unreachable")
    return ApiError(status, _message(exc), getattr(exc, "code", None) or None)


def _message(exc: Exception) -> str:
    return str(getattr(exc, "message", None) or exc)[:500]
