"""Time as a parameter: every rule that depends on time takes ``now`` from a Clock. And the one
way times are written and read as text: RFC 3339, in UTC."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Literal, Protocol, overload


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch."""
        ...


class SystemClock:
    def now(self) -> float:
        return time.time()


class ManualClock:
    """A clock that moves only when told to; for tests and simulations."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> float:
        self._now += seconds
        return self._now

    def set(self, now: float) -> None:
        self._now = now


@overload
def rfc3339(ts: float, timespec: Literal["seconds", "milliseconds"] = "seconds") -> str: ...
@overload
def rfc3339(ts: float | None, timespec: Literal["seconds", "milliseconds"] = "seconds") -> str | None: ...
def rfc3339(ts: float | None, timespec: Literal["seconds", "milliseconds"] = "seconds") -> str | None:
    """Seconds since the epoch as RFC 3339 in UTC (`2026-01-01T00:00:00Z`); None stays None."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec=timespec).replace("+00:00", "Z")


class MissingTimeZoneError(ValueError):
    """An RFC 3339 time without its offset: which instant it names is not known."""


def parse_rfc3339(text: str) -> float:
    """An RFC 3339 time (with `Z` or an offset) as seconds since the epoch; ValueError when `text`
    is not one, MissingTimeZoneError when it has no offset."""
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise MissingTimeZoneError(f"{text!r} has no time zone")
    return parsed.timestamp()
