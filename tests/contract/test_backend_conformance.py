"""The KeyBackend conformance suite: every backend, every algorithm it supports, one contract.

The local backend and the Vault backend (a real OpenBao dev server's Transit engine, the `openbao`
fixture) run these tests unchanged, through the methods every backend has (`generate`, `signer`,
`verifier`); the Vault backend's extras (`retire`, `sign_batch`, `sign_batch_async`) are held to
the same promises where they apply. The algorithms come from the one registry (`support.algorithms`):
one added there is tested here on every backend.

- a generated key signs, and the signature verifies with what is published: the public JWK (its
  kid the RFC 7638 thumbprint) through the SDK's verification path, or the backend's verifier for
  HMAC keys (whose secret is never published);
- versions are pinned: after a rotation to N+1, what N signed still verifies with N's key only, and
  N still signs as N;
- a key whose material is gone (retired, revoked, destroyed) cannot sign;
- failures are the service's errors (`UnavailableError` for Vault down, `KeyValidationError` for a
  key that is missing), never a client library's exception.

RSA keys are 2048-bit here whatever the algorithm's default (key sizes are tested elsewhere): the
suite stays fast.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import time
from collections.abc import Callable
from typing import Any

import pytest
from support import algorithms, free_port

from jwks_service.algorithms import ALGORITHMS, Algorithm
from jwks_service.backends import KeyBackend
from jwks_service.backends.local import LocalBackend
from jwks_service.backends.vault import TransitRef, VaultBackend, parse_reference
from jwks_service.crypto import public_jwk_from_public_key, public_key_from_jwk
from jwks_service.errors import InvalidTokenError, JwksServiceError, KeyValidationError, UnavailableError
from jwks_service.jws import VerificationKey, b64decode, b64encode, verify_compact
from jwks_service.model import KeyState, KeyVersion
from jwks_service.sdk.keys import load_key_set
from jwks_service.vaultapi import VaultClient

BackendFactory = Callable[[pytest.FixtureRequest], KeyBackend]
BACKENDS: dict[str, BackendFactory] = {
    "local": lambda request: LocalBackend(os.urandom(32)),
    "vault": lambda request: VaultBackend(request.getfixturevalue("openbao").vault_client()),
}


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest) -> KeyBackend:
    return BACKENDS[request.param](request)


def key_bits(alg: Algorithm) -> int:
    return 2048 if alg.family in ("RSA", "RSA-PSS") else alg.default_key_bits


def generate(backend: KeyBackend, keyset: str, alg: Algorithm, state: KeyState = KeyState.CURRENT) -> KeyVersion:
    nk = backend.generate(keyset, alg, key_bits(alg))
    return KeyVersion(nk.kid, keyset, alg.name, state, time.time(), nk.public_jwk, nk.sealed_private)


def token(backend: KeyBackend, key: KeyVersion, claims: dict[str, Any]) -> str:
    header = b64encode(json.dumps({"alg": key.alg, "kid": key.kid, "typ": "JWT"}).encode())
    data = header + b"." + b64encode(json.dumps(claims).encode())
    return (data + b"." + b64encode(backend.signer(key)(data))).decode()


def published(backend: KeyBackend, key: KeyVersion) -> dict[str, VerificationKey]:
    """How a verifier checks `key`'s tokens: its public JWK through the SDK's key loading, or (HMAC:
    nothing is published) the backend's verifier."""
    if ALGORITHMS[key.alg].symmetric:
        assert key.public_jwk is None
        return {key.kid: VerificationKey(key.kid, key.alg, backend.verifier(key))}
    assert key.public_jwk is not None
    ring = load_key_set({"keys": [key.public_jwk]}, [key.alg])
    assert list(ring.keys) == [key.kid] and not ring.skipped
    return dict(ring.keys)


def tampered(compact: str) -> str:
    """The same token with its signature's last byte changed."""
    data, sig = signed_parts(compact)
    return f"{data.decode()}.{b64encode(sig[:-1] + bytes([sig[-1] ^ 1])).decode()}"


