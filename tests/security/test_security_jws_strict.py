"""Unit level, no HTTP: the strict JWS rules of jwks_service.jws and the claim rules of jwks_service.tokens."""

from __future__ import annotations

import base64
import hmac
import json
import string
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import algorithms

from jwks_service.algorithms import ALGORITHMS
from jwks_service.crypto import KeyMismatchError, make_signer, make_verifier, public_key_from_jwk
from jwks_service.errors import InvalidTokenError
from jwks_service.jws import (
    FORBIDDEN_HEADERS,
    MAX_KID_CHARS,
    MAX_TOKEN_BYTES,
    VerificationKey,
    b64decode,
    b64encode,
    parse_compact,
    parse_json_object,
    verify_compact,
)
from jwks_service.tokens import check_claims, encode_header, encode_token, verify_access_token

ISSUER = "https://issuer.example"
SECRET = bytes(range(32))
KID = "k1"
NOW = 1_750_000_000


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256(message: bytes) -> bytes:
    return hmac.digest(SECRET, message, "sha256")


def keys() -> dict[str, VerificationKey]:
    return {KID: VerificationKey(KID, "HS256", make_verifier(ALGORITHMS["HS256"], SECRET))}


def token(header: dict[str, Any] | bytes | None = None, payload: bytes = b'{"a":1}') -> str:
    h = header if isinstance(header, bytes) else json.dumps(header or {"alg": "HS256", "kid": KID}).encode()
    signing_input = f"{b64(h)}.{b64(payload)}"
    return f"{signing_input}.{b64(hs256(signing_input.encode()))}"


def claims(**changes: Any) -> dict[str, Any]:
    base = {"iss": ISSUER, "sub": "c", "client_id": "c", "jti": "j", "aud": "api", "iat": NOW, "nbf": NOW}
    base["exp"] = NOW + 600
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def access_token(**changes: Any) -> str:
    return encode_token(encode_header("HS256", KID), claims(**changes), make_signer(ALGORITHMS["HS256"], SECRET))


# ----- base64url ---------------------------------------------------------------------------------


@settings(deadline=None)
@given(st.binary(max_size=200))
def test_b64_round_trip_matches_the_standard_library(data: bytes) -> None:
    encoded = b64encode(data)
    assert encoded == base64.urlsafe_b64encode(data).rstrip(b"=")
    assert b64decode(encoded) == data


@settings(deadline=None)
@given(st.binary(min_size=1, max_size=100).filter(lambda d: len(d) % 3 != 0), st.integers(1, 15))
def test_b64_non_zero_trailing_bits_are_refused(data: bytes, bits: int) -> None:
    """Two texts for one byte string would make two tokens of one signature (malleability)."""
    encoded = b64encode(data).decode()
    alphabet = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"
    unused = 4 if len(encoded) % 4 == 2 else 2
    flipped = alphabet.index(encoded[-1]) ^ (bits & ((1 << unused) - 1))
    if flipped == alphabet.index(encoded[-1]):
        return
    dirty = encoded[:-1] + alphabet[flipped]
    assert base64.urlsafe_b64decode(dirty + "==") == data  # a lenient decoder would take it
    with pytest.raises(InvalidTokenError):
        b64decode(dirty.encode())


@pytest.mark.parametrize(
    "segment",
    [
        b"YQ==",  # padding
        b"YQ=",
        b"YWI=",
        b"Y",  # impossible length
        b"YWJjZA=",
        b"+/+/",  # standard alphabet
        b"YW+j",
        b"YW/j",
        b"YW j",  # whitespace anywhere
        b" YWJj",
        b"YWJj\n",
        b"YWJj\r\n",
        b"YW\tj",
        b"YWJ\x00",
        b"YWJ\xc3\xa9",  # non-ASCII
        b"YWJ?",
        b"YWJ.",
    ],
)
def test_b64_refuses_non_canonical_text(segment: bytes) -> None:
    with pytest.raises(InvalidTokenError):
        b64decode(segment)


