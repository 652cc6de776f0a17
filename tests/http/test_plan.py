"""GET /admin/keysets/{name}/plan (API.md §6 "Plan") through the real app, with adoption recorded by
the JWKS endpoint itself."""

from __future__ import annotations

import anyio
import pytest
from starlette.testclient import TestClient
from support import ISSUER

from jwks_service.clock import ManualClock, parse_rfc3339, rfc3339
from jwks_service.runtime import Runtime

from .test_admin import token_for

JWKS = "/.well-known/jwks.json"


@pytest.fixture
def admin(http: TestClient, runtime: Runtime) -> dict[str, str]:
    return {"Authorization": "Bearer " + token_for(http, runtime, ["admin"], [ISSUER])}


def flush(runtime: Runtime) -> None:
    anyio.run(runtime.fetches.flush, runtime.store, runtime.clock.now())
    runtime.adoption.reload()


def test_the_plan_of_a_fresh_keyset(http: TestClient, runtime: Runtime, admin: dict[str, str]) -> None:
    summary = runtime.keys.summary("default")
    r = http.get("/admin/keysets/default/plan", headers=admin)
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    plan = r.json()
    assert plan["keyset"] == "default" and plan["published"] is True
    keys = {k["kid"]: k for k in plan["keys"]}
    assert [k["state"] for k in plan["keys"]] == ["next", "current"]
    current, nxt = keys[summary["current"]], keys[summary["next"]]
    listed = http.get("/admin/keysets", headers=admin).json()["keysets"][0]
    # The next key signs at the keyset's next rotation, the current one stops then.
    assert nxt["signing"] == {"at": listed["next_rotation_at"], "planned": True}
    assert current["stop_signing"] == nxt["signing"]
    assert current["signing"]["planned"] is False and nxt["published"]["planned"] is False
    assert plan["rotations"][0]["at"] == listed["next_rotation_at"]
    assert (plan["rotations"][0]["promotes"], plan["rotations"][0]["demotes"]) == (nxt["kid"], current["kid"])
    assert len(plan["rotations"]) == 3
    # Nobody has fetched the JWKS: the gate has nothing to wait for, a forced rotation strands no one.
    assert plan["adoption"] == {"fetchers": 0}
    assert plan["gate"]["reason"] == "no fetchers"
    forced = plan["forced_rotation_now"]
    assert forced["unknown_kid_fetchers"] == 0 and forced["laggards"] == []
    assert "prepublish" in forced["refused_without_force"]  # next was made just now
    now = parse_rfc3339(plan["generated_at"])
    assert parse_rfc3339(forced["last_token_expires_at"]) == now + 900 + 30  # token_ttl + leeway


def test_the_what_if_names_the_fetchers_that_would_meet_an_unknown_kid(
    http: TestClient, runtime: Runtime, clock: ManualClock
) -> None:
    http.get(JWKS, headers={"JWKS-Verifier": "billing/1"})  # holds current and next
    clock.advance(2 * 3600)
    rotated = runtime.keys.rotate("default", reason="test", actor="test")
    new_next = rotated["next"]
    clock.advance(60)
    http.get(JWKS, headers={"JWKS-Verifier": "orders/7"})  # holds the new next too
    flush(runtime)
    runtime.keys.refresh(force=True)  # what the background reload does (this app runs none)
    admin = {"Authorization": "Bearer " + token_for(http, runtime, ["admin"], [ISSUER])}
    r = http.get("/admin/keysets/default/plan", headers=admin)
    assert r.status_code == 200, r.text
    plan = r.json()
    keys = {k["kid"]: k for k in plan["keys"]}
    assert keys[new_next]["share"] == 0.5 and keys[rotated["current"]]["share"] == 1.0
    forced = plan["forced_rotation_now"]
    assert forced["promotes"] == new_next and forced["unknown_kid_fetchers"] == 1
    assert [lag["fetcher"] for lag in forced["laggards"]] == ["billing/1"]
    assert forced["laggards"][0]["last_fetch"] == rfc3339(clock.now() - 3600 * 2 - 60)
    assert plan["adoption"] == {"fetchers": 2}
    assert plan["gate"]["share"] == 0.5 and plan["gate"]["open"] is False
    previous = keys[rotated["previous"]]
    assert previous["state"] == "previous" and previous["retire"]["planned"] is True


def test_an_unknown_keyset_is_404_with_an_oauth_style_error(http: TestClient, admin: dict[str, str]) -> None:
    r = http.get("/admin/keysets/nope/plan", headers=admin)
    assert r.status_code == 404
    assert r.json()["error"] == "not_found" and "nope" in r.json()["error_description"]


def test_without_adoption_records_the_plan_says_unknown(
    http: TestClient, runtime: Runtime, admin: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runtime, "adoption", None)
    plan = http.get("/admin/keysets/default/plan", headers=admin).json()
    assert plan["adoption"] is None and plan["gate"] is None
    assert plan["forced_rotation_now"]["unknown_kid_fetchers"] is None
    assert all(k["share"] is None for k in plan["keys"])
