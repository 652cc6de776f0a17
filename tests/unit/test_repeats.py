"""Repeated failures are logged once, then as counts, then as a recovery (jwks_service/repeats.py)."""

from __future__ import annotations

import logging

import pytest

from jwks_service.repeats import RepeatedFailure

log = logging.getLogger("test.repeats")


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    out = [r.getMessage() for r in caplog.records if r.name == "test.repeats"]
    caplog.clear()
    return out


def test_an_outage_is_one_line_then_a_count_per_period_then_a_recovery(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    failures = RepeatedFailure(log, "background refresh", every=60)
    failures.failed("Redis unreachable", 0.0)
    assert lines(caplog) == ["background refresh failed: Redis unreachable"]
    for i in range(1, 240):  # four attempts a second for a minute: nothing more until the minute is up
        failures.failed("Redis unreachable", i * 0.25)
    assert lines(caplog) == []
    failures.failed("Redis unreachable", 60.0)
    assert lines(caplog) == [
        "background refresh still failing: Redis unreachable (240 failures in the last 60s, 241 failures since it"
        " started 60s ago)"
    ]
    failures.failed("Redis refused the password", 61.0)  # another cause is news: at once
    assert lines(caplog) == ["background refresh failed: Redis refused the password"]
    failures.succeeded(70.0)
    assert lines(caplog) == [
        "background refresh recovered after 242 failures in 70s (last: Redis refused the password)"
    ]
    failures.succeeded(71.0)
    failures.failed("Redis unreachable", 72.0)  # a new outage starts over
    assert lines(caplog) == ["background refresh failed: Redis unreachable"]
    assert failures.failures == 1
