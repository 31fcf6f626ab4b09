"""The meter on a stream whose usage event memproxyd asked for: what the client receives."""
from __future__ import annotations

import json

import pytest

from memproxyd.observe.meter import Meter


class _Call:
    stream = True


def events(newline: bytes) -> list[bytes]:
    chunks = [{"choices": [{"delta": {"content": w}}]} for w in ("a", "b")]
    usage = {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}
    return ([b"data: " + json.dumps(c).encode() + newline * 2 for c in chunks]
            + [b"data: " + json.dumps(usage).encode() + newline * 2,
               b"data: [DONE]" + newline * 2])


@pytest.mark.parametrize("newline", [b"\n", b"\r\n"])
@pytest.mark.parametrize("size", [1, 7, 10_000])
def test_the_usage_event_is_cut_out_whatever_the_framing_and_chunking(newline, size):
    sent = b"".join(events(newline))
    meter = Meter(_Call())
    meter.strip = True
    relayed = b""
    for i in range(0, len(sent), size):
        out = meter.feed(sent[i:i + size])
        relayed += sent[i:i + size] if out is None else out
    expected = b"".join(e for i, e in enumerate(events(newline)) if i != 2)
    assert relayed == expected
    assert any(b'"prompt_tokens": 3' in doc for doc in meter.kept)


def test_without_strip_every_byte_is_relayed_and_usage_kept():
    meter = Meter(_Call())
    sent = b"".join(events(b"\n"))
    assert all(meter.feed(sent[i:i + 5]) is None for i in range(0, len(sent), 5))
    assert len(meter.kept) == 1
