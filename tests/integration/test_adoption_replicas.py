"""Adoption (API.md §6) on three real replicas sharing one Redis (tests/replicas.py): JWKS fetches spread
over the replicas, by PyJWT's PyJWKClient, the SDK's verifiers and plain HTTP clients, are all counted on
every replica's /admin/keysets/default/adoption; after a rotation, the fetchers that have not fetched
again are the laggards, everywhere, until they do."""

from __future__ import annotations

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

POLICY = Policy(max_age="1s", rotation_period="1h", prepublish="1s", token_ttl="60s", leeway="0s")


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    with Fleet(tmp_path, POLICY, replicas=3) as fleet:
        yield fleet


def adoption(fleet: Fleet, index: int, token: str) -> dict[str, Any]:
    r = fleet.http.get(
        fleet.replicas[index].url("/admin/keysets/default/adoption"), headers={"Authorization": f"Bearer {token}"}
    )
    assert r.status_code == 200, r.text
    return dict(r.json())


def everywhere(fleet: Fleet, token: str, check: Any, timeout: float = 15.0) -> None:
    """Wait until `check(document)` holds on every replica's adoption endpoint."""
    for i in range(len(fleet.replicas)):
        wait_until(lambda i=i: check(adoption(fleet, i, token)), timeout=timeout)


def test_fetches_on_any_replica_are_counted_on_every_replica(fleet: Fleet) -> None:
    r1, r2, r3 = fleet.replicas
    token = fleet.admin_token(r1)
    pyjwt = jwt.PyJWKClient(r1.url("/.well-known/jwks.json"), headers={"User-Agent": "PyJWT-test/1"})
    orders = Verifier(fleet.issuer, "api", jwks_uri=r2.url("/.well-known/jwks.json"), name="orders-api")
    billing = Verifier(fleet.issuer, "api", jwks_uri=r3.url("/.well-known/jwks.json"), name="billing")
    try:
        pyjwt.get_jwk_set(refresh=True)
        orders.refresh()
        billing.refresh()
        billing.refresh()  # a 304 this time: still counted, once
        assert billing.stats.jwks_not_modified == 1
        for replica, agent in ((r1, "curl/8.5"), (r2, "curl/8.5"), (r3, "Go-http-client/1.1")):
            assert httpx.get(replica.url("/.well-known/jwks.json"), headers={"User-Agent": agent}).status_code == 200
        expected = {
            "127.0.0.1 PyJWT-test/1",
            orders.verifier_id,
            billing.verifier_id,
            "127.0.0.1 curl/8.5",  # one fetcher, whichever replica it asked
            "127.0.0.1 Go-http-client/1.1",
        }
        everywhere(fleet, token, lambda doc: doc["fetchers"] == len(expected))
        doc = adoption(fleet, 2, token)
        assert {k["state"]: (k["holding"], k["share"]) for k in doc["keys"]} == {
            "current": (5, 1.0),
            "next": (5, 1.0),
        }
        assert doc["laggards"] == []
        status = fleet.status(r1)
        assert {(k["state"], k["adoption"]["fetchers"]) for k in status["keys"]} == {("current", 5), ("next", 5)}

        # A rotation publishes a new next: every fetcher is a laggard until it fetches again.
        rotated = fleet.admin_post(r1, "/admin/keysets/default/rotate", {"force": True, "reason": "adoption test"})
        assert rotated.status_code == 200, rotated.text
        everywhere(fleet, token, lambda doc: {g["fetcher"] for g in doc["laggards"]} == expected)
        newest = rotated.json()["next"]
        wait_until(lambda: _refreshed(orders, newest), timeout=10)
        everywhere(fleet, token, lambda doc: {g["fetcher"] for g in doc["laggards"]} == expected - {orders.verifier_id})
        doc = adoption(fleet, 0, token)
        assert {k["kid"]: k["holding"] for k in doc["keys"]}[newest] == 1
    finally:
        orders.close()
        billing.close()


def _refreshed(verifier: Verifier, kid: str) -> bool:
    """Refresh the verifier's key set (its max-age is a second) until it holds `kid`."""
    verifier.refresh()
    return kid in verifier.cache.keys
