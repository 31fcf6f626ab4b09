"""A human turn: what the person said, and where one agent loop's calls belong.

An agent answers one human message with many calls (tool use, tool results, retries). Every
call of the turn carries the same human message; only the first has it as its newest input
(``new``). The turn's ``anchor`` (a digest of the human words of the conversation up to this
turn, plus the client's session when it names one) is the same on every call of the turn, so

* recall runs once per turn and every call gets the identical memory block, and
* the memory of the turn (the human's words, a line per tool call, the final answer) is
  written once, from the call whose reply is the answer, under a key made from the anchor.

    >>> memory_text("Fix the build", ("[Bash: make]",), "Fixed: a missing import.", 1500)
    'User: Fix the build\\nAssistant: [Bash: make]\\nFixed: a missing import.'
"""
from __future__ import annotations

import hashlib

import attrs

STEP_CHARS = 160          # one tool call, as one line
MAX_STEPS = 12            # tool lines kept in a memory (the first and the last ones)
ELLIPSIS = " … "


@attrs.frozen
class Turn:
    human: str                          # the person's words; "" when the call has none
    new: bool = True                    # the call's newest input is the human's message
    steps: tuple[str, ...] = ()         # the turn's tool calls so far, one line each
    anchor: str = ""                    # same for every call of one turn
    side_call: bool = False             # a client's housekeeping call (title, summary, ...)


INSTRUCTION_ROLES = ("system", "developer")


def is_newest(index: int, messages: list) -> bool:
    """Whether ``messages[index]`` is the call's newest input: only instructions
    (system/developer-role messages) come after it. Claude Code 2.1.332's default model sends
    its environment as a system-role message after the human's first message."""
    return all(isinstance(m, dict) and m.get("role") in INSTRUCTION_ROLES
               for m in messages[index + 1:])


def anchor(humans: list[str], session: str = "") -> str:
    """The turn's identity: the conversation's human words so far (the latest last), and the
    client's own session id where it sends one."""
    digest = hashlib.sha256(session.encode())
    for text in humans:
        digest.update(b"\x00" + text.encode())
    return digest.hexdigest()[:32]


def recall_query(texts: list[str], strategy: str, max_chars: int) -> str:
    """The recall query from a conversation's human words, oldest first: the turn's
    (``last_user``), the last two turns' (``last_user_plus_previous``) or all of them
    (``all_user``), keeping the newest ``max_chars``; "" when there are none."""
    picked = {"all_user": texts, "last_user_plus_previous": texts[-2:]}.get(strategy, texts[-1:])
    text = "\n".join(picked)
    return text[-max_chars:] if max_chars > 0 else text


def step_line(name: str, arguments: str) -> str:
    """``[name: arguments]`` on one line, at most ``STEP_CHARS``."""
    line = f"[{name}: {' '.join(arguments.split())}]"
    return line if len(line) <= STEP_CHARS else line[:STEP_CHARS - 2] + "…]"


def clip(text: str, limit: int) -> str:
    """``text`` within ``limit`` characters, keeping its start and its end."""
    if len(text) <= limit:
        return text
    if limit <= len(ELLIPSIS) + 2:
        return text[:limit]
    head = (limit - len(ELLIPSIS)) * 2 // 3
    tail = limit - len(ELLIPSIS) - head
    return text[:head].rstrip() + ELLIPSIS + text[len(text) - tail:].lstrip()


def memory_text(human: str, steps: tuple[str, ...], answer: str, max_chars: int) -> str:
    """One turn as one memory, within ``max_chars``: the human's words (at most a third of
    the room when the answer needs the rest), the tool lines, then the answer, long parts
    keeping their start and end."""
    if len(steps) > MAX_STEPS:
        half = MAX_STEPS // 2
        steps = (*steps[:half], f"[… {len(steps) - MAX_STEPS} more tool calls …]",
                 *steps[-half:])
    done = "\n".join((*steps, answer)).strip()
    user, assistant = "User: ", "\nAssistant: "
    room = max_chars - len(user) - len(assistant)
    if len(human) + len(done) > room:
        human = clip(human, max(room - len(done), room // 3))
        done = clip(done, room - len(human))
    return f"{user}{human}{assistant}{done}"