@pytest.mark.parametrize(
    ("segment", "data"), [(b"", b""), (b"YQ", b"a"), (b"YWI", b"ab"), (b"YWJj", b"abc"), (b"-_8", b"\xfb\xff")]
)
def test_b64_accepts_canonical_text(segment: bytes, data: bytes) -> None:
    assert b64decode(segment) == data


# ----- JSON -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a":1,"a":1}',
        b'{"a":1,"\\u0061":2}',
        b'{"x":{"a":1,"a":2}}',
        b'{"a":NaN}',
        b'{"a":Infinity}',
        b'{"a":-Infinity}',
        b'{"a":"\\ud800"}',  # lone surrogate: not I-JSON, and orjson could not echo it
        b'{"\\udc00":1}',
        b"[]",
        b'"x"',
        b"1",
        b"null",
        b"",
        b"{",
        b'{"a":1} x',
        b'{"a":"\xff"}',
        b"[" * 5000 + b"]" * 5000,
        b'{"a":' + b"[" * 5000 + b"]" * 5000 + b"}",
    ],
)
def test_json_objects_are_strict(raw: bytes) -> None:
    with pytest.raises(InvalidTokenError):
        parse_json_object(raw, "header")


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        (b'{"a":"\\ud83d\\ude00"}', {"a": "\U0001f600"}),  # an escaped surrogate pair is one code point
        (b'{"a":"\\u00e9","b":"\\\\u"}', {"a": "é", "b": "\\u"}),
        (b' { "a" : 1 } ', {"a": 1}),
        (b'{"a":1e400}', {"a": float("inf")}),  # numbers are checked where they are used (tokens._number)
    ],
)
def test_json_objects_that_are_fine(raw: bytes, value: dict[str, Any]) -> None:
    assert parse_json_object(raw, "payload") == value


# ----- parse_compact / verify_compact -----------------------------------------------------------


def test_control_a_well_formed_token_verifies() -> None:
    verified = verify_compact(token(), keys())
    assert verified.payload == b'{"a":1}'
    assert verified.header == {"alg": "HS256", "kid": KID}


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE", "NoNe"])
@pytest.mark.parametrize("signature", ["", "genuine"])
def test_alg_none_is_refused_in_any_case(alg: str, signature: str) -> None:
    forged = token({"alg": alg, "kid": KID})
    if not signature:
        forged = forged.rsplit(".", 1)[0] + "."
    with pytest.raises(InvalidTokenError):
        parse_compact(forged)


@pytest.mark.parametrize("name", sorted(FORBIDDEN_HEADERS))
def test_forbidden_header_parameters(name: str) -> None:
    with pytest.raises(InvalidTokenError, match="not accepted"):
        parse_compact(token({"alg": "HS256", "kid": KID, name: "x"}))


@pytest.mark.parametrize(
    "header",
    [
        {"kid": KID},
        {"alg": None, "kid": KID},
        {"alg": 256, "kid": KID},
        {"alg": "HS256"},
        {"alg": "HS256", "kid": ""},
        {"alg": "HS256", "kid": 1},
        {"alg": "HS256", "kid": [KID]},
        {"alg": "HS256", "kid": "k" * (MAX_KID_CHARS + 1)},
    ],
    ids=repr,
)
def test_header_needs_alg_and_a_usable_kid(header: dict[str, Any]) -> None:
    with pytest.raises(InvalidTokenError):
        parse_compact(token(header))


def test_kid_at_the_limit_is_parsed() -> None:
    parsed = parse_compact(token({"alg": "HS256", "kid": "k" * MAX_KID_CHARS}))
    assert parsed.header["kid"] == "k" * MAX_KID_CHARS


@pytest.mark.parametrize(
    "text",
    [
        "",
        ".",
        "..",
        "a.b",
        "a.b.c.d",
        "a..c.",
        ".e30.c2ln",
        "e30.e30.",
        "e30..c2ln",
        '{"payload":"e30","signatures":[]}',  # JSON serialisation
    ],
)
def test_not_compact(text: str) -> None:
    with pytest.raises(InvalidTokenError):
        verify_compact(text, keys())


