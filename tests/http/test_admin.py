"""The admin API (API.md §3 "Admin"): authorisation, every endpoint, and its error paths."""

from __future__ import annotations

from typing import Any

import jwt
import pytest
from starlette.testclient import TestClient
from support import ISSUER, basic

from jwks_service.clock import ManualClock
from jwks_service.model import AuditEvent
from jwks_service.runtime import Runtime

GRANT = {"grant_type": "client_credentials"}


def token_for(http: TestClient, runtime: Runtime, scopes: list[str], audiences: list[str], **form: str) -> str:
    client, secret = runtime.clients.create("c", scopes, audiences)
    r = http.post("/oauth/token", data={**GRANT, **form}, headers=basic(client.client_id, secret))
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


@pytest.fixture
def admin(http: TestClient, runtime: Runtime) -> dict[str, str]:
    return {"Authorization": "Bearer " + token_for(http, runtime, ["admin"], [ISSUER])}


ENDPOINTS = [
    ("GET", "/admin/keysets", None),
    ("POST", "/admin/keysets/default/rotate", {"force": True}),
    ("GET", "/admin/keysets/default/adoption", None),
    ("GET", "/admin/keysets/default/plan", None),
    ("POST", "/admin/keys/somekid/revoke", {"reason": "x"}),
    ("POST", "/admin/keys/somekid/taint", {"reason": "x"}),
    ("GET", "/admin/clients", None),
    ("POST", "/admin/clients", {"name": "x", "scopes": ["a"], "audiences": ["b"]}),
    ("GET", "/admin/clients/abc", None),
    ("PATCH", "/admin/clients/abc", {"scopes": ["a"]}),
    ("DELETE", "/admin/clients/abc", None),
    ("POST", "/admin/clients/abc/secret", {}),
    ("GET", "/admin/audit", None),
]


def call(http: TestClient, method: str, path: str, body: Any, headers: dict[str, str]) -> Any:
    return http.request(method, path, json=body, headers=headers)


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS)
def test_missing_malformed_or_forged_token_is_401(
    http: TestClient, runtime: Runtime, method: str, path: str, body: Any
) -> None:
    good = token_for(http, runtime, ["admin"], [ISSUER])
    forged = good[:-6] + ("AAAAAA" if not good.endswith("AAAAAA") else "BBBBBB")
    none_alg = "eyJhbGciOiJub25lIiwidHlwIjoiYXQrand0In0." + good.split(".")[1] + "."
    for headers in (
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic abc"},
        {"Authorization": "Bearer garbage"},
        {"Authorization": f"Bearer {forged}"},
        {"Authorization": f"Bearer {none_alg}"},
    ):
        r = call(http, method, path, body, headers)
        assert r.status_code == 401, (headers, r.text)
        assert r.json()["error"] == "invalid_token"
        assert r.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS)
def test_valid_token_without_admin_scope_or_audience_is_403(
    http: TestClient, runtime: Runtime, method: str, path: str, body: Any
) -> None:
    no_scope = token_for(http, runtime, ["read"], [ISSUER])
    wrong_aud = token_for(http, runtime, ["admin"], ["api"])
    for token in (no_scope, wrong_aud):
        r = call(http, method, path, body, {"Authorization": f"Bearer {token}"})
        assert r.status_code == 403, r.text
        assert r.json()["error"] == "insufficient_scope"
        assert 'error="insufficient_scope"' in r.headers["www-authenticate"]


def test_expired_admin_token_is_401(
    http: TestClient, runtime: Runtime, clock: ManualClock, admin: dict[str, str]
) -> None:
    assert http.get("/admin/keysets", headers=admin).status_code == 200
    clock.advance(900 + 31)
    runtime.keys.refresh()
    assert http.get("/admin/keysets", headers=admin).status_code == 401


def test_admin_scope_removed_from_client_takes_effect_at_once(http: TestClient, runtime: Runtime) -> None:
    client, secret = runtime.clients.create("ops", ["admin"], [ISSUER])
    token = http.post("/oauth/token", data=GRANT, headers=basic(client.client_id, secret)).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    assert http.get("/admin/keysets", headers=headers).status_code == 200
    runtime.clients.delete(client.client_id)
    assert http.get("/admin/keysets", headers=headers).status_code == 401


