"""Whether a request's whole prompt extends an earlier one, as a provider's prompt cache sees
it: the same tools, the same system (Anthropic) or instructions (Responses), and every earlier
message or input item byte for byte, then more. Set aside: ``cache_control`` markers (a client
moves its breakpoint to the newest message each call), and a string content against the one
text part it renders as (Claude Code sends the newest human message as a part, to carry the
marker, and as a string once it is history).

    assert extends(turn_1_request, turn_2_request) is None    # else: where they differ
    client_own(request)       # the request without memproxyd's blocks, as the client sent it
"""
from __future__ import annotations

import json
import re
from typing import Any

# request field -> the list that grows; the fields before it must be identical
GROWING = {"messages": ("tools", "system"), "input": ("tools", "instructions")}


BLOCK = "<memproxy-memory>"
BLOCK_RE = re.compile(r"\n*<memproxy-memory>.*?</memproxy-memory>\s*", re.DOTALL)


def without_markers(value: Any) -> Any:
    if isinstance(value, dict):
        out = {k: without_markers(v) for k, v in value.items() if k != "cache_control"}
        if isinstance(out.get("content"), str) and "role" in out:
            kind = "input_text" if out.get("type") == "message" else "text"
            out["content"] = [{"type": kind, "text": out["content"]}]
        return out
    if isinstance(value, list):
        return [without_markers(v) for v in value]
    return value


def client_own(request: dict) -> dict:
    """``request`` without the memory blocks memproxyd put in, wherever it put them."""
    def strip(value: Any) -> Any:
        if isinstance(value, str):
            return BLOCK_RE.sub("", value) if BLOCK in value else value
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items()}
        if isinstance(value, list):
            return [strip(v) for v in value if not _is_block(v)]
        return value
    return strip(request)


def _is_block(value: Any) -> bool:
    """A part, message or item that is nothing but a memory block."""
    if not isinstance(value, dict):
        return False
    text = value.get("text", value.get("content"))
    if isinstance(text, list) and len(text) == 1 and isinstance(text[0], dict):
        text = text[0].get("text")
    return isinstance(text, str) and text.startswith(BLOCK)


def _listed(value: Any) -> list:
    if isinstance(value, str):       # a Responses string input is one user message
        return [{"type": "message", "role": "user", "content": value}]
    return list(value or [])


def extends(earlier: dict, later: dict, ignore: tuple[str, ...] = ()) -> str | None:
    """None when ``later``'s prompt starts with all of ``earlier``'s; else where it does not.
    ``ignore``: fields (tools, system, instructions) not to compare."""
    earlier, later = without_markers(earlier), without_markers(later)
    field = "messages" if "messages" in earlier else "input"
    for name in GROWING[field]:
        if name not in ignore and earlier.get(name) != later.get(name):
            return f"{name} differs"
    before, after = _listed(earlier.get(field)), _listed(later.get(field))
    if len(after) < len(before):
        return f"{field}: {len(after)} after {len(before)}"
    for index, (a, b) in enumerate(zip(before, after)):
        if a != b:
            return (f"{field}[{index}] differs: {json.dumps(a)[:300]} != "
                    f"{json.dumps(b)[:300]}")
    return None


def extends_as_the_client_does(earlier: dict, later: dict) -> str | None:
    """``extends``, where the client's own requests (blocks taken out) extend each other: the
    fields the client itself changed from one call to the next (Claude Code's default model
    renames itself in a tool description between runs) are not memproxyd's to keep."""
    own_before, own_after = without_markers(client_own(earlier)), without_markers(
        client_own(later))
    changed = tuple(name for name in ("tools", "system", "instructions")
                    if own_before.get(name) != own_after.get(name))
    return extends(earlier, later, ignore=changed)
