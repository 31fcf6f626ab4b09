"""Configuration: one TOML file parsed once into frozen attrs classes.

The schema is the attrs classes below; ``parse`` walks the TOML document against them, so a
typo or a wrong type fails with the file, the dotted key and what was expected::

    >>> load_config(Path("etc/memproxyd.toml")).server.port
    8764

Secrets may be written as ``os.environ/NAME``; they are resolved lazily by ``resolve_secret``
(a missing model key disables that model only, see ``deployments.py``).
"""
from __future__ import annotations

import os
import re
import sys
import typing
from pathlib import Path

import attrs

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_SYSTEM_CONFIG = Path("/etc/memproxyd/memproxyd.toml")
PACKAGED_CONFIG = Path(__file__).with_name("default.toml")
ENV_PREFIX = "os.environ/"


class ConfigError(Exception):
    """The configuration is invalid; the message names file, key and expectation."""


@attrs.frozen
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8764
    state_dir: str = "~/.local/state/memproxyd"
    registry: str = ""                      # default: <state_dir>/projects.json
    project_ports: tuple[int, ...] = (8800, 8899)  # inclusive range for add-project
    max_body_bytes: int = 32 * 1024 * 1024
    max_sessions: int = 256
    session_idle_ttl: float = 900.0         # seconds
    shutdown_timeout: float = 10.0          # seconds to drain in-flight requests
    # A connection must send a request's headers within ``idle_timeout`` seconds of opening
    # or of its previous response (idle keep-alive, slow or absent headers alike), and a body
    # may pause at most ``body_timeout`` seconds; a response being streamed is never cut.
    idle_timeout: float = 75.0
    body_timeout: float = 60.0
    log_format: str = "json"                # json | text
    log_level: str = "INFO"
    admin_key: str = ""                     # admin API from non-loopback peers


@attrs.frozen
class AuthConfig:
    keys: tuple[str, ...] = ()


@attrs.frozen
class HeaderPattern:
    header: str
    pattern: str
    user_id: str


@attrs.frozen
class IdentityConfig:
    header: str = "x-memory-user-id"
    default_user_id: str = "default"
    # PyCharm AI Assistant sends no custom headers; its user agent identifies it.
    header_patterns: tuple[HeaderPattern, ...] = (
        HeaderPattern("user-agent", "^OpenAIClientImpl/Java", "pycharm"),)


@attrs.frozen
class LitellmParams:
    """LiteLLM's vocabulary for one deployment. Credentials never come from a request."""

    model: str
    api_base: str = ""
    api_key: str = ""
    api_version: str = ""
    organization: str = ""
    timeout: float = 600.0
    stream_timeout: float = 0.0             # 0: same as timeout
    num_retries: int = 0
    mock_response: str = ""                 # answer offline (the `demo` model)
    extra_headers: dict[str, str] = attrs.field(factory=dict)
    aws_region_name: str = ""
    aws_access_key_id: str = ""
    aws_secret_access_key: str = ""
    vertex_project: str = ""
    vertex_location: str = ""


# -- usage, tracing, access (issue #13) ---------------------------------------------------

@attrs.frozen
class ModelInfo:
    """LiteLLM's ``model_info``: prices that override litellm's price map (-1 = unset)."""

    input_cost_per_token: float = -1.0
    output_cost_per_token: float = -1.0
    cache_read_input_token_cost: float = -1.0
    cache_creation_input_token_cost: float = -1.0   # Anthropic's cache writes
    base_model: str = ""                    # the price map's name for this model


@attrs.frozen
class UsageConfig:
    enabled: bool = True                    # write the usage ledger (<state_dir>/usage.db)
    retention_days: int = 90                # older rows are deleted (hourly)
    flush_seconds: float = 1.0              # the writer commits at least this often
    stream_usage: bool = True               # ask OpenAI-wire streams for their usage event


@attrs.frozen
class TracingConfig:
    otlp_endpoint: str = ""                 # e.g. http://127.0.0.1:4318/v1/traces; "" = off
    service_name: str = "memproxyd"


@attrs.frozen
class AccessRule:
    users: tuple[str, ...]                  # user ids / projects, wildcards allowed
    models: tuple[str, ...]                 # model names they may use, wildcards allowed


@attrs.frozen
class AccessConfig:
    default_models: tuple[str, ...] = ("*",)  # for user ids no rule names
    rules: tuple[AccessRule, ...] = ()

