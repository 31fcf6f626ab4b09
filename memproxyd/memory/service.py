"""The memory pipeline seen from the gateway: ``prepare`` a call (recall + inject) and
remember its exchange through the tap it returns."""
from __future__ import annotations

from typing import Any

from memproxyd.pipeline import Call


class NoMemory:
    """``[memory] backend = "off"``: every call goes upstream unchanged."""

    async def prepare(self, call: Call, session) -> tuple[dict[str, Any], None]:
        call.memory_status = "off"
        return call.body, None

    def status(self) -> dict[str, Any]:
        return {"backend": "off"}
