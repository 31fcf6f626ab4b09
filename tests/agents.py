"""The real agent CLIs (Claude Code, Codex, Gemini CLI, opencode, Continue's ``cn``),
installed from the npm registry and run against a base URL: shared by the end-to-end tests
and ``scripts/record_agents.py``.

    clis = install_clis()                      # raises Unavailable (saying why) where npm cannot
    run_claude(clis, base_url, workdir, "Remember this: ...")
    run_codex(clis, base_url + "/v1", workdir, codex_home, "What is ...?")
    run_gemini(clis, base_url, workdir, gemini_home, "What is ...?")
    run_opencode(clis, workdir, "What is ...?")          # reads workdir/opencode.json
    run_cn(clis, config_yaml, workdir, "What is ...?")

The versions are pinned: ``tests/fixtures/agents/`` was recorded from these.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

CLAUDE_CODE = "@anthropic-ai/claude-code@2.1.332"
CODEX = "@openai/codex@0.171.0"
GEMINI_CLI = "@google/gemini-cli@0.61.0"
OPENCODE = "opencode-ai@1.18.33"
CONTINUE_CLI = "@continuedev/cli@1.5.47"
PACKAGES = {"claude": CLAUDE_CODE, "codex": CODEX, "gemini": GEMINI_CLI, "opencode": OPENCODE,
            "cn": CONTINUE_CLI}
# ``make test-e2e-newest``: every CLI at the newest version npm has, in a folder of its own
# (to see what a new user's clients do before the pins move; not what CI runs)
NEWEST = os.environ.get("MEMPROXYD_AGENTS_NEWEST") == "1"
if NEWEST:
    PACKAGES = {c: spec.rsplit("@", 1)[0] + "@latest" for c, spec in PACKAGES.items()}
CACHE = Path(os.environ.get("MEMPROXYD_AGENTS_DIR",
                            Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
                            / ("memproxyd-test-agents" + ("-newest" if NEWEST else ""))))
_updated: set[str] = set()       # ``@latest`` specs installed by this process


class Unavailable(Exception):
    """The CLIs cannot be installed here; the message says why."""


def install_clis(target: Path = CACHE, commands: tuple[str, ...] = ("claude", "codex")) -> Path:
    """``node_modules/.bin`` holding ``commands`` (of ``PACKAGES``); installed once per
    machine, at the pinned versions."""
    bin_dir = target / "node_modules" / ".bin"
    missing = [PACKAGES[c] for c in commands
               if not (bin_dir / c).exists() or not _installed(target, PACKAGES[c])]
    if not missing:
        return bin_dir
    if shutil.which("npm") is None or shutil.which("node") is None:
        raise Unavailable("npm and node are not installed (apt-get install nodejs npm)")
    target.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--prefix",
                             str(target), *missing],
                            capture_output=True, text=True, timeout=300)
    if result.returncode != 0 or not all((bin_dir / c).exists() for c in commands):
        raise Unavailable(f"npm install {' '.join(missing)} failed: "
                          f"{result.stderr.strip()[-400:]}")
    _updated.update(missing)
    return bin_dir


def installed_version(target: Path, spec: str) -> str:
    """The version of ``spec``'s package that ``target`` holds ("" when none)."""
    try:
        manifest = json.loads((target / "node_modules" / spec.rsplit("@", 1)[0]
                               / "package.json").read_text())
    except (OSError, ValueError):
        return ""
    return str(manifest.get("version", ""))


def _installed(target: Path, spec: str) -> bool:
    """Whether ``spec`` (``name@version``) is what ``target`` holds: a pin moved on is
    installed again over the cached one."""
    version = spec.rsplit("@", 1)[1]
    if version == "latest":           # asked npm once per run: a newer release is installed
        return spec in _updated
    return installed_version(target, spec) == version


def _env(extra: dict[str, str], home: Path) -> dict[str, str]:
    keep = ("PATH", "LANG", "TERM", "TMPDIR")
    env = {k: v for k, v in os.environ.items() if k in keep}
    return {**env, "HOME": str(home), **extra}