# -- end usage, tracing, access ------------------------------------------------------------


@attrs.frozen
class ModelEntry:
    model_name: str
    litellm_params: LitellmParams
    # Route through Supermemory's Memory Router: add x-sm-user-id and the key, skip own recall.
    supermemory_router: bool = False
    # Send the client's x-api-key / Authorization upstream instead of a configured key.
    forward_client_credentials: bool = False
    # The upstream's wire protocol; "" = derived from the model prefix (openai/, anthropic/,
    # gemini/).
    wire: str = ""
    model_info: ModelInfo = ModelInfo()


@attrs.frozen
class MemoryConfig:
    backend: str = "sqlite"                 # sqlite | postgres | supermemory | off
    top_k: int = 5
    min_score: float = 0.15                 # 0-1: a share of the query's best possible match
    recall_timeout_ms: int = 250
    max_block_chars: int = 4000
    query_strategy: str = "last_user"       # last_user | last_user_plus_previous | all_user
    max_query_chars: int = 2000
    embedding_model: str = ""               # a model_name from model_list; "" = lexical only
    vector_weight: float = 0.4              # the vectors' share of a fused score (0-1)
    redact_secrets: bool = True
    max_content_chars: int = 32000
    include_models: tuple[str, ...] = ()    # opt-in list; empty = every model
    exclude_models: tuple[str, ...] = ()    # opt-out list
    skip_small_max_tokens: int = 0          # housekeeping: max_(output_)tokens <= this skips
    skip_system_patterns: tuple[str, ...] = ()
    strip_patterns: tuple[str, ...] = ()    # regexes removed from the human's words
    max_memory_chars: int = 1500            # one remembered turn, start and end kept
    extract_model: str = ""                 # a model_name: distil exchanges into facts
    store_thinking: bool = False
    completions: bool = False               # memory for /v1/completions (autocomplete)
    outbox_retry_max_seconds: float = 300.0
    personal: str = ""                      # a user id recalled in every project; "" = none


@attrs.frozen
class SupermemoryConfig:
    api_key: str = "os.environ/SUPERMEMORY_API_KEY"
    base_url: str = "https://api.supermemory.ai"
    search_mode: str = "hybrid"
    threshold: float = 0.0
    timeout: float = 10.0
    namespace_prefix: str = "memproxyd"


@attrs.frozen
class PostgresConfig:
    dsn: str = "os.environ/MEMPROXYD_DSN"   # postgresql://user:password@host:port/database
    pool_size: int = 10                     # connections per daemon at most
    statement_timeout_ms: int = 5000        # the server cancels a statement running longer
    connect_timeout: float = 5.0            # seconds to connect or wait for a free connection
    outbox_lease_seconds: float = 60.0      # a claimed outbox entry is retried after this


@attrs.frozen
class RouterConfig:
    # LiteLLM's vocabulary: [{"gpt-4o" = ["gpt-4o-mini"]}], tried in order when a model
    # fails with a connection error, a timeout, 429 or 5xx (never another 4xx)
    fallbacks: tuple[dict[str, tuple[str, ...]], ...] = ()
    retry_backoff: float = 0.25             # seconds before the first retry, then doubled


@attrs.frozen
class LoggingConfig:
    # one INFO line per request (memproxyd.access): method, path, status, who, model,
    # deployment, memory, overhead and upstream ms, trace id; never a body, query or key
    access_log: bool = True


@attrs.frozen
class Config:
    path: str = ""
    server: ServerConfig = ServerConfig()
    auth: AuthConfig = AuthConfig()
    identity: IdentityConfig = IdentityConfig()
    model_list: tuple[ModelEntry, ...] = ()
    memory: MemoryConfig = MemoryConfig()
    supermemory: SupermemoryConfig = SupermemoryConfig()
    postgres: PostgresConfig = PostgresConfig()
    router: RouterConfig = RouterConfig()
    usage: UsageConfig = UsageConfig()
    tracing: TracingConfig = TracingConfig()
    access: AccessConfig = AccessConfig()
    logging: LoggingConfig = LoggingConfig()

    @property
    def state_dir(self) -> Path:
        return Path(os.path.expanduser(self.server.state_dir))

    @property
    def registry_path(self) -> Path:
        if self.server.registry:
            return Path(os.path.expanduser(self.server.registry))
        return self.state_dir / "projects.json"


