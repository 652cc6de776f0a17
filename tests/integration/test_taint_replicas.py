"""Taint, then revoke (API.md §6) on three real replicas sharing one Redis (tests/replicas.py).

Each replica has a caller: an SDK `TokenClient` (sharing its `Verifier`'s events, `verifier=`) and a
resource server's SDK `Verifier` (events=True), both on that replica, in a bounded load loop. A
request fails when the verifier refuses the token; the caller then drops it (as it would after a
401) and fetches another. Revoking a key that still has tokens in use fails those requests;
tainting it first moves every caller to the new key, so the revocation that follows fails none.

Run with `pytest -s` to see both numbers.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from replicas import Fleet, Policy, kid_of

from jwks_service.sdk import InvalidTokenError, TokenClient, Verifier

pytestmark = pytest.mark.slow

# Tokens live a minute (cached ~54 s by the token client), so a revocation meets tokens in use.
POLICY = Policy(max_age="1s", rotation_period="1h", prepublish="1s", token_ttl="60s", leeway="0s")
PAUSE = 0.02  # between one caller's requests: the load stays bounded on a small machine


class Caller(threading.Thread):
    def __init__(self, fleet: Fleet, index: int) -> None:
        super().__init__(name=f"caller{index}", daemon=True)
        replica = fleet.replicas[index]
        self.verifier = Verifier(
            fleet.issuer,
            "api",
            jwks_uri=replica.url("/.well-known/jwks.json"),
            events=True,
            events_uri=replica.url("/keys/events"),
            leeway=0,
        )
        self.client = TokenClient(
            None,
            fleet.client_id,
            fleet.client_secret,
            token_endpoint=replica.url("/oauth/token"),
            audience="api",
            verifier=self.verifier,
        )
        self.ok = 0
        self.failed: list[str] = []
        self.kids: set[str] = set()
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            token = self.client.get()
            try:
                self.verifier.verify(token)
            except InvalidTokenError as exc:
                self.failed.append(f"{kid_of(token)}: {type(exc).__name__}")
                self.client.invalidate()
            else:
                self.ok += 1
                self.kids.add(kid_of(token))
            time.sleep(PAUSE)

    def reset(self) -> tuple[int, list[str]]:
        done = (self.ok, self.failed)
        self.ok, self.failed = 0, []
        return done

    def close(self) -> None:
        self.stop.set()
        self.join(timeout=5)
        self.client.close()
        self.verifier.close()


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    with Fleet(tmp_path, POLICY, replicas=3) as fleet:
        yield fleet


def _current(fleet: Fleet) -> str:
    (kid,) = fleet.currents(fleet.replicas[0])
    return kid


def _wait(predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_taint_then_revoke_fails_no_request_revoke_alone_fails_the_tokens_in_use(fleet: Fleet) -> None:
    callers = [Caller(fleet, i) for i in range(3)]
    try:
        for c in callers:
            _wait(lambda c=c: c.verifier.cache.subscribed, 10)
        time.sleep(POLICY.seconds("prepublish") + 0.5)  # next has been published long enough
        for c in callers:
            c.start()
        first = _current(fleet)
        _wait(lambda: all(first in c.kids for c in callers), 10)

        # Taint, wait until no caller holds a token of that key, then revoke it.
        r = fleet.admin_post(fleet.replicas[1], f"/admin/keys/{first}/taint", {"reason": "suspect"})
        assert r.status_code == 200, r.text
        second = r.json()["current"]
        assert second != first
        _wait(lambda: all(c.client.token is not None and c.client.token.kid == second for c in callers), 10)
        r = fleet.admin_post(fleet.replicas[2], f"/admin/keys/{first}/revoke", {"reason": "confirmed"})
        assert r.status_code == 200, r.text
        assert r.json()["current"] == second  # the revocation rotated nothing more
        time.sleep(2.0)  # every replica and verifier has heard of the revocation (within 1 s)
        results = [c.reset() for c in callers]
        taint_then_revoke = [f for _, failed in results for f in failed]
        served = sum(ok for ok, _ in results)

        # Revoke the current key alone: every caller holds a token of it.
        _wait(lambda: all(second in c.kids for c in callers), 10)
        r = fleet.admin_post(fleet.replicas[1], f"/admin/keys/{second}/revoke", {"reason": "leaked"})
        assert r.status_code == 200, r.text
        time.sleep(2.0)
        results = [c.reset() for c in callers]
        revoke_alone = [f for _, failed in results for f in failed]
        served_after = sum(ok for ok, _ in results)
    finally:
        for c in callers:
            c.close()
    drops = sum(c.client.tainted_drops for c in callers)
    print(
        f"\ntaint then revoke: {len(taint_then_revoke)} failed requests of {served + len(taint_then_revoke)}"
        f" ({drops} cached tokens dropped on the taint event);"
        f" revoke alone: {len(revoke_alone)} failed of {served_after + len(revoke_alone)} {sorted(set(revoke_alone))}"
    )
    assert taint_then_revoke == []
    assert drops >= len(callers)
    assert len(revoke_alone) >= len(callers)  # each caller's token in use failed at least once
    assert all(f.startswith(second) for f in revoke_alone)