def run_claude(bin_dir: Path, base_url: str, workdir: Path, prompt: str, *,
               resume: bool = False, home: Path | None = None,
               headers: dict[str, str] | None = None,
               model: str | None = "claude-sonnet-4-5",
               settings: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``claude -p PROMPT`` (``--continue`` with ``resume``) in ``workdir``; its own HOME, so
    sessions and settings never touch the real user's. ``model=None``: the CLI's default
    model (``claude-opus-5-5`` in 2.1.332, ``claude-opus-4-8`` in 2.1.197; both send
    ``system``-role messages).
    ``settings``: the environment instead of ``base_url`` and a made-up key (what
    ``memproxyctl ide-config --client claude-code`` exported)."""
    home = home or workdir.parent / "claude-home"
    home.mkdir(exist_ok=True)
    given = settings if settings is not None else {"ANTHROPIC_BASE_URL": base_url,
                                                   "ANTHROPIC_API_KEY": "sk-ant-test-fake"}
    env = _env({**given, "DISABLE_TELEMETRY": "1", "DISABLE_AUTOUPDATER": "1",
                "DISABLE_ERROR_REPORTING": "1"}, home)
    if headers:
        env["ANTHROPIC_CUSTOM_HEADERS"] = "\n".join(f"{k}: {v}" for k, v in headers.items())
    args = [str(bin_dir / "claude"), "-p", *(["--continue"] if resume else []), prompt,
            *(["--model", model] if model else [])]
    return subprocess.run(args, cwd=workdir, env=env, capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)


def write_codex_home(home: Path, base_url: str) -> Path:
    """A ``CODEX_HOME`` whose provider is ``base_url`` over the Responses API."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(
        'model = "gpt-5-codex"\nmodel_provider = "memproxyd"\n'
        '[model_providers.memproxyd]\nname = "memproxyd"\n'
        f'base_url = "{base_url}"\nenv_key = "MEMPROXY_API_KEY"\nwire_api = "responses"\n')
    return home


def run_codex(bin_dir: Path, codex_home: Path, workdir: Path, prompt: str, *,
              resume: bool = False) -> subprocess.CompletedProcess:
    """``codex exec PROMPT`` (``resume --last`` with ``resume``) in ``workdir``."""
    env = _env({"CODEX_HOME": str(codex_home), "MEMPROXY_API_KEY": "sk-test-fake"},
               codex_home.parent)
    args = [str(bin_dir / "codex"), "exec", "--skip-git-repo-check",
            *(["resume", "--last"] if resume else []), prompt]
    return subprocess.run(args, cwd=workdir, env=env, capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)


def write_gemini_home(home: Path, settings: dict | None = None) -> Path:
    """A HOME whose ``~/.gemini/settings.json`` selects API-key auth (Gemini CLI honours
    ``GOOGLE_GEMINI_BASE_URL`` only then) and turns off what would reach Google's servers
    (usage statistics, update checks)."""
    gemini_dir = home / ".gemini"
    gemini_dir.mkdir(parents=True, exist_ok=True)
    settings = settings or {"security": {"auth": {"selectedType": "gemini-api-key"}}}
    settings = {**settings, "privacy": {"usageStatisticsEnabled": False},
                "general": {"enableAutoUpdate": False, "enableAutoUpdateNotification": False}}
    (gemini_dir / "settings.json").write_text(json.dumps(settings, indent=2))
    return home


