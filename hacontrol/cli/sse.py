"""Server-sent events, decoded from bytes as they arrive (no I/O here).

Only what the event stream of the API uses: `id`, `event`, `data` and comments; lines end
with LF (a CR before it is dropped). An event is complete at its blank line; whatever is
unfinished when the bytes stop is dropped, and is sent again after reconnecting from the
last complete event.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

# A line longer than this is not from a well-behaved server; the stream is abandoned.
MAX_LINE_BYTES = 16 << 20


@dataclass(frozen=True)
class SseEvent:
    id: str | None
    event: str
    data: str


class SseLineTooLong(Exception):
    """A line exceeded MAX_LINE_BYTES without ending."""


class SseDecoder:
    """Feed bytes in any pieces; get back the events they complete."""

    def __init__(self, max_line: int = MAX_LINE_BYTES) -> None:
        self._buffer = bytearray()
        self._max_line = max_line
        self._id: str | None = None
        self._kind = "message"
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[SseEvent]:
        self._buffer += chunk
        events: list[SseEvent] = []
        start = 0
        while (end := self._buffer.find(b"\n", start)) >= 0:
            event = self._line(bytes(self._buffer[start:end]))
            if event is not None:
                events.append(event)
            start = end + 1
        del self._buffer[:start]
        if len(self._buffer) > self._max_line:
            raise SseLineTooLong(f"an event stream line exceeds {self._max_line} bytes")
        return events

    def _line(self, raw: bytes) -> SseEvent | None:
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if not line:
            event = None
            if self._data or self._id is not None:
                event = SseEvent(self._id, self._kind, "\n".join(self._data))
            self._id, self._kind, self._data = None, "message", []
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "id":
            self._id = value
        elif name == "event":
            self._kind = value
        elif name == "data":
            self._data.append(value)
        return None


def iter_events(read_chunk: Callable[[], bytes]) -> Iterator[SseEvent]:
    """Events from successive reads until a read returns b"" (the end of the body)."""
    decoder = SseDecoder()
    while chunk := read_chunk():
        yield from decoder.feed(chunk)