def user_config_path() -> Path:
    """The per-user config: ``$XDG_CONFIG_HOME/memproxyd/memproxyd.toml``
    (``~/.config/memproxyd/memproxyd.toml`` when the variable is unset)."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return Path(base) / "memproxyd" / "memproxyd.toml"


def config_source(explicit: str | None = None) -> tuple[Path, str]:
    """The config file in use and why: ``--config``, else ``$MEMPROXYD_CONFIG``, else the
    per-user config, else ``/etc/memproxyd/memproxyd.toml``, else the packaged default (the
    first that is given or exists)."""
    if explicit:
        return Path(explicit), "given with --config"
    env = os.environ.get("MEMPROXYD_CONFIG")
    if env:
        return Path(env), "named by $MEMPROXYD_CONFIG"
    user = user_config_path()
    if user.exists():
        return user, "the per-user config ($XDG_CONFIG_HOME/memproxyd, else ~/.config)"
    if DEFAULT_SYSTEM_CONFIG.exists():
        return DEFAULT_SYSTEM_CONFIG, f"the system config (no {user})"
    return PACKAGED_CONFIG, (f"the packaged default: no --config, no $MEMPROXYD_CONFIG, "
                             f"no {user}, no {DEFAULT_SYSTEM_CONFIG}")


def find_config_path(explicit: str | None = None) -> Path:
    """``config_source``'s path."""
    return config_source(explicit)[0]


def with_overrides(config: Config, **server) -> Config:
    """``config`` with ``[server]`` values given on the command line (``memproxyd --port``,
    ``--host``, ``--state-dir``; None: not given), validated like the file's own."""
    given = {key: value for key, value in server.items() if value is not None}
    if not given:
        return config
    config = attrs.evolve(config, server=attrs.evolve(config.server, **given))
    _validate(config, "the command line")
    return config


def load_config(path: Path) -> Config:
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    config = _build(Config, {**data, "path": str(path)}, str(path), "")
    _validate(config, str(path))
    return config


def resolve_secret(value: str) -> str | None:
    """``os.environ/NAME`` → the variable's value (None when unset); anything else as is."""
    if value.startswith(ENV_PREFIX):
        return os.environ.get(value[len(ENV_PREFIX):]) or None
    return value


# -- the schema walker -------------------------------------------------------------------

_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}


