"""Distilled memories (``[memory] extract_model``): the outbox worker asks the user's own model
to turn a remembered turn into short standalone facts, and to decide for each, against the
most similar memories already stored, whether it is new (``add``), replaces one (``update``)
or is already known (``skip``): the mem0 / Supermemory approach, off the request path.

``DistillingStore`` wraps the real store on the delivery side only; searches, lists and the
memory API see the store itself. Without ``extract_model`` it is not used and each turn is
stored as the extractive memory ``memory/turn.py`` makes.

Nothing is lost on the way: a model that cannot be reached, or answers 429/5xx, raises
``RetryLater`` (the outbox keeps the exchange and retries); a reply that is not the expected
JSON stores the exchange as it is. Facts take keys derived from the exchange's key, so a
redelivery after a crash stores nothing twice.
"""
from __future__ import annotations

import json
import logging
import re
from typing import Any, Awaitable, Callable

from memproxyd.memory.base import Memory, MemoryStore, NewMemory

log = logging.getLogger(__name__)

SIMILAR = 5
MAX_FACTS = 8
MAX_FACT_CHARS = 500
INSTRUCTIONS = """\
You maintain a long-term memory of facts about a user and their projects.
You get one exchange between the user and an assistant, and the most similar memories
already stored (with their ids). Extract the facts worth remembering for later
conversations: short, standalone sentences (decisions, preferences, names, facts about the
project), not the chit-chat. For each fact decide:
- "add": it is new;
- "update": it replaces an existing memory (give that memory's "id"), e.g. a changed decision;
- "skip": an existing memory already says it (give its "id").
Reply with JSON only: {"facts": [{"text": "...", "action": "add|update|skip", "id": "..."}]}
An exchange with nothing worth remembering gets {"facts": []}."""

# (deployment name, user id, messages, system, session) -> reply text
Complete = Callable[[str, list[dict], str, Any], Awaitable[str]]


class DistillingStore(MemoryStore):
    name = "distilling"

    def __init__(self, store: MemoryStore, complete: Complete):
        self.store = store
        self.complete = complete

    async def add_many(self, user_id: str, items: list[NewMemory], session=None) -> list[Memory]:
        out: list[Memory] = []
        for item in items:
            if item.metadata.get("source") == "exchange":
                out += await self._distil(user_id, item, session)
            else:
                out += await self.store.add_many(user_id, [item], session)
        return out

    async def _distil(self, user_id: str, item: NewMemory, session) -> list[Memory]:
        similar = await self.store.search(user_id, item.content, SIMILAR, session)
        prompt = json.dumps({"exchange": item.content,
                             "existing": [{"id": m.id, "text": m.content} for m in similar]})
        reply = await self.complete(user_id, [{"role": "user", "content": prompt}],
                                    INSTRUCTIONS, session)
        facts = parse_facts(reply, {m.id for m in similar})
        if facts is None:
            log.warning("extraction unreadable, turn stored as is user_id=%s", user_id)
            return await self.store.add_many(user_id, [item], session)
        stored: list[Memory] = []
        for i, (text, action, target) in enumerate(facts):
            if action == "skip":
                continue
            if action == "update":
                await self.store.delete(user_id, target, session)
            metadata = {**item.metadata, "source": "extracted", "action": action}
            key = f"{item.key}-fact{i}" if item.key else None
            stored += await self.store.add_many(user_id, [NewMemory(text, metadata, key)],
                                                session)
        log.info("turn distilled user_id=%s facts=%d stored=%d", user_id, len(facts),
                 len(stored))
        return stored

    # everything else is the store's own
    async def search(self, user_id, query, limit, session=None):
        return await self.store.search(user_id, query, limit, session)

    async def list(self, user_id, limit, cursor=None, session=None):
        return await self.store.list(user_id, limit, cursor, session)

    async def get(self, user_id, memory_id, session=None):
        return await self.store.get(user_id, memory_id, session)

    async def delete(self, user_id, memory_id, session=None):
        return await self.store.delete(user_id, memory_id, session)

    async def forget_all(self, user_id, session=None):
        return await self.store.forget_all(user_id, session)


_JSON = re.compile(r"\{.*\}", re.DOTALL)


def parse_facts(reply: str, known_ids: set[str]) -> list[tuple[str, str, str]] | None:
    """(text, action, target id) per fact, or None when the reply is not the expected JSON.
    An update naming an id that was not offered becomes an add (the model may not touch
    memories it was not shown); a skip stays a skip."""
    match = _JSON.search(reply or "")
    try:
        facts = json.loads(match.group(0))["facts"] if match else None
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(facts, list):
        return None
    out = []
    for fact in facts[:MAX_FACTS]:
        if not isinstance(fact, dict) or not isinstance(fact.get("text"), str):
            continue
        text = " ".join(fact["text"].split())[:MAX_FACT_CHARS]
        action, target = fact.get("action"), fact.get("id")
        if action == "skip":
            target = target if target in known_ids else ""
        elif action != "update" or target not in known_ids:
            action, target = "add", ""
        if text:
            out.append((text, action, target))
    return out
