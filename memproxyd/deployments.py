"""The deployment table: a request's ``model`` → where and how to forward it.

Each ``[[model_list]]`` entry becomes a ``Deployment`` with a wire protocol:

* ``openai``: ``openai/<model>`` or a bare model name with an ``api_base`` (any
  OpenAI-compatible server). ``/v1/chat/completions`` is forwarded natively.
* ``anthropic``: ``anthropic/<model>``. ``/v1/messages`` is forwarded natively.
* ``gemini``: ``gemini/<model>`` (Google AI Studio's Gemini API, or an ``api_base`` that speaks
  it). ``/v1beta/models/...`` is forwarded natively; other routes translate through litellm.
* ``litellm``: everything else (Bedrock, Vertex, mock responses, ...) goes through litellm.

Names may be wildcards (``claude-*``); exact names win, then the longest pattern. In the
upstream model, ``*`` becomes the part the wildcard matched, except that ``<provider>/*``
takes the whole requested name (LiteLLM's convention): ``claude-*`` → ``anthropic/*`` sends
``claude-sonnet-4`` as ``anthropic/claude-sonnet-4``.

Keys written as ``os.environ/NAME`` are resolved on each use: a model whose variable is unset
is unavailable (listed as such, a 400 ``model_unavailable`` on use, see ``errors.py`` for why
not a 5xx) and every other model keeps working.
"""
from __future__ import annotations

import fnmatch
import re

import attrs

from memproxyd.config import ENV_PREFIX, Config, ModelEntry, resolve_secret
from memproxyd.errors import ApiError

OPENAI_BASE = "https://api.openai.com/v1"
ANTHROPIC_BASE = "https://api.anthropic.com"
GEMINI_BASE = "https://generativelanguage.googleapis.com"
_NATIVE_PREFIXES = {"openai/": "openai", "anthropic/": "anthropic", "gemini/": "gemini"}
_BASES = {"openai": OPENAI_BASE, "anthropic": ANTHROPIC_BASE, "gemini": GEMINI_BASE}


@attrs.frozen
class Deployment:
    name: str              # the model name the client asked for
    entry: ModelEntry
    wire: str              # openai | anthropic | gemini | litellm
    upstream_model: str    # what goes upstream (native: without provider prefix)

    @property
    def params(self):
        return self.entry.litellm_params

    @property
    def api_base(self) -> str:
        base = self.params.api_base
        if not base:
            base = _BASES.get(self.wire, "")
        return base.rstrip("/")

    def missing_key(self) -> str | None:
        """The environment variable this deployment needs and lacks, else None."""
        for ref in (self.params.api_key, self.params.aws_secret_access_key):
            if ref.startswith(ENV_PREFIX) and resolve_secret(ref) is None:
                return ref[len(ENV_PREFIX):]
        return None

    def api_key(self) -> str | None:
        missing = self.missing_key()
        if missing:
            raise ApiError(400, f"model {self.name!r} is unavailable: {missing} is not set in "
                                f"memproxyd's environment. Set {missing} where memproxyd runs "
                                "(the shell of `memproxyd`/`make run`, or the service's "
                                "Environment=) and restart it, or use another model",
                           "model_unavailable")
        return resolve_secret(self.params.api_key) if self.params.api_key else None

    def timeout(self, stream: bool) -> float:
        if stream and self.params.stream_timeout:
            return self.params.stream_timeout
        return self.params.timeout


def wire_of(entry: ModelEntry) -> tuple[str, str]:
    """(wire protocol, model name sent upstream) for one entry."""
    model = entry.litellm_params.model
    if entry.wire:
        prefix = entry.wire + "/"
        return entry.wire, model[len(prefix):] if model.startswith(prefix) else model
    if entry.litellm_params.mock_response:
        return "litellm", model
    for prefix, wire in _NATIVE_PREFIXES.items():
        if model.startswith(prefix):
            return wire, model[len(prefix):]
    if "/" not in model and entry.litellm_params.api_base:
        return "openai", model
    return "litellm", model


class DeploymentTable:
    def __init__(self, config: Config):
        self.exact: dict[str, ModelEntry] = {}
        self.patterns: list[tuple[re.Pattern, ModelEntry]] = []
        for entry in config.model_list:
            if "*" in entry.model_name:
                regex = re.compile(fnmatch.translate(entry.model_name).replace(".*", "(.*)", 1))
                self.patterns.append((regex, entry))
            else:
                self.exact[entry.model_name] = entry
        self.patterns.sort(key=lambda p: len(p[1].model_name), reverse=True)

    def lookup(self, model: object) -> Deployment:
        if not isinstance(model, str) or not model:
            raise ApiError(400, "'model' is required and must be a string", "missing_model")
        entry = self.exact.get(model)
        if entry is not None:
            wire, upstream = wire_of(entry)
            return Deployment(model, entry, wire, upstream)
        for regex, entry in self.patterns:
            match = regex.fullmatch(model)
            if match:
                return self._from_pattern(model, match.group(1) if match.groups() else "", entry)
        raise ApiError(404, f"The model '{model}' does not exist or is not configured in "
                            "memproxyd", "model_not_found")

    def first(self, wire: str) -> Deployment | None:
        """The first deployment named exactly (no wildcard) whose wire is ``wire``, in
        config order; None when there is none."""
        for name, entry in self.exact.items():
            found, upstream = wire_of(entry)
            if found == wire:
                return Deployment(name, entry, found, upstream)
        return None

    def _from_pattern(self, model: str, matched: str, entry: ModelEntry) -> Deployment:
        target = entry.litellm_params.model
        provider, _, rest = target.partition("/")
        fill = model if rest == "*" else matched
        concrete = attrs.evolve(entry, litellm_params=attrs.evolve(
            entry.litellm_params, model=target.replace("*", fill)))
        wire, upstream = wire_of(concrete)
        return Deployment(model, concrete, wire, upstream)

    def unavailable(self) -> dict[str, str]:
        """Model name → the key variable it lacks, for every exact name whose key is unset
        (``memproxyd --check``, ``/health/readiness``)."""
        out = {}
        for name, entry in self.exact.items():
            missing = Deployment(name, entry, *wire_of(entry)).missing_key()
            if missing:
                out[name] = missing
        return out

    def listing(self) -> list[dict]:
        """OpenAI ``/v1/models`` data; unavailable models carry ``available: false``."""
        out = []
        for name, entry in self.exact.items():
            dep = Deployment(name, entry, *wire_of(entry))
            missing = dep.missing_key()
            item = {"id": name, "object": "model", "created": 0, "owned_by": "memproxyd",
                    "available": missing is None}
            if missing:
                item["unavailable_reason"] = f"{missing} is not set"
            out.append(item)
        return out
