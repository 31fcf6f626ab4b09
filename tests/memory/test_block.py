"""The memory block's composition: pins first within their share, marks, the cut."""
from __future__ import annotations

from memproxyd.memory.base import Memory
from memproxyd.memory.block import BLOCK_END, PIN_SHARE, compose


def memory(i: int, text: str, user: str = "alpha", pinned: bool = False) -> Memory:
    return Memory(f"m{i}", user, text, {}, 86400.0 * 365 * 30, 1.0 / (i + 1), pinned)


def test_pins_come_first_marked_then_recall_and_personal_lines_are_marked():
    pins = [memory(1, "always answer in French", pinned=True),
            memory(2, "my editor is vim", user="me", pinned=True)]
    found = [memory(3, "the kiln is fired on fridays"), memory(4, "I like short answers", "me")]
    block, shown = compose(pins, found, 4000, personal="me")
    lines = [line for line in block.splitlines() if line.startswith("- [")]
    assert [m.id for m in shown] == ["m1", "m2", "m3", "m4"]
    assert lines[0].endswith(", pinned] always answer in French")
    assert lines[1].endswith(", personal, pinned] my editor is vim")
    assert "pinned" not in lines[2] and "personal" not in lines[2]
    assert lines[3].endswith(", personal] I like short answers")
    assert block.endswith(BLOCK_END)


def test_pins_never_take_more_than_their_share_and_recall_keeps_the_rest():
    pins = [memory(i, f"rule {i} " + "x" * 200, pinned=True) for i in range(10)]
    found = [memory(20 + i, f"fact {i} " + "y" * 200) for i in range(10)]
    block, shown = compose(pins, found, 4000)
    pinned = [line for line in block.splitlines() if ", pinned] " in line]
    assert 1 <= len(pinned) < 10
    assert sum(len(line) + 1 for line in pinned) <= 4000 * PIN_SHARE
    assert len(block) <= 4000 and any(m.id == "m20" for m in shown)
    assert len(shown) == len([line for line in block.splitlines() if line.startswith("- [")])


def test_no_memory_no_block():
    assert compose([], [], 4000) == ("", [])
