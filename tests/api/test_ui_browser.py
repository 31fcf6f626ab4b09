"""/ui in a real headless browser: Debian's chromium driven by playwright (Python)."""
from __future__ import annotations

import functools
import http.server
import json
import shutil
import threading
import urllib.request

import openai
import pytest

from memproxyd.ctl import cli
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
            turn.wait_for(timeout=10_000)
            assert "Staging runs on Fridays" in turn.inner_text()
            assert "score" in turn.inner_text()
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    left = {m["id"] for m in get_json(f"{daemon.url}/v1/memories?user_id=alpha")["data"]}
    assert kept in left and doomed not in left
    assert shot.stat().st_size > 10_000


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
