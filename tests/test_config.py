"""Config parsing: typos and wrong types name the file, the key and the expectation."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from memproxyd.config import PACKAGED_CONFIG, Config, ConfigError, load_config
from memproxyd.memory import vectors

REPO = Path(__file__).resolve().parents[1]


def load(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return load_config(path)


def test_shipped_config_is_valid_and_equals_code_defaults():
    config = load_config(REPO / "etc" / "memproxyd.toml")
    assert PACKAGED_CONFIG.read_text() == (REPO / "etc" / "memproxyd.toml").read_text()
    default = Config()
    assert config.server == default.server
    assert config.memory == default.memory
    assert default.memory.vector_weight == vectors.WEIGHT     # the stores' own default
    assert config.supermemory == default.supermemory
    assert config.postgres == default.postgres
    assert config.identity == default.identity
    assert config.auth == default.auth
    assert (config.usage, config.tracing, config.access) == (default.usage, default.tracing,
                                                             default.access)
    assert [m.model_name for m in config.model_list] == ["demo"]


@pytest.mark.parametrize("text,expected", [
    ("[server]\nprot = 1\n", "unknown key 'server.prot'"),
    ("[server]\nport = \"x\"\n", "'server.port' expected an integer, got a string"),
    ("[auth]\nkeys = \"sk-1\"\n", "'auth.keys' expected a list"),
    ("[[model_list]]\nmodel_name = \"a\"\n", "missing required key 'model_list[0].litellm_params'"),
    ("[[model_list]]\nmodel_name = \"a\"\n[model_list.litellm_params]\nmodel = \"x\"\n"
     "api_kee = \"k\"\n", "unknown key 'model_list[0].litellm_params.api_kee'"),
    ("[memory]\nbackend = \"redis\"\n", "'memory.backend' expected one of sqlite, postgres, supermemory, off"),
    ("[access]\n[[access.rules]]\nusers = [\"a\"]\n",
     "missing required key 'access.rules[0].models'"),
    ("[usage]\nretention_days = \"7d\"\n", "'usage.retention_days' expected an integer"),
    ("[server]\nport = 70000\n", "'server.port' expected 0-65535"),
    ("[memory]\ntop_k = true\n", "'memory.top_k' expected an integer, got a boolean"),
    ("[server\n", "invalid TOML"),
    ("[server]\nlog_level = \"LOUD\"\n", "'server.log_level' expected one of DEBUG"),
    ("[identity]\ndefault_user_id = \"bad id\"\n", "'identity.default_user_id' expected 1-128"),
    ("[memory]\npersonal = \"me too\"\n", "'memory.personal' expected 1-128"),
    ("[memory]\npersonal = \"default\"\n",
     "'memory.personal' must not be an identity calls are remembered for "
     "(identity.default_user_id)"),
    ("[[identity.header_patterns]]\nheader = \"user-agent\"\npattern = \"^(unclosed\"\n"
     "user_id = \"x\"\n", "'identity.header_patterns[0].pattern' is not a valid regular"),
    ("[memory]\nskip_system_patterns = [\"[\"]\n", "'memory.skip_system_patterns[0]' is not a"),
    ("[postgres]\ndsn = \"mysql://x\"\n", "'postgres.dsn' expected a postgresql:// URL"),
    ("[postgres]\npool_size = 0\n", "'postgres.pool_size' expected at least 1"),
])
def test_invalid_config_names_file_key_and_expectation(tmp_path, text, expected):
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    assert str(tmp_path / "c.toml") in str(info.value)
    assert expected in str(info.value)


def test_duplicate_model_names_are_refused(tmp_path):
    entry = "[[model_list]]\nmodel_name = \"a\"\n[model_list.litellm_params]\nmodel = \"x\"\n"
    with pytest.raises(ConfigError, match="duplicate model_name 'a'"):
        load(tmp_path, entry * 2)


def test_integers_are_accepted_where_seconds_are_floats(tmp_path):
    assert load(tmp_path, "[server]\nshutdown_timeout = 3\n").server.shutdown_timeout == 3.0


def test_check_exits_0_for_valid_and_2_for_invalid(tmp_path):
    good = subprocess.run([sys.executable, "-m", "memproxyd", "--check", "--config",
                           str(REPO / "etc" / "memproxyd.toml")], capture_output=True, text=True)
    assert good.returncode == 0, good.stderr
    bad_path = tmp_path / "bad.toml"
    bad_path.write_text("[server]\nport = \"eighty\"\n")
    bad = subprocess.run([sys.executable, "-m", "memproxyd", "--check", "--config",
                          str(bad_path)], capture_output=True, text=True)
    assert bad.returncode == 2
    assert "server.port" in bad.stderr and str(bad_path) in bad.stderr
