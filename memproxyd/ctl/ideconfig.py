"""``memproxyctl ide-config PROJECT --client NAME``: the settings that make a client use a
project's port, complete as printed (a key, or the variable to export, always included).

    memproxyctl ide-config alpha --client opencode > opencode.json

Each target is one function of ``Settings`` returning the text to paste; ``TARGETS`` is the
table ``--client`` chooses from. Formats follow each client's own documentation (linked).
"""
from __future__ import annotations

import fnmatch
import json
import shlex
import shutil
import sys
from pathlib import Path

import attrs

KEY_ENV = "MEMPROXY_API_KEY"   # what memproxyctl, and so its MCP server, read the key from
KEY_PLACEHOLDER = "<your memproxyd API key>"
# a client that insists on a key gets this one when the daemon has no [auth] keys
NO_KEY = "memproxyd-no-key"


@attrs.frozen
class Settings:
    project: str
    openai: str                     # http://127.0.0.1:8888/v1
    anthropic: str                  # http://127.0.0.1:8888
    models: tuple[str, ...]         # model_name entries without wildcards
    patterns: tuple[str, ...]       # every model_name (wildcards included)
    needs_key: bool                 # the daemon has [auth] keys
    mcp: tuple[str, ...]            # the command line of ``memproxyctl mcp PROJECT``
    gemini_model: str = "gemini-2.5-flash"   # what Gemini CLI should ask for

    @property
    def model(self) -> str:
        return self.models[0] if self.models else "<a model_name from model_list>"

    def serves(self, model: str) -> bool:
        return any(fnmatch.fnmatchcase(model, pattern) for pattern in self.patterns)

    def shell_key(self) -> str:
        """The key as a shell word: the variable when keys are configured."""
        return f'"${KEY_ENV}"' if self.needs_key else NO_KEY

    def literal_key(self) -> str:
        """The key as text to paste into a settings field."""
        return KEY_PLACEHOLDER if self.needs_key else NO_KEY

    def key_note(self, comment: str = "#") -> list[str]:
        if self.needs_key:
            return [f"{comment} this daemon has [auth] keys: export {KEY_ENV}=<one of them> "
                    "before starting the client"]
        return [f"{comment} no [auth] keys: any key value works ({NO_KEY} is a stand-in)"]


def mcp_command(config_path: Path | None, url: str | None, project: str) -> tuple[str, ...]:
    """The command line that serves ``project``'s memory over MCP, reaching this daemon.

    Absolute, since MCP clients start servers with an environment of their own (Codex passes
    a short allow-list) where the virtualenv is not on PATH: the memproxyctl being run, else
    the one on PATH, else this interpreter with ``-m memproxyd.ctl``. A config or URL named
    explicitly goes on the command line too.
    """
    argv0 = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    found = shutil.which("memproxyctl")
    if argv0 is not None and argv0.name.startswith("memproxyctl") and argv0.exists():
        argv = [str(argv0.resolve())]
    elif found:
        argv = [str(Path(found).resolve())]
    else:
        argv = [sys.executable, "-m", "memproxyd.ctl"]
    if config_path is not None:
        argv += ["--config", str(config_path.resolve())]
    if url is not None:
        argv += ["--url", url]
    return tuple(argv + ["mcp", project])


# What Claude Code asks for when not told (2.1.332, pinned in tests/agents.py); a config that
# does not serve it gets ANTHROPIC_MODEL pointed at a model it does serve.
CLAUDE_CODE_DEFAULT_MODEL = "claude-opus-5-5"


def claude_code(s: Settings) -> str:
    lines = [f"export ANTHROPIC_BASE_URL={s.anthropic}",
             f"export ANTHROPIC_API_KEY={s.shell_key()}", *s.key_note()]
    if not s.serves(CLAUDE_CODE_DEFAULT_MODEL) and s.models:
        # Claude Code asks for claude-* models by name (its default, and haiku for side calls)
        lines += [f"# {CLAUDE_CODE_DEFAULT_MODEL} (Claude Code's default) is not in "
                  f"model_list: Claude Code uses {s.model}",
                  f"export ANTHROPIC_MODEL={s.model}",
                  f"export ANTHROPIC_DEFAULT_HAIKU_MODEL={s.model}"]
    return "\n".join(lines + ["# the project's memory as MCP tools in Claude Code:",
                              "claude mcp add memproxyd -- " + shlex.join(s.mcp)])


