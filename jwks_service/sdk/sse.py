"""Server-Sent Events parsing (the WHATWG event-stream format), fed line by line. No I/O."""

from __future__ import annotations

from dataclasses import dataclass

MAX_DATA_CHARS = 64 * 1024  # one event's data; ours are ~200 bytes


@dataclass(frozen=True, slots=True)
class SSEvent:
    event: str
    data: str
    id: str | None  # the id field of this event, if it had one


class SSEParser:
    def __init__(self) -> None:
        self.last_id = ""  # what to send as Last-Event-ID on reconnect
        self.retry_ms: int | None = None
        self._event = ""
        self._data: list[str] = []
        self._size = 0
        self._id: str | None = None

    def feed(self, line: str) -> SSEvent | None:
        """One line without its terminator; returns an event when a blank line completes one."""
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            return None  # a comment (heartbeat)
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._size += len(value) + 1
            if self._size <= MAX_DATA_CHARS:
                self._data.append(value)
        elif name == "id":
            if "\0" not in value:
                self._id = value
                self.last_id = value
        elif name == "retry" and value.isdigit():
            self.retry_ms = int(value)
        return None

    def _dispatch(self) -> SSEvent | None:
        event_id = self._id
        data, event, too_big = self._data, self._event or "message", self._size > MAX_DATA_CHARS
        self._event, self._data, self._size, self._id = "", [], 0, None
        if not data or too_big:
            return None
        return SSEvent(event, "\n".join(data), event_id)
