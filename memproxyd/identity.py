"""Who owns the memory of a request (``user_id``), first match wins:

1. the project of the listener port the request arrived on;
2. the ``x-memory-user-id`` header (name configurable);
3. ``[[identity.header_patterns]]``: a regex over one request header (PyCharm's
   ``user-agent: OpenAIClientImpl/Java ...`` → ``pycharm``);
4. ``default_user_id``.

A user id is validated before it reaches storage: 1-128 characters of letters, digits and
``._@:-``, starting with a letter or digit.
"""
from __future__ import annotations

import re
from typing import Mapping

from memproxyd.config import USER_ID_RE, IdentityConfig
from memproxyd.errors import ApiError


def validate_user_id(user_id: str) -> str:
    if not isinstance(user_id, str) or not USER_ID_RE.fullmatch(user_id):
        raise ApiError(400, "invalid user id: expected 1-128 characters of letters, digits "
                            "and ._@:- starting with a letter or digit", "invalid_user_id")
    return user_id


class IdentityResolver:
    def __init__(self, config: IdentityConfig):
        self.header = config.header
        self.default = validate_user_id(config.default_user_id)
        self.patterns = [(p.header, re.compile(p.pattern), validate_user_id(p.user_id))
                         for p in config.header_patterns]

    def resolve(self, headers: Mapping[str, str], project: str | None) -> str:
        if project is not None:
            return project
        explicit = headers.get(self.header)
        if explicit is not None:
            return validate_user_id(explicit.strip())
        for header, regex, user_id in self.patterns:
            value = headers.get(header)
            if value is not None and regex.search(value):
                return user_id
        return self.default
