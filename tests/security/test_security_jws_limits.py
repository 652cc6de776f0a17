"""Every size bound of a token, at exactly the limit (accepted) and one byte over (refused).

The bounds: the decoded header (``jws.MAX_HEADER_BYTES``), the decoded payload
(``sdk.rules.MAX_PAYLOAD_BYTES``) and the whole compact token (``jws.MAX_TOKEN_BYTES`` or the
verifier's own ``max_bytes`` / ``max_token_bytes``), for the server's verifier (``jws`` +
``tokens``) and the SDK's (``sdk.rules``), which share them. No I/O.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable
from typing import Any

import pytest
from support import es256_keypair

from jwks_service.algorithms import ALGORITHMS
from jwks_service.crypto import make_signer, make_verifier
from jwks_service.errors import InvalidTokenError
from jwks_service.jws import (
    MAX_HEADER_BYTES,
    MAX_TOKEN_BYTES,
    VerificationKey,
    b64encode,
    parse_compact,
    verify_compact,
)
from jwks_service.sdk import MalformedTokenError, TokenTooLargeError, Verifier
from jwks_service.sdk.rules import MAX_PAYLOAD_BYTES
from jwks_service.tokens import verify_access_token

ISSUER = "https://issuer.example"
NOW = 1_750_000_000
SECRET = bytes(range(32))
KID = "k1"

Sign = Callable[[bytes], bytes]


def _hs256(message: bytes) -> bytes:
    return hmac.digest(SECRET, message, "sha256")


def _compact(header: dict[str, Any], payload: bytes, sign: Sign) -> bytes:
    signing_input = b64encode(json.dumps(header, separators=(",", ":")).encode()) + b"." + b64encode(payload)
    return signing_input + b"." + b64encode(sign(signing_input))


def _padded(base: dict[str, Any], size: int) -> bytes:
    """`base` as compact JSON with a "pad" member that makes it exactly `size` bytes."""
    empty = len(json.dumps({**base, "pad": ""}, separators=(",", ":")))
    raw = json.dumps({**base, "pad": "x" * (size - empty)}, separators=(",", ":")).encode()
    assert len(raw) == size
    return raw


def _header_of(size: int, alg: str = "HS256", kid: str = KID) -> dict[str, Any]:
    return json.loads(_padded({"alg": alg, "kid": kid, "typ": "at+jwt"}, size))


def _claims() -> dict[str, Any]:
    return {
        "iss": ISSUER,
        "sub": "c",
        "client_id": "c",
        "jti": "j",
        "aud": "api",
        "iat": NOW,
        "nbf": NOW,
        "exp": NOW + 600,
        "scope": "read",
    }


def _token_of(size: int, sign: Sign = _hs256, alg: str = "HS256", kid: str = KID) -> bytes:
    """A token of exactly `size` bytes: base64url lengths move in steps of 1-2, so try a few
    header and payload paddings until the total fits."""
    smallest = len(json.dumps({"alg": alg, "kid": kid, "typ": "at+jwt", "pad": ""}, separators=(",", ":")))
    for header_size in range(smallest, smallest + 4):
        for extra in range(4):
            header = _header_of(header_size, alg, kid)
            overhead = len(_compact(header, b"", sign))
            payload_chars = size - overhead
            payload_size = payload_chars * 3 // 4 - extra
            if payload_size < 2:
                continue
            token = _compact(header, _padded({}, payload_size), sign)
            if len(token) == size:
                return token
    raise AssertionError(f"no token of exactly {size} bytes")


def server_keys() -> dict[str, VerificationKey]:
    return {KID: VerificationKey(KID, "HS256", make_verifier(ALGORITHMS["HS256"], SECRET))}


# ----- the server: jws.parse_compact / verify_compact, tokens.verify_access_token ---------------


def test_server_header_at_the_limit_and_one_byte_over() -> None:
    at = _compact(_header_of(MAX_HEADER_BYTES), b"{}", _hs256)
    assert len(parse_compact(at).header["pad"]) > 900
    verify_compact(at, server_keys())
    over = _compact(_header_of(MAX_HEADER_BYTES + 1), b"{}", _hs256)
    with pytest.raises(InvalidTokenError, match="header too large"):
        parse_compact(over)


@pytest.mark.parametrize("over", [1, 2, 3])
def test_server_header_just_over_the_limit_is_refused_whatever_its_base64_length(over: int) -> None:
    """1025, 1026 and 1027 bytes encode to 1367, 1368 and 1370 characters: each one is refused."""
    with pytest.raises(InvalidTokenError, match="header too large"):
        parse_compact(_compact(_header_of(MAX_HEADER_BYTES + over), b"{}", _hs256))


def test_server_token_at_the_limit_and_one_byte_over() -> None:
    at = _token_of(MAX_TOKEN_BYTES)
    assert len(at) == MAX_TOKEN_BYTES
    verify_compact(at, server_keys())
    over = _token_of(MAX_TOKEN_BYTES + 1)
    with pytest.raises(InvalidTokenError, match=f"longer than {MAX_TOKEN_BYTES} bytes"):
        verify_compact(over, server_keys())


def test_server_token_at_a_custom_limit_and_one_byte_over() -> None:
    token = _token_of(500)
    verify_compact(token, server_keys(), max_bytes=500)
    with pytest.raises(InvalidTokenError, match="longer than 499 bytes"):
        verify_compact(token, server_keys(), max_bytes=499)


def test_server_payload_at_the_limit_and_one_byte_over() -> None:
    header = {"alg": "HS256", "kid": KID, "typ": "at+jwt"}
    at = _compact(header, _padded(_claims(), MAX_PAYLOAD_BYTES), _hs256)
    verified = verify_access_token(at, server_keys(), issuer=ISSUER, audiences=["api"], now=NOW, leeway=0)
    assert verified.claims["sub"] == "c"
    over = _compact(header, _padded(_claims(), MAX_PAYLOAD_BYTES + 1), _hs256)
    with pytest.raises(InvalidTokenError, match="payload too large"):
        verify_access_token(over, server_keys(), issuer=ISSUER, audiences=["api"], now=NOW, leeway=0)


# ----- the SDK: sdk.rules through Verifier.verify ----------------------------------------------


def _es256() -> tuple[Sign, dict[str, Any]]:
    private, jwk = es256_keypair()
    return make_signer(ALGORITHMS["ES256"], private), jwk


@pytest.fixture(scope="module")
def es256() -> tuple[Sign, dict[str, Any]]:
    return _es256()


def _verifier(jwk: dict[str, Any], **options: Any) -> Verifier:
    return Verifier(ISSUER, "api", jwks={"keys": [jwk]}, clock=lambda: float(NOW), **options)


def test_sdk_header_at_the_limit_and_one_byte_over(es256: tuple[Sign, dict[str, Any]]) -> None:
    sign, jwk = es256
    payload = json.dumps(_claims()).encode()
    at = _compact(_header_of(MAX_HEADER_BYTES, "ES256", jwk["kid"]), payload, sign)
    assert _verifier(jwk).verify(at)["sub"] == "c"
    for over in (1, 2, 3):
        token = _compact(_header_of(MAX_HEADER_BYTES + over, "ES256", jwk["kid"]), payload, sign)
        with pytest.raises(MalformedTokenError, match="header too large"):
            _verifier(jwk).verify(token)


def test_sdk_payload_at_the_limit_and_one_byte_over(es256: tuple[Sign, dict[str, Any]]) -> None:
    sign, jwk = es256
    header = {"alg": "ES256", "kid": jwk["kid"], "typ": "at+jwt"}
    at = _compact(header, _padded(_claims(), MAX_PAYLOAD_BYTES), sign)
    assert _verifier(jwk).verify(at)["sub"] == "c"
    over = _compact(header, _padded(_claims(), MAX_PAYLOAD_BYTES + 1), sign)
    with pytest.raises(MalformedTokenError, match="payload too large"):
        _verifier(jwk).verify(over)


def test_sdk_token_at_the_limit_and_one_byte_over(es256: tuple[Sign, dict[str, Any]]) -> None:
    sign, jwk = es256
    at = _token_of(MAX_TOKEN_BYTES, sign, "ES256", jwk["kid"])
    verifier = _verifier(jwk)
    split = verifier.rules.split(at)  # the size and form pass; its 6 KB payload is over the payload bound
    assert split.kid == jwk["kid"]
    with pytest.raises(MalformedTokenError, match="payload too large"):
        verifier.verify(at)
    with pytest.raises(TokenTooLargeError, match=f"longer than {MAX_TOKEN_BYTES} bytes"):
        verifier.verify(_token_of(MAX_TOKEN_BYTES + 1, sign, "ES256", jwk["kid"]))


def test_sdk_token_at_a_custom_limit_and_one_byte_over(es256: tuple[Sign, dict[str, Any]]) -> None:
    sign, jwk = es256
    header = {"alg": "ES256", "kid": jwk["kid"], "typ": "at+jwt"}
    token = _compact(header, json.dumps(_claims()).encode(), sign)
    assert _verifier(jwk, max_token_bytes=len(token)).verify(token)["sub"] == "c"
    with pytest.raises(TokenTooLargeError, match=f"longer than {len(token) - 1} bytes"):
        _verifier(jwk, max_token_bytes=len(token) - 1).verify(token)
