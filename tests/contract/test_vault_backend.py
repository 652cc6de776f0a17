"""VaultBackend against a real OpenBao dev server (the `openbao` fixture): no mocks of its HTTP client.

Every alg signs with two Transit versions, pinned, singly and in one batch; what Transit signs
verifies with our verifiers and with PyJWT; the private key never leaves Vault; errors of Vault
(permission, unreachable, sealed) become the service's errors; retirement cuts the key ring from below.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import secrets
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hvac
import hvac.exceptions
import jwt
import pytest
from jwt.algorithms import OKPAlgorithm
from support import PROJECT_ROOT, free_port

from bench.baoserver import bao_binary
from jwks_service.algorithms import ALGORITHMS, Algorithm, transit_key_spec
from jwks_service.backends import KeyBackend
from jwks_service.backends.vault import TransitRef, VaultBackend, VaultPermissionError, parse_reference
from jwks_service.errors import ConfigError, KeyValidationError, UnavailableError
from jwks_service.model import KeyState, KeyVersion, NewKey
from jwks_service.vaultapi import VaultClient, tls_context

POLICY_FILE = PROJECT_ROOT / "deploy" / "vault-policy.hcl"
ALL_ALGS = sorted(ALGORITHMS)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unique(prefix: str) -> str:
    return f"{prefix.lower()}-{secrets.token_hex(4)}"


def record(nk: NewKey, keyset: str, alg: str, state: KeyState = KeyState.CURRENT) -> KeyVersion:
    return KeyVersion(nk.kid, keyset, alg, state, time.time(), nk.public_jwk, nk.sealed_private)


def signing_input(alg: str, kid: str, n: int = 0) -> bytes:
    header = b64url(json.dumps({"alg": alg, "kid": kid, "typ": "at+jwt"}).encode())
    payload = b64url(json.dumps({"sub": "client", "n": n, "exp": int(time.time()) + 300}).encode())
    return f"{header}.{payload}".encode()


def tamper(sig: bytes) -> bytes:
    return sig[:-1] + bytes([sig[-1] ^ 1])


@pytest.fixture(scope="module")
def root(openbao: Any) -> Any:
    return openbao.client()


@pytest.fixture(scope="module")
def backend(openbao: Any) -> VaultBackend:
    return VaultBackend(openbao.vault_client())


def make_keys(backend: VaultBackend, alg: str, n: int = 2) -> tuple[str, list[KeyVersion]]:
    keyset = unique(alg)
    a = ALGORITHMS[alg]
    keys = [record(backend.generate(keyset, a, a.default_key_bits), keyset, alg) for _ in range(n)]
    return keyset, keys


def test_vault_backend_is_a_key_backend(backend: VaultBackend) -> None:
    kb: KeyBackend = backend
    assert kb.name == "vault"


@pytest.mark.parametrize("alg", ALL_ALGS)
def test_every_alg_signs_with_pinned_versions_singly_and_in_batches(backend: VaultBackend, root: Any, alg: str) -> None:
    a = ALGORITHMS[alg]
    keyset, (k1, k2) = make_keys(backend, alg)
    name = backend.key_name(keyset)
    assert [parse_reference(k) for k in (k1, k2)] == [TransitRef(name, 1), TransitRef(name, 2)]
    assert k1.kid != k2.kid

    for key, other in ((k1, k2), (k2, k1)):
        data = signing_input(alg, key.kid)
        sig = backend.signer(key)(data)
        verify = backend.verifier(key)
        assert verify(data, sig)
        assert not verify(data, tamper(sig))
        assert not verify(data + b"x", sig)
        assert not backend.verifier(other)(data, sig)  # pinned: v1 did not sign with v2, nor the reverse
        if not a.symmetric:
            assert key.public_jwk is not None
            assert key.public_jwk["kid"] == key.kid and key.public_jwk["alg"] == alg
            check_with_pyjwt(a, key.public_jwk, data, sig)

    # One Transit call for 50 inputs; each signature verifies on its own and in order: blocking, and
    # on the event loop (the MicroBatcher's way).
    inputs = [signing_input(alg, k2.kid, n) for n in range(50)]
    verify2 = backend.verifier(k2)
    for sigs in (backend.sign_batch(k2, inputs), asyncio.run(backend.sign_batch_async(k2, inputs))):
        assert len(sigs) == 50
        assert all(verify2(d, s) for d, s in zip(inputs, sigs, strict=True))
        assert not verify2(inputs[0], sigs[1])
    if not a.symmetric:
        assert k2.public_jwk is not None
        check_with_pyjwt(a, k2.public_jwk, inputs[7], sigs[7])
    assert backend.sign_batch(k2, []) == []
    assert asyncio.run(backend.sign_batch_async(k2, [])) == []

    # The private key never leaves Vault.
    info = root.secrets.transit.read_key(name)["data"]
    assert info["exportable"] is False and info["allow_plaintext_backup"] is False
    export_type = "hmac-key" if a.symmetric else "signing-key"
    with pytest.raises(hvac.exceptions.InvalidRequest, match="not exportable"):
        root.secrets.transit.export_key(name, export_type)


def check_with_pyjwt(a: Algorithm, jwk: dict[str, Any], data: bytes, sig: bytes) -> None:
    """An outside verifier: the whole token through PyJWT, or its Ed25519 primitive for the RFC 9864 name."""
    if a.name == "Ed25519":  # PyJWT knows EdDSA, not the fully specified name
        okp = OKPAlgorithm()
        assert okp.verify(data, okp.from_jwk(jwk), sig)
        assert not okp.verify(data, okp.from_jwk(jwk), tamper(sig))
        return
    token = f"{data.decode()}.{b64url(sig)}"
    claims = jwt.decode(token, jwt.PyJWK(jwk).key, algorithms=[a.name], options={"verify_aud": False})
    assert claims["sub"] == "client"
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(f"{data.decode()}.{b64url(tamper(sig))}", jwt.PyJWK(jwk).key, algorithms=[a.name])


@pytest.mark.parametrize(
    ("alg", "bits", "key_type", "sig_bytes"),
    [("RS256", 3072, "rsa-3072", 384), ("PS384", 4096, "rsa-4096", 512), ("HS256", 512, "hmac", 32)],
)
def test_key_bits_choose_the_transit_key(
    backend: VaultBackend, root: Any, alg: str, bits: int, key_type: str, sig_bytes: int
) -> None:
    keyset = unique(alg)
    key = record(backend.generate(keyset, ALGORITHMS[alg], bits), keyset, alg)
    info = root.secrets.transit.read_key(backend.key_name(keyset))["data"]
    assert info["type"] == key_type
    if key_type == "hmac":
        assert info["key_size"] == bits // 8
    data = signing_input(alg, key.kid)
    sig = backend.signer(key)(data)
    assert len(sig) == sig_bytes
    assert backend.verifier(key)(data, sig)


@pytest.mark.parametrize(
    ("alg", "bits"), [("RS256", 1024), ("PS256", 8192), ("RS512", 2500), ("HS256", 128), ("HS512", 256), ("HS256", 260)]
)
def test_sizes_transit_cannot_make_are_refused(alg: str, bits: int) -> None:
    with pytest.raises(ConfigError, match="key_bits"):
        transit_key_spec(ALGORITHMS[alg], bits)


def test_hmac_kids_are_random(backend: VaultBackend) -> None:
    _, keys = make_keys(backend, "HS256", 3)
    kids = [k.kid for k in keys]
    assert len(set(kids)) == 3
    assert all(k.public_jwk is None for k in keys)
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{22}", kid) for kid in kids)  # secrets.token_urlsafe(16)
    # The secret lives in Vault, and the reference stored in the record names only key and version.
    assert keys[0].sealed_private == f"vault-transit:v1:{backend.key_name(keys[0].keyset)}:1".encode()


def test_references_are_checked(backend: VaultBackend) -> None:
    _, (key,) = make_keys(backend, "ES256", 1)
    for bad in (None, b"", b"garbage", b"vault-transit:v1:", b"vault-transit:v1:jwks-x", b"vault-transit:v1:jwks-x:0"):
        broken = key.with_(sealed_private=bad)
        with pytest.raises(KeyValidationError):
            backend.signer(broken)
        with pytest.raises(KeyValidationError):
            backend.sign_batch(broken, [b"x"])
    hkey = make_keys(backend, "HS256", 1)[1][0]
    with pytest.raises(KeyValidationError, match="no Vault reference"):
        backend.verifier(hkey.with_(sealed_private=None))
    # A reference to a version Vault does not have: Vault refuses, clearly.
    ghost = key.with_(sealed_private=TransitRef(parse_reference(key).key_name, 9).encode())
    with pytest.raises(KeyValidationError, match="version"):
        backend.signer(ghost)(b"x")


def test_an_existing_transit_key_of_another_kind_is_refused(backend: VaultBackend, root: Any) -> None:
    transit = root.secrets.transit
    wrong_type = unique("wrongtype")
    transit.create_key(backend.key_name(wrong_type), key_type="ecdsa-p384")
    with pytest.raises(KeyValidationError, match="ecdsa-p384, but ES256 needs ecdsa-p256"):
        backend.generate(wrong_type, ALGORITHMS["ES256"], 256)
    exportable = unique("exportable")
    transit.create_key(backend.key_name(exportable), key_type="ecdsa-p256", exportable=True)
    with pytest.raises(KeyValidationError, match="exportable"):
        backend.generate(exportable, ALGORITHMS["ES256"], 256)
    assert transit.read_key(backend.key_name(exportable))["data"]["latest_version"] == 1  # not rotated


def test_out_of_band_rotation_is_visible_and_never_signs_unasked(backend: VaultBackend, root: Any) -> None:
    keyset, (k1,) = make_keys(backend, "ES256", 1)
    alg = ALGORITHMS["ES256"]
    assert backend.latest_version(keyset) == 1
    assert backend.latest_version(unique("absent")) == 0

    root.secrets.transit.rotate_key(backend.key_name(keyset))  # someone else, straight in Vault
    assert backend.latest_version(keyset) == 2

    # The current key still signs with v1: Transit's latest version is not used until adopted.
    data = signing_input("ES256", k1.kid)
    assert backend.verifier(k1)(data, backend.signer(k1)(data))
    assert all(backend.verifier(k1)(data, s) for s in backend.sign_batch(k1, [data, data]))

    adopted = record(backend.adopt(keyset, alg, 256, 2), keyset, "ES256", KeyState.NEXT)
    assert parse_reference(adopted) == TransitRef(backend.key_name(keyset), 2)
    assert adopted.kid != k1.kid
    assert backend.verifier(adopted)(data, backend.signer(adopted)(data))
    with pytest.raises(KeyValidationError, match="no usable version 3"):
        backend.adopt(keyset, alg, 256, 3)


def test_public_keys_are_read_once_per_version(
    openbao: Any, backend: VaultBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    keyset, _ = make_keys(backend, "ES384")
    name = backend.key_name(keyset)
    client = openbao.vault_client()
    fresh = VaultBackend(client)
    paths: list[str] = []
    real_call = client.call

    def counting_call(request: Any) -> Any:
        paths.append(request.path)
        return real_call(request)

    monkeypatch.setattr(client, "call", counting_call)
    for _ in range(20):
        fresh.public_key(name, 1)
        fresh.public_key(name, 2)
    assert paths == [f"transit/keys/{name}"]
    assert fresh.public_key(name, 2) == backend.public_key(name, 2)


def test_retirement_cuts_the_key_ring_from_below(backend: VaultBackend, root: Any) -> None:
    keyset, (k1, k2, k3, k4) = make_keys(backend, "ES256", 4)
    name = backend.key_name(keyset)
    transit = root.secrets.transit
    data = signing_input("ES256", k1.kid)

    assert backend.retire(k1, [k2, k3, k4]) == 2
    info = transit.read_key(name)["data"]
    assert sorted(info["keys"], key=int) == ["2", "3", "4"]
    assert (info["min_decryption_version"], info["min_encryption_version"], info["min_available_version"]) == (2, 2, 2)
    with pytest.raises(KeyValidationError):
        backend.signer(k1)(data)
    assert backend.verifier(k2)(data, backend.signer(k2)(data))

    # k3 retired (revoked) while the older k2 still verifies: Transit can only cut from below.
    assert backend.retire(k3, [k2, k4]) == 2
    assert backend.verifier(k3)(data, backend.signer(k3)(data))  # still in Vault; the service holds no reference

    # Once k2 goes too, everything below k4 is destroyed.
    assert backend.retire(k2.with_(state=KeyState.RETIRED), [k4]) == 4
    assert sorted(transit.read_key(name)["data"]["keys"]) == ["4"]
    for gone in (k2, k3):
        with pytest.raises(KeyValidationError):
            backend.sign_batch(gone, [data])
    assert backend.verifier(k4)(data, backend.signer(k4)(data))
    assert backend.retire(k2, [k4]) == 4  # idempotent

    # A version created later (next, or out of band) is unaffected.
    k5 = record(backend.generate(keyset, ALGORITHMS["ES256"], 256), keyset, "ES256", KeyState.NEXT)
    assert backend.verifier(k5)(data, backend.signer(k5)(data))


def test_a_retired_hmac_version_no_longer_verifies_in_transit(backend: VaultBackend) -> None:
    _, (k1, k2) = make_keys(backend, "HS384")
    data = signing_input("HS384", k1.kid)
    sig1 = backend.signer(k1)(data)
    verify1 = backend.verifier(k1)
    assert verify1(data, sig1)
    assert backend.retire(k1, [k2]) == 2
    assert not verify1(data, sig1)  # Transit refuses the version now: not valid, no exception
    sig2 = backend.signer(k2)(data)
    assert backend.verifier(k2)(data, sig2)


# ----- failures ---------------------------------------------------------------------------------


def restricted_client(openbao: Any, root: Any, policy: str, *, default_policy: bool = False) -> Any:
    name = unique("policy")
    root.sys.create_or_update_policy(name, policy)
    token = root.auth.token.create(policies=[name], ttl="10m", no_default_policy=not default_policy)
    return openbao.vault_client(token=token["auth"]["client_token"])


def test_permission_denied_names_the_policy_path(openbao: Any, root: Any, backend: VaultBackend) -> None:
    keyset, (key,) = make_keys(backend, "ES256", 1)
    name = backend.key_name(keyset)
    reader = VaultBackend(restricted_client(openbao, root, 'path "transit/keys/jwks-*" { capabilities = ["read"] }'))
    assert reader.latest_version(keyset) == 1
    with pytest.raises(VaultPermissionError) as caught:
        reader.signer(key)(b"header.payload")
    err = caught.value
    assert err.description == (
        f"Vault permission denied on transit/sign/{name}: the token's policy must allow 'update' on that path "
        "(see deploy/vault-policy.hcl)"
    )
    assert isinstance(err, UnavailableError) and err.status == 503 and err.retry_after > 0
    with pytest.raises(VaultPermissionError, match=f"transit/keys/{name}/rotate: .* allow 'update'"):
        reader.generate(keyset, ALGORITHMS["ES256"], 256)
    with pytest.raises(VaultPermissionError, match=r"transit/keys/jwks-new-\w+: .* allow 'create'"):
        reader.generate(unique("new"), ALGORITHMS["ES256"], 256)
    hkey = make_keys(backend, "HS256", 1)[1][0]
    with pytest.raises(VaultPermissionError, match="transit/verify/"):
        reader.verifier(hkey)(b"x", bytes(32))

    for sign_batch in (reader.sign_batch, lambda k, d: asyncio.run(reader.sign_batch_async(k, d))):
        with pytest.raises(VaultPermissionError) as caught:
            sign_batch(key, [b"header.payload"])
        assert caught.value.description == err.description

    bad_token = VaultBackend(openbao.vault_client(token="not-a-token"))
    with pytest.raises(VaultPermissionError, match="permission denied"):
        bad_token.signer(key)(b"x")
    with pytest.raises(VaultPermissionError, match="permission denied"):
        asyncio.run(bad_token.sign_batch_async(key, [b"x"]))


def test_unreachable_vault_is_unavailable_within_the_client_timeout() -> None:
    key = KeyVersion("kid", "default", "ES256", KeyState.CURRENT, 0.0, None, TransitRef("jwks-default", 1).encode())
    # Nothing listens on the port: refused at once.
    closed = VaultBackend(VaultClient(f"http://127.0.0.1:{free_port()}", "t", timeout=1))
    started = time.monotonic()
    with pytest.raises(UnavailableError, match="unreachable") as caught:
        closed.signer(key)(b"x")
    assert caught.value.retry_after > 0 and not isinstance(caught.value, VaultPermissionError)
    with pytest.raises(UnavailableError):
        closed.latest_version("default")
    with pytest.raises(UnavailableError):
        closed.generate("default", ALGORITHMS["ES256"], 256)
    with pytest.raises(UnavailableError, match="unreachable"):
        closed.sign_batch(key, [b"x"])
    with pytest.raises(UnavailableError, match="unreachable"):
        asyncio.run(closed.sign_batch_async(key, [b"x"]))
    assert time.monotonic() - started < 2

    # Something accepts the connection and never answers: the client's timeout (1 s) bounds the wait.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        hung = VaultBackend(VaultClient(f"http://127.0.0.1:{port}", "t", timeout=1))
        for sign_batch in (hung.sign_batch, lambda k, d: asyncio.run(hung.sign_batch_async(k, d))):
            started = time.monotonic()
            with pytest.raises(UnavailableError, match="in time"):
                sign_batch(key, [b"x"])
            assert time.monotonic() - started < 2.5


class Relay:
    """A TCP relay in front of OpenBao that can drop every connection through it, as Vault (or a
    load balancer) closing idle keep-alive connections would. Vault also serves requests sent to it
    as to an HTTP proxy (absolute URLs), so the relay doubles as one."""

    def __init__(self, target: str) -> None:
        host, _, port = target.rpartition("//")[2].partition(":")
        self._target = (host, int(port))
        self._server = socket.create_server(("127.0.0.1", 0))
        self.addr = f"http://127.0.0.1:{self._server.getsockname()[1]}"
        self.accepted = 0
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                near, _ = self._server.accept()
            except OSError:
                return
            far = socket.create_connection(self._target)
            self.accepted += 1
            self._open += [near, far]
            for a, b in ((near, far), (far, near)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def drop_all(self) -> None:
        while self._open:
            sock = self._open.pop()
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def close(self) -> None:
        self._server.close()
        self.drop_all()


@pytest.fixture
def relay(openbao: Any) -> Iterator[Relay]:
    relay = Relay(openbao.addr)
    try:
        yield relay
    finally:
        relay.close()


def test_idle_connections_closed_by_vault_are_replaced(openbao: Any, backend: VaultBackend, relay: Relay) -> None:
    """Signing keeps connections open; one Vault closed meanwhile costs a new one, not an error."""
    _, (key,) = make_keys(backend, "ES256", 1)
    verify = backend.verifier(key)
    through = VaultBackend(VaultClient(relay.addr, openbao.root_token, timeout=5))

    async def sign_async(rounds: int) -> list[list[bytes]]:
        out = []
        for _ in range(rounds):
            out.append(await through.sign_batch_async(key, [b"a.b", b"c.d"]))
            relay.drop_all()
        return out

    for sigs in asyncio.run(sign_async(3)):
        assert verify(b"a.b", sigs[0]) and verify(b"c.d", sigs[1])
    signer = through.signer(key)
    for _ in range(3):
        sigs = through.sign_batch(key, [b"a.b", b"c.d"])
        assert verify(b"a.b", sigs[0]) and verify(b"c.d", sigs[1])
        relay.drop_all()
        assert verify(b"a.b", signer(b"a.b"))
        relay.drop_all()
    assert relay.accepted == 9  # a new connection after every drop


def test_a_renewed_token_is_used_at_once(openbao: Any, backend: VaultBackend) -> None:
    """VaultAuth replaces the client's token: the next batch signs with the new one."""
    _, (key,) = make_keys(backend, "EdDSA", 1)
    client = openbao.vault_client()
    mine = VaultBackend(client)
    assert len(asyncio.run(mine.sign_batch_async(key, [b"x"]))) == 1
    client.token = "expired"
    with pytest.raises(VaultPermissionError):
        asyncio.run(mine.sign_batch_async(key, [b"x"]))
    with pytest.raises(VaultPermissionError):
        mine.sign_batch(key, [b"x"])
    client.token = openbao.root_token
    assert len(asyncio.run(mine.sign_batch_async(key, [b"x"]))) == 1


