"""The Gemini API end to end: the real daemon, the official google-genai SDK (and plain HTTP
for what the SDK never sends: ``%3A``, ``?key=``), a fake Gemini upstream on loopback, and
the fake OpenAI upstream for the litellm path."""
from __future__ import annotations

import json
import urllib.request
import uuid

import aiohttp
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types
from yarl import URL

from tests.conftest import GATEWAY_KEY, UPSTREAM_KEY, Daemon, write_config
from tests.fakes import gemini_upstream
from tests.fakes.threaded import ThreadedServer


@pytest.fixture(scope="module")
def gemini_fake():
    server = ThreadedServer(gemini_upstream.create_app()).start()
    yield server
    server.stop()


def gemini_models(url: str) -> str:
    entries = [("gemini-*", "gemini/*", url), ("gemini-429", "gemini/status-429", url),
               ("gemini-midstream", "gemini/midstream-fail", url),
               ("gemini-v1beta", "gemini/v1beta-base", url + "/v1beta")]
    return "\n".join(
        f'[[model_list]]\nmodel_name = "{name}"\n[model_list.litellm_params]\n'
        f'model = "{model}"\napi_base = "{base}"\napi_key = "{UPSTREAM_KEY}"\n'
        for name, model, base in entries)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, openai_fake, gemini_fake):
    config = write_config(tmp_path_factory.mktemp("gemini"), openai_fake.url,
                          auth=f'keys = ["{GATEWAY_KEY}"]', extra=gemini_models(gemini_fake.url),
                          memory='backend = "sqlite"')
    with Daemon(config) as daemon:
        yield daemon


def client(daemon: Daemon, user: str, key: str = GATEWAY_KEY,
           version: str | None = None) -> genai.Client:
    """The SDK on the daemon (its default API version, ``v1``, or ``version``)."""
    return genai.Client(api_key=key, http_options=types.HttpOptions(
        base_url=daemon.url, api_version=version, headers={"x-memory-user-id": user}))


def records(fake) -> list[dict]:
    return fake.call(lambda: list(fake.app[gemini_upstream.RECORDS]))


def sent(fake, text: str) -> list[dict]:
    """What the fake upstream received for requests whose last user text is ``text``."""
    return [r for r in records(fake) if gemini_upstream._last_text(r["json"]) == text]


def user() -> str:
    return f"g-{uuid.uuid4().hex[:8]}"


def test_generate_content_goes_natively_with_the_deployment_key(gateway, gemini_fake):
    genai_client = client(gateway, user())
    reply = genai_client.models.generate_content(
        model="gemini-2.5-flash", contents="native hello",
        config=types.GenerateContentConfig(temperature=0.2, max_output_tokens=50))
    assert reply.text == "echo: native hello"
    assert reply.usage_metadata.prompt_token_count == 21
    [record] = sent(gemini_fake, "native hello")
    assert record["path"] == "/v1/models/gemini-2.5-flash:generateContent"   # SDK's default
    assert record["headers"]["x-goog-api-key"] == UPSTREAM_KEY     # never the client's
    assert GATEWAY_KEY not in json.dumps(record)
    assert record["json"]["generationConfig"] == {"temperature": 0.2, "maxOutputTokens": 50}
    assert "model" not in record["json"]


def test_stream_generate_content_is_relayed_as_sse(gateway, gemini_fake):
    genai_client = client(gateway, user(), version="v1beta")   # Gemini CLI's version
    chunks = list(genai_client.models.generate_content_stream(
        model="gemini-2.5-flash", contents="streamed hello"))
    assert "".join(c.text for c in chunks) == "echo: streamed hello"
    assert len(chunks) == 2
    [record] = sent(gemini_fake, "streamed hello")
    assert record["path"] == "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
    assert record["query"] == {"alt": "sse"}


def test_count_tokens_and_models(gateway):
    genai_client = client(gateway, user(), version="v1beta")
    assert genai_client.models.count_tokens(model="gemini-2.5-flash",
                                            contents="count me").total_tokens == 7
    names = [m.name for m in genai_client.models.list()]
    assert "models/gemini-429" in names


async def post(url: str, body: dict, **headers) -> tuple[int, dict, dict]:
    async with aiohttp.ClientSession() as session:
        async with session.post(URL(url, encoded=True), json=body, headers=headers) as resp:
            text = await resp.text()
            if resp.content_type == "text/event-stream":
                return resp.status, {"events": text}, dict(resp.headers)
            return resp.status, json.loads(text), dict(resp.headers)


def ask(text: str) -> dict:
    return {"contents": [{"role": "user", "parts": [{"text": text}]}]}


async def test_url_encoded_colon_and_key_in_the_query(gateway, gemini_fake):
    status, body, _ = await post(
        f"{gateway.url}/v1beta/models/gemini-2.5-flash%3AgenerateContent?key={GATEWAY_KEY}",
        ask("encoded colon"))
    assert status == 200, body
    assert body["candidates"][0]["content"]["parts"][0]["text"] == "echo: encoded colon"
    [record] = sent(gemini_fake, "encoded colon")
    assert "key" not in record["query"]              # the gateway key never goes upstream
    status, body, _ = await post(
        f"{gateway.url}/v1beta/models/gemini-v1beta%3AstreamGenerateContent?alt=sse",
        ask("v1beta base"), **{"x-goog-api-key": GATEWAY_KEY})
    assert status == 200 and body["events"].count("data: ") == 2
    [record] = sent(gemini_fake, "v1beta base")
    assert record["path"] == "/v1beta/models/v1beta-base:streamGenerateContent"


