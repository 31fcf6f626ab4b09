"""/ui in a real headless browser: Debian's chromium driven by playwright (Python)."""
from __future__ import annotations

import functools
import http.server
import json
import shutil
import socket
import threading
import urllib.request

import openai
import pytest

from memproxyd.ctl import cli
from memproxyd.registry import add_project, read_registry
from tests.conftest import free_port, write_config

pytestmark = pytest.mark.e2e   # real agent CLIs (npm) or Chromium: make test-e2e

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("no chromium on this machine (make test installs Debian's chromium when run "
                "as root with apt-get): the /ui browser test needs it")


def post_json(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def test_ui_shows_a_project_and_deletes_one_of_its_memories(tmp_path, openai_fake,
                                                              start_daemon):
    sync_api = pytest.importorskip("playwright.sync_api")
    executable = chromium()
    daemon = start_daemon(write_config(tmp_path, openai_fake.url, memory='backend = "sqlite"'))
    port = free_port()
    assert cli.main(["--config", str(daemon.config), "add-project", "alpha",
                     "--port", str(port)]) == 0
    doomed, kept = (post_json(daemon.url + "/v1/memories", {"user_id": "alpha", "content": text}
                              )["data"][0]["id"]
                    for text in ("The deploy key rotates monthly", "Staging runs on Fridays"))
    asked = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0
                          ).chat.completions.with_raw_response.create(
        model="gpt-ok", messages=[{"role": "user", "content": "When does staging run?"}])
    trace = asked.headers["x-memproxy-trace-id"]
    shot = tmp_path / "ui.png"
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.on("dialog", lambda dialog: dialog.accept())   # "Delete this memory?"
            page.goto(daemon.url + "/ui")
            project = page.locator('#projects tr[data-project="alpha"]')
            project.wait_for(timeout=10_000)
            assert f"http://127.0.0.1:{port}/v1" in project.inner_text()
            page.locator("#chart-model svg rect.bar").first.wait_for(timeout=10_000)
            day_bar = page.locator('#chart-day-project svg rect[data-series="alpha"]')
            day_bar.wait_for(timeout=10_000)     # alpha's call, in today's column
            memory = page.locator(f'li[data-memory-id="{doomed}"]')
            memory.wait_for(timeout=10_000)
            assert "rotates monthly" in memory.inner_text()
            memory.locator("button.delete").click()
            memory.wait_for(state="detached", timeout=10_000)
            page.fill("#why-user", "alpha")           # why was the block injected?
            page.fill("#why-trace", trace)
            page.click("#why-go")
            turn = page.locator("#why-turns li.this-call")
            try:
                turn.wait_for(timeout=10_000)
            except Exception:
                raise AssertionError(page.locator("#why-note").inner_text() + " / " +
                                     page.locator("#memory-note").inner_text() + page.locator("#why-turns").inner_html())
            assert "Staging runs on Fridays" in turn.inner_text()
            assert "score" in turn.inner_text()
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    left = {m["id"] for m in get_json(f"{daemon.url}/v1/memories?user_id=alpha")["data"]}
    assert kept in left and doomed not in left
    assert shot.stat().st_size > 10_000


def test_ui_adds_edits_pins_promotes_deletes_and_pages_through_every_memory(
        tmp_path, openai_fake, start_daemon):
    sync_api = pytest.importorskip("playwright.sync_api")
    expect = sync_api.expect
    executable = chromium()
    daemon = start_daemon(write_config(tmp_path, openai_fake.url,
                                       memory='backend = "sqlite"\npersonal = "me"'))
    assert cli.main(["--config", str(daemon.config), "add-project", "alpha",
                     "--port", str(free_port())]) == 0
    post_json(daemon.url + "/v1/memories", {"user_id": "alpha", "memories": [
        {"content": f"bulk note {i:03d}"} for i in range(120)]})
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.on("dialog", lambda dialog: dialog.accept())
            page.goto(daemon.url + "/ui")
            pager = page.locator("#memory-page")
            expect(pager).to_have_text("memories 1–50 of 120 of alpha", timeout=10_000)
            seen = set(page.locator("#memories li .content").all_inner_texts())
            for expected in ("memories 51–100 of 120 of alpha", "memories 101–120 of 120 of alpha"):
                page.click("#memory-older")
                expect(pager).to_have_text(expected, timeout=10_000)
                seen |= set(page.locator("#memories li .content").all_inner_texts())
            assert seen == {f"bulk note {i:03d}" for i in range(120)}
            assert page.locator("#memory-older").is_disabled()
            page.click("#memory-newer")
            expect(pager).to_have_text("memories 51–100 of 120 of alpha", timeout=10_000)

            page.fill("#memory-new", "The kiln is fired on fridays")        # add
            page.check("#memory-new-pinned")
            page.click("#memory-add")
            expect(pager).to_have_text("memories 1–50 of 121 of alpha", timeout=10_000)
            added = page.locator("#memories li").first
            assert "The kiln is fired on fridays" in added.inner_text()
            assert added.locator(".mark").inner_text() == "pinned"
            memory_id = added.get_attribute("data-memory-id")
            item = page.locator(f'li[data-memory-id="{memory_id}"]')

            item.locator("button.edit").click()                              # edit in place
            item.locator("textarea.edit-text").fill("The kiln is fired on saturdays")
            item.locator("button.save").click()
            expect(item.locator(".content")).to_contain_text("saturdays", timeout=10_000)
            item.locator("button.pin").click()                               # unpin
            expect(item.locator("button.pin")).to_have_text("Pin", timeout=10_000)
            stored = get_json(f"{daemon.url}/v1/memories/{memory_id}?user_id=alpha")
            assert (stored["content"], stored["pinned"]) == ("The kiln is fired on saturdays",
                                                             False)
            item.locator("button.pin").click()                               # pin again
            expect(item.locator("button.pin")).to_have_text("Unpin", timeout=10_000)
            assert get_json(f"{daemon.url}/v1/memories/{memory_id}?user_id=alpha")["pinned"]

            doomed_id = page.locator("#memories li").nth(1).get_attribute("data-memory-id")
            doomed = page.locator(f'li[data-memory-id="{doomed_id}"]')       # delete
            doomed.locator("button.delete").click()
            doomed.wait_for(state="detached", timeout=10_000)
            expect(pager).to_contain_text("of 120 of alpha")

            item.locator("button.promote").click()                           # promote
            item.wait_for(state="detached", timeout=10_000)
            page.select_option("#memory-scope", "personal")
            page.click("#memory-go")
            mine = page.locator(f'li[data-memory-id="{memory_id}"]')
            mine.wait_for(timeout=10_000)
            assert "personal" in mine.inner_text() and "saturdays" in mine.inner_text()
            expect(pager).to_have_text("memories 1–1 of 1 of the personal scope")
            page.screenshot(path=str(tmp_path / "memories.png"), full_page=True)
        finally:
            browser.close()
    left = get_json(f"{daemon.url}/v1/memories?user_id=alpha&limit=1000")
    assert left["total"] == 119 and doomed_id not in {m["id"] for m in left["data"]}
    assert memory_id not in {m["id"] for m in left["data"]}
    personal = get_json(f"{daemon.url}/v1/memories?scope=personal")
    assert [(m["id"], m["pinned"]) for m in personal["data"]] == [(memory_id, True)]


