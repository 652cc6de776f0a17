"""Verifier.verify rules on a fixed key set (no I/O), the SSE parser, and the server's key events."""

from __future__ import annotations

import functools
import json
import time
from typing import Any

import pytest

from jwks_service import errors, tokens
from jwks_service import events as key_events
from jwks_service.algorithms import ALGORITHMS
from jwks_service.crypto import generate_private_key, make_signer, public_jwk
from jwks_service.jws import b64encode
from jwks_service.model import Keyset, KeyState, KeyVersion
from jwks_service.sdk import (
    ExpiredTokenError,
    ImmatureTokenError,
    InvalidAudienceError,
    InvalidClaimsError,
    InvalidIssuerError,
    InvalidSignatureError,
    InvalidTokenError,
    InvalidTypeError,
    MalformedTokenError,
    SDKError,
    TokenTooLargeError,
    UnknownKeyError,
    UnsupportedAlgorithmError,
    Verifier,
)
from jwks_service.sdk.sse import MAX_LINE_CHARS, LineTooLongError, SSELines, SSEParser

ISSUER = "https://issuer.example"
NOW = 1_800_000_000.0
ASYMMETRIC = [a for a, alg in ALGORITHMS.items() if not alg.symmetric]


@functools.cache
def keypair(alg: str) -> tuple[Any, dict[str, Any]]:
    private = generate_private_key(ALGORITHMS[alg], ALGORITHMS[alg].default_key_bits)
    jwk, thumbprint = public_jwk(ALGORITHMS[alg], private)  # type: ignore[arg-type]
    return private, {**jwk, "kid": f"{alg}-{thumbprint[:8]}", "alg": alg, "use": "sig"}


def claims(**over: Any) -> dict[str, Any]:
    base = {
        "iss": ISSUER,
        "sub": "c1",
        "client_id": "c1",
        "aud": "api",
        "iat": int(NOW),
        "nbf": int(NOW),
        "exp": int(NOW) + 300,
        "jti": "j1",
        "scope": "read",
    }
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


def mint(alg: str = "ES256", body: dict[str, Any] | None = None, **header: Any) -> str:
    private, jwk = keypair(alg)
    head = {"alg": alg, "kid": jwk["kid"], "typ": "at+jwt", **header}
    head = {k: v for k, v in head.items() if v is not None}
    signing_input = b64encode(json.dumps(head).encode()) + b"." + b64encode(json.dumps(body or claims()).encode())
    signature = make_signer(ALGORITHMS[alg], private)(signing_input)
    return (signing_input + b"." + b64encode(signature)).decode()


def verifier(**options: Any) -> Verifier:
    jwks = {"keys": [keypair(a)[1] for a in ("ES256", "RS256", "EdDSA", "PS256")]}
    return Verifier(ISSUER, "api", jwks=jwks, clock=lambda: NOW, **options)


@pytest.mark.parametrize(
    ("token", "refused"),
    [
        (lambda: mint(body=claims(exp=int(NOW) - 60)), ExpiredTokenError),
        (lambda: mint(body=claims(iat=int(NOW) + 600)), ImmatureTokenError),
        (lambda: mint(body=claims(iss="https://other.example")), InvalidIssuerError),
        (lambda: mint(body=claims(aud="other")), InvalidAudienceError),
        (lambda: mint(typ="JWT"), InvalidTypeError),
        (lambda: mint(kid="nobody"), UnknownKeyError),
        (lambda: mint(jku="https://evil.example/jwks"), MalformedTokenError),
        (lambda: mint()[:-8] + "AAAAAAAA", InvalidSignatureError),
    ],
)
def test_the_server_and_the_sdk_refuse_with_one_error_tree(token: Any, refused: type[Exception]) -> None:
    """One JOSE core: the server's verifier (tokens.verify_access_token) and the SDK's raise the same
    classes, which are the server's InvalidTokenError (401 invalid_token) and the SDK's names at once."""
    assert errors.InvalidTokenError is InvalidTokenError and SDKError is errors.JoseError
    value = token()
    keys = {kid: key for kid, key in verifier().cache.keys.items()}
    with pytest.raises(refused) as server:
        tokens.verify_access_token(value, keys, issuer=ISSUER, audiences={"api"}, now=NOW, leeway=30)
    with pytest.raises(refused):
        verifier().verify(value)
    assert isinstance(server.value, errors.JwksServiceError) and server.value.status == 401
    assert server.value.as_dict()["error"] == "invalid_token"