def test_list_keysets(http: TestClient, admin: dict[str, str], runtime: Runtime) -> None:
    body = http.get("/admin/keysets", headers=admin).json()
    (ks,) = body["keysets"]
    assert ks["name"] == "default" and ks["alg"] == "ES256" and ks["backend"] == "local"
    assert ks["policy"]["verify_window"] == "1230s"
    assert sorted(k["state"] for k in ks["keys"]) == ["current", "next"]
    for k in ks["keys"]:
        assert set(k) == {
            "kid",
            "state",
            "created_at",
            "activated_at",
            "retire_at",
            "retired_at",
            "revoked_at",
            "tainted_at",
        }
    assert ks["next_rotation_at"].endswith("Z")


def test_rotate_refused_then_forced(http: TestClient, admin: dict[str, str], runtime: Runtime) -> None:
    before = runtime.keys.summary("default")
    r = http.post("/admin/keysets/default/rotate", json={"reason": "routine"}, headers=admin)
    assert r.status_code == 409
    assert r.json()["error"] == "rotation_refused"
    r = http.post("/admin/keysets/default/rotate", json={"force": True, "reason": "drill"}, headers=admin)
    assert r.status_code == 200
    body = r.json()
    assert body["keyset"] == "default"
    assert body["current"] == before["next"] and body["previous"] == before["current"]
    assert body["next"] not in (before["current"], before["next"])


def test_rotate_after_prepublish_needs_no_force(http: TestClient, runtime: Runtime, clock: ManualClock) -> None:
    clock.advance(3600)
    runtime.keys.refresh()
    admin = {"Authorization": "Bearer " + token_for(http, runtime, ["admin"], [ISSUER])}
    r = http.post("/admin/keysets/default/rotate", headers=admin)
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"{", "application/json"),
        (b"[]", "application/json"),
        (b'{"force": "yes"}', "application/json"),
        (b'{"force": true, "extra": 1}', "application/json"),
        (b'{"reason": 5}', "application/json"),
        (b"force=true", "application/x-www-form-urlencoded"),
    ],
)
def test_rotate_malformed_bodies(http: TestClient, admin: dict[str, str], body: bytes, content_type: str) -> None:
    r = http.post("/admin/keysets/default/rotate", content=body, headers={**admin, "Content-Type": content_type})
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "invalid_request"


def test_rotate_unknown_keyset_is_404(http: TestClient, admin: dict[str, str]) -> None:
    r = http.post("/admin/keysets/nope/rotate", json={"force": True}, headers=admin)
    assert r.status_code == 404
    assert r.json()["error"] == "not_found"


def test_emergency_revocation(http: TestClient, admin: dict[str, str], runtime: Runtime) -> None:
    client, secret = runtime.clients.create("svc", ["read"], ["api"])
    auth = basic(client.client_id, secret)
    old = http.post("/oauth/token", data=GRANT, headers=auth).json()["access_token"]
    kid = jwt.get_unverified_header(old)["kid"]
    next_kid = runtime.keys.summary("default")["next"]
    assert http.post("/oauth/introspect", data={"token": old}, headers=auth).json()["active"] is True

    r = http.post(f"/admin/keys/{kid}/revoke", json={"reason": "key leaked"}, headers=admin)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["keyset"] == "default" and body["revoked"] == kid and body["current"] == next_kid
    assert body["next"] not in (kid, next_kid)

    assert http.post("/oauth/introspect", data={"token": old}, headers=auth).json() == {"active": False}
    jwks = http.get("/.well-known/jwks.json").json()
    assert kid not in {k["kid"] for k in jwks["keys"]}
    new = http.post("/oauth/token", data=GRANT, headers=auth).json()["access_token"]
    assert jwt.get_unverified_header(new)["kid"] == next_kid
    key = next(k for k in jwt.PyJWKSet.from_dict(jwks).keys if k.key_id == next_kid)
    assert jwt.decode(new, key, algorithms=["ES256"], audience="api", issuer=ISSUER)["client_id"] == client.client_id

    # The admin's own token was signed by the revoked key too: it is dead, like every other.
    assert http.get("/admin/keysets", headers=admin).status_code == 401
    admin = {"Authorization": "Bearer " + token_for(http, runtime, ["admin"], [ISSUER])}
    # Idempotent: a second call is 200 and rotates nothing.
    again = http.post(f"/admin/keys/{kid}/revoke", json={"reason": "again"}, headers=admin)
    assert again.status_code == 200
    assert again.json() == body
    assert http.post(f"/admin/keys/{kid}/revoke", json={}, headers=admin).status_code == 400  # reason required
    assert http.post("/admin/keys/unknown-kid/revoke", json={"reason": "x"}, headers=admin).status_code == 404


