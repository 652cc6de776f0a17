"""Taint, then revoke (API.md §6): POST /admin/keys/{kid}/taint through the real app."""

from __future__ import annotations

import jwt
from starlette.testclient import TestClient
from support import ISSUER, basic

from jwks_service.events import keyset_events
from jwks_service.runtime import Runtime

GRANT = {"grant_type": "client_credentials"}


def _admin(http: TestClient, runtime: Runtime) -> dict[str, str]:
    client, secret = runtime.clients.create("ops", ["admin"], [ISSUER])
    r = http.post("/oauth/token", data=GRANT, headers=basic(client.client_id, secret))
    return {"Authorization": "Bearer " + r.json()["access_token"]}


def test_taint_current_then_revoke(http: TestClient, runtime: Runtime) -> None:
    client, secret = runtime.clients.create("svc", ["read"], ["api"])
    auth = basic(client.client_id, secret)
    old = http.post("/oauth/token", data=GRANT, headers=auth).json()["access_token"]
    kid = jwt.get_unverified_header(old)["kid"]
    next_kid = runtime.keys.summary("default")["next"]
    admin = _admin(http, runtime)

    r = http.post(f"/admin/keys/{kid}/taint", json={"reason": "suspect host"}, headers=admin)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"keyset", "tainted", "current", "next"}
    assert (body["keyset"], body["tainted"], body["current"]) == ("default", kid, next_kid)
    assert body["next"] not in (kid, next_kid)

    # The tainted key stops signing at once but keeps verifying: its tokens stay active, flagged.
    answer = http.post("/oauth/introspect", data={"token": old}, headers=auth).json()
    assert answer["active"] is True and answer["key_tainted"] is True and answer["kid"] == kid
    new = http.post("/oauth/token", data=GRANT, headers=auth).json()["access_token"]
    assert jwt.get_unverified_header(new)["kid"] == next_kid
    assert "key_tainted" not in http.post("/oauth/introspect", data={"token": new}, headers=auth).json()
    assert kid in {k["kid"] for k in http.get("/.well-known/jwks.json").json()["keys"]}
    status = {k["kid"]: k for k in http.get("/keys/status").json()["keys"]}
    assert (status[kid]["state"], status[kid]["tainted"]) == ("previous", True)
    assert status[next_kid]["tainted"] is False and status[next_kid]["state"] == "current"
    events = [(e.type, e.kid) for e in keyset_events(runtime.keys.snapshot.keysets["default"])]
    assert ("tainted", kid) in events
    audited = http.get("/admin/audit?limit=50", headers=admin).json()["events"]
    tainted = [e for e in audited if e["action"] == "key.tainted"]
    assert [e["target"] for e in tainted] == [kid]
    assert tainted[0]["reason"] == "suspect host"

    # Idempotent: the same answer, no second rotation.
    again = http.post(f"/admin/keys/{kid}/taint", json={"reason": "again"}, headers=admin)
    assert again.status_code == 200 and again.json() == body

    # Revoking the tainted key works as usual, and rotates nothing more.
    r = http.post(f"/admin/keys/{kid}/revoke", json={"reason": "confirmed"}, headers=admin)
    assert r.status_code == 200, r.text
    assert (r.json()["current"], r.json()["next"]) == (body["current"], body["next"])
    assert http.post("/oauth/introspect", data={"token": old}, headers=auth).json() == {"active": False}
    assert http.post("/oauth/introspect", data={"token": new}, headers=auth).json()["active"] is True


def test_taint_refusals(http: TestClient, runtime: Runtime) -> None:
    admin = _admin(http, runtime)
    summary = runtime.keys.summary("default")
    r = http.post(f"/admin/keys/{summary['next']}/taint", json={"reason": "x"}, headers=admin)
    assert r.status_code == 409 and r.json()["error"] == "taint_refused"
    assert http.post("/admin/keys/unknown-kid/taint", json={"reason": "x"}, headers=admin).status_code == 404
    assert http.post(f"/admin/keys/{summary['current']}/taint", json={}, headers=admin).status_code == 400
    assert runtime.keys.summary("default") == summary  # nothing changed


def test_taint_previous_keeps_current(http: TestClient, runtime: Runtime) -> None:
    admin = _admin(http, runtime)
    rotated = http.post("/admin/keysets/default/rotate", json={"force": True}, headers=admin).json()
    admin = _admin(http, runtime)  # the first admin token was signed by the key now previous: still valid
    r = http.post(f"/admin/keys/{rotated['previous']}/taint", json={"reason": "x"}, headers=admin)
    assert r.status_code == 200, r.text
    assert (r.json()["current"], r.json()["next"]) == (rotated["current"], rotated["next"])