def codex(s: Settings) -> str:
    lines = ["# ~/.codex/config.toml (model_provider and model go above any [table])",
             'model_provider = "memproxyd"', f"model = {json.dumps(s.model)}", "",
             "[model_providers.memproxyd]", f'name = "memproxyd ({s.project})"',
             f'base_url = "{s.openai}"', 'wire_api = "responses"']
    if s.needs_key:
        lines += [f'env_key = "{KEY_ENV}"   # export {KEY_ENV}=<one of [auth] keys>']
    lines += ["", "# the project's memory as MCP tools", "[mcp_servers.memproxyd]",
              f"command = {json.dumps(s.mcp[0])}", f"args = {json.dumps(list(s.mcp[1:]))}"]
    if s.needs_key:
        lines += [f'env_vars = ["{KEY_ENV}"]   # Codex passes MCP servers a short env allow-list']
    return "\n".join(lines)


def env(s: Settings) -> str:
    """For the official SDKs and most CLIs: ``eval "$(memproxyctl ide-config alpha --client env)"``."""
    return "\n".join([f"export OPENAI_BASE_URL={s.openai}",
                      f"export OPENAI_API_KEY={s.shell_key()}",
                      f"export ANTHROPIC_BASE_URL={s.anthropic}",
                      f"export ANTHROPIC_API_KEY={s.shell_key()}", *s.key_note()])


def opencode(s: Settings) -> str:
    """opencode.json (https://opencode.ai/docs/providers/#custom-provider)."""
    key = f"{{env:{KEY_ENV}}}" if s.needs_key else NO_KEY
    config = {
        "$schema": "https://opencode.ai/config.json",
        "provider": {"memproxyd": {
            "npm": "@ai-sdk/openai-compatible", "name": f"memproxyd ({s.project})",
            "options": {"baseURL": s.openai, "apiKey": key},
            "models": {m: {"name": m} for m in s.models} or {s.model: {"name": s.model}}}},
        "model": f"memproxyd/{s.model}",
        "small_model": f"memproxyd/{s.model}",   # titles: not another provider's model
        "mcp": {"memproxyd": {"type": "local", "command": list(s.mcp), "enabled": True}},
    }
    if s.needs_key:
        config["mcp"]["memproxyd"]["environment"] = {KEY_ENV: f"{{env:{KEY_ENV}}}"}
    notes = ["// opencode.json in the project (or ~/.config/opencode/opencode.json)",
             *s.key_note("//")]
    return "\n".join(notes) + "\n" + json.dumps(config, indent=2)


def continue_(s: Settings) -> str:
    """Continue's config.yaml (https://docs.continue.dev/reference), for the IDE extensions
    and the ``cn`` CLI, which needs ``name`` and ``version``."""
    key = "${{ secrets.%s }}" % KEY_ENV if s.needs_key else NO_KEY
    lines = ["# ~/.continue/config.yaml (or: cn --config this-file.yaml)",
             *s.key_note(), f"name: memproxyd {s.project}", "version: 1.0.0",
             "schema: v1", "models:"]
    for model in s.models or (s.model,):
        lines += [f"  - name: {model} ({s.project} via memproxyd)", "    provider: openai",
                  f"    model: {model}", f"    apiBase: {s.openai}", f"    apiKey: {key}",
                  "    roles: [chat, edit, apply]"]
    lines += ["mcpServers:", "  - name: memproxyd", f"    command: {json.dumps(s.mcp[0])}",
              f"    args: {json.dumps(list(s.mcp[1:]))}"]
    return "\n".join(lines)


def pycharm(s: Settings) -> str:
    return "\n".join([
        "PyCharm > Settings > Tools > AI Assistant > Models > Third-party AI providers",
        "  Provider: OpenAI-compatible", f"  URL: {s.openai}", f"  API key: {s.literal_key()}",
        *s.key_note("  #")])


def zed(s: Settings) -> str:
    """Zed's settings.json, ``language_models.openai_compatible``; Zed reads the key from
    ``<PROVIDER NAME>_API_KEY`` (https://zed.dev/docs/ai/use-api-access)."""
    models = [{"name": m, "max_tokens": 128000,
               "capabilities": {"tools": True, "images": False, "parallel_tool_calls": True,
                                "prompt_cache_key": False}} for m in s.models or (s.model,)]
    settings = {"language_models": {"openai_compatible": {"memproxyd": {
        "api_url": s.openai, "available_models": models}}}}
    return "\n".join([
        "// Zed settings.json (zed: open settings); merge into the top-level object",
        f"// key: export MEMPROXYD_API_KEY={s.shell_key()} before starting Zed",
        *s.key_note("//"), json.dumps(settings, indent=2)])


