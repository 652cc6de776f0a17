"""The service with Vault-backed keysets, against a real OpenBao dev server (no mocks of its HTTP client)."""

from __future__ import annotations

import asyncio
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from starlette.testclient import TestClient
from support import ISSUER, basic, make_settings

import jwks_service.rotation as rotation_module
from jwks_service.clock import ManualClock
from jwks_service.http import create_app
from jwks_service.rotation import OUT_OF_BAND_CHECK_SECONDS
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
    batcher = rt.keys.remote_signing.batcher
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
    assert rt.keys.remote_signing.batcher is None
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


class GatedBackend:
    """A VaultBackend whose `generate` waits for the test's go-ahead before it makes a Transit version."""

    def __init__(self, backend: Any) -> None:
        self._backend = backend
        self.entered = threading.Event()
        self.go = threading.Event()

    def generate(self, *args: Any) -> Any:
        self.entered.set()
        assert self.go.wait(timeout=30), "the test never let generate go on"
        return self._backend.generate(*args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)


def test_replicas_racing_one_rotation_make_one_transit_version_and_adopt_none(
    openbao: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clock: ManualClock
) -> None:
    """Two replicas' schedulers find the same rotation due at once. Only the one that wins makes a
    Transit version: the other must not rotate the Transit key too, else its orphan version is
    "adopted" as made outside the service 10 s later, restarting the prepublish clock."""
    monkeypatch.setenv("VAULT_TOKEN", openbao.root_token)
    name = unique("r")
    settings = make_settings(tmp_path, {name: {"alg": "ES256", "backend": "vault"}}, vault={"addr": openbao.addr})
    a, b = build_runtime(settings, clock), build_runtime(settings, clock)
    try:
        transit = openbao.client().secrets.transit
        policy = settings.keysets[name]
        before = a.keys.summary(name)
        clock.advance(policy.rotation_period + 1)  # the scheduled rotation is due on both replicas
        replicas = {"a": a, "b": b}
        gates = {}
        for who, rt in replicas.items():
            gates[who] = GatedBackend(rt.keys.backends["vault"])
            rt.keys.rotation.backends = {**rt.keys.backends, "vault": gates[who]}
        done: dict[str, list[Any]] = {}
        threads = {
            who: threading.Thread(target=lambda who=who, rt=rt: done.setdefault(who, rt.keys.tick()))
            for who, rt in replicas.items()
        }
        threads["a"].start()
        assert gates["a"].entered.wait(timeout=20)  # A is about to make the new version
        threads["b"].start()
        b_made_one = gates["b"].entered.wait(timeout=3)  # B must not get as far while A holds the rotation
        gates["a"].go.set()
        gates["b"].go.set()
        for t in threads.values():
            t.join(timeout=30)
        assert done.keys() == {"a", "b"}
        for rt in (a, b):
            rt.keys.refresh(force=True)
        after = a.keys.summary(name)
        assert after["current"] == before["next"] and after["previous"] == before["current"]  # rotated once
        ks = a.keys.snapshot.keysets[name]
        nxt = ks.next
        assert nxt is not None
        latest = int(transit.read_key(f"jwks-{name}")["data"]["latest_version"])
        version_of = a.keys.backends["vault"].version_of
        assert version_of(nxt) == latest, (
            f"Transit is at v{latest} but next is v{version_of(nxt)}: a replica rotated the Transit key and lost"
        )
        assert not b_made_one
        # Past the out-of-band check: nothing is adopted, next stays, its prepublish clock unchanged.
        clock.advance(OUT_OF_BAND_CHECK_SECONDS + 1)
        assert a.keys.tick() == [] and b.keys.tick() == []
        for rt in (a, b):
            rt.keys.refresh(force=True)
            again = rt.keys.snapshot.keysets[name].next
            assert again is not None and (again.kid, again.created_at) == (nxt.kid, nxt.created_at)
        events = [e.action for e in a.store.list_audit(limit=100) if e.details.get("keyset") == name]
        assert "key.discarded" not in events
    finally:
        a.close()
        b.close()