ATTACK = """<!doctype html><title>attack</title><script>
const target = %(target)s;
const plain = {method: "POST", mode: "no-cors", headers: {"content-type": "text/plain"}};
async function attack() {
  await fetch(target + "/v1/memories", {...plain, body: JSON.stringify(
      {user_id: "alpha", content: "POISON from the page"})});
  await fetch(target + "/admin/projects", {...plain, body: JSON.stringify(
      {name: "evil", port: %(port)d})});
}
window.addEventListener("message", () => { document.title = "done"; });
attack().then(() => {
  // the same again from a sandboxed iframe: its requests carry Origin: null
  const frame = document.createElement("iframe");
  frame.sandbox = "allow-scripts";
  frame.srcdoc = "<script>const target = " + JSON.stringify(target) + ";" +
    "const plain = {method: 'POST', mode: 'no-cors', headers: {'content-type': 'text/plain'}};" +
    "fetch(target + '/v1/memories', {...plain, body: JSON.stringify(" +
    "{user_id: 'alpha', content: 'POISON from the sandbox'})})" +
    ".then(() => fetch(target + '/admin/projects', {...plain, body: JSON.stringify(" +
    "{name: 'evil2', port: %(port)d})}))" +
    ".finally(() => parent.postMessage('done', '*'));<" + "/script>";
  document.body.appendChild(frame);
});
</script><body></body>"""


def test_pages_that_are_not_ours_write_nothing_from_a_real_browser(tmp_path, openai_fake,
                                                                   start_daemon):
    """A page on another loopback port (a local dev server) and a sandboxed iframe in it
    (Origin: null) post text/plain, which needs no preflight: every request reaches the
    daemon and is refused; no memory and no project is written."""
    sync_api = pytest.importorskip("playwright.sync_api")
    executable = chromium()
    daemon = start_daemon(write_config(tmp_path, openai_fake.url, memory='backend = "sqlite"'))
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text(ATTACK % {"target": json.dumps(daemon.url),
                                               "port": free_port()})
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page()
                page.goto(f"http://127.0.0.1:{server.server_address[1]}/index.html")
                page.wait_for_function("document.title === 'done'", timeout=15_000)
            finally:
                browser.close()
    finally:
        server.shutdown()
    assert get_json(f"{daemon.url}/v1/memories?user_id=alpha")["data"] == []
    assert get_json(f"{daemon.url}/admin/projects")["projects"] == []
    refused = daemon.log().count("code=cross_origin")
    assert refused == 4, daemon.log()[-3000:]


def test_ui_shows_why_a_project_listener_failed(tmp_path, openai_fake, start_daemon):
    """A listener whose port is taken: /ui says so, with the reason and the next try."""
    sync_api = pytest.importorskip("playwright.sync_api")
    executable = chromium()
    config = write_config(tmp_path, openai_fake.url)
    registry = tmp_path / "state" / "projects.json"
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        taken = blocker.getsockname()[1]
        add_project(registry, "blocked", free_port())
        registry.write_text(registry.read_text().replace(
            f'"port": {read_registry(registry)["blocked"].port}', f'"port": {taken}'))
        daemon = start_daemon(config)
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=executable,
                                                 args=CHROMIUM_ARGS)
            try:
                page = browser.new_page()
                page.goto(daemon.url + "/ui")
                reason = page.locator('#projects tr[data-project="blocked"] .state-error')
                reason.wait_for(timeout=10_000)
                text = reason.inner_text()
            finally:
                browser.close()
    assert f"cannot listen on 127.0.0.1:{taken}" in text and "trying again in" in text