def test_size_limits() -> None:
    good = token(payload=b'{"p":"' + b"x" * 5000 + b'"}')
    assert len(good) < MAX_TOKEN_BYTES
    verify_compact(good, keys())  # control
    big = token(payload=b'{"p":"' + b"x" * 6500 + b'"}')
    assert len(big) > MAX_TOKEN_BYTES
    with pytest.raises(InvalidTokenError, match="longer than"):
        verify_compact(big, keys())
    with pytest.raises(InvalidTokenError, match="longer than"):
        verify_compact(good, keys(), max_bytes=len(good) - 1)
    with pytest.raises(InvalidTokenError, match="header too large"):
        parse_compact(token({"alg": "HS256", "kid": KID, "pad": "x" * 1100}))
    parse_compact(token({"alg": "HS256", "kid": KID, "pad": "x" * 900}))  # control


@pytest.mark.parametrize("text", [" {t}", "{t} ", "{t}\n", "{t}\r\n", "\t{t}", "{t}é"])
def test_whitespace_and_non_ascii_around_a_token(text: str) -> None:
    with pytest.raises(InvalidTokenError):
        verify_compact(text.format(t=token()), keys())


def test_payload_segment_is_held_to_canonical_base64_even_under_a_valid_signature() -> None:
    """The signature covers the text, so a dirty payload segment signed as such still has to fail."""
    h64 = b64(b'{"alg":"HS256","kid":"k1"}')
    p64 = b64(b'{"a":1} ')  # 8 bytes: the last character carries 2 unused bits
    dirty = p64[:-1] + ("B" if p64[-1] == "A" else chr(ord(p64[-1]) + 1))
    assert base64.urlsafe_b64decode(dirty + "==") == base64.urlsafe_b64decode(p64 + "==")
    for payload in (p64, dirty):
        signing_input = f"{h64}.{payload}"
        signed = f"{signing_input}.{b64(hs256(signing_input.encode()))}"
        if payload == p64:
            assert verify_compact(signed, keys()).payload == b'{"a":1} '  # control
        else:
            with pytest.raises(InvalidTokenError, match="base64url"):
                verify_compact(signed, keys())


def test_the_key_never_runs_for_a_refused_header() -> None:
    """One algorithm per key: an alg mismatch or a forbidden header is refused before any crypto."""
    calls: list[bytes] = []

    def spy(data: bytes, sig: bytes) -> bool:
        calls.append(data)
        return True

    table = {KID: VerificationKey(KID, "RS256", spy)}
    for header in (
        {"alg": "HS256", "kid": KID},
        {"alg": "none", "kid": KID},
        {"alg": "RS256", "kid": KID, "jwk": {}},
        {"alg": "RS256", "kid": "other"},
    ):
        with pytest.raises(InvalidTokenError):
            verify_compact(token(header), table)
    assert calls == []
    verify_compact(token({"alg": "RS256", "kid": KID}), table)  # control: the spy does run
    assert len(calls) == 1


def test_hs256_signed_with_a_public_key_does_not_verify_against_that_key() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    private = ec.generate_private_key(ec.SECP256R1())
    public = private.public_key()
    pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    table = {KID: VerificationKey(KID, "ES256", make_verifier(ALGORITHMS["ES256"], public))}
    forged_input = b64(b'{"alg":"HS256","kid":"k1"}') + "." + b64(b"{}")
    forged = forged_input + "." + b64(hmac.digest(pem, forged_input.encode(), "sha256"))
    with pytest.raises(InvalidTokenError, match="does not match"):
        verify_compact(forged, table)
    # And an HMAC verifier cannot even be built over public key bytes shorter than the hash.
    with pytest.raises(KeyMismatchError):
        make_verifier(ALGORITHMS["HS512"], pem[:63])
    genuine_input = b64(b'{"alg":"ES256","kid":"k1"}') + "." + b64(b"{}")
    genuine = genuine_input + "." + b64(make_signer(ALGORITHMS["ES256"], private)(genuine_input.encode()))
    verify_compact(genuine, table)  # control


