"""The reply bytes a collector is fed, split anywhere: whole bodies kept, SSE read by line.

    reader = ReplyReader(stream=True)
    for data in reader.feed(chunk):     # the payload of each complete ``data:`` line
        handle(json.loads(data))
    reader.body                         # not streaming: every byte, parsed once at the end

``\\n`` and ``\\r\\n`` framing alike (sse-starlette and llama-cpp-python send the latter); only
an unfinished last line is kept between chunks.
"""
from __future__ import annotations


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