@pytest.mark.parametrize("alg", ASYMMETRIC)
def test_every_asymmetric_alg_verifies(alg: str) -> None:
    jwks = {"keys": [keypair(alg)[1]]}
    v = Verifier(ISSUER, "api", jwks=jwks, clock=lambda: NOW)
    assert v.verify(mint(alg))["sub"] == "c1"
    assert v.verify(mint(alg).encode())["jti"] == "j1"


@pytest.mark.parametrize(
    ("token_of", "error"),
    [
        (lambda: mint(body=claims(exp=int(NOW) - 31, iat=int(NOW) - 300)), ExpiredTokenError),
        (lambda: mint(body=claims(nbf=int(NOW) + 31)), ImmatureTokenError),
        (lambda: mint(body=claims(iat=int(NOW) + 31)), ImmatureTokenError),
        (lambda: mint(body=claims(iss=ISSUER + "/")), InvalidIssuerError),
        (lambda: mint(body=claims(aud="other")), InvalidAudienceError),
        (lambda: mint(body=claims(aud=[])), InvalidAudienceError),
        (lambda: mint(body=claims(jti=None)), InvalidClaimsError),
        (lambda: mint(body=claims(exp="soon")), InvalidClaimsError),
        (lambda: mint(body=claims(exp=True)), InvalidClaimsError),
        (lambda: mint(body=claims(sub=5)), InvalidClaimsError),
        (lambda: mint(typ="JWT"), InvalidTypeError),
        (lambda: mint(typ=None), InvalidTypeError),
        (lambda: mint(alg="ES256", jku="https://evil.example/jwks"), MalformedTokenError),
        (lambda: mint(alg="ES256", jwk={"kty": "EC"}), MalformedTokenError),
        (lambda: mint(alg="ES256", crit=["exp"]), MalformedTokenError),
        (lambda: mint(alg="ES256", kid=""), MalformedTokenError),
        (lambda: mint(alg="ES256", kid="nope"), UnknownKeyError),
        (lambda: mint("ES384"), UnsupportedAlgorithmError),  # not in algorithms=
        (lambda: "a.b", MalformedTokenError),
        (lambda: "a.b.c.d", MalformedTokenError),
        (lambda: "x" * 9000, TokenTooLargeError),
        (lambda: "é.é.é", MalformedTokenError),
        (lambda: mint()[:-4] + "AAAA", InvalidSignatureError),
        (lambda: mint() + "=", MalformedTokenError),
    ],
)
def test_refusals_are_typed(token_of: Any, error: type[InvalidTokenError]) -> None:
    v = verifier(algorithms=["ES256", "RS256", "EdDSA", "PS256"])
    with pytest.raises(error):
        v.verify(token_of())


def test_leeway_is_applied_both_ways() -> None:
    v = verifier(leeway=30)
    assert v.verify(mint(body=claims(exp=int(NOW) - 29, iat=int(NOW) - 300, nbf=int(NOW) - 300)))
    assert v.verify(mint(body=claims(nbf=int(NOW) + 29)))
    strict = verifier(leeway=0)
    with pytest.raises(ExpiredTokenError):
        strict.verify(mint(body=claims(exp=int(NOW), iat=int(NOW) - 300, nbf=int(NOW) - 300)))