@pytest.mark.parametrize("alg_name", algorithms())
def test_generate_sign_verify_rotate_and_retire(backend: KeyBackend, alg_name: str) -> None:
    alg = ALGORITHMS[alg_name]
    keyset = f"conf-{alg_name.lower()}-{secrets.token_hex(3)}"

    # Generate: the published key is well-formed and its kid is its thumbprint (HMAC: random, unpublished).
    k1 = generate(backend, keyset, alg)
    if alg.symmetric:
        assert k1.public_jwk is None and len(k1.kid) >= 16
    else:
        assert k1.public_jwk is not None
        assert {k: k1.public_jwk[k] for k in ("kid", "alg", "use")} == {"kid": k1.kid, "alg": alg_name, "use": "sig"}
        assert "d" not in k1.public_jwk
        assert public_jwk_from_public_key(public_key_from_jwk(alg_name, k1.public_jwk))[1] == k1.kid  # type: ignore[arg-type]

    # Sign, and verify with what is published: the SDK's path and the backend's own verifier agree.
    claims = {"sub": "client", "n": 1}
    t1 = token(backend, k1, claims)
    keys1 = published(backend, k1)
    assert json.loads(verify_compact(t1, keys1).payload) == claims
    with pytest.raises(InvalidTokenError, match="does not verify"):
        verify_compact(tampered(t1), keys1)
    data, sig1 = signed_parts(t1)
    assert backend.verifier(k1)(data, sig1)
    assert not backend.verifier(k1)(data + b"x", sig1)

    # Rotate to N+1: what N signed verifies with N's key only; each version still signs as itself.
    k2 = generate(backend, keyset, alg, KeyState.NEXT)
    assert k2.kid != k1.kid
    keys2 = published(backend, k2)
    t1_again, t2 = token(backend, k1, claims), token(backend, k2, claims)
    for t in (t1, t1_again):
        assert verify_compact(t, keys1).header["kid"] == k1.kid
        with pytest.raises(InvalidTokenError, match="unknown kid"):
            verify_compact(t, keys2)
        assert not keys2[k2.kid].verify(*signed_parts(t))
    assert verify_compact(t2, keys2).header["kid"] == k2.kid
    assert not keys1[k1.kid].verify(*signed_parts(t2))
    if isinstance(backend, VaultBackend):  # signing pins key_version: one Transit key, two versions
        ref1, ref2 = parse_reference(k1), parse_reference(k2)
        assert ref2 == TransitRef(ref1.key_name, ref1.version + 1)
        batch = [data] * 3
        for sigs in (backend.sign_batch(k1, batch), asyncio.run(backend.sign_batch_async(k1, batch))):
            assert all(keys1[k1.kid].verify(data, s) for s in sigs)
            assert not any(keys2[k2.kid].verify(data, s) for s in sigs)

    # Retire N: a record without its material cannot sign; the Vault backend also destroys N in Transit.
    with pytest.raises(KeyValidationError):
        backend.signer(k1.with_(state=KeyState.RETIRED, sealed_private=None))
    if isinstance(backend, VaultBackend):
        assert backend.retire(k1, [k2]) == parse_reference(k2).version
        with pytest.raises(KeyValidationError):
            backend.signer(k1)(data)  # even through the old reference
    assert verify_compact(token(backend, k2, claims), keys2).header["kid"] == k2.kid


def signed_parts(compact: str) -> tuple[bytes, bytes]:
    """The signing input and the signature of a compact JWS."""
    data, _, sig = compact.rpartition(".")
    return data.encode(), b64decode(sig.encode())


# ----- failures -----------------------------------------------------------------------------------


def assert_mapped(error: BaseException, expected: type[JwksServiceError]) -> None:
    """A service error of the expected kind, raised without a client library's exception in tow."""
    assert isinstance(error, expected)
    assert (error.__cause__ is None and error.__suppress_context__) or error.__context__ is None
    assert not type(error).__module__.startswith(("aiohttp", "httpcore", "httpx", "hvac", "requests", "h11", "yarl"))


@pytest.mark.parametrize("alg_name", ["ES256", "HS256"])
def test_a_missing_key_is_a_key_validation_error(backend: KeyBackend, alg_name: str) -> None:
    """A record whose private material the backend cannot find: another key's, or a destroyed one's."""
    alg = ALGORITHMS[alg_name]
    a = generate(backend, f"conf-missing-{secrets.token_hex(3)}", alg)
    b = generate(backend, f"conf-other-{secrets.token_hex(3)}", alg)
    if isinstance(backend, VaultBackend):
        missing = a.with_(sealed_private=TransitRef(f"jwks-absent-{secrets.token_hex(3)}", 1).encode())
    else:
        missing = a.with_(sealed_private=b.sealed_private)  # sealed for another key: does not open
    with pytest.raises(KeyValidationError) as caught:
        backend.signer(missing)(b"header.payload")
    assert_mapped(caught.value, KeyValidationError)
    if isinstance(backend, VaultBackend):
        for sign_batch in (backend.sign_batch, lambda k, d: asyncio.run(backend.sign_batch_async(k, d))):
            with pytest.raises(KeyValidationError) as caught:
                sign_batch(missing, [b"header.payload"])
            assert_mapped(caught.value, KeyValidationError)


def test_vault_down_is_unavailable_never_a_client_exception() -> None:
    """Nothing listens at Vault's address: every operation answers UnavailableError (503, Retry-After)."""
    down = VaultBackend(VaultClient(f"http://127.0.0.1:{free_port()}", "token", timeout=1))
    key = KeyVersion("kid", "conf", "ES256", KeyState.CURRENT, 0.0, None, TransitRef("jwks-conf", 1).encode())
    hmac_key = key.with_(alg="HS256")
    operations: dict[str, Callable[[], object]] = {
        "generate": lambda: down.generate("conf", ALGORITHMS["ES256"], 256),
        "sign": lambda: down.signer(key)(b"header.payload"),
        "verify (HMAC)": lambda: down.verifier(hmac_key)(b"header.payload", bytes(32)),
        "sign_batch": lambda: down.sign_batch(key, [b"header.payload"]),
        "sign_batch_async": lambda: asyncio.run(down.sign_batch_async(key, [b"header.payload"])),
        "retire": lambda: down.retire(key, []),
        "latest_version": lambda: down.latest_version("conf"),
    }
    for what, operation in operations.items():
        with pytest.raises(UnavailableError, match="unreachable") as caught:
            operation()
        assert_mapped(caught.value, UnavailableError)
        assert caught.value.status == 503 and caught.value.retry_after > 0, what
