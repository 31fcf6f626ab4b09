"""The reply bytes a collector is fed, split anywhere: whole bodies kept, SSE read by line.

    reader = ReplyReader(stream=True)
    for event in reader.events(chunk):  # each complete ``data:`` line's JSON object
        handle(event)
    reader.body                         # not streaming: every byte, parsed once at the end

``\\n`` and ``\\r\\n`` framing alike (sse-starlette and llama-cpp-python send the latter); only
an unfinished last line is kept between chunks.
"""
from __future__ import annotations

from memproxyd.memory.base import loads


class ReplyReader:
    def __init__(self, stream: bool):
        self.stream = stream
        self.body = bytearray()

    def feed(self, chunk: bytes) -> list[bytes]:
        """The ``data:`` payloads (stripped) completed by ``chunk``; [] when not streaming."""
        self.body += chunk
        if not self.stream:
            return []
        end = self.body.rfind(b"\n")
        if end < 0:
            return []
        lines = bytes(self.body[:end]).split(b"\n")
        del self.body[:end + 1]
        return [line[5:].strip() for line in lines if line.startswith(b"data:")]

    def events(self, chunk: bytes) -> list[dict]:
        """The JSON objects of the ``data:`` lines completed by ``chunk``; anything else
        (``[DONE]``, a malformed line, a JSON value that is no object) is passed over."""
        out = []
        for data in self.feed(chunk):
            try:
                event = loads(data)
            except ValueError:
                continue
            if isinstance(event, dict):
                out.append(event)
        return out

    def whole(self) -> object:
        """The whole (not streamed) body as JSON; None when it is not JSON."""
        try:
            return loads(bytes(self.body))
        except ValueError:
            return None