# ----- key import -------------------------------------------------------------------------------


EC_JWK = {
    "kty": "EC",
    "crv": "P-256",
    "x": "04N0xi21hshyvBp7I167sbE_bXqyqkAPfefdklMO7wY",
    "y": "UI8exy-C06a7DUnjIdENkxeFtHM4-l_41LqEw9nVgmw",
}


@pytest.mark.parametrize("ops", [["verify"], ["sign", "verify"], None])
def test_key_ops_allowing_verify_import(ops: list[str] | None) -> None:
    jwk = {**EC_JWK, **({"key_ops": ops} if ops is not None else {})}
    public_key_from_jwk("ES256", jwk)


@pytest.mark.parametrize("ops", [["encrypt"], ["sign"], [], "verify", ["wrapKey", "deriveKey"]], ids=repr)
def test_key_ops_without_verify_are_refused(ops: Any) -> None:
    with pytest.raises(KeyMismatchError, match="key_ops"):
        public_key_from_jwk("ES256", {**EC_JWK, "key_ops": ops})


@pytest.mark.parametrize(
    ("alg", "changes"),
    [
        ("ES256", {"alg": "ES384"}),
        ("ES256", {"use": "enc"}),
        ("ES256", {"kty": "RSA"}),
        ("ES256", {"crv": "P-384"}),
        ("ES384", {}),
        ("HS256", {}),
        ("RS256", {}),
        ("EdDSA", {}),
        ("none", {}),
        ("ES256K", {}),
    ],
    ids=repr,
)
def test_a_key_imports_only_for_its_one_alg(alg: str, changes: dict[str, Any]) -> None:
    with pytest.raises(KeyMismatchError):
        public_key_from_jwk(alg, {**EC_JWK, **changes})


# ----- claims -----------------------------------------------------------------------------------


def verify(tok: str, *, now: float = NOW, leeway: float = 30, audiences: list[str] | None = None) -> dict[str, Any]:
    return verify_access_token(tok, keys(), issuer=ISSUER, audiences=audiences, now=now, leeway=leeway).claims


def test_control_access_token_verifies() -> None:
    assert verify(access_token())["sub"] == "c"


@pytest.mark.parametrize(
    "changes",
    [
        {"exp": "1750000600"},
        {"exp": True},
        {"exp": float("nan")},
        {"exp": float("inf")},
        {"exp": 10**400},
        {"exp": -(10**400)},
        {"iat": 10**400},
        {"nbf": 10**400},
        {"nbf": "0"},
        {"iat": [NOW]},
        {"exp": NOW - 30},
        {"exp": NOW - 1, "iat": NOW},
        {"nbf": NOW + 31},
        {"iat": NOW + 31},
        {"iss": ISSUER + "/"},
        {"iss": ISSUER.upper()},
        {"sub": 5},
        {"scope": ["a"]},
    ],
    ids=repr,
)
def test_claims_that_are_refused(changes: dict[str, Any]) -> None:
    # The standard json module writes what orjson refuses (NaN, 400-digit integers), as another issuer might.
    payload = json.dumps(claims(**changes)).encode()
    tok = token({"alg": "HS256", "kid": KID, "typ": "at+jwt"}, payload)
    verify(token({"alg": "HS256", "kid": KID, "typ": "at+jwt"}, json.dumps(claims()).encode()))  # control
    with pytest.raises(InvalidTokenError):
        verify(tok)


@pytest.mark.parametrize(
    ("aud", "audiences", "ok"),
    [
        ("api", ["api"], True),
        (["x", "api"], ["api"], True),
        ("api", ["other"], False),
        ("API", ["api"], False),
        ([], ["api"], False),
        ([1], ["api"], False),
        (None, ["api"], False),
        ({"api": True}, ["api"], False),
        ("whatever", None, True),  # introspection checks no audience
    ],
    ids=repr,
)
def test_audience(aud: Any, audiences: list[str] | None, ok: bool) -> None:
    tok = access_token(aud=aud)  # aud=None leaves the claim out
    if ok:
        verify(tok, audiences=audiences)
    else:
        with pytest.raises(InvalidTokenError, match="audience"):
            verify(tok, audiences=audiences)


