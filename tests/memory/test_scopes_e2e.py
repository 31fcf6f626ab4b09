"""Edit, pin and the personal scope end to end: the real daemon (embedded SQLite memory,
``[memory] personal = "me"``), two projects on their own ports, the official SDKs of every
protocol (openai chat and Responses, anthropic, google-genai) against the fake upstreams,
and what each upstream received: pinned and personal memories reach every block of their
projects, marked, and a project's own memories never reach another project on any path."""
from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

import anthropic
import openai
import pytest
from google import genai
from google.genai import types

from memproxyd.ctl import cli
from tests.api.test_gemini_e2e import gemini_models
from tests.api.test_responses_e2e import responses_models
from tests.conftest import Daemon, free_port, upstream_records, write_config
from tests.fakes import anthropic_upstream, gemini_upstream, responses_upstream
from tests.fakes.threaded import ThreadedServer

MEMORY = 'backend = "sqlite"\nrecall_timeout_ms = 2000\npersonal = "me"'
BLOCK = re.compile(r"<memproxy-memory>.*?</memproxy-memory>", re.DOTALL)


@pytest.fixture(scope="module")
def fakes():
    servers = {name: ThreadedServer(module.create_app()).start() for name, module in (
        ("anthropic", anthropic_upstream), ("responses", responses_upstream),
        ("gemini", gemini_upstream))}
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture(scope="module")
def setup(tmp_path_factory, openai_fake, fakes):
    """The daemon and the ports of projects alpha and beta."""
    tmp = tmp_path_factory.mktemp("scopes")
    extra = (responses_models(fakes["responses"].url) + gemini_models(fakes["gemini"].url)
             + '[[model_list]]\nmodel_name = "claude-*"\n[model_list.litellm_params]\n'
             f'model = "anthropic/*"\napi_base = "{fakes["anthropic"].url}"\n'
             'api_key = "sk-up"\n')
    config = write_config(tmp, openai_fake.url, extra=extra, memory=MEMORY)
    with Daemon(config) as daemon:
        ports = {}
        for name in ("alpha", "beta"):
            ports[name] = free_port()
            assert cli.main(["--config", str(config), "add-project", name,
                             "--port", str(ports[name])]) == 0
        yield daemon, ports


def call_api(url: str, method: str, path: str, body=None, **query) -> tuple[int, dict]:
    """(status, JSON) of one memory API call (errors included)."""
    full = url + path + ("?" + urllib.parse.urlencode(query) if query else "")
    request = urllib.request.Request(full, method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def ok(url: str, method: str, path: str, body=None, **query) -> dict:
    status, data = call_api(url, method, path, body, **query)
    assert status in (200, 201), (status, data)
    return data


def port_url(ports, name: str) -> str:
    return f"http://127.0.0.1:{ports[name]}"


def add(url: str, content: str, **fields) -> dict:
    return ok(url, "POST", "/v1/memories", {"content": content, **fields})["data"][0]


def ask(protocol: str, url: str, text: str, fakes, openai_fake) -> str:
    """Ask ``text`` through ``url`` with the protocol's official SDK; the block the upstream
    received with it ("" for none)."""
    if protocol == "chat":
        openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0).chat.completions.create(
            model="gpt-ok", messages=[{"role": "user", "content": text}])
        found = upstream_records(openai_fake)
    elif protocol == "responses":
        openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0).responses.create(
            model="gpt-resp", input=text)
        found = fakes["responses"].call(
            lambda: list(fakes["responses"].app[responses_upstream.RECORDS]))
    elif protocol == "messages":
        anthropic.Anthropic(base_url=url, api_key="x", max_retries=0).messages.create(
            model="claude-sonnet-4-5", max_tokens=200,
            messages=[{"role": "user", "content": text}])
        found = fakes["anthropic"].call(
            lambda: list(fakes["anthropic"].app[anthropic_upstream.RECORDS]))
    else:
        client = genai.Client(api_key="x", http_options=types.HttpOptions(base_url=url))
        client.models.generate_content(model="gemini-2.5-flash", contents=text)
        found = fakes["gemini"].call(lambda: list(fakes["gemini"].app[gemini_upstream.RECORDS]))
    [record] = [r for r in found if text in json.dumps(r["json"])]
    return block_of(record)


