"""The rules of private_key_jwt client assertions (assertions.py, RFC 7523 §3) and of what a client may
register (jwks, jwks_uri). Pure: no store, no HTTP."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import pytest
from support import ClientKey, b64url, sign_compact

from jwks_service.assertions import (
    ASSERTION_LEEWAY,
    MAX_ASSERTION_LIFETIME,
    check_assertion,
    check_client_keys,
    check_jwks_uri,
    claimed_client,
)
from jwks_service.errors import (
    ExpiredTokenError,
    ImmatureTokenError,
    InvalidAudienceError,
    InvalidClaimsError,
    InvalidIssuerError,
    InvalidRequestError,
    InvalidSignatureError,
    JoseError,
    MalformedTokenError,
    UnknownKeyError,
    UnsupportedAlgorithmError,
)
from jwks_service.jwkset import load_key_set

NOW = 1_800_000_000.0
AUD = "https://auth.example.com"
AUDIENCES = {AUD, AUD + "/oauth/token"}
CLIENT = "c0ffee"


@pytest.fixture(scope="module")
def key() -> ClientKey:
    return ClientKey("client-key-1")


@pytest.fixture(scope="module")
def other() -> ClientKey:
    return ClientKey("other-client-key")


def keys_of(*client_keys: ClientKey) -> Any:
    return load_key_set({"keys": [k.jwk for k in client_keys]}).keys


def check(token: str, *client_keys: ClientKey, now: float = NOW) -> Any:
    return check_assertion(token, CLIENT, keys_of(*client_keys), AUDIENCES, now)


def test_a_good_assertion_gives_its_jti_and_how_long_to_remember_it(key: ClientKey) -> None:
    token = key.assertion(CLIENT, AUD + "/oauth/token", NOW, jti="j-1", exp=NOW + 120)
    verified = check(token, key)
    assert (verified.client_id, verified.jti, verified.expires_at) == (CLIENT, "j-1", NOW + 120 + ASSERTION_LEEWAY)
    assert claimed_client(token) == (CLIENT, key.kid)
    # aud may be a list holding the issuer
    assert check(key.assertion(CLIENT, [AUD, "elsewhere"], NOW), key).client_id == CLIENT


@pytest.mark.parametrize(
    ("claims", "error"),
    [
        ({"iss": "someone-else"}, InvalidIssuerError),
        ({"iss": None}, InvalidIssuerError),
        ({"sub": "someone-else"}, InvalidClaimsError),
        ({"sub": None}, InvalidClaimsError),
        ({"aud": "https://other.example.com"}, InvalidAudienceError),
        ({"aud": None}, InvalidAudienceError),
        ({"exp": NOW - ASSERTION_LEEWAY - 1}, ExpiredTokenError),
        ({"exp": NOW + MAX_ASSERTION_LIFETIME + ASSERTION_LEEWAY + 1}, InvalidClaimsError),
        ({"exp": NOW + 3600}, InvalidClaimsError),  # Authlib's default lifetime: too long to remember
        ({"exp": None}, InvalidClaimsError),
        ({"exp": "soon"}, InvalidClaimsError),
        ({"iat": NOW + 120}, ImmatureTokenError),
        ({"nbf": NOW + 120}, ImmatureTokenError),
        ({"jti": None}, InvalidClaimsError),
        ({"jti": ""}, InvalidClaimsError),
        ({"jti": 7}, InvalidClaimsError),
        ({"jti": "x" * 257}, InvalidClaimsError),
    ],
)
def test_claims_that_are_refused(key: ClientKey, claims: dict[str, Any], error: type[JoseError]) -> None:
    with pytest.raises(error):
        check(key.assertion(CLIENT, AUD, NOW, **claims), key)


def test_exp_within_five_minutes_and_leeway_is_accepted(key: ClientKey) -> None:
    check(key.assertion(CLIENT, AUD, NOW, exp=NOW + MAX_ASSERTION_LIFETIME + ASSERTION_LEEWAY), key)
    check(key.assertion(CLIENT, AUD, NOW, exp=NOW - ASSERTION_LEEWAY + 1), key)


def test_alg_none_is_refused(key: ClientKey) -> None:
    for alg in ("none", "None", "NONE"):
        token = sign_compact({"alg": alg, "kid": key.kid}, {"iss": CLIENT}, lambda _: b"-")
        with pytest.raises(UnsupportedAlgorithmError):
            check(token, key)
        with pytest.raises(UnsupportedAlgorithmError):  # also when the kid is left out
            check(sign_compact({"alg": alg}, {"iss": CLIENT}, lambda _: b"-"), key)


def test_hmac_keyed_with_the_public_key_is_refused(key: ClientKey) -> None:
    """The classic confusion: HS256 "signed" with the client's public key, as text."""
    public = json.dumps(key.jwk).encode()
    claims = {"iss": CLIENT, "sub": CLIENT, "aud": AUD, "exp": NOW + 60, "jti": "hs"}
    token = sign_compact(
        {"alg": "HS256", "kid": key.kid}, claims, lambda data: hmac.digest(public, data, hashlib.sha256)
    )
    with pytest.raises(UnsupportedAlgorithmError):
        check(token, key)


