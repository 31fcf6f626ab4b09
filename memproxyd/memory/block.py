"""The delimited memory block: one definition for the service that writes it and for the
protocol adapters that must never store it again."""
from __future__ import annotations

import re

BLOCK_START = "<memproxy-memory>"
BLOCK_END = "</memproxy-memory>"
BLOCK_RE = re.compile(r"\n*" + re.escape(BLOCK_START) + ".*?" + re.escape(BLOCK_END) + r"\s*",
                      re.DOTALL)


def strip_block(text: str) -> str:
    """``text`` without any complete memory block (the text around it kept, a line apart)."""
    if BLOCK_START not in text:
        return text.strip()
    return BLOCK_RE.sub("\n", text).strip()
