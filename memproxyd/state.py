"""Mutable runtime facts shared by handlers.

The app itself is frozen once it starts, so what a reload (SIGHUP, ``memproxyctl reload``)
replaces lives here: the config and what is derived from it alone.
"""
from __future__ import annotations

import asyncio
import time
import typing
from typing import Awaitable, Callable

import attrs

if typing.TYPE_CHECKING:
    from memproxyd.config import Config
    from memproxyd.deployments import DeploymentTable
    from memproxyd.identity import IdentityResolver
    from memproxyd.auth import Guard


@attrs.define
class RuntimeState:
    config: "Config"
    deployments: "DeploymentTable"
    identity: "IdentityResolver"
    guard: "Guard"
    started: float = attrs.field(factory=time.time)
    gateway_ports: set[int] = attrs.field(factory=set)
    # bound local port → project name; maintained by listeners.Listeners
    project_ports: dict[int, str] = attrs.field(factory=dict)
    # project name → the models it may use (``add-project --models``); maintained by listeners
    project_models: dict[str, tuple[str, ...]] = attrs.field(factory=dict)
    reload: Callable[[], Awaitable[dict]] | None = None
    reload_lock: asyncio.Lock = attrs.field(factory=asyncio.Lock)

    @classmethod
    def from_config(cls, config: "Config") -> "RuntimeState":
        from memproxyd.deployments import DeploymentTable
        from memproxyd.identity import IdentityResolver
        from memproxyd.auth import Guard
        return cls(config, DeploymentTable(config), IdentityResolver(config.identity),
                   Guard(config.auth.keys, config.server.admin_key))

    def apply(self, config: "Config") -> None:
        """Swap in a new config (reload); validation happened before."""
        fresh = RuntimeState.from_config(config)
        self.config, self.deployments = fresh.config, fresh.deployments
        self.identity, self.guard = fresh.identity, fresh.guard

    def project_for_port(self, port: int | None) -> str | None:
        return self.project_ports.get(port) if port is not None else None
