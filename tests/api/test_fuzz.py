"""Property tests (hypothesis) on the request parsers, in process and against the real daemon:
any bytes, any JSON, any header value, any user id or search string. Never a crash, never a
5xx, never a write for a rejected request. Bounded: a few hundred cases, seconds."""
from __future__ import annotations

import json
import os

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memproxyd.api import validate
from memproxyd.errors import ApiError
from memproxyd.identity import validate_user_id
from tests.conftest import Daemon, write_config

FAST = settings(max_examples=300, deadline=None, database=None,
                suppress_health_check=list(HealthCheck))
# FUZZ_LIVE=400 for a longer hunt; the suite runs 80 per live property
LIVE = settings(max_examples=int(os.environ.get("FUZZ_LIVE", "80")), deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck))
RAN: dict[str, int] = {}

KEYS = st.sampled_from(["model", "messages", "role", "content", "type", "text", "max_tokens",
                        "stream", "input", "prompt", "system", "tools", "user_id", "query",
                        "limit", "memories", "metadata", "instructions", "temperature", "x"])
SCALARS = (st.none() | st.booleans() | st.integers(-2**70, 2**70)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20)
           | st.sampled_from(["user", "assistant", "system", "text", "demo", "gpt-ok"]))
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(KEYS, inner, max_size=5), max_leaves=25)
BODIES = st.dictionaries(KEYS, JSON, max_size=6)
VALIDATORS = [validate.chat, validate.responses, validate.completions, validate.embeddings,
              lambda b: validate.messages(b, needs_max_tokens=True)]


def count(name: str) -> None:
    RAN[name] = RAN.get(name, 0) + 1


@FAST
@given(st.binary(max_size=300) | JSON.map(lambda v: json.dumps(v).encode()))
def test_the_body_parser_answers_a_dict_or_a_400(raw):
    count("parse_json")
    try:
        assert isinstance(validate.parse_json(raw), dict)
    except ApiError as exc:
        assert exc.status == 400


@FAST
@given(BODIES, st.sampled_from(range(len(VALIDATORS))))
def test_the_endpoint_validators_pass_or_answer_a_400(body, which):
    count("validators")
    try:
        VALIDATORS[which](body)
    except ApiError as exc:
        assert exc.status == 400 and exc.message


@FAST
@given(st.text(max_size=200))
def test_a_user_id_is_valid_as_given_or_a_400(user_id):
    count("user_id")
    try:
        assert validate_user_id(user_id) == user_id
        assert "/" not in user_id and ".." != user_id[:2] and len(user_id) <= 128
    except ApiError as exc:
        assert exc.status == 400


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, openai_fake):
    config = write_config(tmp_path_factory.mktemp("fuzz"), openai_fake.url,
                          memory='backend = "sqlite"')
    with Daemon(config) as daemon:
        yield daemon


@pytest.fixture(scope="module")
def http():
    with requests.Session() as session:
        yield session


PATHS = ["/v1/chat/completions", "/v1/messages", "/v1/messages/count_tokens",
         "/v1/responses", "/v1/completions", "/v1/embeddings", "/v1/memories/search"]


@LIVE
@given(st.sampled_from(PATHS), BODIES.map(lambda b: {**b, "model": "demo"}))
def test_any_json_to_any_model_endpoint_is_never_a_5xx(gateway, http, path, body):
    """The offline ``demo`` model goes through litellm: what passes validation must not make
    litellm choke (the 502 "'int' object has no attribute 'get'" of issue #12)."""
    count("live_json")
    resp = http.post(gateway.url + path, json=body, timeout=30,
                     headers={"x-memory-user-id": "fuzz-json"})
    assert resp.status_code < 500, (path, body, resp.text[:300])


PART = st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url", "input_text",
                                                       "future", "tool_result"])},
                             optional={"text": st.text(max_size=20), "x": JSON})
MESSAGE = st.fixed_dictionaries({
    "role": st.sampled_from(["user", "assistant", "system", "tool", "developer"]),
    "content": st.text(max_size=30) | st.lists(PART, max_size=3)}, optional={"name": JSON})
OPTIONAL = st.dictionaries(st.sampled_from(
    ["max_tokens", "temperature", "stream", "stop", "tools", "tool_choice", "n", "top_p",
     "metadata", "system", "user", "seed", "response_format", "instructions", "vendor"]),
    JSON, max_size=3)
NEAR_VALID = st.tuples(st.sampled_from(PATHS[:4]), st.lists(MESSAGE, min_size=1, max_size=3),
                       OPTIONAL)


@LIVE
@given(NEAR_VALID)
def test_near_valid_requests_through_litellm_are_never_a_5xx(gateway, http, case):
    """Bodies that mostly pass validation, to the litellm-routed ``demo`` model."""
    count("live_near_valid")
    path, messages, extra = case
    body = {"model": "demo", "messages": messages, "input": messages, "max_tokens": 5,
            **extra}
    resp = http.post(gateway.url + path, json=body, timeout=30,
                     headers={"x-memory-user-id": "fuzz-near"})
    assert resp.status_code < 500, (path, body, resp.text[:300])


