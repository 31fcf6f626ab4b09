"""What an answer repeats from the memory block its turn was given: cut before the exchange is
remembered, so memories of memories never pile up (an answer quoting a memory, remembered
with the quote, would be recalled beside the memory it quotes, and quoted again).

    without_echo("From memory: our deploy target codename is BLUEFIN. Anything else?", block)
    # "Anything else?" when the block showed "our deploy target codename is BLUEFIN"

A repeat is a run of at least ``ECHO_WORDS`` consecutive words (case and punctuation aside)
that the block's memory lines hold too: a quote, not an answer that uses a word or two of
what it was told ("It is BLUEFIN." stays). When the repeats are nearly all of the answer
(``ECHO_SHARE``), the answer is nothing but the memory again and nothing of it is kept.
"""
from __future__ import annotations

import re

ECHO_WORDS = 6          # consecutive words shared with the block: a quote
ECHO_SHARE = 0.8        # an answer this much quote is a repeat, whatever is around it

_WORD = re.compile(r"\w+")
_TRAILING = ".,;:!?\"')]"         # a cut quote takes its closing punctuation along
_LINE = re.compile(r"^- \[[^\]]*\] ?", re.MULTILINE)


def quoted_words(block: str) -> set[tuple[str, ...]]:
    """Every run of ``ECHO_WORDS`` words of the block's memory lines (not its header)."""
    grams: set[tuple[str, ...]] = set()
    for line in block.splitlines():
        if not _LINE.match(line):
            continue
        words = [w.lower() for w in _WORD.findall(_LINE.sub("", line, count=1))]
        grams.update(tuple(words[i:i + ECHO_WORDS]) for i in range(len(words) - ECHO_WORDS + 1))
    return grams


def without_echo(answer: str, block: str) -> str:
    """``answer`` without the runs of words it repeats from ``block``; "" when it is nearly
    all repeat; unchanged when the turn had no block or nothing is repeated."""
    if not block or not answer:
        return answer
    grams = quoted_words(block)
    words = list(_WORD.finditer(answer))
    lowered = [w.group().lower() for w in words]
    covered = [False] * len(words)
    for i in range(len(words) - ECHO_WORDS + 1):
        if tuple(lowered[i:i + ECHO_WORDS]) in grams:
            covered[i:i + ECHO_WORDS] = [True] * ECHO_WORDS
    repeated = sum(covered)
    if not repeated:
        return answer
    if repeated >= ECHO_SHARE * len(words):
        return ""
    kept, start = [], 0
    for i, word in enumerate(words):
        if covered[i] and (i == 0 or not covered[i - 1]):
            kept.append(answer[start:word.start()])
        if covered[i]:
            start = word.end()
            while start < len(answer) and answer[start] in _TRAILING:
                start += 1
    kept.append(answer[start:])
    lines = (" ".join(line.split()) for line in "".join(kept).splitlines())
    return "\n".join(line for line in lines if _WORD.search(line))