def test_unknown_kid_is_refused(key: ClientKey) -> None:
    token = key.assertion(CLIENT, AUD, NOW, header={"alg": "ES256", "kid": "not-registered"})
    with pytest.raises(UnknownKeyError):
        check(token, key)


def test_a_key_of_another_client_is_refused(key: ClientKey, other: ClientKey) -> None:
    # Signed with the other client's key, under its own kid: not one of this client's keys.
    with pytest.raises(UnknownKeyError):
        check(other.assertion(CLIENT, AUD, NOW), key)
    # ... or under this client's kid: the signature does not verify.
    forged = other.assertion(CLIENT, AUD, NOW, header={"alg": "ES256", "kid": key.kid})
    with pytest.raises(InvalidSignatureError):
        check(forged, key)


def test_a_tampered_payload_is_refused(key: ClientKey) -> None:
    head, _, sig = key.assertion(CLIENT, AUD, NOW).split(".")
    claims = {"iss": CLIENT, "sub": CLIENT, "aud": AUD, "exp": NOW + 60, "jti": "changed"}
    tampered = f"{head}.{b64url(json.dumps(claims).encode()).decode()}.{sig}"
    with pytest.raises(InvalidSignatureError):
        check(tampered, key)


def test_keys_named_by_the_token_are_refused(key: ClientKey) -> None:
    for extra in ({"jku": "https://evil.example/jwks"}, {"jwk": key.jwk}, {"x5u": "https://evil.example"}):
        with pytest.raises(MalformedTokenError):
            check(key.assertion(CLIENT, AUD, NOW, header={"alg": "ES256", "kid": key.kid, **extra}), key)


def test_without_kid_the_one_key_of_the_alg_is_used(key: ClientKey, other: ClientKey) -> None:
    token = key.assertion(CLIENT, AUD, NOW, header={"alg": "ES256"})
    assert check(token, key).client_id == CLIENT
    assert claimed_client(token) == (CLIENT, None)
    with pytest.raises(MalformedTokenError, match="kid"):  # two ES256 keys: which one is not guessed
        check(token, key, other)


def test_an_assertion_that_is_not_a_jws_names_no_client() -> None:
    for token in ("", "a.b", "not.a.jws", "x" * 9000):
        with pytest.raises(JoseError):
            claimed_client(token)


@pytest.mark.parametrize(
    "url",
    ["https://keys.example.com/jwks.json", "http://127.0.0.1:9000/jwks", "http://[::1]/k", "http://localhost/k"],
)
def test_jwks_uris_that_may_be_registered(url: str) -> None:
    assert check_jwks_uri(url) == url


@pytest.mark.parametrize(
    "url",
    [
        "http://keys.example.com/jwks.json",  # plain http to a remote host
        "http://10.0.0.5/jwks",
        "ftp://keys.example.com/jwks",
        "file:///etc/passwd",
        "https://user:pw@keys.example.com/jwks",
        "https://keys.example.com/jwks#frag",
        "https:///no-host",
        "https://keys.example.com:99999/",
        "https://" + "k" * 2100,
        "",
        42,
    ],
)
def test_jwks_uris_that_are_refused(url: object) -> None:
    with pytest.raises(InvalidRequestError, match="jwks_uri"):
        check_jwks_uri(url)


def test_http_jwks_uri_with_the_opt_in() -> None:
    assert check_jwks_uri("http://keys.internal/jwks", allow_http=True) == "http://keys.internal/jwks"


def test_what_a_registration_may_say(key: ClientKey) -> None:
    jwks = {"keys": [key.jwk]}
    check_client_keys("private_key_jwt", jwks, None)
    check_client_keys("private_key_jwt", None, "https://keys.example.com/jwks")
    check_client_keys("client_secret_basic", None, None)
    refused: list[tuple[object, object, object, str]] = [
        ("client_secret_basic", jwks, None, "only with"),
        ("client_secret_post", None, "https://k.example/j", "only with"),
        ("private_key_jwt", None, None, "exactly one"),
        ("private_key_jwt", jwks, "https://k.example/j", "exactly one"),
        ("private_key_jwt", {"keys": []}, None, "at least one"),
        ("private_key_jwt", {"keys": "no"}, None, "JWK set"),
        ("private_key_jwt", [key.jwk], None, "JWK set"),
        ("private_key_jwt", {"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "s"}]}, None, "symmetric"),
        ("private_key_jwt", {"keys": [{**key.jwk, "d": "private"}]}, None, "private key material"),
        ("private_key_jwt", {"keys": [{k: v for k, v in key.jwk.items() if k != "kid"}]}, None, "no kid"),
        ("tls_client_auth", None, None, "token_endpoint_auth_method"),
        (None, None, None, "token_endpoint_auth_method"),
    ]
    for method, keys, uri, problem in refused:
        with pytest.raises(InvalidRequestError, match=problem):
            check_client_keys(method, keys, uri)
