"""Which user ids / projects may use which models (``[access]``, ``add-project --models``).

    [access]
    default_models = ["*"]            # everyone else: everything (as without [access])
    [[access.rules]]
    users = ["alpha", "team-*"]
    models = ["gpt-4o-mini", "claude-*"]

The models a user id may use, first match wins:

1. a project's own list (``memproxyctl add-project NAME --models a,b``), for that project;
2. every rule whose ``users`` match the user id: the union of their ``models``;
3. ``default_models``.

Names and patterns are shell-style wildcards (``fnmatch``, case-sensitive), matched against
the model name the client asked for. A refused call is a 400 ``model_not_allowed`` in the
protocol's own shape (not a 403, which Codex retries five times and Claude Code reads as a
failed login: see ``errors.py``), naming what the caller may use, and a usage ledger row; ``/v1/models`` lists only what the caller may use. Rules and project
lists are read from the current config and registry, so a reload applies them at once.
"""
from __future__ import annotations

from fnmatch import fnmatchcase

from aiohttp import web

from memproxyd import appkeys
from memproxyd.errors import ApiError
from memproxyd.state import RuntimeState


def allowed(state: RuntimeState, user_id: str) -> tuple[str, ...]:
    """The model patterns ``user_id`` may use."""
    own = state.project_models.get(user_id)
    if own:
        return own
    access = state.config.access
    matched = [rule for rule in access.rules
               if any(fnmatchcase(user_id, pattern) for pattern in rule.users)]
    if matched:
        return tuple(model for rule in matched for model in rule.models)
    return access.default_models


def may_use(state: RuntimeState, user_id: str, model: str) -> bool:
    return any(fnmatchcase(model, pattern) for pattern in allowed(state, user_id))


def check(request: web.Request, user_id: str, model: str) -> None:
    """Raise the 400 of a model ``user_id`` may not use, naming what it may use."""
    state = request.app[appkeys.STATE]
    if may_use(state, user_id, model):
        return
    patterns = allowed(state, user_id)
    where = (f"the project's own list (`memproxyctl add-project {user_id} --models ...`)"
             if state.project_models.get(user_id) else "[access] in memproxyd's config")
    raise ApiError(400, f"model {model!r} is not allowed for {user_id!r}: it may use "
                        f"{', '.join(patterns) or 'no model'} ({where}); choose one of "
                        "those, or change that list and run `memproxyctl reload`",
                   "model_not_allowed")


def visible(request: web.Request, user_id: str, listing: list[dict]) -> list[dict]:
    """The ``/v1/models`` entries ``user_id`` may use."""
    state = request.app[appkeys.STATE]
    return [item for item in listing if may_use(state, user_id, item["id"])]