def test_clients_lifecycle(http: TestClient, admin: dict[str, str], runtime: Runtime, clock: ManualClock) -> None:
    r = http.post(
        "/admin/clients",
        json={"name": "billing", "scopes": ["read", "write"], "audiences": ["api"], "token_ttl": "5m"},
        headers=admin,
    )
    assert r.status_code == 201, r.text
    assert r.headers["cache-control"] == "no-store"
    created = r.json()
    secret = created["client_secret"]
    assert len(secret) >= 43 and set(secret) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    cid = created["client_id"]
    assert created["token_ttl"] == "5m" and created["keyset"] == "default"

    listed = http.get("/admin/clients", headers=admin).json()["clients"]
    assert cid in {c["client_id"] for c in listed}
    assert all("client_secret" not in c and "secrets" not in c for c in listed)
    shown = http.get(f"/admin/clients/{cid}", headers=admin).json()
    assert shown["name"] == "billing" and shown["secret_overdue"] is False and shown["valid_secrets"] == 1
    token = http.post("/oauth/token", data=GRANT, headers=basic(cid, secret)).json()
    assert token["expires_in"] == 300

    # Secret rotation: both work inside the grace, only the new one after.
    r = http.post(f"/admin/clients/{cid}/secret", json={"grace": "1h"}, headers=admin)
    assert r.status_code == 200
    new_secret = r.json()["client_secret"]
    assert new_secret != secret
    assert http.post("/oauth/token", data=GRANT, headers=basic(cid, secret)).status_code == 200
    assert http.post("/oauth/token", data=GRANT, headers=basic(cid, new_secret)).status_code == 200
    clock.advance(3601)
    runtime.keys.refresh()
    assert http.post("/oauth/token", data=GRANT, headers=basic(cid, secret)).status_code == 401
    assert http.post("/oauth/token", data=GRANT, headers=basic(cid, new_secret)).status_code == 200

    admin = {"Authorization": "Bearer " + token_for(http, runtime, ["admin"], [ISSUER])}  # the old one expired
    assert http.delete(f"/admin/clients/{cid}", headers=admin).status_code == 204
    assert http.get(f"/admin/clients/{cid}", headers=admin).status_code == 404
    assert http.delete(f"/admin/clients/{cid}", headers=admin).status_code == 404
    assert http.post(f"/admin/clients/{cid}/secret", json={}, headers=admin).status_code == 404
    assert http.post("/oauth/token", data=GRANT, headers=basic(cid, new_secret)).status_code == 401


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"name": "x", "scopes": [], "audiences": ["a"]},
        {"name": "x", "scopes": ["a"], "audiences": []},
        {"name": "x", "scopes": ["bad scope\\"], "audiences": ["a"]},
        {"name": "x", "scopes": ["a"], "audiences": ["a"], "keyset": "nope"},
        {"name": "x", "scopes": ["a"], "audiences": ["a"], "token_ttl": "2h"},
        {"name": "x", "scopes": ["a"], "audiences": ["a"], "token_ttl": "soon"},
        {"name": "x", "scopes": "a", "audiences": ["a"], "secret": "chosen-by-user"},
        {"name": 5, "scopes": ["a"], "audiences": ["a"]},
    ],
)
def test_create_client_validation(http: TestClient, admin: dict[str, str], body: dict[str, Any]) -> None:
    r = http.post("/admin/clients", json=body, headers=admin)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "invalid_request"


