from __future__ import annotations

import pytest

from memproxyd.config import HeaderPattern, IdentityConfig
from memproxyd.errors import ApiError
from memproxyd.identity import IdentityResolver, validate_user_id

CONFIG = IdentityConfig(header_patterns=(
    HeaderPattern("user-agent", "^OpenAIClientImpl/Java", "pycharm"),
    HeaderPattern("user-agent", "claude-cli", "claude"),
))


def test_project_port_beats_header_and_patterns():
    resolver = IdentityResolver(CONFIG)
    headers = {"x-memory-user-id": "alice", "user-agent": "OpenAIClientImpl/Java 17"}
    assert resolver.resolve(headers, "alpha") == "alpha"


def test_header_beats_patterns_and_patterns_beat_default():
    resolver = IdentityResolver(CONFIG)
    assert resolver.resolve({"x-memory-user-id": "alice",
                             "user-agent": "OpenAIClientImpl/Java"}, None) == "alice"
    assert resolver.resolve({"user-agent": "OpenAIClientImpl/Java 17"}, None) == "pycharm"
    assert resolver.resolve({"user-agent": "claude-cli/1.0"}, None) == "claude"
    assert resolver.resolve({"user-agent": "curl/8"}, None) == "default"


@pytest.mark.parametrize("bad", ["", " ", "../x", "a/b", "a b", "x" * 129, "-lead", "é",
                                 "alice\n"])
def test_invalid_user_ids_are_refused_before_storage(bad):
    with pytest.raises(ApiError) as info:
        validate_user_id(bad)
    with pytest.raises(ApiError):
        IdentityResolver(CONFIG).resolve({"x-memory-user-id": bad + "!"}, None)
    assert info.value.status == 400
