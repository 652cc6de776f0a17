"""Adoption over HTTP (API.md §6): the JWKS endpoint notes who fetched which revision (200 and 304, by
JWKS-Verifier or by address + User-Agent), and /admin/keysets/{name}/adoption, /keys/status and /metrics
read it back."""

from __future__ import annotations

import anyio
import pytest
from starlette.testclient import TestClient
from support import ISSUER, basic, wait_until

from jwks_service.adoption import Fetch
from jwks_service.clock import ManualClock
from jwks_service.http import create_app
from jwks_service.runtime import Runtime

from .test_admin import token_for
from .test_metrics import scrape

JWKS = "/.well-known/jwks.json"


@pytest.fixture
def admin(http: TestClient, runtime: Runtime) -> dict[str, str]:
    return {"Authorization": "Bearer " + token_for(http, runtime, ["admin"], [ISSUER])}


def notes(runtime: Runtime) -> dict[str, Fetch]:
    fetches, _ = runtime.fetches.take()
    return {f.fetcher: f for f in fetches}


def flush(runtime: Runtime) -> None:
    anyio.run(runtime.fetches.flush, runtime.store, runtime.clock.now())
    runtime.adoption.reload()


def test_a_200_and_a_matching_304_are_noted_by_the_verifier_header(
    http: TestClient, runtime: Runtime, clock: ManualClock
) -> None:
    first = http.get(JWKS, headers={"JWKS-Verifier": "orders-api/1a2b3c4d"})
    etag = first.headers["etag"]
    kids = tuple(k["kid"] for k in first.json()["keys"])
    assert notes(runtime) == {"orders-api/1a2b3c4d": Fetch("orders-api/1a2b3c4d", etag, clock.now())}
    clock.advance(30)
    again = http.get(JWKS, headers={"JWKS-Verifier": "orders-api/1a2b3c4d", "If-None-Match": etag})
    assert again.status_code == 304
    fetches, revisions = runtime.fetches.take()
    assert fetches == [Fetch("orders-api/1a2b3c4d", etag, clock.now())]
    assert revisions == {etag: kids}


def test_without_the_header_a_fetcher_is_its_address_and_user_agent(http: TestClient, runtime: Runtime) -> None:
    http.get(JWKS, headers={"User-Agent": "PyJWT/2.9"})
    http.get(JWKS, headers={"User-Agent": "PyJWT/2.9", "JWKS-Verifier": "bad\x01name"})  # not printable: ignored
    http.get(JWKS, headers={"User-Agent": "curl/8", "If-None-Match": '"stale"'})  # a 200: holds the current one
    assert set(notes(runtime)) == {"testclient PyJWT/2.9", "testclient curl/8"}


def test_head_and_other_documents_are_not_noted(http: TestClient, runtime: Runtime) -> None:
    http.head(JWKS, headers={"JWKS-Verifier": "orders-api/1"})
    http.get("/.well-known/openid-configuration", headers={"JWKS-Verifier": "orders-api/1"})
    assert notes(runtime) == {}


def test_the_adoption_endpoint_counts_holders_and_laggards(
    http: TestClient, runtime: Runtime, admin: dict[str, str], clock: ManualClock
) -> None:
    keyset = runtime.keys.snapshot.keysets["default"]
    assert keyset.current is not None and keyset.next is not None
    current, nxt = keyset.current.kid, keyset.next.kid
    http.get(JWKS, headers={"JWKS-Verifier": "orders-api/1"})
    http.get(JWKS, headers={"User-Agent": "PyJWT/2.9"})
    flush(runtime)
    r = http.get("/admin/keysets/default/adoption", headers=admin)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["keyset"] == "default" and body["window"] == runtime.settings.adoption.window
    assert body["fetchers"] == 2 and body["laggards"] == []
    assert {k["kid"]: (k["state"], k["holding"], k["share"]) for k in body["keys"]} == {
        current: ("current", 2, 1.0),
        nxt: ("next", 2, 1.0),
    }

    # A rotation publishes a new next: nobody holds it until they fetch again.
    runtime.keys.rotate("default", force=True, reason="test")
    newest = runtime.keys.snapshot.keysets["default"].next
    assert newest is not None
    clock.advance(5)
    http.get(JWKS, headers={"JWKS-Verifier": "orders-api/1"})
    flush(runtime)
    body = http.get("/admin/keysets/default/adoption", headers=admin).json()
    assert {k["kid"]: k["holding"] for k in body["keys"]}[newest.kid] == 1
    assert [g["fetcher"] for g in body["laggards"]] == ["testclient PyJWT/2.9"]
    assert body["laggards"][0]["revision"] != http.get(JWKS).headers["etag"]
    assert body["laggard_count"] == 1 and body["laggards"][0]["last_fetch"].endswith("Z")