@LIVE
@given(st.binary(max_size=200), st.sampled_from(["application/json", "text/plain", "",
                                                 "application/x-www-form-urlencoded"]))
def test_any_bytes_with_any_content_type_is_never_a_5xx(gateway, http, raw, ctype):
    count("live_bytes")
    resp = http.post(gateway.url + "/v1/chat/completions", data=raw, timeout=30,
                     headers={"content-type": ctype} if ctype else {})
    assert 400 <= resp.status_code < 500


# requests refuses to send a value with leading whitespace; the server never sees one
HEADER_TEXT = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=150).map(
    str.lstrip)


@LIVE
@given(HEADER_TEXT, HEADER_TEXT, HEADER_TEXT)
def test_any_identity_or_mode_header_is_never_a_5xx(gateway, http, user, mode, conversation):
    count("live_headers")
    resp = http.post(gateway.url + "/v1/chat/completions", timeout=30, json={
        "model": "gpt-ok", "messages": [{"role": "user", "content": "hi"}]},
        headers={"x-memory-user-id": user, "x-memory-mode": mode,
                 "x-memproxy-conversation-id": conversation})
    assert resp.status_code in (200, 400), resp.text[:300]


@LIVE
@given(st.lists(JSON, min_size=1, max_size=3) | JSON)
def test_a_rejected_memory_write_writes_nothing(gateway, http, payload):
    count("live_memory_writes")
    body = ({"user_id": "fuzz-writes", "memories": payload} if isinstance(payload, list)
            else {"user_id": "fuzz-writes", "content": payload})
    before = _stored(gateway, http, "fuzz-writes")
    resp = http.post(gateway.url + "/v1/memories", json=body, timeout=30)
    assert resp.status_code in (201, 400), resp.text[:300]
    added = len(resp.json()["data"]) if resp.status_code == 201 else 0
    assert _stored(gateway, http, "fuzz-writes") == before + added


def _stored(gateway, http, user: str) -> int:
    resp = http.get(gateway.url + "/v1/memories", params={"user_id": user, "limit": 1000})
    return len(resp.json()["data"])


# -- #23: numbers beyond a double, header bytes that are not UTF-8, crafted cursors --------

HUGE = st.builds(lambda sign, digits, exp: f"{sign}{digits}e{exp}",
                 st.sampled_from(["", "-"]), st.integers(1, 10**6).map(str),
                 st.integers(300, 10**5) | st.integers(-(10**5), -300))


@FAST
@given(HUGE, st.sampled_from(['{{"temperature": {}}}', '{{"metadata": {{"x": [{}]}}}}',
                              '{{"a": {{"b": {}}}, "model": "m"}}']))
def test_a_number_beyond_a_double_is_a_400_or_a_finite_number(number, template):
    count("huge_numbers")
    try:
        parsed = validate.parse_json(template.format(number).encode())
    except ApiError as exc:
        assert exc.status == 400
        return
    assert "inf" not in repr(parsed) and "nan" not in repr(parsed)   # 1e-400 is 0.0


# requests sends a str header as latin-1: characters 0x80-0xff arrive as bytes that are not
# UTF-8 (aiohttp keeps them as lone surrogates)
LATIN1 = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xff,
                               blacklist_characters="\x7f"), min_size=1, max_size=40).map(
    str.lstrip).filter(bool)
HEADER_NAMES = st.sampled_from(["authorization", "x-api-key", "x-memproxy-api-key",
                                "x-goog-api-key", "x-admin-key", "x-memory-user-id",
                                "x-memory-mode", "x-memproxy-conversation-id",
                                "x-claude-code-session-id", "traceparent", "origin"])


@LIVE
@given(HEADER_NAMES, LATIN1, st.sampled_from(["/v1/chat/completions", "/admin/status",
                                              "/v1/memories"]))
def test_any_header_bytes_are_never_a_5xx(gateway, http, name, value, path):
    count("live_header_bytes")
    if path == "/v1/chat/completions":
        resp = http.post(gateway.url + path, timeout=30, headers={name: value}, json={
            "model": "gpt-ok", "messages": [{"role": "user", "content": "hi"}]})
    else:
        resp = http.get(gateway.url + path, params={"user_id": "fuzz-hb"}, timeout=30,
                        headers={name: value})
    assert resp.status_code < 500, (name, value, resp.text[:300])


@LIVE
@given(st.sampled_from(["/v1/memories", "/admin/memories", "/v1/usage"]),
       st.sampled_from(["cursor", "since", "rows", "limit"]), st.text(max_size=40))
def test_any_paging_or_time_parameter_is_a_200_or_a_400(gateway, http, path, name, value):
    count("live_params")
    resp = http.get(gateway.url + path, params={"user_id": "fuzz-q", name: value}, timeout=30)
    assert resp.status_code in (200, 400), (path, name, value, resp.text[:300])
    if resp.status_code == 200:
        assert "NaN" not in resp.text and "Infinity" not in resp.text


def test_the_fuzzers_ran_their_cases():
    print(f"\nhypothesis cases: {sum(RAN.values())} {RAN}")
    assert RAN.get("parse_json", 0) >= 100 and RAN.get("live_json", 0) >= 30
