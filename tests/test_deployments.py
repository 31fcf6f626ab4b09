from __future__ import annotations

import pytest

from memproxyd.config import Config, LitellmParams, ModelEntry
from memproxyd.deployments import DeploymentTable
from memproxyd.errors import ApiError


def table(*entries: tuple[str, str, str]) -> DeploymentTable:
    return DeploymentTable(Config(model_list=tuple(
        ModelEntry(name, LitellmParams(model=model, api_base=base)) for name, model, base in entries)))


def test_wire_is_derived_from_the_model_prefix_and_api_base():
    deployments = table(("a", "openai/gpt-4o", ""), ("b", "anthropic/claude-x", ""),
                        ("c", "gemini/gemini-2.0", ""), ("d", "llama3", "http://h:1/v1"),
                        ("e", "bedrock/claude-x", ""))
    found = {n: (d.wire, d.upstream_model) for n in "abcde" for d in [deployments.lookup(n)]}
    # gemini/: the Gemini API natively (Google's endpoint unless api_base names another)
    assert found == {"a": ("openai", "gpt-4o"), "b": ("anthropic", "claude-x"),
                     "c": ("gemini", "gemini-2.0"), "d": ("openai", "llama3"),
                     "e": ("litellm", "bedrock/claude-x")}


def test_wildcards_map_the_requested_name_and_exact_names_win():
    deployments = table(("claude-*", "anthropic/*", ""), ("claude-special", "openai/x", ""),
                        ("gpt-*", "openai/gpt-*", ""))
    dep = deployments.lookup("claude-sonnet-4")
    assert (dep.wire, dep.upstream_model, dep.name) == ("anthropic", "claude-sonnet-4",
                                                       "claude-sonnet-4")
    assert deployments.lookup("claude-special").upstream_model == "x"
    assert deployments.lookup("gpt-4.1").upstream_model == "gpt-4.1"


def test_unknown_model_is_404_and_missing_model_400():
    with pytest.raises(ApiError) as info:
        table(("a", "openai/x", "")).lookup("b")
    assert info.value.status == 404
    with pytest.raises(ApiError) as info:
        table(("a", "openai/x", "")).lookup(None)
    assert info.value.status == 400


def test_missing_environment_key_disables_only_that_model(monkeypatch):
    monkeypatch.delenv("MEMPROXY_T_KEY", raising=False)
    deployments = DeploymentTable(Config(model_list=(
        ModelEntry("a", LitellmParams(model="openai/x", api_key="os.environ/MEMPROXY_T_KEY")),
        ModelEntry("b", LitellmParams(model="openai/y", api_key="sk-inline")))))
    listing = {m["id"]: m["available"] for m in deployments.listing()}
    assert listing == {"a": False, "b": True}
    with pytest.raises(ApiError) as info:
        deployments.lookup("a").api_key()
    assert info.value.status == 400 and "MEMPROXY_T_KEY" in info.value.message
    assert info.value.code == "model_unavailable"
    monkeypatch.setenv("MEMPROXY_T_KEY", "sk-now-set")
    assert deployments.lookup("a").api_key() == "sk-now-set"


def test_first_native_deployment_in_config_order_skips_wildcards_and_other_wires():
    deployments = table(("any-*", "openai/*", ""), ("gem", "gemini/g", ""),
                        ("one", "openai/one", ""), ("two", "openai/two", ""))
    assert deployments.first("openai").name == "one"
    assert table(("gem", "gemini/g", ""), ("c", "anthropic/c", "")).first("openai") is None