def test_audit_records_every_call(http: TestClient, admin: dict[str, str], runtime: Runtime) -> None:
    http.post("/admin/keysets/default/rotate", json={"reason": "too early"}, headers=admin)  # 409, audited
    http.post("/admin/keysets/default/rotate", json={"force": True, "reason": "drill"}, headers=admin)
    events = http.get("/admin/audit?limit=50", headers=admin).json()["events"]
    assert events[0]["action"] == "admin.keysets.rotate"  # newest first (this listing is audited after it)
    rotate_calls = [e for e in events if e["action"] == "admin.keysets.rotate"]
    assert [e["outcome"] for e in rotate_calls] == ["ok", "failed:rotation_refused"]
    assert rotate_calls[0]["reason"] == "drill" and rotate_calls[0]["actor"].startswith("client:")
    transitions = [e for e in events if e["action"] == "key.rotated"]
    assert len(transitions) == 2 and all(e["actor"] == rotate_calls[0]["actor"] for e in transitions)
    assert all(e["at"].endswith("Z") for e in events)
    # newest first, limited, since
    assert len(http.get("/admin/audit?limit=2", headers=admin).json()["events"]) == 2
    assert http.get("/admin/audit?since=2999-01-01T00:00:00Z", headers=admin).json()["events"] == []
    for bad in ("limit=0", "limit=1001", "limit=x", "since=yesterday", "since=2020-01-01T00:00:00", "cursor=x"):
        r = http.get(f"/admin/audit?{bad}", headers=admin)
        assert r.status_code == 400, bad


def test_audit_pages_with_a_cursor(http: TestClient, admin: dict[str, str], runtime: Runtime) -> None:
    """Newest first, as before; `next_cursor` leads to the next, older page, and is null on the last."""
    runtime.store.append_audit(
        [AuditEvent(at=1.0 + i, actor="test", action="test.page", target=str(i)) for i in range(7)]
    )
    held = [e.id for e in runtime.store.list_audit(limit=10_000)]
    assert walk(http, admin, "limit=3", below=held[0]) == held  # every event once, newest first
    # since and cursor together: every event from at = 5 on, the test's and the start's
    pages = walk(http, admin, "limit=2&since=5", below=held[0])
    assert pages == [e.id for e in runtime.store.list_audit(since=5, limit=10_000) if e.id <= held[0]]
    assert [e.target for e in runtime.store.list_audit(limit=10_000) if e.id in pages][:3] == ["6", "5", "4"]


def walk(http: TestClient, admin: dict[str, str], query: str, below: int) -> list[int]:
    """The ids of every page of /admin/audit?query, following next_cursor; events the listings
    wrote themselves (above `below`) left out."""
    seen: list[int] = []
    cursor = ""
    while True:
        page = http.get(f"/admin/audit?{query}{cursor}", headers=admin).json()
        seen += [e["id"] for e in page["events"] if e["id"] <= below]
        assert all(len(e["prev"]) == 64 for e in page["events"] if e["id"] > 1)
        if page["next_cursor"] is None:
            return seen
        cursor = f"&cursor={page['next_cursor']}"


def test_denied_calls_are_audited(http: TestClient, runtime: Runtime) -> None:
    reader = token_for(http, runtime, ["read"], [ISSUER])
    http.get("/admin/keysets", headers={"Authorization": f"Bearer {reader}"})
    denied = [e for e in runtime.store.list_audit() if e.outcome == "denied"]
    assert denied and denied[0].action == "admin.keysets.list"