def block_of(record: dict) -> str:
    """The memory block of an upstream request ("" for none), as the model reads it."""
    blocks = BLOCK.findall(json.dumps(record["json"]))
    return json.loads(f'"{blocks[0]}"') if blocks else ""


def lines(block: str) -> list[str]:
    return [line for line in block.splitlines() if line.startswith("- [")]


@pytest.mark.parametrize("protocol", ["chat", "messages", "responses", "gemini"])
def test_pinned_and_personal_memories_reach_every_block_of_their_project_only(
        setup, fakes, openai_fake, protocol):
    daemon, ports = setup
    alpha, beta = port_url(ports, "alpha"), port_url(ports, "beta")
    tag = uuid.uuid4().hex[:8]
    pin = add(alpha, f"Alpha rule {tag}: every commit message is in English", pinned=True)
    add(alpha, f"The alpha kiln{tag} is fired on fridays")
    add(beta, f"The beta kiln{tag} is secret and fired on mondays",)
    beta_pin = add(beta, f"Beta rule {tag}: tabs only", pinned=True)
    # relevant to the questions below (a personal memory competes by score like any other:
    # one that shared only the made-up tag would be below min_score)
    add(alpha, f"I fire my kiln{tag} myself, and like answers about it short",
        scope="personal")

    block = ask(protocol, alpha, f"when is kiln{tag} fired? ({protocol})", fakes, openai_fake)
    shown = lines(block)
    assert shown[0].endswith(pin["content"]) and ", pinned] " in shown[0]   # first, marked
    assert any(f"alpha kiln{tag}" in line for line in shown)
    [personal] = [line for line in shown if f"my kiln{tag}" in line]
    assert ", personal] " in personal
    assert f"beta kiln{tag}" not in block and beta_pin["content"] not in block

    other = ask(protocol, beta, f"what about kiln{tag}? ({protocol})", fakes, openai_fake)
    assert lines(other)[0].endswith(beta_pin["content"])
    assert f"my kiln{tag}" in other and f"beta kiln{tag}" in other
    assert pin["content"] not in other and f"alpha kiln{tag}" not in other


def test_pins_take_at_most_a_quarter_of_the_block(setup, fakes, openai_fake):
    daemon, ports = setup
    gamma = f"http://127.0.0.1:{daemon.port}"
    user = f"pins-{uuid.uuid4().hex[:6]}"
    for i in range(12):
        add(gamma, f"pinned rule {i}: " + "x" * 150, pinned=True, user_id=user)
    add(gamma, "the glaze recipe uses cobalt", user_id=user)
    openai.OpenAI(base_url=gamma + "/v1", api_key="x", max_retries=0,
                  default_headers={"x-memory-user-id": user}).chat.completions.create(
        model="gpt-ok", messages=[{"role": "user", "content": f"{user}: which glaze recipe?"}])
    [record] = [r for r in upstream_records(openai_fake) if user + ":" in json.dumps(r["json"])]
    block = block_of(record)
    pinned = [line for line in lines(block) if ", pinned] " in line]
    assert 1 <= len(pinned) < 12 and sum(len(line) + 1 for line in pinned) <= 4000 // 4
    assert pinned[0].endswith("pinned rule 11: " + "x" * 150)            # newest pin first
    assert "cobalt" in lines(block)[len(pinned)]                          # then recall


