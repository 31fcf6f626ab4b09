"""The benchmarks' data, shared by every bench script: LoCoMo conversations (memories and
questions) and the varied memories made from them.

    sessions, questions = load_conversation(Path("../shared/bench/locomo-dev/26.json"))
    turns, questions = corpus(folder)              # every turn and question of a folder
    vary(turn, random.Random(7))                   # a plausible new memory from a turn
"""
from __future__ import annotations

import json
import random
import re
from pathlib import Path

NAMES = ["Alex", "Sam", "Jordan", "Priya", "Chen", "Maria", "Tom", "Aisha", "Lena", "Omar"]
SYNTHETIC = ["What did we decide about the deployment schedule?",
             "Which database did the team pick for the analytics service?",
             "When is the next design review for the billing API?"]


def load_conversation(path: Path) -> tuple[list[list[dict]], list[dict]]:
    """(sessions of memories, questions) for one LoCoMo file."""
    data = json.loads(path.read_text())
    numbers = sorted(int(m.group(1)) for k in data
                     if (m := re.fullmatch(r"session_(\d+)", k)) and data[k])
    sessions = []
    for n in numbers:
        date = data.get(f"session_{n}_date_time", "")
        batch = []
        for turn in data[f"session_{n}"]:
            content = f"{turn['speaker']}: {turn['text']}"
            if turn.get("blip_caption"):
                content += f" [image: {turn['blip_caption']}]"
            batch.append({"content": content,
                          "metadata": {"dia_id": turn["dia_id"], "session": n, "date": date}})
        sessions.append(batch)
    questions = [q for q in data["qa"] if q.get("category") != 5 and q.get("evidence")]
    return sessions, questions


def corpus(folder: Path | None) -> tuple[list[str], list[str]]:
    """(conversation turns, questions) of the LoCoMo folder; a small synthetic set without."""
    turns, questions = [], []
    for path in sorted(folder.glob("*.json")) if folder else ():
        sessions, qa = load_conversation(path)
        turns += [m["content"] for batch in sessions for m in batch]
        questions += [q["question"] for q in qa]
    return turns or SYNTHETIC, questions or SYNTHETIC


def vary(turn: str, rng: random.Random) -> str:
    """A plausible new memory: another speaker, a few words dropped, numbers changed."""
    _, _, said = turn.partition(": ")
    words = [w for w in said.split() if rng.random() > 0.15] or said.split()
    words = [str(rng.randint(1, 2030)) if w.isdigit() else w for w in words]
    return f"{rng.choice(NAMES)}: {' '.join(words)}"
