"""Adoption-gated promotion (API.md §6) on three real replicas sharing one Redis, with real verifiers:
PyJWT's PyJWKClient (its defaults: a JWK set kept 300 s, refetched on an unknown kid), the SDK's
Verifier (honours max-age) and a client that fetched the JWKS once and never again.

1. A laggard holds promotion back: the due rotation waits while two of three fetchers do not hold
   `next`, every replica says so, and promotion follows once they fetch again.
2. With a short rotation schedule (seconds), scheduled rotations with the gate on fail no
   verification for verifiers on their default cache settings.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from replicas import Fleet, Policy
from support import wait_until

from jwks_service.sdk import Verifier

pytestmark = pytest.mark.slow

FETCH_ONCE_AGENT = "fetch-once/1"


def adoption(fleet: Fleet, index: int) -> dict[str, Any]:
    replica = fleet.replicas[index]
    token = fleet.admin_token(replica)  # tokens live 5 s here: one per call
    r = fleet.http.get(replica.url("/admin/keysets/default/adoption"), headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    return dict(r.json())


def current(fleet: Fleet, index: int) -> str:
    return next(k["kid"] for k in fleet.status(fleet.replicas[index])["keys"] if k["state"] == "current")


def actions(fleet: Fleet) -> list[str]:
    return [e.action for e in fleet.audit()]


@pytest.fixture
def gated(tmp_path: Path) -> Iterator[Fleet]:
    policy = Policy(
        max_age="1s",
        rotation_period="8s",
        prepublish="1s",
        token_ttl="5s",
        leeway="0s",
        adoption_gate="0.95",
        adoption_max_wait="1h",
    )
    with Fleet(tmp_path, policy, replicas=3) as fleet:
        yield fleet


def test_a_laggard_holds_promotion_back_until_it_refetches(gated: Fleet) -> None:
    fleet = gated
    r1, r2, r3 = fleet.replicas
    pyjwt = jwt.PyJWKClient(r1.url("/.well-known/jwks.json"))  # default cache: 300 s, refetch on unknown kid
    sdk = Verifier(fleet.issuer, "api", jwks_uri=r2.url("/.well-known/jwks.json"), name="orders-api")
    once = httpx.Client(headers={"User-Agent": FETCH_ONCE_AGENT})
    try:
        pyjwt.get_jwk_set()
        sdk.refresh()
        assert once.get(r3.url("/.well-known/jwks.json")).status_code == 200
        first = current(fleet, 0)
        # The first scheduled rotation: all three hold the next key published at bootstrap.
        wait_until(lambda: current(fleet, 0) != first, timeout=20)
        promoted = current(fleet, 0)
        status = fleet.status(r1)
        newest = next(k["kid"] for k in status["keys"] if k["state"] == "next")
        # The SDK honours max-age (1 s) and soon holds the new next; PyJWKClient (300 s) and the
        # fetch-once client do not: 1 of 3 fetchers, under the 95% gate.
        wait_until(lambda: (sdk.refresh(), newest in sdk.cache.keys)[1], timeout=10)
        try:
            wait_until(lambda: len(adoption(fleet, 2)["laggards"]) == 2)
        except TimeoutError:
            raise AssertionError(adoption(fleet, 2)) from None
        time.sleep(8 + 4)  # past the next due rotation, with ticks on every replica
        for index in range(3):
            assert current(fleet, index) == promoted, "promoted while 2 of 3 fetchers lacked next"
            waiting = fleet.status(fleet.replicas[index])["waiting"]["default"]
            assert waiting["reason"] == "waiting" and waiting["fetchers"] == 3
        held = adoption(fleet, 1)
        share = next(k["share"] for k in held["keys"] if k["kid"] == newest)
        laggards = {g["fetcher"] for g in held["laggards"]}
        assert laggards == {"127.0.0.1 Python-urllib/3.11", f"127.0.0.1 {FETCH_ONCE_AGENT}"} or len(laggards) == 2
        assert abs(share - 1 / 3) < 1e-9
        print(f"\ngate held: share of next {share:.2f} of {held['fetchers']} fetchers; laggards {sorted(laggards)}")
        assert "promotion.waiting" in actions(fleet)

        pyjwt.get_jwk_set(refresh=True)  # the laggards fetch again
        assert once.get(r3.url("/.well-known/jwks.json")).status_code == 200
        took = wait_until(lambda: all(current(fleet, i) == newest for i in range(3)), timeout=15)
        after = adoption(fleet, 0)
        print(
            f"promotion followed {took:.1f}s after the laggards refetched; then {after['fetchers']} fetchers,"
            f" shares {[(k['state'], k['share']) for k in after['keys']]}"
        )
        assert "promotion.adopted" in actions(fleet)
    finally:
        sdk.close()
        once.close()


def verify_under_rotation(tmp_path: Path, gate: str, seconds: float) -> tuple[int, int, list[str], int, list[str]]:
    """Tokens from random replicas verified by PyJWKClient and the SDK, both on their default cache
    settings, while keys rotate every 4 s: (verified, failed, first failures, signing kids, audit actions)."""
    policy = Policy(
        max_age="1s",
        rotation_period="4s",
        prepublish="1s",
        token_ttl="3s",
        leeway="0s",
        adoption_gate=gate,
        adoption_max_wait="1h",
    )
    tmp_path.mkdir()
    with Fleet(tmp_path, policy, replicas=3) as fleet:
        r1, r2, _ = fleet.replicas
        pyjwt = jwt.PyJWKClient(r1.url("/.well-known/jwks.json"))
        sdk = Verifier(fleet.issuer, "api", jwks_uri=r2.url("/.well-known/jwks.json"), name="billing")
        rng = random.Random(7)
        verified = failed = 0
        failures: list[str] = []
        kids: set[str] = set()

        def with_pyjwt(token: str) -> object:
            key = pyjwt.get_signing_key_from_jwt(token).key
            return jwt.decode(token, key, algorithms=["ES256"], audience="api")

        try:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:  # bounded
                token = fleet.token(rng.choice(fleet.replicas))
                kids.add(jwt.get_unverified_header(token)["kid"])
                for name, check in (("PyJWKClient", with_pyjwt), ("SDK", sdk.verify)):
                    try:
                        check(token)
                        verified += 1
                    except Exception as exc:
                        failed += 1
                        failures.append(f"{name}: {type(exc).__name__}: {exc}")
                time.sleep(0.05)
        finally:
            sdk.close()
        return verified, failed, failures[:5], len(kids), actions(fleet)


def test_scheduled_rotations_with_the_gate_on_fail_no_verification(tmp_path: Path) -> None:
    """PyJWKClient keeps its JWK set 300 s and refetches for an unknown kid at most every 30 s: keys
    rotating every 4 s outrun it. With the gate on, rotation waits until it holds `next` (its 300 s
    lifespan, or a refetch), and no verification fails; with the gate off, some do."""
    verified, failed, failures, kids, events = verify_under_rotation(tmp_path / "on", "0.95", 14)
    print(
        f"\ngate on (0.95), rotation every 4 s, 14 s on 3 replicas: {verified} verifications, {failed} failed;"
        f" {kids} signing kids; audited waits {events.count('promotion.waiting')}"
    )
    assert failed == 0, failures
    assert kids >= 2, "no rotation at all: the first one (every fetcher holds next) must go ahead"
    assert "promotion.waiting" in events
    verified_off, failed_off, _, kids_off, _ = verify_under_rotation(tmp_path / "off", "0", 14)
    print(f"gate off: {verified_off} verifications, {failed_off} failed; {kids_off} signing kids")
    assert failed_off > 0, "the control should show what the gate prevents"
