"""StrangerGate: blocking calls for unauthenticated callers are bounded and fail fast when stuck."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from jwks_service.clients import BusyError, StrangerGate


def test_a_stuck_call_makes_others_fail_fast_and_bounded() -> None:
    release = threading.Event()
    gate = StrangerGate(1, wait=0.2, pending=3, per_address=2)

    async def scenario() -> None:
        stuck = asyncio.create_task(gate.run("10.0.0.1", release.wait, 10))
        await asyncio.sleep(0.05)
        # The one slot is taken: a caller waits at most `wait`, then 503.
        started = time.monotonic()
        with pytest.raises(BusyError):
            await gate.run("10.0.0.2", lambda: "never")
        assert 0.15 <= time.monotonic() - started < 1.0
        # Per address: the second pending call of an address is its last.
        waiting = asyncio.create_task(gate.run("10.0.0.1", lambda: "late"))
        await asyncio.sleep(0.01)
        started = time.monotonic()
        with pytest.raises(BusyError):
            await gate.run("10.0.0.1", lambda: "never")
        assert time.monotonic() - started < 0.05, "over the per-address bound: refused at once, not queued"
        # In total: `pending` calls run or wait, no more.
        other = asyncio.create_task(gate.run("10.0.0.3", lambda: "late"))
        await asyncio.sleep(0.01)
        with pytest.raises(BusyError):
            await gate.run("10.0.0.4", lambda: "never")
        for task in (waiting, other):  # both wait `wait` for the slot the stuck call holds, then 503
            with pytest.raises(BusyError):
                await task
        release.set()
        assert await stuck is True
        assert await gate.run("10.0.0.1", lambda: "ok") == "ok"

    asyncio.run(scenario())
    assert gate.refused == 5