def test_audit_events_are_also_json_log_lines(
    http: TestClient, admin: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    import json

    with caplog.at_level("INFO", logger="jwks_service.audit"):
        http.post("/admin/clients", json={"name": "x", "scopes": ["a"], "audiences": ["b"]}, headers=admin)
        http.post("/admin/keysets/default/rotate", json={"force": True, "reason": "drill"}, headers=admin)
    lines = [json.loads(r.getMessage())["audit"] for r in caplog.records if r.name == "jwks_service.audit"]
    actions = [line["action"] for line in lines]
    assert "client.create" in actions and "admin.clients.create" in actions
    assert "key.rotated" in actions and "admin.keysets.rotate" in actions
    assert all({"at", "actor", "action", "target", "outcome", "reason"} <= set(line) for line in lines)


@pytest.mark.parametrize("grace", ["999999999d", "31d", "721h", 10**12, 2_592_001, -1, "1.5h", True])
def test_secret_rotation_with_an_unbounded_grace_is_400_and_writes_nothing(
    http: TestClient, admin: dict[str, str], runtime: Runtime, grace: object
) -> None:
    """Issue 11, defect 8: grace = 999999999d used to save the new secret, answer 500 and never return
    it, leaving the old secret valid for millions of years. Grace is at most 30 days, checked first."""
    client, _ = runtime.clients.create("victim", ["read"], ["api"])
    before = runtime.store.get_client(client.client_id)
    r = http.post(f"/admin/clients/{client.client_id}/secret", json={"grace": grace}, headers=admin)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "invalid_request"
    assert "grace" in r.json()["error_description"]
    after = runtime.store.get_client(client.client_id)
    assert after == before
    assert after is not None and len(after.secrets) == 1 and after.secrets[0].expires_at is None


def test_secret_rotation_grace_at_the_bound_works(http: TestClient, admin: dict[str, str], runtime: Runtime) -> None:
    client, _ = runtime.clients.create("ok", ["read"], ["api"])
    for grace in ("30d", "720h", 2_592_000, "0s"):
        r = http.post(f"/admin/clients/{client.client_id}/secret", json={"grace": grace}, headers=admin)
        assert r.status_code == 200, (grace, r.text)
        assert r.json()["client_secret"] and r.json()["previous_secrets_expire_at"].endswith("Z")


def test_client_token_ttl_from_a_request_is_bounded(http: TestClient, admin: dict[str, str]) -> None:
    for ttl in ("999999999d", 10**12, -5, True):
        body = {"name": "x", "scopes": ["a"], "audiences": ["b"], "token_ttl": ttl}
        r = http.post("/admin/clients", json=body, headers=admin)
        assert r.status_code == 400, (ttl, r.text)
        assert r.json()["error"] == "invalid_request"
    listed = http.get("/admin/clients", headers=admin).json()["clients"]
    assert [c["name"] for c in listed] == ["c"], "nothing was created"  # only the admin's own client


def test_unauthenticated_admin_calls_are_audited(http: TestClient, runtime: Runtime, clock: ManualClock) -> None:
    """Issue 11: a missing, malformed, forged or expired admin token was answered 401 and never audited."""
    good = token_for(http, runtime, ["admin"], [ISSUER])
    forged = good[:-6] + ("AAAAAA" if not good.endswith("AAAAAA") else "BBBBBB")
    tries = [
        {},
        {"Authorization": "Basic abc"},
        {"Authorization": "Bearer garbage"},
        {"Authorization": f"Bearer {forged}"},
    ]
    for headers in tries:
        assert http.post("/admin/keysets/default/rotate", json={"force": True}, headers=headers).status_code == 401
    clock.advance(900 + 31)  # the good token expires
    runtime.keys.refresh()
    assert http.get("/admin/clients", headers={"Authorization": f"Bearer {good}"}).status_code == 401
    denied = [e for e in runtime.store.list_audit() if e.outcome == "denied"]
    assert len(denied) == 5
    assert {e.actor for e in denied} == {"anonymous"}
    assert {e.details.get("address") for e in denied} == {"testclient"}
    assert sorted(e.action for e in denied) == ["admin.clients.list"] + ["admin.keysets.rotate"] * 4
    assert all(e.reason for e in denied)  # why: missing, not a token of ours, expired...
    assert all(e.target in ("/admin/keysets/default/rotate", "/admin/clients") for e in denied)


def test_unauthenticated_audit_rows_are_bounded_per_source(runtime: Runtime, clock: ManualClock) -> None:
    """A stranger cannot flood the audit log: at most 10 rows per source address and minute (100 in all)."""
    from jwks_service.http import create_app

    app = create_app(runtime=runtime, background=False)
    with (
        TestClient(app, base_url=ISSUER, client=("192.0.2.1", 1000)) as stranger,
        TestClient(app, base_url=ISSUER, client=("192.0.2.2", 1000)) as other,
    ):
        codes = {stranger.get("/admin/audit", headers={"Authorization": "Bearer x"}).status_code for _ in range(50)}
        assert codes == {401}, "every call is refused; only the audit rows are bounded"

        def rows(address: str) -> int:
            return sum(e.details.get("address") == address for e in runtime.store.list_audit() if e.outcome == "denied")

        assert rows("192.0.2.1") == 10
        assert other.get("/admin/audit").status_code == 401
        assert rows("192.0.2.2") == 1, "another address is still audited"
        clock.advance(61)  # a new minute
        stranger.get("/admin/audit")
        assert rows("192.0.2.1") == 11


def test_forbidden_audit_rows_are_bounded_per_client(http: TestClient, runtime: Runtime) -> None:
    """A valid client without scope admin cannot flood the audit log with 403s either: the budget of
    refused calls applies per client as well as per source (found in review)."""
    token = token_for(http, runtime, ["read"], [ISSUER])
    codes = {http.get("/admin/keysets", headers={"Authorization": f"Bearer {token}"}).status_code for _ in range(30)}
    assert codes == {403}
    denied = [e for e in runtime.store.list_audit(limit=1000) if e.outcome == "denied"]
    assert len(denied) == 10, len(denied)


def test_refused_calls_are_audited_through_the_gate_for_strangers(runtime: Runtime) -> None:
    """The audit write of a refused call runs in the clients' bounded gate for unauthenticated callers,
    counted by the caller's source (an IPv6 host by its /64), not in the shared thread pool: a burst
    of refused calls while the store hangs cannot take the threads that reloads need (found in review)."""
    from jwks_service.http import create_app

    seen: list[str] = []
    gate = runtime.clients.gate
    real_run = gate.run

    async def recording_run(address: str, call: Any, *args: object) -> Any:
        seen.append(address)
        return await real_run(address, call, *args)

    gate.run = recording_run  # type: ignore[method-assign]
    app = create_app(runtime=runtime, background=False)
    with TestClient(app, base_url=ISSUER, client=("2001:db8:5:6::7", 1000)) as stranger:
        assert stranger.get("/admin/audit", headers={"Authorization": "Bearer x"}).status_code == 401
    assert seen == ["2001:db8:5:6::/64"]
    assert [e.details.get("address") for e in runtime.store.list_audit() if e.outcome == "denied"] == [
        "2001:db8:5:6::7"
    ]


def test_patch_changes_scopes_audiences_ttl_and_name_at_once(
    http: TestClient, runtime: Runtime, admin: dict[str, str]
) -> None:
    client, secret = runtime.clients.create("svc", ["read", "write"], ["api"])
    cid = client.client_id
    assert http.post("/oauth/token", data={**GRANT, "scope": "write"}, headers=basic(cid, secret)).status_code == 200
    r = http.patch(
        f"/admin/clients/{cid}",
        json={"scopes": ["read"], "audiences": ["api", "other"], "token_ttl": "1m", "name": "svc2"},
        headers=admin,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["scopes"] == ["read"] and body["audiences"] == ["api", "other"]
    assert body["token_ttl"] == "1m" and body["name"] == "svc2"
    assert body["changed"] == ["audiences", "name", "scopes", "token_ttl"]
    assert "client_secret" not in body
    # In force at once on this replica: the scope taken away is refused, the new audience granted.
    r = http.post("/oauth/token", data={**GRANT, "scope": "write"}, headers=basic(cid, secret))
    assert r.status_code == 400 and r.json()["error"] == "invalid_scope"
    r = http.post("/oauth/token", data={**GRANT, "audience": "other"}, headers=basic(cid, secret))
    assert r.status_code == 200 and r.json()["expires_in"] == 60
    # Audited with the admin client as actor, naming what changed from what to what.
    updates = [e for e in runtime.store.list_audit() if e.action == "client.update"]
    assert len(updates) == 1 and updates[0].actor.startswith("client:")
    assert updates[0].details["changes"]["scopes"] == {"from": ["read", "write"], "to": ["read"]}
    # The same again changes nothing and writes no event.
    again = http.patch(f"/admin/clients/{cid}", json={"scopes": "read"}, headers=admin)
    assert again.status_code == 200 and again.json()["changed"] == []
    assert len([e for e in runtime.store.list_audit() if e.action == "client.update"]) == 1


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({}, 400),
        ({"scopes": []}, 400),
        ({"scopes": ["bad scope\\"]}, 400),
        ({"audiences": [""]}, 400),
        ({"token_ttl": "1h"}, 400),  # longer than the keyset's token_ttl
        ({"token_ttl": "soon"}, 400),
        ({"name": 5}, 400),
        ({"keyset": "other"}, 400),  # a client's keyset does not change
        ({"secret": "x"}, 400),
    ],
)
def test_patch_refuses_bad_input_with_invalid_request(
    http: TestClient, runtime: Runtime, admin: dict[str, str], body: dict[str, Any], status: int
) -> None:
    client, _ = runtime.clients.create("svc", ["read"], ["api"])
    r = http.patch(f"/admin/clients/{client.client_id}", json=body, headers=admin)
    assert r.status_code == status, r.text
    assert r.json()["error"] == "invalid_request"
    assert runtime.clients.read(client.client_id) == client


def test_patch_of_an_unknown_client_is_404(http: TestClient, admin: dict[str, str]) -> None:
    r = http.patch("/admin/clients/nope", json={"scopes": ["read"]}, headers=admin)
    assert r.status_code == 404 and r.json()["error"] == "not_found"
