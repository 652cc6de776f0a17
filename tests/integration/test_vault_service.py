"""The service with Vault-backed keysets, against a real OpenBao dev server (no mocks of hvac)."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from starlette.testclient import TestClient
from support import ISSUER, basic, make_settings

from jwks_service.http import create_app
from jwks_service.runtime import Runtime, build_runtime

GRANT = {"grant_type": "client_credentials"}


@pytest.fixture
def vault_runtime(
    openbao: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[dict[str, dict[str, Any]]], Runtime]]:
    monkeypatch.setenv("VAULT_TOKEN", openbao.root_token)
    opened: list[Runtime] = []

    def make(keysets: dict[str, dict[str, Any]], **vault: Any) -> Runtime:
        rt = build_runtime(make_settings(tmp_path, keysets, vault={"addr": openbao.addr, **vault}))
        opened.append(rt)
        return rt

    yield make
    for rt in opened:
        rt.close()


def unique(prefix: str) -> str:
    """Transit keys live on the session's one server: every test uses keyset names of its own."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.mark.parametrize("alg", ["ES256", "PS256", "EdDSA", "HS256"])
def test_vault_keyset_issues_tokens_verifiers_accept(vault_runtime: Any, openbao: Any, alg: str) -> None:
    name = unique("v")
    rt = vault_runtime({name: {"alg": alg, "backend": "vault"}})
    client, secret = rt.clients.create("svc", ["read"], ["api"], keyset=name)
    http = TestClient(create_app(runtime=rt, background=False), base_url=ISSUER)
    auth = basic(client.client_id, secret)
    token = http.post("/oauth/token", data=GRANT, headers=auth).json()["access_token"]
    kid = jwt.get_unverified_header(token)["kid"]
    assert http.post("/oauth/introspect", data={"token": token}, headers=auth).json()["active"] is True
    jwks = http.get("/.well-known/jwks.json").json()
    if alg.startswith("HS"):
        assert jwks == {"keys": []}
    else:
        key = next(k for k in jwt.PyJWKSet.from_dict(jwks).keys if k.key_id == kid)
        assert jwt.decode(token, key, algorithms=[alg], audience="api", issuer=ISSUER)["client_id"] == client.client_id
    # The private key never leaves Vault.
    info = openbao.client().secrets.transit.read_key(f"jwks-{name}")["data"]
    assert info["exportable"] is False
    # Emergency revocation works as with local keys: new tokens carry the promoted key and verify.
    rt.keys.revoke(kid, reason="drill")
    assert http.post("/oauth/introspect", data={"token": token}, headers=auth).json() == {"active": False}
    fresh = http.post("/oauth/token", data=GRANT, headers=auth).json()["access_token"]
    assert jwt.get_unverified_header(fresh)["kid"] != kid
    assert http.post("/oauth/introspect", data={"token": fresh}, headers=auth).json()["active"] is True


def test_concurrent_requests_are_coalesced_into_batches(vault_runtime: Any) -> None:
    name = unique("b")
    rt = vault_runtime({name: {"alg": "ES256", "backend": "vault"}})
    client, secret = rt.clients.create("svc", ["read"], ["api"], keyset=name)
    app = create_app(runtime=rt, background=False)

    async def burst() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as ac:
            return await asyncio.gather(
                *(ac.post("/oauth/token", data=GRANT, auth=(client.client_id, secret)) for _ in range(200))
            )

    responses = asyncio.run(burst())
    assert [r.status_code for r in responses] == [200] * 200
    batcher = rt.keys._batcher
    assert batcher is not None
    assert batcher.signed == 200
    assert batcher.batches <= 20, f"{batcher.batches} Vault calls for 200 tokens"
    jwks = jwt.PyJWKSet.from_dict(TestClient(app, base_url=ISSUER).get("/.well-known/jwks.json").json())
    for r in responses[:20]:
        token = r.json()["access_token"]
        key = next(k for k in jwks.keys if k.key_id == jwt.get_unverified_header(token)["kid"])
        jwt.decode(token, key, algorithms=["ES256"], audience="api", issuer=ISSUER)