def run_gemini(bin_dir: Path, base_url: str, workdir: Path, home: Path, prompt: str, *,
               resume: bool = False, key: str = "sk-gemini-test-fake",
               model: str | None = "gemini-2.5-flash") -> subprocess.CompletedProcess:
    """``gemini -p PROMPT`` (``--resume latest`` with ``resume``) in ``workdir``, its HOME
    ``home`` (``write_gemini_home``), the API key and base URL from the environment;
    ``model=None``: the one settings.json names."""
    env = _env({"GEMINI_API_KEY": key, "GOOGLE_GEMINI_BASE_URL": base_url,
                "GEMINI_CLI_NO_RELAUNCH": "true"}, home)
    args = [str(bin_dir / "gemini"), *(["--resume", "latest"] if resume else []),
            *(["--model", model] if model else []), "--skip-trust", "--approval-mode",
            "yolo", "-p", prompt]
    return subprocess.run(args, cwd=workdir, env=env, capture_output=True, text=True,
                          timeout=180, stdin=subprocess.DEVNULL)


def write_opencode_config(workdir: Path, base_url: str, model: str = "fake-chat") -> Path:
    """``workdir/opencode.json`` with one provider at ``base_url`` through
    ``@ai-sdk/openai-compatible``, in the shape ``memproxyctl ide-config`` prints."""
    path = workdir / "opencode.json"
    path.write_text(json.dumps({
        "$schema": "https://opencode.ai/config.json",
        "provider": {"memproxyd": {"npm": "@ai-sdk/openai-compatible", "name": "memproxyd",
                                   "options": {"baseURL": base_url, "apiKey": "sk-test-fake"},
                                   "models": {model: {"name": model}}}},
        "model": f"memproxyd/{model}", "small_model": f"memproxyd/{model}"}, indent=2))
    return path


def run_opencode(bin_dir: Path, workdir: Path, prompt: str, *, resume: bool = False,
                 home: Path | None = None) -> subprocess.CompletedProcess:
    """``opencode run PROMPT`` (``--continue`` with ``resume``) in ``workdir``, configured by
    ``workdir/opencode.json`` alone. The prompt goes as separate words: opencode quotes an
    argument that contains spaces before sending it."""
    home = home or workdir.parent / "opencode-home"
    home.mkdir(exist_ok=True)
    env = _env({"OPENCODE_DISABLE_AUTOUPDATE": "1", "OPENCODE_DISABLE_SHARE": "1"}, home)
    args = [str(bin_dir / "opencode"), "run", *(["--continue"] if resume else []),
            *prompt.split()]
    return subprocess.run(args, cwd=workdir, env=env, capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)


def run_cn(bin_dir: Path, config: Path, workdir: Path, prompt: str, *,
           resume: bool = False, home: Path | None = None) -> subprocess.CompletedProcess:
    """Continue's ``cn -p PROMPT --config CONFIG`` (``--resume`` with ``resume``) in
    ``workdir``; its own HOME."""
    home = home or workdir.parent / "cn-home"
    home.mkdir(exist_ok=True)
    args = [str(bin_dir / "cn"), "-p", prompt, "--config", str(config),
            *(["--resume"] if resume else [])]
    return subprocess.run(args, cwd=workdir, env=_env({}, home), capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)


def scrub(record: dict, paths: dict[str, str]) -> dict:
    """A recorded request without this machine's paths and ids, tool descriptions cut to 200
    characters (they are most of a request's bytes and nothing here reads them)."""
    body = record["json"]
    for tool in body.get("tools") or ():
        if isinstance(tool.get("description"), str):
            tool["description"] = tool["description"][:200]
    text = json.dumps({"path": record["path"], "json": body})
    for real, fake in sorted(paths.items(), key=lambda p: -len(p[0])):
        text = text.replace(real, fake)
    return json.loads(text)


if __name__ == "__main__":    # make test-e2e: install (once) and say what and where
    import sys
    print(f"agent CLIs for the e2e tests, from npm into {CACHE}: {' '.join(PACKAGES.values())}")
    try:
        print(f"ready: {install_clis(commands=tuple(PACKAGES))}")
        print("installed: " + ", ".join(f"{c} {installed_version(CACHE, s)}"
                                        for c, s in PACKAGES.items()))
    except Unavailable as exc:
        print(f"not installed ({exc}): the tests that drive them will skip, saying why")
    sys.exit(0)
