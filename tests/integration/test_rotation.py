"""Rotation end to end on a manual clock: the JWKS always holds every key a live token names, the
next key is published at least `prepublish` before it signs, and revocation is immediate.

The verifier here is PyJWT over the JWKS the service serves; the "cached verifier" keeps a JWKS for
jwks.max_age before refetching, the way an outside service honouring Cache-Control would.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jwt
import pytest
from starlette.testclient import TestClient
from support import ISSUER, basic

from jwks_service.clock import ManualClock
from jwks_service.http import create_app
from jwks_service.model import KeyState
from jwks_service.runtime import Runtime

POLICY = {"rotation_period": "2h", "prepublish": "10m", "token_ttl": "15m", "leeway": "30s"}
MAX_AGE = 300
STEP = 60
HOURS = 6  # three rotations: a key goes through every state


@dataclass
class Issued:
    token: str
    kid: str
    iat: float
    exp: float


def pyjwt_verify(token: str, jwks: dict[str, object], alg: str) -> dict[str, object]:
    keyset = jwt.PyJWKSet.from_dict(jwks)
    kid = jwt.get_unverified_header(token)["kid"]
    key = next((k for k in keyset.keys if k.key_id == kid), None)
    if key is None:
        raise LookupError(f"kid {kid} not in JWKS")
    # Time is checked against the manual clock by the caller; PyJWT checks the signature and claims.
    return jwt.decode(
        token,
        key,
        algorithms=[alg],
        audience="api",
        issuer=ISSUER,
        options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
    )


@pytest.mark.parametrize("alg", ["ES256", "EdDSA", "PS256"])
def test_every_token_verifies_across_scheduled_rotations(
    runtime_factory: Callable[..., Runtime], clock: ManualClock, alg: str
) -> None:
    rt = runtime_factory({"default": {"alg": alg, **POLICY}}, jwks={"max_age": f"{MAX_AGE}s"})
    client, secret = rt.clients.create("svc", ["read"], ["api"])
    http = TestClient(create_app(runtime=rt, background=False), base_url=ISSUER)
    live: list[Issued] = []
    first_published: dict[str, float] = {}
    first_signed: dict[str, float] = {}
    cache: tuple[float, dict[str, object]] | None = None
    verified = cached_verified = 0
    start = clock.now()
    while clock.now() < start + HOURS * 3600:
        rt.keys.tick()
        now = clock.now()
        jwks = http.get("/.well-known/jwks.json").json()
        for k in jwks["keys"]:
            first_published.setdefault(k["kid"], now)
        if cache is None or now - cache[0] >= MAX_AGE:
            cache = (now, jwks)
        r = http.post(
            "/oauth/token", data={"grant_type": "client_credentials"}, headers=basic(client.client_id, secret)
        )
        assert r.status_code == 200
        token = r.json()["access_token"]
        kid = jwt.get_unverified_header(token)["kid"]
        first_signed.setdefault(kid, now)
        live.append(Issued(token, kid, now, now + 900))
        # A verifier with a JWKS up to max_age old accepts the brand-new token.
        pyjwt_verify(token, cache[1], alg)
        cached_verified += 1
        # Every token still inside exp + leeway verifies against the JWKS served now.
        live = [t for t in live if now <= t.exp + 30]
        for t in live:
            pyjwt_verify(t.token, jwks, alg)
            verified += 1
        clock.advance(STEP)
    rotations = len(first_signed) - 1
    assert rotations >= HOURS // 2 - 1, f"only {rotations} rotations happened"
    for kid, signed in first_signed.items():
        if signed == start:
            continue  # the bootstrap key signs at once: no token existed before it
        assert signed - first_published[kid] >= 600, f"{kid} signed {signed - first_published[kid]}s after publication"
    assert verified > 1000
    assert cached_verified == HOURS * 3600 // STEP


def test_old_keys_leave_the_jwks_after_the_verify_window(
    runtime_factory: Callable[..., Runtime], clock: ManualClock
) -> None:
    rt = runtime_factory({"default": {"alg": "ES256", **POLICY}}, jwks={"max_age": f"{MAX_AGE}s"})
    first = rt.keys.snapshot.signing["default"].kid
    clock.advance(2 * 3600)
    rt.keys.tick()
    ks = rt.keys.snapshot.keysets["default"]
    previous = ks.find(first)
    assert previous is not None and previous.state == KeyState.PREVIOUS
    window = 900 + 30 + MAX_AGE
    assert previous.retire_at == clock.now() + window
    clock.advance(window + 30 - 1)  # retired one leeway after retire_at (replica clock skew)
    rt.keys.tick()
    assert first in rt.keys.snapshot.jwks.kids
    clock.advance(1)
    rt.keys.tick()
    assert first not in rt.keys.snapshot.jwks.kids
    retired = rt.keys.snapshot.keysets["default"].find(first)
    assert retired is not None and retired.state == KeyState.RETIRED and retired.sealed_private is None


def test_revoked_kid_leaves_jwks_and_its_tokens_die(
    runtime_factory: Callable[..., Runtime], clock: ManualClock
) -> None:
    rt = runtime_factory({"default": {"alg": "ES256", **POLICY}})
    client, secret = rt.clients.create("svc", ["read"], ["api"])
    http = TestClient(create_app(runtime=rt, background=False), base_url=ISSUER)
    auth = basic(client.client_id, secret)

    def token() -> str:
        return str(
            http.post("/oauth/token", data={"grant_type": "client_credentials"}, headers=auth).json()["access_token"]
        )

    old = token()
    old_kid = jwt.get_unverified_header(old)["kid"]
    next_kid = rt.keys.snapshot.keysets["default"].next
    assert next_kid is not None
    assert http.post("/oauth/introspect", data={"token": old}, headers=auth).json()["active"] is True

    keyset, revoked = rt.keys.revoke(old_kid, reason="leaked", actor="test")
    assert revoked.state == KeyState.REVOKED and revoked.sealed_private is None
    jwks = http.get("/.well-known/jwks.json").json()
    assert old_kid not in {k["kid"] for k in jwks["keys"]}
    assert http.post("/oauth/introspect", data={"token": old}, headers=auth).json() == {"active": False}
    new = token()
    new_kid = jwt.get_unverified_header(new)["kid"]
    assert new_kid == next_kid.kid  # the published next key was promoted at once
    pyjwt_verify(new, jwks, "ES256")
    with pytest.raises(LookupError):
        pyjwt_verify(old, jwks, "ES256")
    # Idempotent: a second revocation rotates nothing.
    again, _ = rt.keys.revoke(old_kid, reason="leaked", actor="test")
    assert again.revision == keyset.revision
    status = http.get("/keys/status").json()
    assert {"kid": old_kid, "keyset": "default"}.items() <= status["revoked"][0].items()


def test_hmac_keys_rotate_but_are_never_published(runtime_factory: Callable[..., Runtime], clock: ManualClock) -> None:
    rt = runtime_factory({"default": {"alg": "HS256", **POLICY}})
    client, secret = rt.clients.create("svc", ["read"], ["api"])
    http = TestClient(create_app(runtime=rt, background=False), base_url=ISSUER)
    auth = basic(client.client_id, secret)
    tokens = []
    for _ in range(3):
        tokens.append(http.post("/oauth/token", data={"grant_type": "client_credentials"}, headers=auth).json())
        clock.advance(2 * 3600 + 1)
        rt.keys.tick()
        rt.keys.refresh()
        assert http.get("/.well-known/jwks.json").json() == {"keys": []}
    kids = {jwt.get_unverified_header(t["access_token"])["kid"] for t in tokens}
    assert len(kids) == 3
    status = http.get("/keys/status").json()
    assert {k["state"] for k in status["keys"]} >= {"current", "next"}
    assert all(k["published"] is False for k in status["keys"])
    fresh = http.post("/oauth/token", data={"grant_type": "client_credentials"}, headers=auth).json()["access_token"]
    assert http.post("/oauth/introspect", data={"token": fresh}, headers=auth).json()["active"] is True
