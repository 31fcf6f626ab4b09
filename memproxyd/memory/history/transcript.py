"""What every transcript reader shares: the turn and session it makes, the rules from the
daemon's config, reading JSONL, and making a turn's memory (``memory/history/__init__.py``
tells the whole story)."""
from __future__ import annotations

import datetime
import hashlib
import re
from pathlib import Path
from typing import Iterator

import attrs

from memproxyd.memory.base import loads
from memproxyd.memory.journal import conversation_key
from memproxyd.memory.redact import redact
from memproxyd.memory.turn import memory_text

# why a turn is not kept, as the summary shows it
SIDE_CALL = "side call (sub-agent, title, compaction)"
NO_HUMAN = "no human words (client scaffolding only)"
NO_ANSWER = "no final answer (interrupted or unfinished)"
BEFORE_SINCE = "older than --since"


@attrs.frozen
class Rules:
    """What shapes a memory, from the daemon's config (``[memory]``)."""
    max_chars: int = 1500                      # max_memory_chars
    extra: tuple[re.Pattern, ...] = ()         # strip_patterns, compiled
    redact_secrets: bool = True
    since: float = 0.0                         # unix seconds; older turns are skipped


@attrs.frozen
class HistoryTurn:
    turn_id: str                  # the turn's own id in the transcript
    created_at: float             # unix seconds: when the human sent it
    content: str = ""             # the memory ("" when skipped)
    skipped: str = ""             # why it is not kept ("" = kept)


@attrs.frozen
class Session:
    client: str
    path: str
    session_id: str
    cwd: str
    turns: tuple[HistoryTurn, ...] = ()

    @property
    def conversation(self) -> str:
        """The journal's key of this session, as live traffic names it (Claude Code's session
        id, Codex's ``prompt_cache_key``, both the transcript's session id): a session
        continued through memproxyd never has its own imported turns recalled into it."""
        return conversation_key(self.session_id, "", "")

    def key(self, turn: HistoryTurn) -> str:
        """The store's idempotency key of ``turn``: the same on every import."""
        digest = hashlib.sha256(f"{self.client}\x00{self.session_id}\x00{turn.turn_id}"
                                .encode()).hexdigest()[:32]
        return f"history-{digest}"


def parse_time(value: object) -> float | None:
    """Unix seconds of an ISO 8601 time (``Z`` or an offset; none = UTC); None when it is not
    one."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.timezone.utc)
    return parsed.timestamp()


def records(path: Path) -> Iterator[dict]:
    """The JSON objects of a JSONL transcript, one per line; a line cut short by a CLI that
    was killed mid-write (or anything that is not an object) is passed over."""
    with path.open("rb") as lines:
        for line in lines:
            try:
                record = loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                yield record


def finish(human: str, steps: tuple[str, ...], answer: str, rules: Rules) -> str:
    """One turn's memory, as ``MemoryService.remember`` makes it."""
    if rules.redact_secrets:
        human, answer = redact(human), redact(answer)
    return memory_text(human, steps, answer, rules.max_chars)