def test_a_replica_that_died_holding_the_claim_delays_the_rotation_and_its_version_is_never_adopted(
    openbao: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clock: ManualClock
) -> None:
    """What a replica killed mid-rotation leaves behind: its claim in the store and the Transit version
    it made. The scheduler of another replica waits for the claim to go stale, then rotates with a
    version of its own; the dead replica's version counts as the service's own, never adopted."""
    monkeypatch.setenv("VAULT_TOKEN", openbao.root_token)
    monkeypatch.setattr(rotation_module, "CLAIM_WAIT", 0.2)
    name = unique("d")
    settings = make_settings(tmp_path, {name: {"alg": "ES256", "backend": "vault"}}, vault={"addr": openbao.addr})
    rt = build_runtime(settings, clock)
    try:
        transit = openbao.client().secrets.transit
        before = rt.keys.summary(name)
        clock.advance(settings.keysets[name].rotation_period + 1)
        stored = rt.store.get_keyset(name)
        assert stored is not None
        latest = int(transit.read_key(f"jwks-{name}")["data"]["latest_version"])
        rt.store.save_keyset(replace(stored, claimed_version=latest + 1, claimed_at=clock.now()), stored.revision)
        transit.rotate_key(f"jwks-{name}")  # the dead replica's version
        rt.keys.refresh(force=True)
        assert rt.keys.tick() == []  # the claim is fresh: the scheduler leaves the keyset alone
        assert rt.keys.summary(name) == {**before, "previous": None}
        clock.advance(rotation_module.CLAIM_SECONDS + 1)
        assert {t.event for t in rt.keys.tick()} == {"rotated", "created"}
        nxt = rt.keys.snapshot.keysets[name].next
        assert nxt is not None and rt.keys.summary(name)["current"] == before["next"]
        assert rt.keys.backends["vault"].version_of(nxt) == latest + 2  # its own, after the dead one's
        clock.advance(OUT_OF_BAND_CHECK_SECONDS + 1)
        assert rt.keys.tick() == []
        assert rt.keys.snapshot.keysets[name].next == nxt
        # An administrator does not wait for a claim that long: a rotation goes ahead after CLAIM_WAIT.
        clock.advance(settings.keysets[name].prepublish + 1)
        stored = rt.store.get_keyset(name)
        assert stored is not None and stored.claimed_at is None
        rt.store.save_keyset(replace(stored, claimed_version=latest + 3, claimed_at=clock.now()), stored.revision)
        transit.rotate_key(f"jwks-{name}")
        rotated = rt.keys.rotate(name, reason="test")
        assert rotated["current"] == nxt.kid
        final = rt.store.get_keyset(name)
        assert final is not None and final.claimed_at is None and final.next is not None
        assert rt.keys.backends["vault"].version_of(final.next) == latest + 4
        clock.advance(OUT_OF_BAND_CHECK_SECONDS + 1)
        assert rt.keys.tick() == []
    finally:
        rt.close()


def test_replicas_ticking_at_once_round_after_round_keep_transit_and_the_keyset_in_step(
    openbao: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clock: ManualClock
) -> None:
    """The same race without a gate, several times: whoever wins, Transit's latest version is the
    keyset's next and nothing is adopted afterwards."""
    monkeypatch.setenv("VAULT_TOKEN", openbao.root_token)
    name = unique("t")
    settings = make_settings(tmp_path, {name: {"alg": "ES256", "backend": "vault"}}, vault={"addr": openbao.addr})
    replicas = [build_runtime(settings, clock) for _ in range(3)]
    transit = openbao.client().secrets.transit
    try:
        for _ in range(4):
            clock.advance(settings.keysets[name].rotation_period + 1)
            barrier = threading.Barrier(len(replicas))
            done: list[list[Any]] = []

            def tick(rt: Runtime, barrier: threading.Barrier = barrier, done: list[list[Any]] = done) -> None:
                barrier.wait(timeout=10)
                done.append(rt.keys.tick())

            threads = [threading.Thread(target=tick, args=(rt,)) for rt in replicas]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=60)
            assert sum(1 for transitions in done if transitions) == 1  # one replica rotated
            for rt in replicas:
                rt.keys.refresh(force=True)
            nxt = replicas[0].keys.snapshot.keysets[name].next
            assert nxt is not None
            latest = int(transit.read_key(f"jwks-{name}")["data"]["latest_version"])
            assert replicas[0].keys.backends["vault"].version_of(nxt) == latest
            clock.advance(OUT_OF_BAND_CHECK_SECONDS + 1)
            assert [rt.keys.tick() for rt in replicas] == [[]] * len(replicas)
    finally:
        for rt in replicas:
            rt.close()
