"""A wheel built from the tree runs the daemon and ``memproxyctl``: a folder without
``__init__.py`` or package data left out of ``setup.cfg`` shows up only there (the editable
install of ``make test`` reads the source tree). Built once, run from a folder where only the
wheel's files are importable as ``memproxyd``."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
import zipfile
from pathlib import Path

import pytest

from tests.conftest import Daemon, free_port, write_config

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel_site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                            "--wheel-dir", str(out), str(REPO)],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-2000:]
    [wheel] = out.glob("memproxyd-*.whl")
    site = out / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    return site


def wheel_env(site: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(site)}


class WheelDaemon(Daemon):
    """The daemon started from ``site`` (its working directory holds no ``memproxyd``)."""

    def __init__(self, config: Path, site: Path):
        self.config = config
        self.log_path = config.with_suffix(".log")
        self.port = int(config.read_text().split("port = ", 1)[1].split("\n", 1)[0])
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "memproxyd", "--config", str(config)],
                                     stdout=self.log_path.open("wb"), stderr=subprocess.STDOUT,
                                     env=wheel_env(site), cwd=config.parent)


def test_the_wheel_holds_every_package_and_its_data(wheel_site):
    found = subprocess.run(
        [sys.executable, "-c", "import memproxyd, memproxyd.api.ui as ui, memproxyd.config as c;"
         "print(memproxyd.__file__); print(ui.STATIC); print(c.PACKAGED_CONFIG)"],
        capture_output=True, text=True, env=wheel_env(wheel_site), cwd=wheel_site.parent)
    assert found.returncode == 0, found.stderr
    package, static, config = map(Path, found.stdout.split())
    assert package.is_relative_to(wheel_site)
    assert (static / "ui.js").is_file() and config.is_file()
    sources = {p.relative_to(REPO).with_suffix("").as_posix()
               for p in (REPO / "memproxyd").rglob("*.py")}
    shipped = {p.relative_to(wheel_site).with_suffix("").as_posix()
               for p in (wheel_site / "memproxyd").rglob("*.py")}
    assert sources == shipped


def test_the_daemon_and_memproxyctl_run_from_the_wheel(wheel_site, tmp_path, openai_fake):
    config = write_config(tmp_path, openai_fake.url, memory='backend = "sqlite"')
    with WheelDaemon(config, wheel_site) as daemon:
        for path in ("/ui", "/ui/ui.js", "/ui/ui.css"):     # the package data
            assert urllib.request.urlopen(daemon.url + path, timeout=10).status == 200
        request = urllib.request.Request(
            daemon.url + "/v1/memories", method="POST", headers={
                "content-type": "application/json"},
            data=json.dumps({"user_id": "wheel", "content": "the wheel ships its worker"}
                            ).encode())
        assert urllib.request.urlopen(request, timeout=10).status in (200, 201)
        request = urllib.request.Request(
            daemon.url + "/v1/memories/search", method="POST", headers={
                "content-type": "application/json"},
            data=json.dumps({"user_id": "wheel", "query": "worker"}).encode())
        hits = json.loads(urllib.request.urlopen(request, timeout=10).read())
        assert "the wheel ships its worker" in json.dumps(hits)   # the search process answered
        port = free_port()
        ctl = subprocess.run([sys.executable, "-m", "memproxyd.ctl", "--config", str(config),
                              "add-project", "wheely", "--port", str(port)],
                             capture_output=True, text=True, env=wheel_env(wheel_site),
                             cwd=tmp_path, timeout=60)
        assert ctl.returncode == 0, ctl.stderr
        listed = subprocess.run([sys.executable, "-m", "memproxyd.ctl", "--config", str(config),
                                 "list-projects", "--json"], capture_output=True, text=True,
                                env=wheel_env(wheel_site), cwd=tmp_path, timeout=60)
        assert "wheely" in listed.stdout
