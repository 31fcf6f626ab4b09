"""``memproxyctl doctor PROJECT [--client NAME] [--model NAME]``: is everything a client of
PROJECT needs working? Each step prints ``ok`` or ``FAIL`` and, on failure, what to fix; the
exit code is 0 only when every step passed.

    memproxyctl doctor alpha --client claude-code

Steps: the daemon answers; the project's port listens; one model call on the client's
protocol through that port (``demo`` when configured, else the first model, or ``--model``);
memory recalls (a unique marker memory, added through the memory API, reaches a call through
the port) and remembers (a call through the port is stored); the MCP command ``ide-config``
prints starts and lists its tools. The marker memories are deleted again.
"""
from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

from memproxyd.ctl import ideconfig
from memproxyd.ctl.client import EXIT_OK, EXIT_REFUSED, Context, CtlError

TIMEOUT = 30.0           # seconds for one model call
MEMORY_WAIT = 10.0       # seconds for a remembered exchange to reach the store
MCP_TIMEOUT = 20.0


class Failed(Exception):
    """A step failed: the message says what happened, ``fix`` what to do."""

    def __init__(self, message: str, fix: str = ""):
        super().__init__(message)
        self.fix = fix


def _request(url: str, key: str | None, body=None, method: str | None = None,
             headers: dict | None = None, timeout: float = TIMEOUT):
    """(status, headers, JSON) of one call; connection failures raise ``OSError``."""
    sent = {"content-type": "application/json", **(headers or {})}
    if key:
        sent["authorization"] = f"Bearer {key}"
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers=sent, method=method)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=timeout) as response:
            raw = response.read()
            return response.status, response.headers, json.loads(raw) if raw else {}
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            payload = json.loads(raw) if raw else {}
        except ValueError:
            payload = {"error": {"message": raw[:200].decode(errors="replace")}}
        return exc.code, exc.headers, payload


# the protocol each client speaks: (path, body for a prompt, the reply's text)
def _messages(model, prompt):
    return {"model": model, "max_tokens": 256, "messages": [{"role": "user", "content": prompt}]}


def _responses(model, prompt):
    return {"model": model, "input": prompt, "max_output_tokens": 256}


def _chat(model, prompt):
    return {"model": model, "max_tokens": 256, "messages": [{"role": "user", "content": prompt}]}


PROTOCOLS = {"claude-code": ("/v1/messages", _messages), "codex": ("/v1/responses", _responses)}
CHAT = ("/v1/chat/completions", _chat)


class Doctor:
    def __init__(self, ctx: Context, project: str, client: str, model: str | None):
        self.ctx, self.project, self.client = ctx, project, client
        self.model, self.base, self.port = model, "", 0
        self.markers: list[str] = []    # memory ids to delete at the end

    # -- steps --------------------------------------------------------------------------

    def daemon(self) -> str:
        try:
            status = self.ctx.client.call("GET", "/admin/status", admin=True)
        except CtlError as exc:
            raise Failed(str(exc), "start it: `make run`, or `systemctl --user start "
                                   "memproxyd`; or pass --url / --config") from None
        self.status = status
        return f"memproxyd {status.get('version', '?')} at {self.ctx.url}"

    def listener(self) -> str:
        found = [p for p in self.status.get("listeners", []) if p.get("name") == self.project]
        if not found:
            raise Failed(f"no project named {self.project!r}",
                         f"memproxyctl add-project {self.project}")
        entry = found[0]
        self.port = entry["port"]
        self.base = self.ctx.base_urls(self.port)[1]
        if entry.get("state") != "listening":
            raise Failed(f"port {self.port} is {entry.get('state')}: {entry.get('error')}",
                         "free the port (or pick another: memproxyctl remove-project "
                         f"{self.project} && memproxyctl add-project {self.project} --port N)")
        try:
            status, _, _ = _request(self.base + "/health", None, timeout=5)
        except OSError as exc:
            raise Failed(f"nothing answers on {self.base}: {exc}",
                         "is a firewall or another host in the way? `memproxyctl status` "
                         "shows the daemon's listeners") from None
        if status != 200:
            raise Failed(f"{self.base}/health answered {status}", "see the daemon's log")
        return f"project {self.project} listening on {self.base}"

    def call(self, prompt: str, mode: str) -> tuple[str, dict]:
        path, make = PROTOCOLS.get(self.client, CHAT)
        try:
            status, headers, payload = _request(self.base + path, self.ctx.key,
                                                make(self.model, prompt),
                                                headers={"x-memory-mode": mode})
        except OSError as exc:
            raise Failed(f"{path} through :{self.port}: {exc}", "see the daemon's log") from None
        if status != 200:
            error = payload.get("error") if isinstance(payload, dict) else None
            message = error.get("message") if isinstance(error, dict) else payload
            code = error.get("code") if isinstance(error, dict) else None
            code = code if isinstance(code, str) else None
            raise Failed(f"{self.model} on {path} answered {status}: {message}",
                         _fix(status, code))
        return path, headers

    def model_call(self) -> str:
        started = time.perf_counter()
        path, headers = self.call("Reply with one word: ok.", "off")
        took = (time.perf_counter() - started) * 1000
        return (f"{self.model} answered on {path} through :{self.port} ({took:.0f} ms, "
                f"deployment {headers.get('x-memproxy-deployment')})")

    def recall(self) -> str:
        token = f"doctor{uuid.uuid4().hex[:12]}"
        added = self._memory("POST", "/v1/memories", {
            "user_id": self.project, "content": f"memproxyd doctor check {token}"})
        self.markers += [m["id"] for m in added.get("data", [])]
        deadline = time.monotonic() + MEMORY_WAIT
        while True:
            _, headers = self.call(token, "read")   # nothing else can match it
            if headers.get("x-memproxy-memory") == "injected":
                return f"a marker memory was recalled into a call through :{self.port}"
            if time.monotonic() > deadline:
                raise Failed(f"the marker memory was not recalled (x-memproxy-memory: "
                             f"{headers.get('x-memproxy-memory')})",
                             "check [memory] in the config (backend, recall_timeout_ms) "
                             "and `memproxyctl status`")
            time.sleep(0.3)

    def remember(self) -> str:
        token = f"doctor{uuid.uuid4().hex[:12]}"
        self.call(f"Remember this doctor check: {token}", "write")
        deadline = time.monotonic() + MEMORY_WAIT
        while time.monotonic() < deadline:
            found = self._memory("POST", "/v1/memories/search", {
                "user_id": self.project, "query": token, "limit": 5}).get("results", [])
            hits = [m["id"] for m in found if token in m.get("content", "")]
            if hits:
                self.markers += hits
                return f"a call through :{self.port} was remembered"
            time.sleep(0.3)
        raise Failed("a call through the port was not remembered within "
                     f"{MEMORY_WAIT:.0f} s", "check `memproxyctl status` (memory, outbox) "
                                             "and the daemon's log")

    def mcp(self) -> str:
        command = ideconfig.mcp_command(
            self.ctx.config_path if self.ctx.config_explicit else None,
            self.ctx.url if self.ctx.url_explicit else None, self.project)
        tools = _mcp_tools(list(command))
        if "memory_search" not in tools:
            raise Failed(f"`{' '.join(command)}` lists no memory tools: {tools}",
                         "see its stderr: run the command by hand")
        return f"`{' '.join(command)}` serves {', '.join(tools)}"

    def _memory(self, method: str, path: str, body: dict) -> dict:
        try:
            return self.ctx.client.call(method, path, body)
        except CtlError as exc:
            raise Failed(str(exc), "is [memory] backend off? see `memproxyctl status`") \
                from None

    def cleanup(self) -> None:
        for memory_id in self.markers:
            try:
                self.ctx.client.call("DELETE", "/v1/memories/" + urllib.parse.quote(
                    memory_id, safe=""), query={"user_id": self.project})
            except CtlError:
                pass


