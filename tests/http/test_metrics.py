"""/metrics in the Prometheus text format, read back with prometheus-client's own parser."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient
from support import basic

from jwks_service.clock import ManualClock
from jwks_service.runtime import Runtime

GRANT = {"grant_type": "client_credentials"}


def scrape(http: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = http.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_metrics_count_what_happened(http: TestClient, runtime: Runtime, clock: ManualClock) -> None:
    client, secret = runtime.clients.create("svc", ["read"], ["api"])
    auth = basic(client.client_id, secret)
    kid = runtime.keys.snapshot.signing["default"].kid
    tokens = [http.post("/oauth/token", data=GRANT, headers=auth).json()["access_token"] for _ in range(3)]
    http.post("/oauth/token", data=GRANT, headers=basic(client.client_id, "wrong"))
    http.post("/oauth/token", data={**GRANT, "scope": "admin"}, headers=auth)
    etag = http.get("/.well-known/jwks.json").headers["etag"]
    http.get("/.well-known/jwks.json", headers={"If-None-Match": etag})
    http.post("/oauth/introspect", data={"token": tokens[0]}, headers=auth)
    http.post("/oauth/introspect", data={"token": "junk"}, headers=auth)
    assert scrape(http)[("jwks_key_events_published_total", ())] == 0
    runtime.keys.rotate("default", force=True, reason="metrics")
    runtime.keys.revoke(kid, reason="metrics")
    clock.advance(60)
    http.app.state.events.observe()  # what the background loop does after every refresh

    m = scrape(http)
    assert m[("jwks_tokens_issued_total", (("keyset", "default"), ("kid", kid)))] == 3
    assert m[("jwks_token_requests_total", (("outcome", "ok"),))] == 3
    assert m[("jwks_token_requests_total", (("outcome", "invalid_client"),))] == 1
    assert m[("jwks_token_requests_total", (("outcome", "invalid_scope"),))] == 1
    assert m[("jwks_token_signing_seconds_count", (("keyset", "default"),))] == 3
    assert m[("jwks_jwks_requests_total", (("status", "200"),))] == 1
    assert m[("jwks_jwks_requests_total", (("status", "304"),))] == 1
    assert m[("jwks_introspections_total", (("outcome", "active"),))] == 1
    assert m[("jwks_introspections_total", (("outcome", "inactive"),))] == 1
    assert m[("jwks_key_transitions_total", (("event", "revoked"), ("keyset", "default")))] == 1
    assert m[("jwks_key_transitions_total", (("event", "rotated"), ("keyset", "default")))] == 2
    assert m[("jwks_keys", (("keyset", "default"), ("state", "revoked")))] == 1
    assert m[("jwks_keys", (("keyset", "default"), ("state", "current")))] == 1
    assert m[("jwks_key_age_seconds", (("keyset", "default"), ("state", "current")))] == 60
    assert m[("jwks_keyset_can_sign", (("keyset", "default"),))] == 1
    assert m[("jwks_canary_failures_total", ())] == 0
    assert m[("jwks_event_subscribers", ())] == 0
    # The rotation promoted the next key and made a new one (rotated, created); the revocation of the
    # old key, then previous, rotated nothing (revoked).
    assert m[("jwks_key_events_published_total", ())] == 3
    # Next rotation: 180 days after the current key's activation, 60 s ago.
    assert m[("jwks_next_rotation_seconds", (("keyset", "default"),))] == 180 * 86400 - 60