def test_edit_reindexes_at_once_redacts_and_changes_only_its_own_project(setup):
    daemon, ports = setup
    alpha, beta = port_url(ports, "alpha"), port_url(ports, "beta")
    tag = uuid.uuid4().hex[:8]
    memory = add(alpha, f"deploys{tag} happen on tuesdays", metadata={"k": 1})
    status, refused = call_api(beta, "PATCH", f"/v1/memories/{memory['id']}",
                               {"content": "stolen"})
    assert status == 404 and refused["error"]["code"] == "memory_not_found"
    for bad, code in (({}, "nothing_to_change"), ({"content": ""}, "empty_content"),
                      ({"pinned": "yes"}, "invalid_pinned"), ({"metadata": []},
                                                              "invalid_metadata")):
        status, refused = call_api(alpha, "PATCH", f"/v1/memories/{memory['id']}", bad)
        assert status == 400 and refused["error"]["code"] == code
    secret = "sk-ant-api03-" + "a" * 30
    edited = ok(alpha, "PATCH", f"/v1/memories/{memory['id']}",
                {"content": f"releases{tag} ship on thursdays with key {secret}"})
    assert edited["id"] == memory["id"] and edited["metadata"] == {"k": 1}
    assert secret not in edited["content"] and "[REDACTED]" in edited["content"]
    found = ok(alpha, "POST", "/v1/memories/search", {"query": f"releases{tag} thursdays"})
    assert [r["id"] for r in found["results"]] == [memory["id"]]
    assert ok(alpha, "POST", "/v1/memories/search", {"query": f"deploys{tag}"})["results"] == []
    pinned = ok(alpha, "PATCH", f"/v1/memories/{memory['id']}", {"pinned": True})
    assert pinned["pinned"] is True and pinned["content"] == edited["content"]
    [hit] = ok(alpha, "POST", "/v1/memories/search", {"query": f"releases{tag}"})["results"]
    assert hit["pinned"] is True
    # the admin API mirrors it
    admin = f"http://127.0.0.1:{daemon.port}"
    again = ok(admin, "PATCH", f"/admin/memories/{memory['id']}",
               {"user_id": "alpha", "pinned": False})
    assert again["pinned"] is False


