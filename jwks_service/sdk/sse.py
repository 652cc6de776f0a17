"""Server-Sent Events parsing (the WHATWG event-stream format): text into lines, lines into events.
No I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_DATA_CHARS = 64 * 1024  # one event's data; ours are ~200 bytes
MAX_LINE_CHARS = MAX_DATA_CHARS + 1024  # one line: a data line of the largest event we keep, with room


class LineTooLongError(ValueError):
    """A line longer than MAX_LINE_CHARS: the stream is broken or hostile; drop it and reconnect."""


class SSELines:
    """Text chunks in, complete lines out (without their terminator), with a bound on what is held.

    The WHATWG event-stream format ends a line with CRLF, LF or CR, and nothing else (not the
    other separators of str.splitlines); a CR at the end of a chunk may be half of a CRLF. httpx's
    iter_lines would buffer a line that never ends for ever; this refuses it past `limit`.
    """

    def __init__(self, limit: int = MAX_LINE_CHARS) -> None:
        self.limit = limit
        self._pending = ""
        self._after_cr = False  # the last chunk ended with CR: a leading LF here belongs to it

    def feed(self, text: str) -> list[str]:
        if self._after_cr and text.startswith("\n"):
            text = text[1:]
        if text:
            self._after_cr = False
        buffer = self._pending + text
        lines: list[str] = []
        start = 0
        while True:
            cr, lf = buffer.find("\r", start), buffer.find("\n", start)
            end = lf if cr < 0 or 0 <= lf < cr else cr
            if end < 0:
                break
            lines.append(buffer[start:end])
            start = end + 1
            if buffer[end] == "\r":
                if start == len(buffer):
                    self._after_cr = True
                elif buffer[start] == "\n":
                    start += 1
        self._pending = buffer[start:]
        if len(self._pending) > self.limit or any(len(line) > self.limit for line in lines):
            raise LineTooLongError(f"an event-stream line longer than {self.limit} characters")
        return lines


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