@settings(max_examples=200, deadline=None)
@given(
    exp=st.integers(NOW - 10_000, NOW + 10_000) | st.floats(NOW - 10_000, NOW + 10_000),
    leeway=st.integers(0, 300),
)
def test_exp_rule_is_now_before_exp_plus_leeway(exp: float, leeway: int) -> None:
    """RFC 7519 §4.1.4 with leeway: valid exactly while now < exp + leeway."""
    base = {"iss": ISSUER, "iat": min(exp, NOW - 20_000), "exp": exp}
    valid = NOW < exp + leeway
    if valid:
        check_claims(base, issuer=ISSUER, audiences=None, now=NOW, leeway=leeway)
    else:
        with pytest.raises(InvalidTokenError, match="expired"):
            check_claims(base, issuer=ISSUER, audiences=None, now=NOW, leeway=leeway)


@settings(max_examples=200, deadline=None)
@given(nbf=st.integers(NOW - 1000, NOW + 1000), iat=st.integers(NOW - 1000, NOW + 1000), leeway=st.integers(0, 120))
def test_nbf_and_iat_in_the_future_beyond_leeway_are_refused(nbf: int, iat: int, leeway: int) -> None:
    base = {"iss": ISSUER, "iat": iat, "nbf": nbf, "exp": NOW + 5000}
    valid = nbf <= NOW + leeway and iat <= NOW + leeway
    if valid:
        check_claims(base, issuer=ISSUER, audiences=None, now=NOW, leeway=leeway)
    else:
        with pytest.raises(InvalidTokenError):
            check_claims(base, issuer=ISSUER, audiences=None, now=NOW, leeway=leeway)


@pytest.mark.parametrize("typ", ["at+jwt", "AT+JWT", "application/at+jwt", "APPLICATION/AT+JWT"])
def test_typ_accepted(typ: str) -> None:
    payload = json.dumps(claims()).encode()
    verify(token({"alg": "HS256", "kid": KID, "typ": typ}, payload))


@pytest.mark.parametrize("typ", ["JWT", "jwt", "at+jwt ", "application/jwt", "", None, 1, ["at+jwt"]], ids=repr)
def test_typ_refused(typ: Any) -> None:
    payload = json.dumps(claims()).encode()
    header = {"alg": "HS256", "kid": KID, **({"typ": typ} if typ is not None else {})}
    with pytest.raises(InvalidTokenError, match="typ"):
        verify(token(header, payload))


@pytest.mark.parametrize("alg", algorithms("EC"))
def test_ecdsa_signatures_are_exactly_r_and_s_of_the_coordinate_size(alg: str) -> None:
    """RFC 7518 §3.4: a fixed-size r || s. A zero byte slipped in front of s keeps both integers the
    same, so only the length check stops a second valid encoding of one signature (malleability)."""
    from cryptography.hazmat.primitives.asymmetric import ec

    curve, size = {"ES256": (ec.SECP256R1(), 32), "ES384": (ec.SECP384R1(), 48), "ES512": (ec.SECP521R1(), 66)}[alg]
    private = ec.generate_private_key(curve)
    verify_sig = make_verifier(ALGORITHMS[alg], private.public_key())
    message = b"header.payload"
    signature = make_signer(ALGORITHMS[alg], private)(message)
    assert len(signature) == 2 * size
    assert verify_sig(message, signature)  # control
    r, s = signature[:size], signature[size:]
    for variant in (r + b"\0" + s, b"\0" + r + s, b"\0" + r + b"\0" + s, signature + b"\0", signature[:-1], b""):
        assert not verify_sig(message, variant), variant.hex()
