"""Shared fixtures: fake upstreams on loopback threads and the real daemon as a subprocess."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from memproxyd.sessions import SessionManager
from tests import agents
from tests.fakes import agent_upstream, openai_upstream
from tests.fakes.supermemory import FakeState, create_fake_supermemory
from tests.fakes.threaded import ThreadedServer

GATEWAY_KEY = "sk-gateway-test-key"
UPSTREAM_KEY = "sk-upstream-secret"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def openai_fake():
    server = ThreadedServer(openai_upstream.create_app()).start()
    yield server
    server.stop()


def upstream_records(server: ThreadedServer) -> list[dict]:
    return server.call(lambda: list(server.app[openai_upstream.RECORDS]))


def models_toml(upstream_url: str) -> str:
    """Deployments on the fake OpenAI upstream, one per behaviour."""
    entries = {
        "gpt-ok": ("openai/ok", ""),
        "gpt-500": ("openai/status-500", ""),
        "gpt-429": ("openai/status-429", ""),
        "gpt-slow": ("openai/slow-3000", "timeout = 0.5\n"),
        "gpt-slowish": ("openai/slow-800", ""),
        "gpt-midstream": ("openai/midstream-fail", ""),
        "gpt-stall": ("openai/stall", "stream_timeout = 0.5\n"),
        "embed-ok": ("openai/embed", ""),
    }
    out = []
    for name, (model, extra) in entries.items():
        out.append(f'[[model_list]]\nmodel_name = "{name}"\n[model_list.litellm_params]\n'
                   f'model = "{model}"\napi_base = "{upstream_url}/v1"\n'
                   f'api_key = "{UPSTREAM_KEY}"\n{extra}')
    out.append(f'[[model_list]]\nmodel_name = "via-litellm"\nwire = "litellm"\n'
               f'[model_list.litellm_params]\nmodel = "openai/ok"\n'
               f'api_base = "{upstream_url}/v1"\napi_key = "{UPSTREAM_KEY}"\n')
    # a provider litellm speaks through its own HTTP handler, not the openai SDK
    out.append(f'[[model_list]]\nmodel_name = "via-mistral"\n'
               f'[model_list.litellm_params]\nmodel = "mistral/ok"\n'
               f'api_base = "{upstream_url}/v1"\napi_key = "{UPSTREAM_KEY}"\n')
    out.append('[[model_list]]\nmodel_name = "demo"\n[model_list.litellm_params]\n'
               'model = "openai/demo"\nmock_response = "offline hello"\n')
    out.append('[[model_list]]\nmodel_name = "needs-key"\n[model_list.litellm_params]\n'
               'model = "openai/ok"\napi_key = "os.environ/MEMPROXY_TEST_UNSET_KEY"\n')
    out.append('[[model_list]]\nmodel_name = "gpt-unreachable"\n[model_list.litellm_params]\n'
               f'model = "openai/ok"\napi_base = "http://127.0.0.1:{free_port()}/v1"\n')
    return "\n".join(out)


def write_config(tmp_path: Path, upstream_url: str, *, port: int | None = None,
                 extra: str = "", server_extra: str = "", auth: str = "",
                 memory: str = 'backend = "off"') -> Path:
    text = textwrap.dedent(f"""\
        [server]
        host = "127.0.0.1"
        port = {port or free_port()}
        state_dir = "{tmp_path / 'state'}"
        log_format = "text"
        {server_extra}
        [auth]
        {auth}
        [identity]
        [[identity.header_patterns]]
        header = "user-agent"
        pattern = "^OpenAIClientImpl/Java"
        user_id = "pycharm"
        [memory]
        {memory}
        """) + extra + "\n" + models_toml(upstream_url)
    path = tmp_path / "memproxyd.toml"
    path.write_text(text)
    return path


class Daemon:
    def __init__(self, config: Path, env: dict | None = None):
        self.config = config
        self.log_path = config.with_suffix(".log")
        text = config.read_text()
        self.port = int(text.split("port = ", 1)[1].split("\n", 1)[0])
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "memproxyd", "--config", str(config)],
            stdout=self.log_path.open("wb"), stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})})

    def wait_ready(self, timeout: float = 15.0) -> "Daemon":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode}: {self.log()}")
            try:
                urllib.request.urlopen(self.url + "/health", timeout=1).read()
                return self
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"daemon not ready: {self.log()}")

    def __enter__(self) -> "Daemon":
        """``with Daemon(config) as daemon:`` ready, and stopped at the end (module fixtures)."""
        try:
            return self.wait_ready()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture
def start_daemon():
    started: list[Daemon] = []

    def start(config: Path, env: dict | None = None, wait: bool = True) -> Daemon:
        daemon = Daemon(config, env)
        started.append(daemon)
        return daemon.wait_ready() if wait else daemon

    yield start
    for daemon in started:
        daemon.stop()


@pytest.fixture
def daemon(tmp_path, openai_fake, start_daemon) -> Daemon:
    """The real daemon with gateway auth, on the fake OpenAI upstream, memory off."""
    return start_daemon(write_config(tmp_path, openai_fake.url,
                                     auth=f'keys = ["{GATEWAY_KEY}"]'))


@pytest.fixture(scope="session")
def pg_cluster():
    """One throwaway PostgreSQL server for the whole run (``tests/pgcluster.py``)."""
    from tests.pgcluster import INSTALL_HINT, PgCluster
    cluster = PgCluster.find()
    if cluster is None:
        pytest.skip(INSTALL_HINT)
    cluster.start()
    yield cluster
    cluster.destroy()


@pytest.fixture
def pg_dsn(pg_cluster) -> str:
    """A fresh database of its own for each test."""
    return pg_cluster.create_database(f"t_{uuid.uuid4().hex[:12]}")


@pytest.fixture
async def sessions():
    """A session manager for in-process outbox and store tests."""
    manager = SessionManager()
    yield manager
    await manager.close()


@pytest.fixture
def supermemory():
    """The fake Supermemory API on a loopback thread: (server, its state)."""
    state = FakeState()
    server = ThreadedServer(create_fake_supermemory(state)).start()
    yield server, state
    server.stop()



@pytest.fixture
def agent_fake():
    """The fake model the real agent CLIs talk to (``tests/fakes/agent_upstream.py``)."""
    server = ThreadedServer(agent_upstream.create_app()).start()
    yield server
    server.stop()


def clis_or_skip(commands: tuple[str, ...] = ("claude", "codex")):
    """``node_modules/.bin`` with the real CLIs ``commands``; the test skips, saying why,
    where npm cannot install them."""
    try:
        return agents.install_clis(commands=commands)
    except (agents.Unavailable, OSError) as exc:
        pytest.skip(f"real agent CLIs unavailable: {exc}")