def test_promote_moves_a_memory_to_every_project_and_nothing_is_written_there_by_itself(
        setup, fakes, openai_fake):
    daemon, ports = setup
    alpha, beta = port_url(ports, "alpha"), port_url(ports, "beta")
    tag = uuid.uuid4().hex[:8]
    memory = add(alpha, f"I always want pottery{tag} answers in metric units")
    assert call_api(beta, "POST", f"/v1/memories/{memory['id']}/promote", {})[0] == 404
    promoted = ok(alpha, "POST", f"/v1/memories/{memory['id']}/promote", {})
    assert (promoted["id"], promoted["user_id"], promoted["scope"]) == (
        memory["id"], "me", "personal")
    assert call_api(alpha, "GET", f"/v1/memories/{memory['id']}")[0] == 404
    mine = ok(beta, "GET", f"/v1/memories/{memory['id']}", scope="personal")
    assert mine["content"] == memory["content"]
    block = ask("chat", beta, f"pottery{tag} kiln size?", fakes, openai_fake)
    assert any(", personal] " in line and f"pottery{tag}" in line for line in lines(block))
    # traffic of the personal id itself is never remembered
    before = ok(alpha, "GET", "/v1/memories", scope="personal")["total"]
    gateway = f"http://127.0.0.1:{daemon.port}"
    openai.OpenAI(base_url=gateway + "/v1", api_key="x", max_retries=0,
                  default_headers={"x-memory-user-id": "me"}).chat.completions.create(
        model="gpt-ok", messages=[{"role": "user", "content": f"remember {tag} as me"}])
    ask("chat", alpha, f"alpha asks {tag} something new", fakes, openai_fake)
    deadline = time.monotonic() + 10     # alpha's exchange, queued after me's, is delivered
    while not ok(alpha, "POST", "/v1/memories/search", {"query": f"alpha asks {tag}"}
                 )["results"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ok(alpha, "POST", "/v1/memories/search", {"query": f"alpha asks {tag}"})["results"]
    assert ok(alpha, "GET", "/v1/memories", scope="personal")["total"] == before


def test_a_projects_memories_never_reach_another_on_any_read_path(setup, capsys):
    daemon, ports = setup
    alpha, beta = port_url(ports, "alpha"), port_url(ports, "beta")
    tag = uuid.uuid4().hex[:8]
    own = add(alpha, f"alpha confidential{tag} roadmap", pinned=True)
    add(alpha, f"personal{tag} likes dark mode", scope="personal")
    search = ok(beta, "POST", "/v1/memories/search", {"query": f"confidential{tag} roadmap"})
    assert search["results"] == []
    listed = json.dumps(ok(beta, "GET", "/v1/memories", limit=1000))
    assert f"confidential{tag}" not in listed
    personal = json.dumps(ok(beta, "GET", "/v1/memories", scope="personal", limit=1000))
    assert f"personal{tag}" in personal and f"confidential{tag}" not in personal
    for method, path in (("GET", f"/v1/memories/{own['id']}"),
                         ("DELETE", f"/v1/memories/{own['id']}")):
        assert call_api(beta, method, path)[0] == 404
    status, refused = call_api(beta, "GET", "/v1/memories", user_id="alpha")
    assert status == 403
    admin = f"http://127.0.0.1:{daemon.port}"
    page = json.dumps(ok(admin, "GET", "/admin/memories", user_id="beta", limit=1000))
    assert f"confidential{tag}" not in page
    assert cli.main(["--config", str(daemon.config), "memory", "export", "beta"]) == 0
    assert f"confidential{tag}" not in capsys.readouterr().out
    assert ok(alpha, "GET", f"/v1/memories/{own['id']}")["pinned"] is True


def test_list_pages_through_every_memory_with_the_right_total(setup):
    daemon, ports = setup
    gateway = f"http://127.0.0.1:{daemon.port}"
    user = f"many-{uuid.uuid4().hex[:6]}"
    ok(gateway, "POST", "/v1/memories", {"user_id": user, "memories": [
        {"content": f"note {i}"} for i in range(120)]})
    seen, cursor = [], None
    while True:
        page = ok(gateway, "GET", "/admin/memories", user_id=user, limit=50,
                  **({"cursor": cursor} if cursor else {}))
        assert page["total"] == 120
        seen += [m["content"] for m in page["data"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert sorted(seen) == sorted(f"note {i}" for i in range(120))


def test_scope_personal_needs_a_personal_scope(tmp_path, openai_fake, start_daemon):
    daemon = start_daemon(write_config(tmp_path, openai_fake.url, memory='backend = "sqlite"'))
    status, refused = call_api(daemon.url, "POST", "/v1/memories",
                               {"scope": "personal", "content": "x"})
    assert status == 409 and refused["error"]["code"] == "no_personal_scope"
    memory = add(daemon.url, "a fact", user_id="alpha")
    status, refused = call_api(daemon.url, "POST", f"/v1/memories/{memory['id']}/promote",
                               {"user_id": "alpha"})
    assert status == 409 and refused["error"]["code"] == "no_personal_scope"
    assert ok(daemon.url, "GET", f"/v1/memories/{memory['id']}", user_id="alpha")
    status, refused = call_api(daemon.url, "GET", "/v1/memories", user_id="a", scope="all")
    assert status == 400 and refused["error"]["code"] == "invalid_scope"


def ctl(daemon, capsys, *args) -> tuple[int, str, str]:
    code = cli.main(["--config", str(daemon.config), *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_memproxyctl_edits_pins_promotes_and_round_trips_pins_and_scope(
        setup, capsys, tmp_path, openai_fake, start_daemon):
    daemon, ports = setup
    alpha = port_url(ports, "alpha")
    tag = uuid.uuid4().hex[:8]
    first = add(alpha, f"ctl{tag} builds use make")
    second = add(alpha, f"ctl{tag} prefers vim")
    code, out, _ = ctl(daemon, capsys, "memory", "edit", "alpha", first["id"],
                       f"ctl{tag} builds use ninja", "--metadata", '{"why": "faster"}')
    assert code == 0 and f"edited {first['id']}" in out
    assert ok(alpha, "GET", f"/v1/memories/{first['id']}")["metadata"] == {"why": "faster"}
    code, out, err = ctl(daemon, capsys, "memory", "pin", "alpha", first["id"], "nope")
    assert code == 1 and f"pinned {first['id']}" in out and "no memory 'nope'" in err
    code, out, _ = ctl(daemon, capsys, "memory", "list", "alpha")
    [line] = [line for line in out.splitlines() if first["id"] in line]
    assert "pinned" in line and "ninja" in line
    assert ctl(daemon, capsys, "memory", "unpin", "alpha", first["id"])[0] == 0
    assert ok(alpha, "GET", f"/v1/memories/{first['id']}")["pinned"] is False
    assert ctl(daemon, capsys, "memory", "pin", "alpha", first["id"])[0] == 0
    code, out, _ = ctl(daemon, capsys, "memory", "promote", "alpha", second["id"])
    assert code == 0 and "'me'" in out
    assert ctl(daemon, capsys, "memory", "edit", "alpha", first["id"])[0] == 1   # nothing given

    exported = {}
    for owner in ("alpha", "me"):
        code, exported[owner], _ = ctl(daemon, capsys, "memory", "export", owner)
        assert code == 0
    lines_of = {owner: [json.loads(line) for line in text.splitlines()]
                for owner, text in exported.items()}
    [pinned] = [m for m in lines_of["alpha"] if m["id"] == first["id"]]
    assert pinned["pinned"] is True and pinned["scope"] == "project"
    assert all(m["scope"] == "personal" for m in lines_of["me"])
    assert second["id"] in {m["id"] for m in lines_of["me"]}

    fresh = start_daemon(write_config(tmp_path, openai_fake.url, memory=MEMORY))
    for owner, text in exported.items():
        source = tmp_path / f"{owner}.jsonl"
        source.write_text(text)
        assert ctl(fresh, capsys, "memory", "import", "alpha", str(source))[0] == 0
    again = ok(fresh.url, "GET", "/v1/memories", user_id="alpha", limit=1000)["data"]
    personal = ok(fresh.url, "GET", "/v1/memories", scope="personal", limit=1000)["data"]

    def summary(memories):
        return sorted((m["content"], m["metadata"], m["pinned"]) for m in memories)
    assert summary(again) == summary(lines_of["alpha"])
    assert summary(personal) == summary(lines_of["me"])


def test_journaled_blocks_stay_byte_for_byte_until_a_memory_they_show_changes(
        setup, openai_fake):
    """A pin reaches the next new turn only (earlier turns keep their blocks: the prompt
    cache's prefix); deleting a personal memory from another project's port drops alpha's
    journaled turns that showed it, and so does a new text for a memory."""
    daemon, ports = setup
    alpha, beta = port_url(ports, "alpha"), port_url(ports, "beta")
    tag = uuid.uuid4().hex[:8]
    own = add(alpha, f"The alpha kiln{tag} is fired on fridays")
    personal = add(alpha, f"I want kiln{tag} answers in metric units", scope="personal")
    client = openai.OpenAI(base_url=alpha + "/v1", api_key="x", max_retries=0)
    messages = [{"role": "system", "content": f"You help with pottery {tag}."}]

    def turn(text: str) -> list[dict]:
        messages.append({"role": "user", "content": text})
        reply = client.chat.completions.create(model="gpt-ok", messages=messages)
        messages.append({"role": "assistant", "content": reply.choices[0].message.content})
        [record] = [r for r in upstream_records(openai_fake) if isinstance(r["json"], dict)
                    and r["json"].get("messages", [{}])[-1].get("content") == text]
        return record["json"]["messages"]

    def block_before(sent: list[dict], text: str) -> str:
        at = next(i for i, m in enumerate(sent) if m.get("content") == text)
        before = sent[at - 1]
        return before["content"] if "<memproxy-memory>" in str(before["content"]) else ""

    first = f"when is kiln{tag} fired?"
    block = block_before(turn(first), first)
    assert f"alpha kiln{tag}" in block and personal["content"] in block
    pin = add(alpha, f"Alpha rule {tag}: glaze before firing", pinned=True)
    second = f"and the kiln{tag} temperature?"
    sent = turn(second)
    assert block_before(sent, first) == block                      # byte for byte
    assert lines(block_before(sent, second))[0].endswith(pin["content"])
    assert ok(beta, "DELETE", f"/v1/memories/{personal['id']}", scope="personal")
    third = f"thanks for kiln{tag}"
    sent = turn(third)
    assert block_before(sent, first) == "" and personal["content"] not in json.dumps(sent)
    assert "fridays" in block_before(sent, third)
    ok(alpha, "PATCH", f"/v1/memories/{own['id']}",         # a corrected memory: its old
       {"content": f"The alpha kiln{tag} is fired on saturdays"})    # words are gone at once
    fourth = f"so which day for kiln{tag}?"
    sent = turn(fourth)
    assert "fridays" not in json.dumps(sent) and "saturdays" in block_before(sent, fourth)