def test_the_adoption_endpoint_needs_admin_and_a_known_keyset(
    http: TestClient, runtime: Runtime, admin: dict[str, str]
) -> None:
    assert http.get("/admin/keysets/default/adoption").status_code == 401
    reader = token_for(http, runtime, ["read"], [ISSUER])
    assert http.get("/admin/keysets/default/adoption", headers={"Authorization": f"Bearer {reader}"}).status_code == 403
    r = http.get("/admin/keysets/nope/adoption", headers=admin)
    assert r.status_code == 404 and r.json()["error"] == "not_found"


def test_key_status_shows_aggregates_only(http: TestClient, runtime: Runtime) -> None:
    status = http.get("/keys/status").json()
    assert {k["adoption"]["fetchers"] for k in status["keys"]} == {0}
    http.get(JWKS, headers={"JWKS-Verifier": "orders-api/1"})
    flush(runtime)
    status = http.get("/keys/status")
    assert status.status_code == 200
    assert [k["adoption"] for k in status.json()["keys"]] == [{"fetchers": 1, "share": 1.0}] * 2
    assert "orders-api" not in status.text


def test_metrics_export_adoption_and_drops(http: TestClient, runtime: Runtime) -> None:
    client, secret = runtime.clients.create("svc", ["read"], ["api"])
    assert http.post("/oauth/token", data={"grant_type": "client_credentials"}, headers=basic(client.client_id, secret))
    for i in range(runtime.settings.adoption.max_per_source + 2):
        http.get(JWKS, headers={"JWKS-Verifier": f"swarm/{i}"})
    flush(runtime)
    kid = runtime.keys.snapshot.signing["default"].kid
    samples = scrape(http)
    n = runtime.settings.adoption.max_per_source
    assert samples[("jwks_adoption_fetchers", (("keyset", "default"),))] == n
    assert samples[("jwks_adoption_share", (("keyset", "default"), ("kid", kid)))] == 1.0
    assert samples[("jwks_adoption_dropped_total", (("reason", "per_source"),))] == 2
    assert samples[("jwks_adoption_dropped_total", (("reason", "buffer_full"),))] == 0


def test_the_running_app_flushes_every_second_and_once_more_at_shutdown(runtime: Runtime) -> None:
    with TestClient(create_app(runtime=runtime), base_url=ISSUER) as http:
        http.get(JWKS, headers={"JWKS-Verifier": "orders-api/1"})
        wait_until(lambda: [f.fetcher for f in runtime.store.list_fetches(0.0)] == ["orders-api/1"], timeout=5)
        http.get(JWKS, headers={"JWKS-Verifier": "billing/2"})  # noted just before shutdown
    assert {f.fetcher for f in runtime.store.list_fetches(0.0)} == {"orders-api/1", "billing/2"}
    assert runtime.fetches.pending == 0


def test_a_long_user_agent_gives_a_bounded_name(http: TestClient, runtime: Runtime) -> None:
    http.get(JWKS, headers={"User-Agent": "A" * 5000})
    http.get(JWKS, headers={"User-Agent": "A" * 5000})
    (name,) = notes(runtime)
    assert name.startswith("testclient AAAA") and len(name) <= 200