def copilot(s: Settings) -> str:
    """VS Code (GitHub Copilot Chat 1.122+) Custom Endpoint, ``chatLanguageModels.json``
    (https://code.visualstudio.com/docs/agent-customization/language-models)."""
    models = [{"id": m, "name": f"{m} ({s.project} via memproxyd)",
               "url": f"{s.openai}/chat/completions", "toolCalling": True, "vision": False,
               "maxInputTokens": 128000, "maxOutputTokens": 16000} for m in s.models or (s.model,)]
    entry = {"name": f"memproxyd {s.project}", "vendor": "customendpoint",
             "apiKey": s.literal_key(), "apiType": "chat-completions", "models": models}
    return "\n".join([
        "// VS Code: Chat: Manage Language Models > Add > Custom Endpoint, API type Chat",
        "// Completions; then the gear icon opens chatLanguageModels.json. Copilot calls",
        "// custom endpoints from VS Code itself, so this loopback URL works.",
        *s.key_note("//"), json.dumps([entry], indent=2)])


def gemini(s: Settings) -> str:
    """Gemini CLI honours ``GOOGLE_GEMINI_BASE_URL`` only with API-key auth selected, and
    will not start without a key (with no gateway keys any value does; never sent upstream)."""
    settings = {"security": {"auth": {"selectedType": "gemini-api-key"}},
                "model": {"name": s.gemini_model}}
    return "\n".join(["# ~/.gemini/settings.json (merge into an existing one)",
                      json.dumps(settings, indent=2), "",
                      "# in the shell that runs gemini",
                      f"export GOOGLE_GEMINI_BASE_URL={s.anthropic}",
                      f"export GEMINI_API_KEY={s.shell_key()}", *s.key_note()])


def cursor(s: Settings) -> str:
    return "\n".join([
        "Cursor cannot use this address. Cursor sends requests for a custom OpenAI base URL",
        "from its own servers, not from your machine, so they can never reach",
        f"{s.openai} (a loopback address). It needs a public HTTPS URL that forwards to",
        f"port {s.openai.rsplit(':', 1)[1].split('/')[0]}: a tunnel (cloudflared tunnel, "
        "ngrok http, tailscale funnel).",
        "memproxyd must then have [auth] keys: a tunnel makes the port reachable by anyone.",
        "Then: Cursor > Settings > Models > API Keys > OpenAI API Key",
        "  Override OpenAI Base URL: https://<your tunnel>/v1",
        f"  OpenAI API Key: {KEY_PLACEHOLDER}"])


TARGETS = {"claude-code": claude_code, "codex": codex, "continue": continue_,
           "copilot": copilot, "cursor": cursor, "env": env, "gemini": gemini,
           "opencode": opencode, "pycharm": pycharm, "zed": zed}


def gemini_model(models) -> str:
    """The model Gemini CLI should ask for: the first ``gemini/`` deployment named exactly,
    else the first exact name (its own default, "auto", routes between models it names)."""
    exact = [m for m in models if "*" not in m.model_name]
    named = [m for m in exact if m.litellm_params.model.startswith("gemini/")]
    return (named or exact)[0].model_name if exact else "gemini-2.5-flash"


def settings(ctx, project: dict) -> Settings:
    """The settings of ``project`` (a registry entry) for the daemon ``ctx`` reaches."""
    openai_url, anthropic_url = ctx.base_urls(project["port"])
    names = tuple(m.model_name for m in ctx.config.model_list)
    return Settings(
        project=project["name"], openai=openai_url, anthropic=anthropic_url,
        models=tuple(n for n in names if "*" not in n), patterns=names,
        needs_key=ctx.has_gateway_key(),
        mcp=mcp_command(ctx.config_path if ctx.config_explicit else None,
                        ctx.url if ctx.url_explicit else None, project["name"]),
        gemini_model=gemini_model(ctx.config.model_list))


def render(ctx, project: dict, client: str) -> str:
    return TARGETS[client](settings(ctx, project))

