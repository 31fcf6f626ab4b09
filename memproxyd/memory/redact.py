"""Secret redaction before anything is stored: keys and tokens become ``[REDACTED]``.

    >>> redact("use sk-ant-api03-abcdefghijklmnopqrstuvwx please")
    'use [REDACTED] please'

One precompiled alternation, so a text is scanned once whatever the number of formats.
Formats: OpenAI/Anthropic ``sk-...``, GitHub ``ghp_``/``gho_``/``ghu_``/``ghs_``/``ghr_`` and
``github_pat_``, AWS access key ids ``AKIA``/``ASIA``, ``Bearer <token>``, PEM private key
blocks, Slack ``xox?-`` tokens, Google ``AIza`` API keys.
"""
from __future__ import annotations

import re

REDACTED = "[REDACTED]"

_PATTERNS = (
    # PEM blocks first: they span lines and contain base64 that other patterns could nibble.
    r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?-----END [A-Z0-9 ]*PRIVATE KEY-----",
    r"\bsk-(?:ant-)?[A-Za-z0-9_\-]{16,}",
    r"\bgh[pousr]_[A-Za-z0-9]{20,}",
    r"\bgithub_pat_[A-Za-z0-9_]{20,}",
    r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b",
    r"\bxox[abposr]-[A-Za-z0-9\-]{10,}",
    r"\bAIza[A-Za-z0-9_\-]{35}",
    r"(?i:\bbearer)\s+[A-Za-z0-9\-._~+/]{16,}=*",
)
_SECRET = re.compile("|".join(f"(?:{p})" for p in _PATTERNS), re.DOTALL)


def redact(text: str) -> str:
    """``text`` with every recognised secret replaced by ``[REDACTED]``."""
    return _SECRET.sub(REDACTED, text)