@pytest.mark.parametrize("path, body, headers, status, reason", [
    ("gemini-2.5-flash:generateContent", ask("x"), {}, 401, "UNAUTHENTICATED"),
    ("no-such-model:generateContent", ask("x"), {"x-goog-api-key": GATEWAY_KEY}, 404,
     "NOT_FOUND"),
    ("gemini-2.5-flash:embedContent", ask("x"), {"x-goog-api-key": GATEWAY_KEY}, 404,
     "NOT_FOUND"),
    ("gemini-2.5-flash:generateContent", {"contents": "not an array"},
     {"x-goog-api-key": GATEWAY_KEY}, 400, "INVALID_ARGUMENT"),
    ("gemini-429:generateContent", ask("x"), {"x-goog-api-key": GATEWAY_KEY}, 429,
     "RESOURCE_EXHAUSTED"),
])
async def test_errors_are_in_googles_shape(gateway, path, body, headers, status, reason):
    got, answer, _ = await post(f"{gateway.url}/v1beta/models/{path}", body, **headers)
    assert got == status
    assert answer["error"]["code"] == status and answer["error"]["status"] == reason
    assert isinstance(answer["error"]["message"], str)


async def test_a_stream_failing_midway_ends_with_googles_error_event(gateway):
    status, body, _ = await post(
        f"{gateway.url}/v1beta/models/gemini-midstream:streamGenerateContent?alt=sse",
        ask("fail midway"), **{"x-goog-api-key": GATEWAY_KEY})
    assert status == 200
    first, last = [json.loads(line[5:]) for line in body["events"].splitlines()
                   if line.startswith("data:")]
    assert first["candidates"][0]["content"]["parts"][0]["text"] == "echo: fa"   # half
    assert last["error"]["code"] == 502 and last["error"]["status"] == "UNAVAILABLE"


def test_sdk_sees_google_errors(gateway):
    genai_client = client(gateway, user(), key="wrong")   # kept: a dropped one closes
    with pytest.raises(genai_errors.ClientError) as caught:
        genai_client.models.generate_content(
            model="gemini-2.5-flash", contents="x")
    assert caught.value.code == 401 and caught.value.status == "UNAUTHENTICATED"


def test_other_deployments_through_litellm(gateway):
    who = user()
    genai_client = client(gateway, who)
    assert genai_client.models.generate_content(model="demo", contents="hi").text == \
        "offline hello"
    streamed = genai_client.models.generate_content_stream(model="demo", contents="hi")
    assert "".join(c.text or "" for c in streamed) == "offline hello"
    reply = genai_client.models.generate_content(model="gpt-ok", contents="via openai")
    assert reply.text   # the fake OpenAI upstream's answer, as Gemini JSON
    rows = usage_rows(gateway, who)
    assert [r["status"] for r in rows] == [200, 200, 200]
    assert all(r["prompt_tokens"] > 0 for r in rows), rows


def usage_rows(daemon: Daemon, who: str) -> list[dict]:
    request = urllib.request.Request(f"{daemon.url}/v1/usage?project={who}&rows=100",
                                     headers={"x-goog-api-key": GATEWAY_KEY})
    with urllib.request.urlopen(request, timeout=10) as response:
        return list(reversed(json.loads(response.read())["rows"]))


def test_usage_rows_count_gemini_tokens(gateway):
    who = user()
    genai_client = client(gateway, who)
    genai_client.models.generate_content(model="gemini-2.5-flash", contents="usage whole")
    list(genai_client.models.generate_content_stream(model="gemini-2.5-flash",
                                                     contents="usage streamed"))
    rows = usage_rows(gateway, who)
    assert [(r["prompt_tokens"], r["completion_tokens"], r["status"]) for r in rows] == \
        [(21, 4, 200), (21, 4, 200)]


def test_memory_recalled_into_the_humans_message(gateway, gemini_fake):
    who = user()
    genai_client = client(gateway, who)
    genai_client.models.generate_content(
        model="gemini-2.5-flash", contents="Our deploy target codename is BLUEFIN.")
    list(genai_client.models.generate_content_stream(
        model="gemini-2.5-flash", contents="What is our deploy target codename?",
        config=types.GenerateContentConfig(system_instruction="Be brief.")))
    [record] = [r for r in records(gemini_fake)
                if "What is our deploy target codename?" in json.dumps(r["json"])]
    parts = record["json"]["contents"][-1]["parts"]
    assert parts[0]["text"].startswith("<memproxy-memory>") and "BLUEFIN" in parts[0]["text"]
    assert parts[1] == {"text": "What is our deploy target codename?"}
    assert record["json"]["systemInstruction"] == {"parts": [{"text": "Be brief."}],
                                                   "role": "user"}
