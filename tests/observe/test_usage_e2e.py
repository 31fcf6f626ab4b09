"""The usage ledger, /v1/usage, memproxyctl usage, /metrics and trace context, against the
real daemon with the official SDKs and fake upstreams on loopback."""
from __future__ import annotations

import json
import uuid

import urllib.error
import urllib.request

import anthropic
import openai
import pytest

from memproxyd.ctl import cli
from memproxyd.observe.prices import bundled_price_file
from tests.conftest import UPSTREAM_KEY, Daemon, free_port, upstream_records, write_config
from tests.fakes import anthropic_upstream, responses_upstream
from tests.fakes.threaded import ThreadedServer

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


def extra_models(openai_url: str, anthropic_url: str, responses_url: str) -> str:
    return (f'[[model_list]]\nmodel_name = "resp-ok"\n[model_list.litellm_params]\n'
            f'model = "openai/ok"\napi_base = "{responses_url}/v1"\n'
            f'api_key = "{UPSTREAM_KEY}"\n\n'
            f'[[model_list]]\nmodel_name = "gpt-4o-mini"\n[model_list.litellm_params]\n'
            f'model = "openai/gpt-4o-mini"\napi_base = "{openai_url}/v1"\n'
            f'api_key = "{UPSTREAM_KEY}"\n\n'
            f'[[model_list]]\nmodel_name = "priced"\n[model_list.litellm_params]\n'
            f'model = "openai/ok"\napi_base = "{openai_url}/v1"\napi_key = "{UPSTREAM_KEY}"\n'
            f'[model_list.model_info]\ninput_cost_per_token = 0.001\n'
            f'output_cost_per_token = 0.002\n\n'
            f'[[model_list]]\nmodel_name = "claude-usage"\n[model_list.litellm_params]\n'
            f'model = "anthropic/usage-target"\napi_base = "{anthropic_url}"\n'
            f'api_key = "{UPSTREAM_KEY}"\n')


@pytest.fixture(scope="module")
def anthropic_fake():
    server = ThreadedServer(anthropic_upstream.create_app()).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def responses_fake():
    server = ThreadedServer(responses_upstream.create_app()).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, openai_fake, anthropic_fake, responses_fake):
    config = write_config(tmp_path_factory.mktemp("usage"), openai_fake.url,
                          extra=extra_models(openai_fake.url, anthropic_fake.url,
                                             responses_fake.url))
    started = Daemon(config)
    try:
        yield started.wait_ready()
    finally:
        started.stop()


def oai(daemon: Daemon | str, user: str, **headers) -> openai.OpenAI:
    url = daemon if isinstance(daemon, str) else daemon.url
    return openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0,
                         default_headers={"x-memory-user-id": user, **headers})


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def rows_of(daemon: Daemon, user: str) -> list[dict]:
    report = get_json(f"{daemon.url}/v1/usage?project={user}&rows=100")
    return list(reversed(report["rows"]))   # oldest first