def _build(cls: type, data: object, file: str, prefix: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: [{prefix or 'root'}] expected a table, got {_kind(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in attrs.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        key = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        raise ConfigError(f"{file}: unknown key '{key}' (expected one of: {', '.join(sorted(fields))})")
    kwargs = {}
    for name, field in fields.items():
        key = f"{prefix}.{name}" if prefix else name
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], file, key)
        elif field.default is attrs.NOTHING:
            raise ConfigError(f"{file}: missing required key '{key}'")
    return cls(**kwargs)


def _convert(hint, value, file: str, key: str):
    origin = typing.get_origin(hint)
    if attrs.has(hint):
        return _build(hint, value, file, key)
    if origin is tuple:
        item = typing.get_args(hint)[0]
        if not isinstance(value, list):
            raise ConfigError(f"{file}: '{key}' expected a list, got {_kind(value)}")
        return tuple(_convert(item, v, file, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict and typing.get_args(hint)[1] is not str:
        if not isinstance(value, dict):
            raise ConfigError(f"{file}: '{key}' expected a table, got {_kind(value)}")
        item = typing.get_args(hint)[1]
        return {k: _convert(item, v, file, f"{key}.{k}") for k, v in value.items()}
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise ConfigError(f"{file}: '{key}' expected a table of strings, got {_kind(value)}")
        return dict(value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if type(value) is not hint:
        raise ConfigError(f"{file}: '{key}' expected {_TYPE_NAMES[hint]}, got {_kind(value)}")
    return value


def _kind(value) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
             list: "a list", dict: "a table"}
    return f"{names.get(type(value), type(value).__name__)} ({value!r:.40})"


_CHOICES = {
    "server.log_format": ("json", "text"),
    "server.log_level": ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
    "memory.backend": ("sqlite", "postgres", "supermemory", "off"),
    "memory.query_strategy": ("last_user", "last_user_plus_previous", "all_user"),
}
# A user id: what may reach storage as a memory owner (``identity.py`` checks requests).
USER_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@:-]{0,127}")


def _validate(config: Config, file: str) -> None:
    """Everything the schema walker cannot see, so ``--check`` catches what would fail later."""
    for check in (_check_choices, _check_ports, _check_models, _check_identity,
                  _check_patterns, _check_postgres):
        problem = check(config)
        if problem:
            raise ConfigError(f"{file}: {problem}")


def _check_choices(config: Config) -> str | None:
    for key, choices in _CHOICES.items():
        section, name = key.split(".")
        value = getattr(getattr(config, section), name)
        if value not in choices:
            return f"'{key}' expected one of {', '.join(choices)}, got {value!r}"
    return None


def _check_ports(config: Config) -> str | None:
    if not 0 <= config.server.port <= 65535:
        return f"'server.port' expected 0-65535, got {config.server.port}"
    ports = config.server.project_ports
    if len(ports) != 2 or not 1024 <= ports[0] <= ports[1] <= 65535:
        return "'server.project_ports' expected [low, high] within 1024-65535"
    for name in ("idle_timeout", "body_timeout"):
        if not getattr(config.server, name) > 0:
            return f"'server.{name}' expected a positive number of seconds"
    return None


def _check_models(config: Config) -> str | None:
    names = [m.model_name for m in config.model_list]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        return f"'model_list' has duplicate model_name {dupes[0]!r}"
    for i, entry in enumerate(config.model_list):
        if entry.wire not in ("", "openai", "anthropic", "gemini", "litellm"):
            return f"'model_list[{i}].wire' expected openai, anthropic, gemini or litellm"
    for i, table in enumerate(config.router.fallbacks):
        for name in (n for model, chain in table.items() for n in (model, *chain)):
            if name not in names:
                return f"'router.fallbacks[{i}]' names no model in model_list: {name!r}"
    for key in ("embedding_model", "extract_model"):
        name = getattr(config.memory, key)
        if name and name not in names:
            return f"'memory.{key}' names no model in model_list: {name!r}"
    if not 0.0 <= config.memory.vector_weight <= 1.0:
        return "'memory.vector_weight' expected a number from 0 to 1"
    if config.memory.max_memory_chars < 200:
        return "'memory.max_memory_chars' expected at least 200"
    return None


def _check_identity(config: Config) -> str | None:
    owners = {"identity.default_user_id": config.identity.default_user_id}
    owners.update({f"identity.header_patterns[{i}].user_id": p.user_id
                   for i, p in enumerate(config.identity.header_patterns)})
    for key, user_id in owners.items():
        if not USER_ID_RE.fullmatch(user_id):
            return (f"'{key}' expected 1-128 characters of letters, digits and ._@:- "
                    f"starting with a letter or digit, got {user_id!r}")
    personal = config.memory.personal
    if personal and not USER_ID_RE.fullmatch(personal):
        return (f"'memory.personal' expected 1-128 characters of letters, digits and ._@:- "
                f"starting with a letter or digit, got {personal!r}")
    # Personal memories are written by explicit acts only: never an identity of traffic.
    taken = [key for key, user_id in owners.items() if personal and user_id == personal]
    if taken:
        return f"'memory.personal' must not be an identity calls are remembered for ({taken[0]})"
    return None


def _check_patterns(config: Config) -> str | None:
    patterns = {f"identity.header_patterns[{i}].pattern": p.pattern
                for i, p in enumerate(config.identity.header_patterns)}
    patterns.update({f"memory.skip_system_patterns[{i}]": p
                     for i, p in enumerate(config.memory.skip_system_patterns)})
    patterns.update({f"memory.strip_patterns[{i}]": p
                     for i, p in enumerate(config.memory.strip_patterns)})
    for key, pattern in patterns.items():
        try:
            re.compile(pattern)
        except re.error as exc:
            return f"'{key}' is not a valid regular expression: {exc}"
    return None


def _check_postgres(config: Config) -> str | None:
    pg = config.postgres
    if not pg.dsn.startswith((ENV_PREFIX, "postgresql://", "postgres://")):
        return "'postgres.dsn' expected a postgresql:// URL or os.environ/NAME"
    if pg.pool_size < 1:
        return f"'postgres.pool_size' expected at least 1, got {pg.pool_size}"
    if pg.statement_timeout_ms < 0 or pg.connect_timeout <= 0 or pg.outbox_lease_seconds <= 0:
        return "'postgres' timeouts expected positive numbers"
    return None
