"""Adoption-gated promotion (API.md §6) on a manual clock: a due scheduled rotation waits until the
keyset's `adoption_gate` share of fetchers holds `next`, at most `adoption_max_wait`; the wait is
visible (/keys/status, metrics) and audited; forced rotations and emergency actions that promote
`next` ignore the gate and list the laggards.

Adoption here comes from a table the test sets (the Rotation's AdoptionSource): the recording of real
fetches is tested with real verifiers in test_adoption_fleet.py.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from starlette.testclient import TestClient
from support import ISSUER

from jwks_service.adoption import Adoption, Fetch, adoption
from jwks_service.clock import ManualClock
from jwks_service.errors import StoreError
from jwks_service.http import create_app
from jwks_service.runtime import Runtime

POLICY = {
    "alg": "ES256",
    "rotation_period": "2h",
    "prepublish": "10m",
    "token_ttl": "15m",
    "leeway": "30s",
    "adoption_gate": "0.9",
    "adoption_max_wait": "3h",
}


class Fleet:
    """Fetchers and what they hold: `holding` of `total` hold the keyset's next key now."""

    def __init__(self, rt: Runtime, clock: ManualClock) -> None:
        self.rt, self.clock = rt, clock
        self.total, self.holding = 10, 0
        self.reads = 0

    def adoption(self, name: str) -> Adoption:
        self.reads += 1
        ks = self.rt.keys.snapshot.keysets[name]
        now = self.clock.now()
        kids = frozenset(k.kid for k in ks.keys)
        without_next = kids - ({ks.next.kid} if ks.next else set())
        revisions = {'"new"': kids, '"old"': frozenset(without_next)}
        fetches = [Fetch(f"svc-{i}", '"new"' if i < self.holding else '"old"', now - 1) for i in range(self.total)]
        return adoption(ks, fetches, revisions, now=now, window=86400)


def setup(runtime_factory: Callable[..., Runtime], clock: ManualClock, **policy: str) -> tuple[Runtime, Fleet]:
    rt = runtime_factory({"default": {**POLICY, **policy}})
    fleet = Fleet(rt, clock)
    rt.keys.rotation.adoption_source = fleet
    rt.keys.start()
    return rt, fleet


def current(rt: Runtime) -> str:
    ks = rt.keys.snapshot.keysets["default"]
    assert ks.current is not None
    return ks.current.kid


def actions(rt: Runtime) -> list[str]:
    return [e.action for e in reversed(rt.store.list_audit(limit=1000))]


def test_a_due_rotation_waits_for_adoption_and_follows_it(
    runtime_factory: Callable[..., Runtime], clock: ManualClock
) -> None:
    rt, fleet = setup(runtime_factory, clock)
    first = current(rt)
    http = TestClient(create_app(runtime=rt, background=False), base_url=ISSUER)
    clock.advance(2 * 3600 + 1)  # due
    fleet.holding = 8  # 80% < 90%
    for _ in range(5):
        rt.keys.tick()
        clock.advance(60)
    assert current(rt) == first, "promoted while only 80% of fetchers held next"
    assert actions(rt).count("promotion.waiting") == 1, "the wait is audited once, when it starts"
    status = http.get("/keys/status").json()
    assert status["waiting"]["default"]["reason"] == "waiting"
    assert status["waiting"]["default"]["share"] == 0.8 and status["waiting"]["default"]["fetchers"] == 10
    metrics = http.get("/metrics").text
    assert 'jwks_rotation_waiting{keyset="default",reason="waiting"} 1.0' in metrics

    fleet.holding = 9  # the laggard refetched: 90%
    rt.keys.tick()
    assert current(rt) != first
    assert "promotion.adopted" in actions(rt)
    assert http.get("/keys/status").json()["waiting"] == {}
    assert 'jwks_rotation_waiting{keyset="default",reason="none"} 0.0' in http.get("/metrics").text


def test_past_max_wait_the_rotation_goes_ahead_and_says_so(
    runtime_factory: Callable[..., Runtime], clock: ManualClock
) -> None:
    rt, fleet = setup(runtime_factory, clock)
    first = current(rt)
    clock.advance(2 * 3600 + 1)
    fleet.holding = 0
    rt.keys.tick()
    clock.advance(3 * 3600 - 61)
    rt.keys.tick()
    assert current(rt) == first
    clock.advance(61)  # due_at + adoption_max_wait
    rt.keys.tick()
    assert current(rt) != first
    timeout = [e for e in rt.store.list_audit(limit=1000) if e.action == "promotion.gate_timeout"]
    assert len(timeout) == 1 and timeout[0].details["share"] == 0.0 and timeout[0].details["fetchers"] == 10


def test_the_gate_off_or_no_fetchers_never_waits(runtime_factory: Callable[..., Runtime], clock: ManualClock) -> None:
    rt, fleet = setup(runtime_factory, clock, adoption_gate="0")
    first = current(rt)
    clock.advance(2 * 3600 + 1)
    rt.keys.tick()
    assert current(rt) != first and fleet.reads == 0, "gate 0: adoption is not even read"
    rt.keys.rotation.settings.keysets["default"]
    rt2, fleet2 = setup(runtime_factory, clock)
    fleet2.total = 0
    second = current(rt2)
    clock.advance(2 * 3600 + 1)
    rt2.keys.tick()
    assert current(rt2) != second, "no fetcher in the window: nothing to wait for"