def ask(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def sent_upstream(fake, text: str) -> list[dict]:
    """What the fake upstream received for the chat whose one message is ``text``."""
    return [r for r in upstream_records(fake) if r["json"].get("messages") == ask(text)]


def test_openai_rows_carry_the_upstream_usage_streamed_or_not(daemon, openai_fake):
    user = f"u-{uuid.uuid4().hex[:8]}"
    client = oai(daemon, user)
    client.chat.completions.create(model="gpt-ok", messages=ask("whole"))
    chunks = list(client.chat.completions.create(model="gpt-ok", messages=ask("streamed"),
                                                 stream=True))
    # memproxyd asked the upstream for usage; the client, who did not, never sees that event
    sent = sent_upstream(openai_fake, "streamed")
    assert sent[0]["json"]["stream_options"] == {"include_usage": True}
    assert all(c.choices for c in chunks) and all(c.usage is None for c in chunks)
    whole, streamed = rows_of(daemon, user)
    for row in (whole, streamed):
        assert (row["prompt_tokens"], row["completion_tokens"]) == (3, 2)
        assert row["status"] == 200 and row["model"] == "gpt-ok"
        assert row["deployment"] == "openai/ok" and row["protocol"] == "openai"
        assert row["endpoint"] == "/v1/chat/completions" and row["memory"] == "off"
        assert row["latency_ms"] >= row["overhead_ms"] > 0
        assert row["cost_usd"] is None            # openai/ok has no price anywhere
    assert whole["ttft_ms"] is None and 0 < streamed["ttft_ms"] <= streamed["latency_ms"]


def test_a_client_that_asks_for_usage_gets_it_unchanged(daemon):
    user = f"u-{uuid.uuid4().hex[:8]}"
    chunks = list(oai(daemon, user).chat.completions.create(
        model="gpt-ok", messages=ask("mine"), stream=True,
        stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage.prompt_tokens == 3
    assert rows_of(daemon, user)[0]["completion_tokens"] == 2


def test_cost_from_litellms_price_map_and_from_model_info(daemon):
    user = f"u-{uuid.uuid4().hex[:8]}"
    client = oai(daemon, user)
    client.chat.completions.create(model="gpt-4o-mini", messages=ask("known price"))
    client.chat.completions.create(model="priced", messages=ask("own price"))
    prices = json.loads(bundled_price_file().read_text())["gpt-4o-mini"]
    expected = 3 * prices["input_cost_per_token"] + 2 * prices["output_cost_per_token"]
    mapped, own = rows_of(daemon, user)
    assert mapped["cost_usd"] == pytest.approx(expected)
    assert own["cost_usd"] == pytest.approx(3 * 0.001 + 2 * 0.002)


def test_anthropic_rows_streamed_or_not(daemon):
    user = f"u-{uuid.uuid4().hex[:8]}"
    client = anthropic.Anthropic(base_url=daemon.url, api_key="x", max_retries=0,
                                 default_headers={"x-memory-user-id": user})
    client.messages.create(model="claude-usage", max_tokens=64, messages=ask("whole"))
    with client.messages.stream(model="claude-usage", max_tokens=64,
                                messages=ask("streamed")) as stream:
        stream.get_final_message()
    rows = rows_of(daemon, user)
    assert [(r["prompt_tokens"], r["completion_tokens"]) for r in rows] == [(12, 7), (12, 7)]
    assert [r["protocol"] for r in rows] == ["anthropic", "anthropic"]
    assert rows[0]["ttft_ms"] is None and rows[1]["ttft_ms"] > 0


def test_responses_rows_streamed_or_not(daemon):
    user = f"u-{uuid.uuid4().hex[:8]}"
    client = oai(daemon, user)
    client.responses.create(model="resp-ok", input="whole")
    events = list(client.responses.create(model="resp-ok", input="streamed", stream=True))
    assert events[-1].type == "response.completed"
    rows = rows_of(daemon, user)
    assert [(r["prompt_tokens"], r["completion_tokens"]) for r in rows] == [(3, 2), (3, 2)]
    assert [r["endpoint"] for r in rows] == ["/v1/responses", "/v1/responses"]
    assert rows[1]["ttft_ms"] > 0


def test_memproxyctl_usage_sums_calls_tokens_and_cost(daemon, capsys):
    user = f"u-{uuid.uuid4().hex[:8]}"
    client = oai(daemon, user)
    for text in ("one", "two"):
        client.chat.completions.create(model="priced", messages=ask(text))
    argv = ["--config", str(daemon.config), "usage", "--project", user, "--since", "1h"]
    assert cli.main(argv) == 0
    table = capsys.readouterr().out.splitlines()
    line = next(line for line in table if line.startswith("priced"))
    assert line.split()[1:8] == ["2", "0", "6", "4", "0", "0", f"{2 * 0.007:.6f}"]
    assert cli.main(argv + ["--by", "day", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["groups"][0]["calls"] == 2 and report["by"] == "day"


def test_metrics_after_calls(daemon):
    user = f"u-{uuid.uuid4().hex[:8]}"
    list(oai(daemon, user).chat.completions.create(model="gpt-ok", messages=ask("metrics"),
                                                   stream=True))
    with pytest.raises(openai.InternalServerError):
        oai(daemon, user).chat.completions.create(model="gpt-500", messages=ask("fail"))
    with urllib.request.urlopen(daemon.url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    assert ('memproxy_requests_total{model="gpt-ok",project="gateway",'
            'route="/v1/chat/completions",status="200"}') in text
    assert 'memproxy_upstream_errors_total{model="gpt-500",status="500"}' in text
    assert 'memproxy_time_to_first_token_seconds_count{model="gpt-ok"}' in text
    assert 'memproxy_memory_calls_total{status="off"}' in text
    assert "memproxy_active_sessions" in text and "memproxy_overhead_seconds_bucket" in text
    assert user not in text                      # user ids are no label


def test_traceparent_reaches_the_upstream_and_comes_back(daemon, openai_fake):
    user = f"u-{uuid.uuid4().hex[:8]}"
    raw = oai(daemon, user, traceparent=TRACEPARENT).chat.completions.with_raw_response.create(
        model="gpt-ok", messages=ask("traced"))
    assert raw.headers["x-memproxy-trace-id"] == TRACE_ID
    sent = sent_upstream(openai_fake, "traced")
    upstream = sent[0]["headers"]["traceparent"].split("-")
    assert upstream[1] == TRACE_ID and upstream[2] != "00f067aa0ba902b7"   # our span
    assert rows_of(daemon, user)[0]["trace_id"] == TRACE_ID


def test_without_traceparent_a_new_trace_is_in_header_upstream_and_log(daemon, openai_fake):
    user = f"u-{uuid.uuid4().hex[:8]}"
    client = oai(daemon, user)
    raw = client.chat.completions.with_raw_response.create(model="gpt-ok",
                                                          messages=ask("untraced"))
    trace_id = raw.headers["x-memproxy-trace-id"]
    assert len(trace_id) == 32 and trace_id != "0" * 32
    sent = sent_upstream(openai_fake, "untraced")
    assert sent[0]["headers"]["traceparent"].split("-")[1] == trace_id
    # a failing stream logs a warning: that line carries the request's trace id
    failing = client.chat.completions.with_raw_response.create(
        model="gpt-midstream", messages=ask("midstream"), stream=True)
    with pytest.raises(openai.APIError):
        list(failing.parse())
    failing_id = failing.headers["x-memproxy-trace-id"]
    warning = [line for line in daemon.log().splitlines() if "upstream stream failed" in line]
    assert any(line.endswith(f"trace_id={failing_id}") for line in warning)


def test_rows_of_calls_translated_by_litellm(daemon):
    user = f"u-{uuid.uuid4().hex[:8]}"
    client = oai(daemon, user)
    client.chat.completions.create(model="via-litellm", messages=ask("whole"))
    chunks = list(client.chat.completions.create(model="via-litellm", messages=ask("streamed"),
                                                 stream=True))
    assert chunks and all(c.usage is None for c in chunks)   # not asked, not relayed
    rows = rows_of(daemon, user)
    assert [(r["prompt_tokens"], r["completion_tokens"]) for r in rows] == [(3, 2), (3, 2)]
    assert [r["deployment"] for r in rows] == ["openai/ok", "openai/ok"]


def test_a_project_port_sees_its_own_usage_only_and_no_ui(daemon):
    port = free_port()
    assert cli.main(["--config", str(daemon.config), "add-project", "usage-proj",
                     "--port", str(port)]) == 0
    project_url = f"http://127.0.0.1:{port}"
    oai(project_url, "ignored").chat.completions.create(model="gpt-ok", messages=ask("p"))
    other = f"u-{uuid.uuid4().hex[:8]}"
    oai(daemon, other).chat.completions.create(model="gpt-ok", messages=ask("o"))
    mine = get_json(f"{project_url}/v1/usage?project={other}&by=project")
    assert [g["project"] for g in mine["groups"]] == ["usage-proj"]
    everyone = get_json(f"{daemon.url}/v1/usage?by=project")   # loopback admin: all
    assert {"usage-proj", other} <= {g["project"] for g in everyone["groups"]}
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(project_url + "/ui", timeout=10)
    assert missing.value.code == 404
    with urllib.request.urlopen(daemon.url + "/ui", timeout=10) as page:
        assert "default-src 'none'" in page.headers["content-security-policy"]


def test_embeddings_rows_count_their_input_tokens(daemon):
    user = f"u-{uuid.uuid4().hex[:8]}"
    oai(daemon, user).embeddings.create(model="embed-ok", input=["a", "b"])
    [row] = rows_of(daemon, user)
    assert (row["prompt_tokens"], row["completion_tokens"], row["status"]) == (1, 0, 200)
    assert row["endpoint"] == "/v1/embeddings"


@pytest.mark.parametrize("model", ["via-litellm", "via-mistral"])
def test_traceparent_reaches_the_upstream_through_litellm(daemon, openai_fake, model):
    text = f"traced {model} {uuid.uuid4().hex[:6]}"
    oai(daemon, "tracer", traceparent=TRACEPARENT).chat.completions.create(
        model=model, messages=ask(text))
    [record] = sent_upstream(openai_fake, text)
    assert record["headers"]["traceparent"].split("-")[1] == TRACE_ID


def test_calls_refused_before_the_upstream_have_rows_too(daemon):
    user = f"u-{uuid.uuid4().hex[:8]}"
    with pytest.raises(openai.NotFoundError):
        oai(daemon, user).chat.completions.create(model="no-such-model", messages=ask("x"))
    with pytest.raises(openai.BadRequestError):     # its key variable is not set
        oai(daemon, user).chat.completions.create(model="needs-key", messages=ask("x"))
    rows = rows_of(daemon, user)
    assert [(r["model"], r["status"], r["deployment"]) for r in rows] == [
        ("no-such-model", 404, ""), ("needs-key", 400, "")]
