"""[access]: who may use which model, on the gateway and on a project port, with reload."""
from __future__ import annotations

import json
import urllib.request

import anthropic
import openai
import pytest

from memproxyd.ctl import cli
from tests.conftest import free_port, write_config

ACCESS = ('[access]\ndefault_models = ["gpt-*"]\n'
          '[[access.rules]]\nusers = ["vip-*"]\nmodels = ["*"]\n')


@pytest.fixture
def gateway(tmp_path, openai_fake, start_daemon):
    return start_daemon(write_config(tmp_path, openai_fake.url, extra=ACCESS))


def oai(url: str, user: str = "plain") -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0,
                         default_headers={"x-memory-user-id": user})


def ask(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def model_ids(url: str, user: str) -> set[str]:
    return {m.id for m in oai(url, user).models.list()}


def usage_rows(daemon, user: str) -> list[dict]:
    url = f"{daemon.url}/v1/usage?project={user}&rows=10"
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())["rows"]


def test_gateway_denies_in_each_protocols_shape_and_records_the_refusal(gateway):
    assert oai(gateway.url).chat.completions.create(
        model="gpt-ok", messages=ask("allowed")).choices[0].message.content == "echo: allowed"
    with pytest.raises(openai.BadRequestError) as denied:
        oai(gateway.url).chat.completions.create(model="demo", messages=ask("no"))
    assert denied.value.body["code"] == "model_not_allowed"
    claude = anthropic.Anthropic(base_url=gateway.url, api_key="x", max_retries=0,
                                 default_headers={"x-memory-user-id": "plain"})
    with pytest.raises(anthropic.BadRequestError) as refused:
        claude.messages.create(model="demo", max_tokens=8, messages=ask("no"))
    assert refused.value.body["type"] == "error"
    assert refused.value.body["error"]["type"] == "invalid_request_error"
    rows = usage_rows(gateway, "plain")
    assert [(r["model"], r["status"]) for r in rows] == [("demo", 400), ("demo", 400),
                                                         ("gpt-ok", 200)]


def test_models_lists_only_what_the_caller_may_use(gateway):
    plain, vip = model_ids(gateway.url, "plain"), model_ids(gateway.url, "vip-1")
    assert "gpt-ok" in plain and "demo" not in plain and "via-litellm" not in plain
    assert {"gpt-ok", "demo", "via-litellm"} <= vip


def test_a_projects_own_model_list_on_its_port(gateway, capsys):
    port = free_port()
    argv = ["--config", str(gateway.config), "add-project", "beta", "--port", str(port),
            "--models", "gpt-ok"]
    assert cli.main(argv) == 0
    assert "beta may use: gpt-ok" in capsys.readouterr().out
    project_url = f"http://127.0.0.1:{port}"
    assert oai(project_url).chat.completions.create(model="gpt-ok", messages=ask("hi"))
    # gpt-500 matches default_models, but the project's own list is narrower
    with pytest.raises(openai.BadRequestError):
        oai(project_url).chat.completions.create(model="gpt-500", messages=ask("hi"))
    assert model_ids(project_url, "ignored") == {"gpt-ok"}
    assert ("gpt-500", 400) in {(r["model"], r["status"]) for r in usage_rows(gateway, "beta")}


def test_reload_applies_new_rules_at_once(gateway):
    oai(gateway.url).chat.completions.create(model="gpt-ok", messages=ask("before"))
    text = gateway.config.read_text().replace('default_models = ["gpt-*"]',
                                              'default_models = ["demo"]')
    gateway.config.write_text(text)
    assert cli.main(["--config", str(gateway.config), "reload"]) == 0
    with pytest.raises(openai.BadRequestError):
        oai(gateway.url).chat.completions.create(model="gpt-ok", messages=ask("after"))