_FIXES = {
    "model_unavailable": "set the model's key variable where memproxyd runs and restart it, "
                         "or --model NAME (`memproxyd --check` lists such models)",
    "model_not_allowed": "the project may not use this model ([access] or add-project "
                         "--models), or --model NAME",
    401: "set MEMPROXY_API_KEY to one of [auth] keys",
    404: "name a model_name of model_list: --model NAME",
}


def _fix(status: int, code: str | None = None) -> str:
    return _FIXES.get(code) or _FIXES.get(status) or \
        "see the daemon's log for the upstream's error"


def _mcp_tools(command: list[str]) -> list[str]:
    """The tool names an MCP server started as ``command`` lists (JSON-RPC over stdio)."""
    messages = [{"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                    "protocolVersion": "2025-06-18", "capabilities": {},
                    "clientInfo": {"name": "memproxyctl-doctor", "version": "1"}}},
                {"jsonrpc": "2.0", "method": "notifications/initialized"},
                {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}]
    stdin = "".join(json.dumps(m) + "\n" for m in messages)
    try:
        proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    except OSError as exc:
        raise Failed(f"cannot start `{' '.join(command)}`: {exc}",
                     "install memproxyd where MCP clients can run it") from None
    try:
        proc.stdin.write(stdin)
        proc.stdin.flush()
        deadline = time.monotonic() + MCP_TIMEOUT
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            reply = json.loads(line)
            if reply.get("id") == 2:
                return [t["name"] for t in reply.get("result", {}).get("tools", [])]
        raise Failed(f"`{' '.join(command)}` did not list its tools: "
                     f"{proc.stderr.read()[-300:] if proc.poll() is not None else 'no reply'}",
                     "run the command by hand to see why")
    finally:
        proc.kill()
        proc.wait()


def cmd_doctor(ctx: Context, args) -> int:
    doctor = Doctor(ctx, args.project, args.client, args.model or _default_model(ctx))
    steps = [("daemon", doctor.daemon, True), ("listener", doctor.listener, True),
             ("model call", doctor.model_call, True), ("memory recalls", doctor.recall, False),
             ("memory remembers", doctor.remember, False), ("MCP command", doctor.mcp, False)]
    failed = False
    try:
        for name, step, needed in steps:
            try:
                print(f"ok    {name}: {step()}", flush=True)
            except Failed as exc:
                failed = True
                print(f"FAIL  {name}: {exc}\n      fix: {exc.fix}", flush=True)
                if needed:
                    rest = [n for n, _, _ in steps[steps.index((name, step, needed)) + 1:]]
                    print(f"      not checked: {', '.join(rest)}")
                    break
    finally:
        doctor.cleanup()
    return EXIT_REFUSED if failed else EXIT_OK


def _default_model(ctx: Context) -> str:
    names = [m.model_name for m in ctx.config.model_list if "*" not in m.model_name]
    return "demo" if "demo" in names else (names[0] if names else "demo")


def add_doctor_parser(sub) -> None:
    p = sub.add_parser("doctor", help="check that a project works end to end for a client")
    p.add_argument("project", help="the project to check (its port, memory and MCP server)")
    p.add_argument("--client", default="env", choices=sorted(ideconfig.TARGETS),
                   help="whose protocol the model call uses (default: env, OpenAI chat)")
    p.add_argument("--model", help="model_name to call (default: demo, else the first)")
    p.set_defaults(func=cmd_doctor)
