"""Who may use the daemon: keys, the admin rule, browsers, and reload safety."""
from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from memproxyd.ctl import cli
from memproxyd.registry import read_registry
from tests.conftest import GATEWAY_KEY, free_port, write_config


def call(url: str, method: str = "GET", body: dict | None = None, **headers) -> tuple[int, dict]:
    request = urllib.request.Request(url, method=method, headers={
        "content-type": "application/json", **headers},
        data=json.dumps(body).encode() if body is not None else None)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture
def open_daemon(tmp_path, openai_fake, start_daemon):
    return start_daemon(write_config(tmp_path, openai_fake.url))


def test_cross_site_pages_cannot_drive_a_keyless_daemon(open_daemon, tmp_path):
    status, body = call(open_daemon.url + "/admin/projects", "POST",
                        {"name": "evil", "port": free_port()}, origin="https://evil.example")
    assert (status, body["error"]["code"]) == (403, "cross_origin")
    status, body = call(open_daemon.url + "/v1/memories", "POST",
                        {"user_id": "u", "content": "poison"}, origin="http://evil.example")
    assert status == 403
    assert read_registry(tmp_path / "state" / "projects.json") == {}


@pytest.mark.parametrize("headers", [
    {"origin": "null"},                                  # sandboxed iframe, file: page
    {"origin": "http://127.0.0.1:3000"},                 # a local dev server: loopback, not us
    {"origin": "http://localhost"},
    {"origin": "file://"},
    {"origin": "chrome-extension://abcdefgh"},
    {"sec-fetch-site": "cross-site"},                    # no Origin, but a browser's mark
    {"sec-fetch-site": "same-site"},
])
def test_no_page_but_our_own_may_write_memories_or_projects(tmp_path, openai_fake,
                                                            start_daemon, headers):
    daemon = start_daemon(write_config(tmp_path, openai_fake.url, memory='backend = "sqlite"',
                                       auth=f'keys = ["{GATEWAY_KEY}"]'))
    status, body = call(daemon.url + "/admin/projects", "POST",
                        {"name": "evil", "port": free_port()}, **headers)
    assert (status, body["error"]["code"]) == (403, "cross_origin")
    status, body = call(daemon.url + "/v1/memories", "POST", {"user_id": "u", "content": "x"},
                        authorization=f"Bearer {GATEWAY_KEY}", **headers)
    assert (status, body["error"]["code"]) == (403, "cross_origin")
    assert read_registry(tmp_path / "state" / "projects.json") == {}
    status, body = call(daemon.url + "/v1/memories?user_id=u",
                        authorization=f"Bearer {GATEWAY_KEY}")
    assert (status, body["data"]) == (200, [])


def test_our_own_page_and_editor_webviews_pass_but_webviews_need_the_admin_key(
        tmp_path, openai_fake, start_daemon):
    open_daemon = start_daemon(write_config(tmp_path, openai_fake.url,
                                            memory='backend = "sqlite"'))
    own = f"http://localhost:{open_daemon.port}"
    status, _ = call(open_daemon.url + "/v1/memories", "POST",
                     {"user_id": "u", "content": "from /ui"}, origin=own)
    assert status == 201
    assert call(open_daemon.url + "/admin/status", **{"sec-fetch-site": "same-origin"})[0] == 200
    assert call(open_daemon.url + "/admin/status", origin=own)[0] == 200
    webview = "vscode-webview://1a2b3c"
    assert call(open_daemon.url + "/v1/models", origin=webview)[0] == 200
    status, body = call(open_daemon.url + "/admin/status", origin=webview)
    assert (status, body["error"]["code"]) == (403, "admin_forbidden")


def test_dns_rebinding_hosts_are_refused_without_a_key(open_daemon):
    for path in ("/admin/status", "/v1/models"):
        status, body = call(open_daemon.url + path, host=f"evil.example:{open_daemon.port}")
        assert (status, body["error"]["code"]) == (403, "host_not_allowed"), path
    assert call(open_daemon.url + "/v1/models", host=f"localhost:{open_daemon.port}")[0] == 200
    assert call(open_daemon.url + "/v1/models", origin="vscode-webview://abc")[0] == 200
    assert call(open_daemon.url + "/v1/models",
                origin=f"http://127.0.0.1:{open_daemon.port}")[0] == 200


def test_with_keys_any_host_name_works_for_keyed_clients(tmp_path, openai_fake, start_daemon):
    daemon = start_daemon(write_config(tmp_path, openai_fake.url,
                                       auth=f'keys = ["{GATEWAY_KEY}"]'))
    status, _ = call(daemon.url + "/v1/models", host="workstation.lan",
                     authorization=f"Bearer {GATEWAY_KEY}")
    assert status == 200
    assert call(daemon.url + "/v1/models", host="workstation.lan")[0] == 401


def test_gateway_errors_carry_identity_and_overhead_headers(open_daemon):
    request = urllib.request.Request(open_daemon.url + "/v1/chat/completions", data=b"{}",
                                     headers={"x-memory-user-id": "olga"})
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=10)
    assert info.value.code == 400
    assert info.value.headers["x-memproxy-user-id"] == "olga"
    assert float(info.value.headers["x-memproxy-overhead-ms"]) >= 0


def test_reload_keeps_the_bound_address_and_refuses_to_drop_keys_off_loopback(
        tmp_path, openai_fake, start_daemon, capsys):
    config = write_config(tmp_path, openai_fake.url, auth=f'keys = ["{GATEWAY_KEY}"]')
    original = config.read_text()
    daemon = start_daemon(config)
    config.write_text(original.replace('host = "127.0.0.1"', 'host = "0.0.0.0"', 1))
    status, body = call(daemon.url + "/admin/reload", "POST", {})
    assert status == 200 and body["needs_restart"] == ["server.host"]
    status, body = call(daemon.url + "/admin/status")
    assert body["gateway"]["host"] == "127.0.0.1"
    config.write_text(original.replace("[memory]", "[memory]\ntop_k = \"many\"", 1))
    assert cli.main(["--config", str(config), "reload"]) == 2
    assert "memory.top_k" in capsys.readouterr().err


def test_keys_cannot_be_dropped_by_reload_on_a_non_loopback_bind(tmp_path, openai_fake,
                                                                 start_daemon):
    config = write_config(tmp_path, openai_fake.url, auth=f'keys = ["{GATEWAY_KEY}"]')
    keyed = config.read_text().replace('host = "127.0.0.1"', 'host = "0.0.0.0"', 1)
    config.write_text(keyed)
    daemon = start_daemon(config)
    config.write_text(keyed.replace(f'keys = ["{GATEWAY_KEY}"]', "keys = []"))
    status, body = call(daemon.url + "/admin/reload", "POST", {})
    assert (status, body["error"]["code"]) == (400, "config_invalid")
    assert "no [auth] keys" in body["error"]["message"]
    assert call(daemon.url + "/v1/models")[0] == 401     # still protected


@pytest.mark.parametrize("description", [7, ["a"], "x" * 501])
def test_a_project_description_that_is_not_short_text_is_a_400(open_daemon, tmp_path,
                                                               description):
    status, body = call(open_daemon.url + "/admin/projects", "POST",
                        {"name": "alpha", "port": free_port(), "description": description})
    assert (status, body["error"]["code"]) == (400, "invalid_project")
    assert read_registry(tmp_path / "state" / "projects.json") == {}
