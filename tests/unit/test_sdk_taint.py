"""The SDK and tainted keys (API.md §6): the verifier accepts them unless reject_tainted=True; a token
client sharing a verifier's events drops a cached token signed by a tainted kid and fetches anew."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import httpx
import pytest

from jwks_service.algorithms import ALGORITHMS
from jwks_service.crypto import generate_private_key, make_signer, public_jwk
from jwks_service.jws import b64encode
from jwks_service.sdk import (
    AsyncTokenClient,
    AsyncVerifier,
    RevokedKeyError,
    TaintedKeyError,
    TokenClient,
    Verifier,
)
from jwks_service.sdk.keys import load_key_set
from jwks_service.sdk.sse import SSEvent

ISSUER = "https://issuer.example"
NOW = 1_800_000_000.0


def mint(private: object, kid: str, jti: str = "j1") -> str:
    body = {"iss": ISSUER, "sub": "svc", "client_id": "svc", "aud": "api", "jti": jti, "scope": "read"}
    body |= {"iat": int(NOW), "nbf": int(NOW), "exp": int(NOW) + 3600}
    head = {"alg": "ES256", "kid": kid, "typ": "at+jwt"}
    signing_input = b64encode(json.dumps(head).encode()) + b"." + b64encode(json.dumps(body).encode())
    return (signing_input + b"." + b64encode(make_signer(ALGORITHMS["ES256"], private)(signing_input))).decode()


def event(kind: str, kid: str, n: int = 1) -> SSEvent:
    data = {"type": kind, "kid": kid, "keyset": "default", "alg": "ES256", "revision": n}
    return SSEvent(kind, json.dumps(data), f"{n}-{kind}-{kid}")


def keypair() -> tuple[object, dict[str, object]]:
    alg = ALGORITHMS["ES256"]
    private = generate_private_key(alg, alg.default_key_bits)
    jwk, thumbprint = public_jwk(alg, private)  # type: ignore[arg-type]
    return private, {**jwk, "kid": thumbprint, "alg": "ES256", "use": "sig"}


@pytest.fixture
def keys() -> tuple[object, dict[str, object], object, dict[str, object]]:
    return *keypair(), *keypair()


def verifier(jwks: list[dict[str, object]], **options: object) -> Verifier:
    return Verifier(ISSUER, "api", jwks={"keys": jwks}, clock=lambda: NOW, **options)  # type: ignore[arg-type]


def watching(v: Verifier | AsyncVerifier) -> SimpleNamespace:
    """What a token client reads of its verifier (its cache's tainted kids), as from a subscribed one:
    these tests feed the events by hand; tests/integration/test_taint_replicas.py subscribes for real."""
    return SimpleNamespace(cache=v.cache, events_enabled=True)


def test_a_verifier_that_hears_no_events_is_refused_as_a_taint_watch() -> None:
    with pytest.raises(ValueError, match="events=True"):
        TokenClient(None, "svc", "secret", token_endpoint=ISSUER + "/oauth/token", verifier=verifier([]))


@pytest.mark.parametrize("reject", [False, True])
def test_a_tainted_key_verifies_unless_the_verifier_rejects_it(reject: bool, keys: tuple[object, ...]) -> None:
    a, a_jwk, b, b_jwk = keys
    v = verifier([a_jwk, b_jwk], reject_tainted=reject)  # type: ignore[list-item]
    tainted, clean = mint(a, str(a_jwk["kid"])), mint(b, str(b_jwk["kid"]))  # type: ignore[index]
    assert v.verify(tainted)["sub"] == "svc"
    v._event(event("tainted", str(a_jwk["kid"])))  # type: ignore[index]
    assert v.cache.tainted.keys() == {a_jwk["kid"]}  # type: ignore[index]
    if reject:
        with pytest.raises(TaintedKeyError) as refused:
            v.verify(tainted)
        assert refused.value.error == "invalid_token"
    else:
        assert v.verify(tainted)["sub"] == "svc"
    assert v.verify(clean)["sub"] == "svc"
    # Revoking it afterwards: refused by every verifier.
    v._event(event("revoked", str(a_jwk["kid"]), 2))  # type: ignore[index]
    with pytest.raises((RevokedKeyError, TaintedKeyError)):
        v.verify(tainted)


def test_a_rejecting_verifier_does_not_take_a_tainted_key_back_on_refresh(keys: tuple[object, ...]) -> None:
    _, a_jwk, _, _ = keys
    v = verifier([a_jwk], reject_tainted=True)  # type: ignore[list-item]
    v._event(event("tainted", str(a_jwk["kid"])))  # type: ignore[index]
    ring = load_key_set({"keys": [a_jwk]}, v.key_algorithms)
    v.cache.replace(NOW, ring.keys, ring.skipped, None, "max-age=60")
    assert a_jwk["kid"] not in v.cache.keys  # type: ignore[index]


def test_the_token_client_drops_a_token_of_a_tainted_kid(keys: tuple[object, ...]) -> None:
    a, a_jwk, b, b_jwk = keys
    signers = [(a, str(a_jwk["kid"])), (b, str(b_jwk["kid"]))]  # type: ignore[index]
    issued: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        private, kid = signers[min(len(issued), 1)]
        issued.append(mint(private, kid, jti=f"j{len(issued)}"))
        return httpx.Response(200, json={"access_token": issued[-1], "token_type": "Bearer", "expires_in": 900})

    v = verifier([a_jwk, b_jwk])  # type: ignore[list-item]
    http = httpx.Client(transport=httpx.MockTransport(handle))
    with TokenClient(
        None, "svc", "secret", token_endpoint=ISSUER + "/oauth/token", http=http, verifier=watching(v)
    ) as client:
        first = client.get()
        assert client.get() == first and len(issued) == 1  # cached
        v._event(event("created", "unrelated"))
        assert client.get() == first and len(issued) == 1
        v._event(event("tainted", str(a_jwk["kid"])))  # type: ignore[index]
        fresh = client.get()
        assert fresh != first and len(issued) == 2 and client.tainted_drops == 1
        assert client.get() == fresh and len(issued) == 2  # the fresh one is signed by another key
        assert v.verify(fresh)["jti"] == "j1"
    # Without a verifier, nothing is watched: the cached token stays.
    plain = TokenClient(None, "svc", "secret", token_endpoint=ISSUER + "/oauth/token", http=http)
    token = plain.get()
    assert plain.get() == token


def test_the_async_token_client_drops_a_token_of_a_tainted_kid(keys: tuple[object, ...]) -> None:
    a, a_jwk, b, b_jwk = keys
    signers = [(a, str(a_jwk["kid"])), (b, str(b_jwk["kid"]))]  # type: ignore[index]
    issued: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        private, kid = signers[min(len(issued), 1)]
        issued.append(mint(private, kid, jti=f"j{len(issued)}"))
        return httpx.Response(200, json={"access_token": issued[-1], "token_type": "Bearer", "expires_in": 900})

    async def scenario() -> None:
        v = AsyncVerifier(ISSUER, "api", jwks={"keys": [a_jwk, b_jwk]}, clock=lambda: NOW)
        http = httpx.AsyncClient(transport=httpx.MockTransport(handle))
        endpoint = ISSUER + "/oauth/token"
        async with AsyncTokenClient(
            None, "svc", "secret", token_endpoint=endpoint, http=http, verifier=watching(v)
        ) as client:
            first = await client.get()
            assert await client.get() == first
            v._event(event("tainted", str(a_jwk["kid"])))  # type: ignore[index]
            fresh = await client.get()
            assert fresh != first and len(issued) == 2 and client.tainted_drops == 1
            assert (await v.verify(fresh))["jti"] == "j1"
        await http.aclose()
        await v.aclose()

    asyncio.run(scenario())
