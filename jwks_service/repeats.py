"""Logging a failure that repeats (a store outage, Vault down, a Transit engine not mounted) without
one line per attempt: the first occurrence, then while it lasts a summary with a count every
`every` seconds, then one line when it recovers.

A background loop that retries four times a second would otherwise log four lines a second per
replica for as long as the outage lasts, and bury the line that said what went wrong. A different
cause is logged at once: it is news. Pure: the caller says when (`now`, seconds on any monotonic
clock); the only effect is the logger's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

SUMMARY_SECONDS = 60.0


def _plural(n: int) -> str:
    return f"{n} failure{'' if n == 1 else 's'}"


@dataclass
class RepeatedFailure:
    """One recurring operation's failures (`what`: "background refresh", "keyset default: maintenance")."""

    logger: logging.Logger
    what: str
    every: float = SUMMARY_SECONDS
    level: int = logging.WARNING
    failures: int = field(default=0, init=False)  # since the last success
    cause: str = field(default="", init=False)
    _since: float = field(default=0.0, init=False)
    _reported_at: float = field(default=0.0, init=False)
    _unreported: int = field(default=0, init=False)

    def failed(self, cause: str, now: float) -> None:
        self.failures += 1
        if self.failures == 1 or cause != self.cause:
            self.logger.log(self.level, "%s failed: %s", self.what, cause)
            if self.failures == 1:
                self._since = now
            self.cause, self._reported_at, self._unreported = cause, now, 0
            return
        self._unreported += 1
        if now - self._reported_at >= self.every:
            self.logger.log(
                self.level,
                "%s still failing: %s (%s in the last %.0fs, %s since it started %.0fs ago)",
                self.what,
                cause,
                _plural(self._unreported),
                now - self._reported_at,
                _plural(self.failures),
                now - self._since,
            )
            self._reported_at, self._unreported = now, 0

    def succeeded(self, now: float) -> None:
        if self.failures:
            self.logger.info(
                "%s recovered after %s in %.0fs (last: %s)",
                self.what,
                _plural(self.failures),
                now - self._since,
                self.cause,
            )
        self.failures, self.cause, self._unreported = 0, "", 0