def test_forced_rotation_and_emergency_actions_ignore_the_gate_and_list_laggards(
    runtime_factory: Callable[..., Runtime], clock: ManualClock
) -> None:
    rt, fleet = setup(runtime_factory, clock)
    fleet.holding = 7
    summary = rt.keys.rotate("default", force=True, reason="drill")
    assert [lag["fetcher"] for lag in summary["laggards"]] == ["svc-7", "svc-8", "svc-9"]
    http = TestClient(create_app(runtime=rt, background=False), base_url=ISSUER)
    admin, admin_secret = rt.clients.create("ops", ["admin"], [ISSUER])
    token = http.post(
        "/oauth/token", data={"grant_type": "client_credentials"}, auth=(admin.client_id, admin_secret)
    ).json()["access_token"]
    fleet.holding = 9
    victim = current(rt)
    answer = http.post(
        f"/admin/keys/{victim}/taint", json={"reason": "suspect"}, headers={"Authorization": f"Bearer {token}"}
    )
    assert answer.status_code == 200, answer.text
    assert [lag["fetcher"] for lag in answer.json()["laggards"]] == ["svc-9"]
    # Revoking a key that is no longer current promotes nothing: no laggards to report.
    answer = http.post(
        f"/admin/keys/{victim}/revoke", json={"reason": "leaked"}, headers={"Authorization": f"Bearer {token}"}
    )
    assert answer.status_code == 200 and "laggards" not in answer.json()


class DownStore:
    """An adoption source whose store does not answer."""

    def adoption(self, name: str) -> Adoption:
        raise StoreError("store unreachable: connection refused")


def test_an_hmac_keyset_never_waits_even_when_adoption_cannot_be_read(
    runtime_factory: Callable[..., Runtime], clock: ManualClock
) -> None:
    # HMAC keys are never published, so no fetcher can hold them: the gate does not apply, whatever
    # the adoption records say or whether they can be read at all.
    rt = runtime_factory({"default": {**POLICY, "alg": "HS256"}})
    rt.keys.rotation.adoption_source = DownStore()
    rt.keys.start()
    first = current(rt)
    clock.advance(2 * 3600 + 1)
    rt.keys.tick()
    assert current(rt) != first, "a due HMAC rotation waited for an adoption it can never have"
    assert "promotion.waiting" not in actions(rt)
    assert rt.keys.rotation.waiting == {}


def test_a_wait_on_unknown_adoption_is_logged_once_not_every_tick(
    runtime_factory: Callable[..., Runtime], clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    rt = runtime_factory({"default": POLICY})
    rt.keys.rotation.adoption_source = DownStore()
    rt.keys.start()
    first = current(rt)
    clock.advance(2 * 3600 + 1)
    with caplog.at_level(logging.INFO, logger="jwks_service"):
        for _ in range(30):  # the scheduler ticks every second through a store outage
            rt.keys.tick()
            clock.advance(1)
    assert current(rt) == first, "adoption unknown: the due rotation waits"
    assert rt.keys.rotation.waiting["default"].reason == "unknown"
    lines = [r.getMessage() for r in caplog.records if "adoption unknown" in r.getMessage()]
    assert len(lines) == 1, lines


def test_a_promotion_after_a_wait_is_audited_once_across_replicas_and_names_the_promoted_key(
    runtime_factory: Callable[..., Runtime], clock: ManualClock
) -> None:
    # Two replicas on one store both wait; once the fetchers catch up, one of them promotes `next`:
    # that promotion is audited once, naming the key it promoted (not the fresh next made with it).
    a, fleet_a = setup(runtime_factory, clock)
    b = runtime_factory({"default": POLICY})
    fleet_b = Fleet(b, clock)
    b.keys.rotation.adoption_source = fleet_b
    b.keys.start()
    promoted = a.keys.snapshot.keysets["default"].next
    assert promoted is not None
    clock.advance(2 * 3600 + 1)
    fleet_a.holding = fleet_b.holding = 5
    a.keys.tick()
    b.keys.tick()
    fleet_a.holding = fleet_b.holding = 10
    a.keys.tick()  # promotes
    b.keys.tick()  # its copy of the keys is a tick behind: the rotation looks due still
    assert current(a) == promoted.kid
    adopted = [e for e in a.store.list_audit(limit=1000) if e.action == "promotion.adopted"]
    assert len(adopted) == 1, [e.target for e in adopted]
    assert adopted[0].target == promoted.kid


def test_a_promotion_past_max_wait_names_the_promoted_key(
    runtime_factory: Callable[..., Runtime], clock: ManualClock
) -> None:
    rt, _fleet = setup(runtime_factory, clock)
    promoted = rt.keys.snapshot.keysets["default"].next
    assert promoted is not None
    clock.advance(2 * 3600 + 1)
    rt.keys.tick()
    clock.advance(3 * 3600)
    rt.keys.tick()
    assert current(rt) == promoted.kid
    timeout = [e for e in rt.store.list_audit(limit=1000) if e.action == "promotion.gate_timeout"]
    assert [e.target for e in timeout] == [promoted.kid]