def test_alg_none_and_hmac_confusion_are_refused() -> None:
    v = verifier()
    _, jwk = keypair("RS256")
    head = b64encode(json.dumps({"alg": "none", "kid": jwk["kid"], "typ": "at+jwt"}).encode())
    with pytest.raises(UnsupportedAlgorithmError):
        v.verify((head + b"." + b64encode(json.dumps(claims()).encode()) + b".c2ln").decode())
    # HS256 "signed" with the RSA public key's JWK text: HS256 is not allowed without introspection.
    with pytest.raises(UnsupportedAlgorithmError):
        v.verify(mint("RS256").replace(mint("RS256").split(".")[0], _header("HS256", jwk["kid"])))


def _header(alg: str, kid: str) -> str:
    return b64encode(json.dumps({"alg": alg, "kid": kid, "typ": "at+jwt"}).encode()).decode()


def test_one_algorithm_per_key() -> None:
    v = verifier()
    _, es = keypair("ES256")
    _, ps = keypair("PS256")
    # An RS256 signature presented under the PS256 key's kid: the header alg is not the key's alg.
    token = mint("RS256", kid=ps["kid"])
    with pytest.raises(UnsupportedAlgorithmError):
        v.verify(token)
    with pytest.raises(UnsupportedAlgorithmError):
        v.verify(mint("EdDSA", kid=es["kid"]))


def test_audience_list_and_typ_variants() -> None:
    v = verifier()
    assert v.verify(mint(body=claims(aud=["x", "api"])))
    assert v.verify(mint(typ="application/AT+JWT"))
    plain = verifier(typ=None, required_claims=())
    assert plain.verify(mint(typ="JWT", body=claims(jti=None, client_id=None)))


def test_duplicate_json_members_are_refused() -> None:
    private, jwk = keypair("ES256")
    head = b64encode(json.dumps({"alg": "ES256", "kid": jwk["kid"], "typ": "at+jwt"}).encode())
    payload = json.dumps(claims())[:-1] + ', "iss": "https://evil.example"}'
    signing_input = head + b"." + b64encode(payload.encode())
    token = (signing_input + b"." + b64encode(make_signer(ALGORITHMS["ES256"], private)(signing_input))).decode()
    with pytest.raises(MalformedTokenError, match="duplicate"):
        verifier().verify(token)


def test_header_cache_does_not_skip_checks_for_other_headers() -> None:
    v = verifier()
    assert v.verify(mint())
    with pytest.raises(MalformedTokenError):
        v.verify(mint(x5u="https://evil.example"))
    assert v.verify(mint())


def test_hmac_needs_introspection() -> None:
    with pytest.raises(ValueError, match="introspection"):
        Verifier(ISSUER, "api", algorithms=["HS256"])
    with pytest.raises(ValueError, match="unsupported"):
        Verifier(ISSUER, "api", algorithms=["RSA1_5"])


# ----- SSE ------------------------------------------------------------------------------------


def feed(parser: SSEParser, text: str) -> list[Any]:
    return [e for line in text.split("\n") if (e := parser.feed(line)) is not None]


def test_sse_parser() -> None:
    p = SSEParser()
    got = feed(p, "retry: 2000\n: comment\n\nid: 7-ready\nevent: ready\ndata: {}\n\ndata: a\ndata:b\n\n")
    assert [(e.event, e.data, e.id) for e in got] == [("ready", "{}", "7-ready"), ("message", "a\nb", None)]
    assert p.last_id == "7-ready"
    assert p.retry_ms == 2000
    assert feed(p, "event: x\n\n") == []  # no data: no event
    assert feed(p, "data: " + "x" * 70_000 + "\n\n") == []  # oversized
    assert feed(p, "id: a\0b\ndata: 1\n\n")[0].id is None  # NUL in id: ignored
    assert p.last_id == "7-ready"