def test_a_proxy_from_the_environment_is_used_by_both_paths(
    openbao: Any, backend: VaultBackend, relay: Relay, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTP_PROXY / NO_PROXY are honoured, blocking and on the event loop alike."""
    _, (key,) = make_keys(backend, "PS256", 1)
    verify = backend.verifier(key)
    monkeypatch.setenv("HTTP_PROXY", relay.addr)
    monkeypatch.setenv("NO_PROXY", "")
    proxied = VaultBackend(openbao.vault_client())
    for sigs in (proxied.sign_batch(key, [b"a.b"]), asyncio.run(proxied.sign_batch_async(key, [b"a.b"]))):
        assert verify(b"a.b", sigs[0])
    assert relay.accepted >= 2
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    direct = VaultBackend(openbao.vault_client())
    before = relay.accepted
    assert verify(b"a.b", direct.sign_batch(key, [b"a.b"])[0])
    assert relay.accepted == before


def test_batched_signing_over_tls_verifies_vaults_certificate(tmp_path: Path, openbao: Any) -> None:
    """An https Vault (``bao server -dev-tls``): batches signed over verified TLS; an untrusted
    certificate is refused."""
    port = free_port()
    args = [bao_binary(), "server", "-dev", "-dev-tls", f"-dev-tls-cert-dir={tmp_path}"]
    args += ["-dev-root-token-id=root", f"-dev-listen-address=127.0.0.1:{port}"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))} | {"HOME": str(tmp_path)}
    ca = tmp_path / "vault-ca.pem"
    with (tmp_path / "bao.log").open("wb") as log:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        client = hvac.Client(url=f"https://127.0.0.1:{port}", token="root", verify=str(ca), timeout=5)
        deadline = time.monotonic() + 30
        while True:
            try:
                client.sys.enable_secrets_engine("transit")
                break
            except (OSError, hvac.exceptions.VaultError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail((tmp_path / "bao.log").read_text(errors="replace")[-2000:], pytrace=False)
                time.sleep(0.1)
        tls = VaultBackend(VaultClient(f"https://127.0.0.1:{port}", "root", verify=tls_context(str(ca)), timeout=5))
        key = record(tls.generate("tls", ALGORITHMS["ES256"], 256), "tls", "ES256")
        verify = tls.verifier(key)
        for sigs in (tls.sign_batch(key, [b"a.b"] * 3), asyncio.run(tls.sign_batch_async(key, [b"a.b"] * 3))):
            assert len(sigs) == 3 and all(verify(b"a.b", sig) for sig in sigs)

        untrusted = VaultBackend(VaultClient(f"https://127.0.0.1:{port}", "root", verify=True, timeout=5))
        with pytest.raises(UnavailableError, match="SSLCertVerificationError"):
            asyncio.run(untrusted.sign_batch_async(key, [b"a.b"]))
        with pytest.raises(UnavailableError, match="SSLCertVerificationError"):
            untrusted.sign_batch(key, [b"a.b"])
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def sealed(openbao: Any, root: Any) -> Iterator[None]:
    """Seal the shared dev server for one test, then unseal it with the key it printed at start."""
    log = Path(openbao.log).read_text(errors="replace")
    match = re.search(r"Unseal Key: (\S+)", log)
    if match is None:
        pytest.skip("the dev server's log shows no unseal key")
    root.sys.seal()
    try:
        yield
    finally:
        root.sys.submit_unseal_key(match.group(1))


def test_sealed_vault_is_unavailable(backend: VaultBackend, sealed: None) -> None:
    key = KeyVersion("kid", "default", "ES256", KeyState.CURRENT, 0.0, None, TransitRef("jwks-default", 1).encode())
    with pytest.raises(UnavailableError, match="sealed or unavailable"):
        backend.signer(key)(b"x")
    with pytest.raises(UnavailableError, match="sealed or unavailable"):
        backend.sign_batch(key, [b"x"])
    with pytest.raises(UnavailableError, match="sealed or unavailable"):
        asyncio.run(backend.sign_batch_async(key, [b"x"]))
    with pytest.raises(UnavailableError, match="sealed"):
        backend.latest_version("default")


# ----- the policy file --------------------------------------------------------------------------


def test_the_policy_file_is_enough_for_the_whole_flow(openbao: Any, root: Any) -> None:
    client = restricted_client(openbao, root, POLICY_FILE.read_text())
    backend = VaultBackend(client)
    admin = openbao.client(token=client.token)
    for alg in ("ES256", "PS256", "HS512"):
        a = ALGORITHMS[alg]
        keyset = unique(alg)
        k1, k2, k3 = (record(backend.generate(keyset, a, a.default_key_bits), keyset, alg) for _ in range(3))
        root.secrets.transit.rotate_key(backend.key_name(keyset))  # out of band: v4
        assert backend.latest_version(keyset) == 4
        k4 = record(backend.adopt(keyset, a, a.default_key_bits, 4), keyset, alg)
        for key in (k1, k2, k3, k4):
            data = signing_input(alg, key.kid)
            verify = backend.verifier(key)  # HMAC: through transit/verify
            assert verify(data, backend.signer(key)(data))
            assert all(verify(data, s) for s in backend.sign_batch(key, [data] * 3))
            assert not verify(data, tamper(backend.signer(key)(data)))
        assert backend.retire(k1, [k2, k3, k4]) == 2  # config + trim
        assert backend.retire(k2, [k3, k4]) == 3
    # Token renewal is allowed by the file itself (the token was made without Vault's default policy).
    admin.auth.token.lookup_self()
    admin.auth.token.renew_self()


def test_the_policy_file_grants_nothing_else(openbao: Any, root: Any, backend: VaultBackend) -> None:
    keyset, _ = make_keys(backend, "ES256", 1)
    name = backend.key_name(keyset)
    client = openbao.client(token=restricted_client(openbao, root, POLICY_FILE.read_text()).token)
    transit = client.secrets.transit
    denied = {
        "export": lambda: transit.export_key(name, "signing-key"),
        "backup": lambda: transit.backup_key(name),
        "delete": lambda: transit.delete_key(name),
        "allow deletion": lambda: client.adapter.post(
            f"/v1/transit/keys/{name}/config", json={"deletion_allowed": True}
        ),
        "make exportable": lambda: client.adapter.post(f"/v1/transit/keys/{name}/config", json={"exportable": True}),
        "plaintext backup": lambda: client.adapter.post(
            f"/v1/transit/keys/{name}/config", json={"allow_plaintext_backup": True}
        ),
        "auto rotate": lambda: client.adapter.post(
            f"/v1/transit/keys/{name}/config", json={"auto_rotate_period": "1h"}
        ),
        "create exportable": lambda: client.adapter.post(
            f"/v1/transit/keys/{unique('jwks-exp')}", json={"type": "ecdsa-p256", "exportable": True}
        ),
        "import a key": lambda: client.adapter.post(
            f"/v1/transit/keys/{unique('jwks-imp')}/import", json={"type": "ecdsa-p256", "ciphertext": "AAAA"}
        ),
        "other key": lambda: transit.create_key(unique("other"), key_type="ecdsa-p256"),
        "sign with other key": lambda: transit.sign_data("other", hash_input="AAAA"),
        "encrypt": lambda: transit.encrypt_data(name, plaintext="AAAA"),
        "decrypt": lambda: transit.decrypt_data(name, ciphertext="vault:v1:AAAA"),
        # Envelope mode may encrypt and decrypt with jwks-kek, nothing more.
        "plaintext data key": lambda: client.adapter.post("/v1/transit/datakey/plaintext/jwks-kek", json={}),
        "export the KEK key": lambda: transit.export_key("jwks-kek", "encryption-key"),
        "rewrap elsewhere": lambda: transit.encrypt_data("jwks-kek-2", plaintext="AAAA"),
        "list keys": lambda: transit.list_keys(),
        "secrets": lambda: client.secrets.kv.v2.read_secret_version("x", raise_on_deleted_version=True),
        "mounts": lambda: client.sys.list_mounted_secrets_engines(),
    }
    allowed = []
    for what, call in denied.items():
        try:
            call()
        except hvac.exceptions.Forbidden:
            continue
        allowed.append(what)
    assert allowed == []
