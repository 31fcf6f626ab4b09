"""Secret redaction before anything is stored: keys and tokens become ``[REDACTED]``.

    >>> redact("use sk-ant-api03-abcdefghijklmnopqrstuvwx please")
    'use [REDACTED] please'
    >>> redact("AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    'AWS_SECRET_ACCESS_KEY=[REDACTED]'

One precompiled alternation, so a text is scanned once whatever the number of formats.
Formats: OpenAI/Anthropic ``sk-...``, GitHub ``ghp_``/``gho_``/``ghu_``/``ghs_``/``ghr_`` and
``github_pat_``, AWS access key ids ``AKIA``/``ASIA``, ``Bearer <token>``, PEM private key
blocks, Slack ``xox?-`` tokens, Google ``AIza`` API keys, JWTs (``eyJ….eyJ….…``), and two
secrets recognised by their label, which is kept: AWS secret access keys
(``aws_secret_access_key = …``, ``AWS_SECRET_ACCESS_KEY=…``, ``"aws_secret_access_key": "…"``)
and ``x-api-key: …`` header values (a ``$VARIABLE`` or ``<placeholder>`` is left alone).
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
    # header.payload.signature, both JSON parts base64url of "{" (eyJ); unsigned ones too
    r"\beyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]*",
    r"(?P<aws_label>(?i:aws_secret_access_key)[\"']?\s*[:=]\s*[\"']?)[A-Za-z0-9/+=]{16,}",
    r"(?P<x_api_key_label>(?i:\bx-api-key)[\"']?\s*:\s*[\"']?)(?![$<{])[^\s\"']{8,}",
)
_LABELS = ("aws_label", "x_api_key_label")    # kept in front of the redaction
_SECRET = re.compile("|".join(f"(?:{p})" for p in _PATTERNS), re.DOTALL)


def _replace(match: re.Match) -> str:
    label = next((match[name] for name in _LABELS if match[name] is not None), "")
    return label + REDACTED


# A text holds a secret only if it holds one of these (each pattern above needs one); most
# texts hold none, and looking for them is ~5x cheaper than running the alternation.
_MARKS = ("PRIVATE KEY-----", "sk-", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_",
          "AKIA", "ASIA", "xox", "AIza", "eyJ")
_MARKS_ANY_CASE = ("bearer", "aws_secret_access_key", "x-api-key")


def redact(text: str) -> str:
    """``text`` with every recognised secret replaced by ``[REDACTED]``."""
    if not any(mark in text for mark in _MARKS):
        lowered = text.casefold()      # (as (?i) does: "ſ" is an s, "K" a k)
        if not any(mark in lowered for mark in _MARKS_ANY_CASE):
            return text
    return _SECRET.sub(_replace, text)