def test_batching_off_signs_each_token_with_its_own_call(vault_runtime: Any) -> None:
    """vault.max_batch = 1: no micro-batcher; every token is one Transit call from a worker thread."""
    name = unique("n")
    rt = vault_runtime({name: {"alg": "ES256", "backend": "vault"}}, max_batch=1)
    client, secret = rt.clients.create("svc", ["read"], ["api"], keyset=name)
    app = create_app(runtime=rt, background=False)

    async def burst() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as ac:
            return await asyncio.gather(
                *(ac.post("/oauth/token", data=GRANT, auth=(client.client_id, secret)) for _ in range(20))
            )

    responses = asyncio.run(burst())
    assert [r.status_code for r in responses] == [200] * 20
    assert rt.keys._batcher is None
    jwks = jwt.PyJWKSet.from_dict(TestClient(app, base_url=ISSUER).get("/.well-known/jwks.json").json())
    for r in responses:
        token = r.json()["access_token"]
        key = next(k for k in jwks.keys if k.key_id == jwt.get_unverified_header(token)["kid"])
        assert jwt.decode(token, key, algorithms=["ES256"], audience="api", issuer=ISSUER)["sub"] == client.client_id


def test_sealed_vault_degrades_only_its_keyset_and_recovers(vault_runtime: Any, openbao: Any) -> None:
    name = unique("s")
    rt = vault_runtime({name: {"alg": "ES256", "backend": "vault"}, "local": {"alg": "ES256"}})
    vclient, vsecret = rt.clients.create("v", ["read"], ["api"], keyset=name)
    lclient, lsecret = rt.clients.create("l", ["read"], ["api"], keyset="local")
    http = TestClient(create_app(runtime=rt, background=False), base_url=ISSUER)
    match = re.search(r"Unseal Key: (\S+)", Path(openbao.log).read_text(errors="replace"))
    assert match is not None, "the dev server printed no unseal key"
    root = openbao.client()
    root.sys.seal()
    try:
        started = time.monotonic()
        r = http.post("/oauth/token", data=GRANT, headers=basic(vclient.client_id, vsecret))
        took = time.monotonic() - started
        assert r.status_code == 503, r.text
        assert r.json()["error"] == "temporarily_unavailable"
        assert 1 <= int(r.headers["retry-after"]) <= 60
        assert took < 6, f"a sealed Vault took {took:.1f}s to answer"
        assert http.post("/oauth/token", data=GRANT, headers=basic(lclient.client_id, lsecret)).status_code == 200
        assert http.get("/.well-known/jwks.json").status_code == 200
        ready = http.get("/readyz")
        assert ready.status_code == 503
        assert name in ready.json()["problems"]
        assert "local" not in ready.json()["problems"]
    finally:
        root.sys.submit_unseal_key(match.group(1))
    assert http.post("/oauth/token", data=GRANT, headers=basic(vclient.client_id, vsecret)).status_code == 200
    assert http.get("/readyz").status_code == 200


def test_out_of_band_transit_rotation_is_adopted_as_next(vault_runtime: Any, openbao: Any) -> None:
    name = unique("o")
    rt = vault_runtime({name: {"alg": "ES256", "backend": "vault"}})
    client, secret = rt.clients.create("svc", ["read"], ["api"], keyset=name)
    http = TestClient(create_app(runtime=rt, background=False), base_url=ISSUER)
    before = rt.keys.summary(name)
    root = openbao.client()
    root.secrets.transit.rotate_key(f"jwks-{name}")  # someone rotates the Transit key by hand
    latest = int(root.secrets.transit.read_key(f"jwks-{name}")["data"]["latest_version"])
    rt.keys.tick()
    after = rt.keys.summary(name)
    assert after["current"] == before["current"]  # nothing signs with the new version yet
    assert after["next"] != before["next"]
    adopted = rt.keys.snapshot.keysets[name].find(after["next"])
    assert adopted is not None
    assert adopted.sealed_private == f"vault-transit:v1:jwks-{name}:{latest}".encode()
    assert after["next"] in {k["kid"] for k in http.get("/.well-known/jwks.json").json()["keys"]}
    # Once promoted, the adopted version signs tokens that verify against the JWKS.
    rt.keys.rotate(name, force=True, reason="test")
    token = http.post("/oauth/token", data=GRANT, headers=basic(client.client_id, secret)).json()["access_token"]
    assert jwt.get_unverified_header(token)["kid"] == after["next"]
    jwks = jwt.PyJWKSet.from_dict(http.get("/.well-known/jwks.json").json())
    key = next(k for k in jwks.keys if k.key_id == after["next"])
    jwt.decode(token, key, algorithms=["ES256"], audience="api", issuer=ISSUER)
    rt.keys.tick()  # adopted once, not again
    assert rt.keys.summary(name)["current"] == after["next"]