@pytest.mark.parametrize(
    "chunks",
    [
        ["a\nb\n\nc\n"],
        ["a\r\nb\r\n\r\nc\r\n"],
        ["a\rb\r\rc\r"],
        ["a\r", "\nb\r", "\n\r", "\nc\r", "\n"],  # CRLF split across chunks: one line break, not two
        ["a", "\n", "b", "\r\n\r", "\nc\n"],
        ["a\nb", "", "\n\nc", "\n"],
    ],
)
def test_sse_lines_split_on_crlf_lf_and_cr(chunks: list[str]) -> None:
    """WHATWG event streams end a line with CRLF, LF or CR (and nothing else: no str.splitlines)."""
    lines = SSELines()
    assert [line for chunk in chunks for line in lines.feed(chunk)] == ["a", "b", "", "c"]
    assert SSELines().feed("a\x0bb\x1cc\u2028d\n") == ["a\x0bb\x1cc\u2028d"]


def test_sse_lines_are_bounded() -> None:
    """A line that never ends (a broken or hostile stream) is refused instead of filling memory."""
    lines = SSELines()
    assert lines.feed("x" * MAX_LINE_CHARS) == []
    assert lines.feed("\n") == ["x" * MAX_LINE_CHARS]
    for _ in range(MAX_LINE_CHARS // 1000):
        assert lines.feed("y" * 1000) == []  # held, under the bound
    with pytest.raises(LineTooLongError):
        lines.feed("y" * 1000)
    with pytest.raises(LineTooLongError):
        SSELines().feed("z" * (MAX_LINE_CHARS + 1) + "\n")


# ----- the server's key events ----------------------------------------------------------------


def kv(kid: str, state: KeyState, created: float, **more: Any) -> KeyVersion:
    return KeyVersion(kid=kid, keyset="default", alg="ES256", state=state, created_at=created, **more)


def test_events_are_read_off_key_timestamps_and_diffs_are_exact() -> None:
    t = time.time()
    v1 = Keyset(
        "default",
        "ES256",
        "local",
        3,
        (kv("k1", KeyState.CURRENT, t, activated_at=t), kv("k2", KeyState.NEXT, t)),
    )
    v2 = Keyset(
        "default",
        "ES256",
        "local",
        4,
        (
            kv("k1", KeyState.REVOKED, t, activated_at=t, revoked_at=t + 10),
            kv("k2", KeyState.CURRENT, t, activated_at=t + 10),
            kv("k3", KeyState.NEXT, t + 10),
        ),
    )
    first = key_events.diff(None, v1)
    assert [(e.type, e.kid) for e in first] == [("rotated", "k1"), ("created", "k1"), ("created", "k2")]
    changes = key_events.diff(v1, v2)
    # One instant: the revocation first, then the promotion, then the new next key.
    assert [(e.type, e.kid, e.revision) for e in changes] == [
        ("revoked", "k1", 4),
        ("rotated", "k2", 4),
        ("created", "k3", 4),
    ]
    assert key_events.diff(v2, v2) == []
    assert key_events.diff_all({"default": v1}, {"default": v2}) == changes
    # Resume: everything from shortly before the given moment, the same ids a live stream gave.
    resumed = key_events.since([v2], changes[0].micros)
    assert [e.id for e in resumed if e.micros >= changes[0].micros] == [e.id for e in changes]
    assert key_events.parse_event_id(changes[0].id) == changes[0].micros
    for bad in ("", "abc", "-1-x", "9" * 30, "²", "1²-x", "١٢٣"):  # isdigit() but not ASCII digits
        assert key_events.parse_event_id(bad) is None
    data = changes[0].as_dict()
    assert data["type"] == "revoked" and data["kid"] == "k1" and data["at"].endswith("Z")


def test_each_verifier_takes_its_own_kind_of_http_client() -> None:
    import httpx

    from jwks_service.sdk import AsyncVerifier

    with pytest.raises(TypeError, match=r"^Verifier takes an httpx\.Client"):
        Verifier(ISSUER, "api", http=httpx.AsyncClient())
    with pytest.raises(TypeError, match=r"^AsyncVerifier takes an httpx\.AsyncClient"):
        AsyncVerifier(ISSUER, "api", http=httpx.Client())
    given = httpx.Client()
    with Verifier(ISSUER, "api", http=given) as v:
        assert v.http is given
    assert not given.is_closed  # a client passed in is the caller's to close
    given.close()
