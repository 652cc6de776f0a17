"""RFC 8725 attacks against the server's verifier: through POST /oauth/introspect, and against
jwks_service.tokens.verify_access_token directly, with the same table of forged tokens.

Every forged token must introspect as exactly ``{"active": false}``; the table also holds positive
controls built by the same helpers (``active=True``), so a helper that produced garbage would show.
Tokens with chosen claims are signed with the server's own current keys (the attacker's best case:
only the rule under test stands between the token and acceptance).

Behaviour pinned here on purpose (documented, so a change is deliberate):
- ``typ`` is compared case-insensitively and ``application/at+jwt`` is accepted (RFC 9068 §4 names
  the media type; media types are case-insensitive, RFC 2045 §5.1); anything else, or none, is refused.
- ``exp`` with leeway L: active while ``now < exp + L`` (so ``exp == now`` is still active);
  ``nbf``/``iat`` refused once they are more than L in the future; fractional NumericDates are fine
  (RFC 7519 §2); a huge but finite ``exp`` is accepted (the token bears our signature; nothing bounds it).
- unknown header parameters (``cty``, ``foo``) are refused, not ignored: our tokens carry only
  alg, kid and typ.
"""

from __future__ import annotations

import base64
import datetime
import hmac
import json
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509.oid import NameOID
from starlette.testclient import TestClient

from jwks_service.algorithms import ALGORITHMS
from jwks_service.clock import ManualClock
from jwks_service.crypto import PublicKey, make_signer, public_jwk, public_key_from_jwk
from jwks_service.errors import InvalidTokenError
from jwks_service.jwks import public_keys
from jwks_service.jws import b64encode
from jwks_service.runtime import Runtime
from jwks_service.snapshot import SigningKey
from jwks_service.tokens import verify_access_token

ISSUER = "http://127.0.0.1:8000"  # the issuer in conftest.raw_settings
DROP = object()  # a claim or header member to leave out


def b64(data: bytes) -> str:
    return b64encode(data).decode()


def compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


@dataclass
class Kit:
    """The attacker's and the tester's tools, over one running runtime."""

    rt: Runtime
    client_id: str
    secret: str
    attacker: ec.EllipticCurvePrivateKey
    leeway: int = 30

    @property
    def now(self) -> float:
        return self.rt.clock.now()

    def key(self, keyset: str = "default") -> SigningKey:
        return self.rt.keys.snapshot.signing[keyset]

    def published(self, keyset: str) -> dict[str, Any]:
        """The current key's JWK exactly as /.well-known/jwks.json serves it."""
        kid = self.key(keyset).kid
        return next(j for j in public_keys(self.rt.keys.snapshot.keysets.values()) if j["kid"] == kid)

    def public_key(self, keyset: str) -> PublicKey:
        jwk = self.published(keyset)
        key = public_key_from_jwk(jwk["alg"], jwk)
        assert not isinstance(key, bytes)
        return key

    def hmac_kid(self) -> str:
        return self.key("hmac").kid

    def claims(self, **changes: Any) -> dict[str, Any]:
        now = int(self.now)
        base: dict[str, Any] = {
            "iss": ISSUER,
            "sub": self.client_id,
            "aud": "api",
            "exp": now + 600,
            "iat": now,
            "nbf": now,
            "jti": secrets.token_urlsafe(16),
            "client_id": self.client_id,
            "scope": "read introspect",
        }
        base.update(changes)
        return {k: v for k, v in base.items() if v is not DROP}

    def header(self, keyset: str = "default", **changes: Any) -> dict[str, Any]:
        key = self.key(keyset)
        base: dict[str, Any] = {"alg": key.alg, "kid": key.kid, "typ": "at+jwt"}
        base.update(changes)
        return {k: v for k, v in base.items() if v is not DROP}

    def jwt(
        self,
        header: dict[str, Any] | bytes | None = None,
        claims: dict[str, Any] | bytes | None = None,
        *,
        keyset: str = "default",
        sign: Callable[[bytes], bytes] | None = None,
    ) -> str:
        """Sign header.payload (JSON built here, or raw bytes as given) with the keyset's current key."""
        h = header if isinstance(header, bytes) else compact(header if header is not None else self.header(keyset))
        p = claims if isinstance(claims, bytes) else compact(claims if claims is not None else self.claims())
        return self.sign_segments(b64(h), b64(p), keyset=keyset, sign=sign)

    def sign_segments(
        self, h64: str, p64: str, *, keyset: str = "default", sign: Callable[[bytes], bytes] | None = None
    ) -> str:
        signing_input = f"{h64}.{p64}".encode()
        signature = (sign or self.key(keyset).sign)(signing_input)
        return f"{h64}.{p64}.{b64(signature)}"

    def hs256_with(self, secret: bytes, kid: str, claims: dict[str, Any] | None = None) -> str:
        return self.jwt({"alg": "HS256", "kid": kid, "typ": "at+jwt"}, claims, sign=lambda m: hmac_sha256(secret, m))

    def attacker_jwk(self) -> tuple[dict[str, Any], str]:
        jwk, thumbprint = public_jwk(ALGORITHMS["ES256"], self.attacker)
        return {**jwk, "kid": thumbprint, "alg": "ES256", "use": "sig"}, thumbprint

    def attacker_sign(self, message: bytes) -> bytes:
        return make_signer(ALGORITHMS["ES256"], self.attacker)(message)

    def attacker_cert(self) -> str:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "attacker.example")])
        start = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.attacker.public_key())
            .serial_number(1)
            .not_valid_before(start)
            .not_valid_after(start + datetime.timedelta(days=36500))
            .sign(self.attacker, hashes.SHA256())
        )
        return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()

    def with_urlsafe_chars(self, keyset: str = "default") -> str:
        """A genuine token whose signature segment holds '-' or '_' (ECDSA is randomised: re-sign)."""
        for _ in range(200):
            token = self.jwt(keyset=keyset)
            if set(token.rsplit(".", 1)[1]) & set("-_"):
                return token
        raise AssertionError("no signature with '-' or '_' in 200 tries")


def hmac_sha256(secret: bytes, message: bytes) -> bytes:
    return hmac.digest(secret, message, "sha256")


# ----- helpers for base64 manipulation ----------------------------------------------------------


def with_dirty_bits(segment: str) -> str:
    """Same bytes under a lenient decoder, other text: set the unused low bits of the last character."""
    assert len(segment) % 4 in (2, 3), "needs a segment with unused trailing bits"
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    unused = 4 if len(segment) % 4 == 2 else 2
    value = alphabet.index(segment[-1]) | ((1 << unused) - 1)
    dirty = segment[:-1] + alphabet[value]
    assert dirty != segment
    assert base64.urlsafe_b64decode(dirty + "=" * (-len(dirty) % 4)) == base64.urlsafe_b64decode(
        segment + "=" * (-len(segment) % 4)
    )
    return dirty


def padded(segment: str) -> str:
    return segment + "=" * (-len(segment) % 4 or 4)


def json_with_unused_bits(value: dict[str, Any]) -> bytes:
    """Compact JSON with trailing spaces so its base64url has unused bits (length not a multiple of 3)."""
    raw = compact(value)
    while len(raw) % 3 == 0:
        raw += b" "
    return raw


def genuinely_signed_dirty(kit: Kit, part: int) -> str:
    """A token whose header (0) or payload (1) segment is non-canonical and whose signature is valid
    over exactly that text: only the canonical-base64url rule can refuse it."""
    h64 = b64(json_with_unused_bits(kit.header()))
    p64 = b64(json_with_unused_bits(kit.claims()))
    if part == 0:
        h64 = with_dirty_bits(h64)
    else:
        p64 = with_dirty_bits(p64)
    return kit.sign_segments(h64, p64)


def genuinely_signed_std_alphabet(kit: Kit) -> str:
    """A payload segment in the standard base64 alphabet ('+' or '/'), genuinely signed as such."""
    for n in range(64):
        p64 = b64(compact(kit.claims(pad="?>" * n)))
        if set(p64) & set("-_"):
            return kit.sign_segments(b64(compact(kit.header())), p64.replace("-", "+").replace("_", "/"))
    raise AssertionError("no payload with '-' or '_'")


def replace_segment(token: str, index: int, change: Callable[[str], str]) -> str:
    parts = token.split(".")
    parts[index] = change(parts[index])
    return ".".join(parts)


# ----- the table --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[Kit], str]
    active: bool = False
    # Signature and claims are fine, but the service refuses it (a lifetime over the keyset's token_ttl).
    service_refuses: bool = False


def raw_claims_with(kit: Kit, name: str, json_value: str) -> bytes:
    """Claims JSON with one member's value given as raw JSON text (NaN, huge numbers, ...)."""
    claims = kit.claims(**{name: DROP})
    body = compact(claims)[:-1]
    return body + f',"{name}":{json_value}}}'.encode()


def pem_spki(key: PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def der_spki(key: PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def pkcs1_pem(key: PublicKey) -> bytes:
    assert isinstance(key, rsa.RSAPublicKey)
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1)


def _confusion_cases() -> list[Case]:
    materials: dict[str, Callable[[Kit, str], bytes]] = {
        "pem": lambda k, ks: pem_spki(k.public_key(ks)),
        "pem-no-newline": lambda k, ks: pem_spki(k.public_key(ks)).rstrip(b"\n"),
        "der": lambda k, ks: der_spki(k.public_key(ks)),
        "jwk-json": lambda k, ks: compact(k.published(ks)),
        "jwk-json-spaced": lambda k, ks: json.dumps(k.published(ks)).encode(),
        "jwks-document": lambda k, ks: compact({"keys": [k.published(ks)]}),
    }
    out = [
        Case(
            f"hs256-with-{ks}-public-{name}",
            lambda k, ks=ks, material=material: k.hs256_with(material(k, ks), k.key(ks).kid),
        )
        for ks in ("default", "rsa")
        for name, material in materials.items()
    ]
    out.append(
        Case(
            "hs256-with-rsa-public-pkcs1-pem",
            lambda k: k.hs256_with(pkcs1_pem(k.public_key("rsa")), k.key("rsa").kid),
        )
    )
    out += [
        Case("hs256-hmac-kid-with-es256-pem", lambda k: k.hs256_with(pem_spki(k.public_key("default")), k.hmac_kid())),
        Case("hs256-hmac-kid-with-empty-secret", lambda k: k.hs256_with(b"", k.hmac_kid())),
        Case("hs256-hmac-kid-with-kid-as-secret", lambda k: k.hs256_with(k.hmac_kid().encode(), k.hmac_kid())),
        Case("es256-alg-with-rsa-kid", lambda k: k.jwt(k.header("default", kid=k.key("rsa").kid))),
        Case("es256-alg-with-hmac-kid", lambda k: k.jwt(k.header("default", kid=k.hmac_kid()))),
        Case("rs256-alg-with-es256-kid", lambda k: k.jwt(k.header("rsa", kid=k.key("default").kid), keyset="rsa")),
        Case("ps256-alg-with-rsa-kid-rs256-signature", lambda k: k.jwt(k.header("rsa", alg="PS256"), keyset="rsa")),
        Case("rs512-alg-with-rsa-kid", lambda k: k.jwt(k.header("rsa", alg="RS512"), keyset="rsa")),
        Case("hs512-alg-with-hmac-kid", lambda k: k.jwt(k.header("hmac", alg="HS512"), keyset="hmac")),
        Case("es384-alg-with-es256-kid", lambda k: k.jwt(k.header(alg="ES384"))),
    ]
    return out


def _none_cases() -> list[Case]:
    out = []
    for alg in ("none", "None", "NONE", "nOnE"):
        out.append(Case(f"alg-{alg}-empty-signature", lambda k, a=alg: k.jwt(k.header(alg=a)).rsplit(".", 1)[0] + "."))
        out.append(Case(f"alg-{alg}-two-segments", lambda k, a=alg: k.jwt(k.header(alg=a)).rsplit(".", 1)[0]))
        out.append(Case(f"alg-{alg}-genuine-es256-signature", lambda k, a=alg: k.jwt(k.header(alg=a))))
        out.append(
            Case(
                f"alg-{alg}-no-kid-empty-signature",
                lambda k, a=alg: k.jwt(k.header(alg=a, kid=DROP)).rsplit(".", 1)[0] + ".",
            )
        )
    out += [
        Case("alg-missing", lambda k: k.jwt(k.header(alg=DROP))),
        Case("alg-null", lambda k: k.jwt(k.header(alg=None))),
        Case("alg-list", lambda k: k.jwt(k.header(alg=["ES256"]))),
        Case("alg-lowercase-es256", lambda k: k.jwt(k.header(alg="es256"))),
        Case("alg-empty", lambda k: k.jwt(k.header(alg=""))),
    ]
    return out


KIDS = {
    "path-traversal": "../../etc/passwd",
    "path-traversal-nul": "../../../../dev/null\x00",
    "sql-injection": "' OR 1=1 --",
    "sql-union": "x' UNION SELECT private_key FROM keys --",
    "url": "https://attacker.example/key.pem",
    "long-257": "k" * 257,
    "long-4000": "k" * 4000,
    "at-limit-256": "k" * 256,
    "empty": "",
    "whitespace": " ",
    "unicode": "ключ",
}


def _kid_cases() -> list[Case]:
    out = [Case(f"kid-{name}", lambda k, kid=kid: k.jwt(k.header(kid=kid))) for name, kid in KIDS.items()]
    out += [
        Case("kid-missing", lambda k: k.jwt(k.header(kid=DROP))),
        Case("kid-null", lambda k: k.jwt(k.header(kid=None))),
        Case("kid-number", lambda k: k.jwt(k.header(kid=1))),
        Case("kid-list", lambda k: k.jwt(k.header(kid=[k.key().kid]))),
        Case("kid-object", lambda k: k.jwt(k.header(kid={"$ne": ""}))),
        Case("kid-with-trailing-space", lambda k: k.jwt(k.header(kid=k.key().kid + " "))),
        Case("kid-upper-cased", lambda k: k.jwt(k.header(kid=k.key().kid.upper()))),
    ]
    return out


def _embedded_key_cases() -> list[Case]:
    def attacker_token(k: Kit, kid: str | None = None, **extra: Any) -> str:
        _, thumbprint = k.attacker_jwk()
        header = {"alg": "ES256", "kid": kid or thumbprint, "typ": "at+jwt", **extra}
        return k.jwt(header, sign=k.attacker_sign)

    url = "https://attacker.example/.well-known/jwks.json"
    out = [
        Case("embedded-jwk-attacker-signed", lambda k: attacker_token(k, jwk=k.attacker_jwk()[0])),
        Case("embedded-jwk-our-kid-attacker-signed", lambda k: attacker_token(k, k.key().kid, jwk=k.attacker_jwk()[0])),
        Case("jku-attacker-signed", lambda k: attacker_token(k, jku=url)),
        Case("jku-our-kid-attacker-signed", lambda k: attacker_token(k, k.key().kid, jku=url)),
        Case("x5u-attacker-signed", lambda k: attacker_token(k, x5u="https://attacker.example/cert.pem")),
        Case("x5c-attacker-signed", lambda k: attacker_token(k, x5c=[k.attacker_cert()])),
        Case("x5c-our-kid-attacker-signed", lambda k: attacker_token(k, k.key().kid, x5c=[k.attacker_cert()])),
        Case("attacker-signed-our-kid-no-extras", lambda k: attacker_token(k, k.key().kid)),
    ]
    # The same parameters on a token genuinely signed by our key: only the header rule refuses them.
    genuine: dict[str, Callable[[Kit], Any]] = {
        "jwk": lambda k: k.published("default"),
        "jku": lambda k: url,
        "x5u": lambda k: "https://attacker.example/cert.pem",
        "x5c": lambda k: [k.attacker_cert()],
        "x5t": lambda k: "dGh1bWJwcmludA",
        "x5t#S256": lambda k: "dGh1bWJwcmludA",
        "crit": lambda k: ["exp"],
        "b64": lambda k: False,
        "cty": lambda k: "JWT",
        "zip": lambda k: "DEF",
        "enc": lambda k: "A256GCM",
        "foo": lambda k: "bar",
    }
    out += [
        Case(f"header-{name}-genuine-signature", lambda k, name=name, v=value: k.jwt(k.header(**{name: v(k)})))
        for name, value in genuine.items()
    ]
    out += [
        Case("crit-empty-list", lambda k: k.jwt(k.header(crit=[]))),
        Case("crit-b64-false", lambda k: k.jwt(k.header(crit=["b64"], b64=False))),
        Case("b64-true", lambda k: k.jwt(k.header(b64=True))),
    ]
    return out


def _base64_cases() -> list[Case]:
    return [
        Case("b64-padded-header", lambda k: replace_segment(k.jwt(), 0, padded)),
        Case("b64-padded-payload", lambda k: replace_segment(k.jwt(), 1, padded)),
        Case("b64-padded-signature", lambda k: replace_segment(k.jwt(), 2, padded)),
        Case("b64-double-padded-signature", lambda k: replace_segment(k.jwt(), 2, lambda s: s + "==")),
        # ES256 signatures are 64 bytes: 86 characters, the last with 4 unused bits.
        Case("b64-dirty-bits-signature", lambda k: replace_segment(k.jwt(), 2, with_dirty_bits)),
        Case("b64-dirty-bits-header-genuinely-signed", lambda k: genuinely_signed_dirty(k, 0)),
        Case("b64-dirty-bits-payload-genuinely-signed", lambda k: genuinely_signed_dirty(k, 1)),
        Case(
            "b64-std-alphabet-signature",
            lambda k: replace_segment(k.with_urlsafe_chars(), 2, lambda s: s.replace("-", "+").replace("_", "/")),
        ),
        Case("b64-std-alphabet-payload-genuinely-signed", genuinely_signed_std_alphabet),
        Case("ws-leading-space", lambda k: " " + k.jwt()),
        Case("ws-trailing-newline", lambda k: k.jwt() + "\n"),
        Case("ws-trailing-crlf", lambda k: k.jwt() + "\r\n"),
        Case("ws-space-after-dot", lambda k: k.jwt().replace(".", ". ", 1)),
        Case("ws-tab-in-signature", lambda k: replace_segment(k.jwt(), 2, lambda s: s[:10] + "\t" + s[10:])),
        Case("ws-newline-in-payload", lambda k: replace_segment(k.jwt(), 1, lambda s: s[:8] + "\n" + s[8:])),
        Case("ws-space-in-header", lambda k: replace_segment(k.jwt(), 0, lambda s: s[:8] + " " + s[8:])),
        Case("four-segments", lambda k: k.jwt() + ".e30"),
        Case("two-segments", lambda k: k.jwt().rsplit(".", 1)[0]),
        Case("empty-payload-segment", lambda k: k.sign_segments(b64(compact(k.header())), "")),
        Case("non-ascii-in-signature", lambda k: k.jwt() + "é"),
    ]


def _size_cases() -> list[Case]:
    return [
        Case("oversized-token-9k", lambda k: k.jwt(claims=k.claims(pad="A" * 9000))),
        Case("oversized-token-64k", lambda k: k.jwt(claims=k.claims(pad="A" * 40000))),
        Case("oversized-payload-under-8k-token", lambda k: k.jwt(claims=k.claims(pad="A" * 4200))),
        Case("oversized-header", lambda k: k.jwt(k.header(pad="A" * 1500))),
        Case("oversized-header-kid", lambda k: k.jwt(k.header(kid="k" * 1200))),
        Case("deeply-nested-payload", lambda k: k.jwt(claims=raw_claims_with(k, "deep", "[" * 1500 + "]" * 1500))),
        Case("deeply-nested-header", lambda k: k.jwt(b'{"alg":"ES256","x":' + b"[" * 300 + b"]" * 300 + b"}")),
        Case("control-large-payload-allowed", lambda k: k.jwt(claims=k.claims(pad="A" * 2500)), active=True),
    ]


def _duplicate_cases() -> list[Case]:
    def header_raw(k: Kit, template: str) -> bytes:
        return template.replace("KID", k.key().kid).encode()

    def payload_raw(k: Kit, extra: str, first: bool = True) -> bytes:
        body = compact(k.claims())
        return (b"{" + extra.encode() + b"," + body[1:]) if first else (body[:-1] + b"," + extra.encode() + b"}")

    return [
        Case(
            "dup-header-alg-none-first",
            lambda k: k.jwt(header_raw(k, '{"alg":"none","alg":"ES256","kid":"KID","typ":"at+jwt"}')),
        ),
        Case(
            "dup-header-alg-none-last",
            lambda k: k.jwt(header_raw(k, '{"alg":"ES256","kid":"KID","typ":"at+jwt","alg":"none"}')),
        ),
        Case(
            "dup-header-alg-same-value",
            lambda k: k.jwt(header_raw(k, '{"alg":"ES256","alg":"ES256","kid":"KID","typ":"at+jwt"}')),
        ),
        Case(
            "dup-header-kid", lambda k: k.jwt(header_raw(k, '{"alg":"ES256","kid":"evil","kid":"KID","typ":"at+jwt"}'))
        ),
        Case(
            "dup-header-typ", lambda k: k.jwt(header_raw(k, '{"alg":"ES256","kid":"KID","typ":"JWT","typ":"at+jwt"}'))
        ),
        Case(
            "dup-header-escaped-alg",
            lambda k: k.jwt(header_raw(k, '{"alg":"none","\\u0061lg":"ES256","kid":"KID","typ":"at+jwt"}')),
        ),
        Case("dup-payload-sub", lambda k: k.jwt(claims=payload_raw(k, '"sub":"someone-else"'))),
        Case("dup-payload-sub-last", lambda k: k.jwt(claims=payload_raw(k, '"sub":"someone-else"', first=False))),
        Case("dup-payload-iss", lambda k: k.jwt(claims=payload_raw(k, '"iss":"https://evil.example"'))),
        Case("dup-payload-exp", lambda k: k.jwt(claims=payload_raw(k, f'"exp":{int(k.now) + 10**6}', first=False))),
        Case("dup-payload-escaped-scope", lambda k: k.jwt(claims=payload_raw(k, '"\\u0073cope":"admin"', first=False))),
        Case("dup-payload-nested", lambda k: k.jwt(claims=payload_raw(k, '"cnf":{"a":1,"a":2}'))),
        Case(
            "control-escaped-member-no-duplicate", lambda k: k.jwt(claims=payload_raw(k, '"\\u0078":"y"')), active=True
        ),
    ]


def _typ_cases() -> list[Case]:
    ok = ["at+jwt", "AT+JWT", "At+Jwt", "application/at+jwt", "Application/AT+JWT"]
    bad: dict[str, Any] = {
        "JWT": "JWT",
        "jwt": "jwt",
        "at+jwt-trailing-space": "at+jwt ",
        "at+jwt-with-parameter": "at+jwt; charset=utf-8",
        "application-jwt": "application/jwt",
        "empty": "",
        "number": 1,
        "list": ["at+jwt"],
        "null": None,
        "missing": DROP,
    }
    return [Case(f"typ-ok-{t}", lambda k, t=t: k.jwt(k.header(typ=t)), active=True) for t in ok] + [
        Case(f"typ-{name}", lambda k, t=t: k.jwt(k.header(typ=t))) for name, t in bad.items()
    ]


def _iss_cases() -> list[Case]:
    bad: dict[str, Any] = {
        "trailing-slash": ISSUER + "/",
        "upper-case-scheme": ISSUER.upper(),
        "other-host": "http://localhost:8000",
        "https": ISSUER.replace("http:", "https:"),
        "no-port": "http://127.0.0.1",
        "trailing-space": ISSUER + " ",
        "path": ISSUER + "/realms/x",
        "list": [ISSUER],
        "null": None,
        "missing": DROP,
    }
    return [Case(f"iss-{name}", lambda k, v=v: k.jwt(claims=k.claims(iss=v))) for name, v in bad.items()]


def _time_cases() -> list[Case]:
    L = 30  # the leeway of every keyset in the fixture (30s by default)

    def t(k: Kit, **offsets: Any) -> str:
        now = int(k.now)
        return k.jwt(claims=k.claims(**{n: (now + v if isinstance(v, int | float) else v) for n, v in offsets.items()}))

    def raw(name: str, json_value: str) -> Callable[[Kit], str]:
        return lambda k: k.jwt(claims=raw_claims_with(k, name, json_value))

    return [
        Case("exp-equals-now-within-leeway", lambda k: t(k, exp=0, iat=-60, nbf=-60), active=True),
        Case("exp-now-minus-leeway-plus-1", lambda k: t(k, exp=-L + 1, iat=-600, nbf=-600), active=True),
        Case("exp-now-minus-leeway", lambda k: t(k, exp=-L, iat=-600, nbf=-600)),
        Case("exp-now-minus-leeway-minus-half", lambda k: t(k, exp=-L - 0.5, iat=-600, nbf=-600)),
        Case("exp-an-hour-ago", lambda k: t(k, exp=-3600, iat=-7200, nbf=-7200)),
        Case("exp-fractional-future", lambda k: t(k, exp=600.25), active=True),
        Case("exp-huge-finite-float", lambda k: t(k, exp=1e300), active=True, service_refuses=True),
        Case(
            "lifetime-over-token-ttl",
            lambda k: t(k, exp=900 + 120, iat=-60, nbf=-60),
            active=True,
            service_refuses=True,
        ),
        Case("exp-zero", lambda k: k.jwt(claims=k.claims(exp=0, iat=0, nbf=0))),
        Case("exp-negative", lambda k: k.jwt(claims=k.claims(exp=-1, iat=-10, nbf=-10))),
        Case("exp-before-iat", lambda k: t(k, exp=-1, iat=0)),
        Case("exp-string", lambda k: k.jwt(claims=k.claims(exp=str(int(k.now) + 600)))),
        Case("exp-true", lambda k: k.jwt(claims=k.claims(exp=True))),
        Case("exp-false", lambda k: k.jwt(claims=k.claims(exp=False))),
        Case("exp-null", lambda k: k.jwt(claims=k.claims(exp=None))),
        Case("exp-missing", lambda k: k.jwt(claims=k.claims(exp=DROP))),
        Case("exp-list", lambda k: k.jwt(claims=k.claims(exp=[int(k.now) + 600]))),
        Case("exp-object", lambda k: k.jwt(claims=k.claims(exp={"$gt": 0}))),
        Case("exp-nan", raw("exp", "NaN")),
        Case("exp-infinity", raw("exp", "Infinity")),
        Case("exp-minus-infinity", raw("exp", "-Infinity")),
        Case("exp-1e400-overflows-to-inf", raw("exp", "1e400")),
        Case("exp-huge-integer", raw("exp", "9" * 400)),
        Case("exp-huge-negative-integer", raw("exp", "-" + "9" * 400)),
        Case("nbf-now-plus-leeway", lambda k: t(k, nbf=L), active=True),
        Case("nbf-now-plus-leeway-plus-1", lambda k: t(k, nbf=L + 1)),
        Case("nbf-far-future", lambda k: t(k, nbf=10**6, exp=10**6 + 600)),
        Case("nbf-missing-is-optional", lambda k: k.jwt(claims=k.claims(nbf=DROP)), active=True),
        Case("nbf-string", lambda k: k.jwt(claims=k.claims(nbf=str(int(k.now))))),
        Case("nbf-true", lambda k: k.jwt(claims=k.claims(nbf=True))),
        Case("nbf-null", lambda k: k.jwt(claims=k.claims(nbf=None))),
        Case("nbf-nan", raw("nbf", "NaN")),
        Case("iat-now-plus-leeway", lambda k: t(k, iat=L, nbf=0), active=True),
        Case("iat-now-plus-leeway-plus-1", lambda k: t(k, iat=L + 1, nbf=0)),
        Case("iat-far-future", lambda k: t(k, iat=10**8, nbf=0, exp=10**8 + 600)),
        Case("iat-missing", lambda k: k.jwt(claims=k.claims(iat=DROP))),
        Case("iat-string", lambda k: k.jwt(claims=k.claims(iat=str(int(k.now))))),
        Case("iat-false", lambda k: k.jwt(claims=k.claims(iat=False))),
        Case("iat-huge-integer", raw("iat", "9" * 400)),
    ]


def _claim_cases() -> list[Case]:
    return [
        Case("control-valid-es256", lambda k: k.jwt(), active=True),
        Case("control-valid-hs256", lambda k: k.jwt(keyset="hmac"), active=True),
        Case("control-valid-rs256", lambda k: k.jwt(keyset="rsa"), active=True),
        Case("kid-of-next-key-signed-by-current", lambda k: k.jwt(k.header(kid=next_kid(k)))),
        Case("sub-missing", lambda k: k.jwt(claims=k.claims(sub=DROP))),
        Case("sub-number", lambda k: k.jwt(claims=k.claims(sub=1))),
        Case("client-id-missing", lambda k: k.jwt(claims=k.claims(client_id=DROP))),
        Case("client-id-list", lambda k: k.jwt(claims=k.claims(client_id=[k.client_id]))),
        Case("jti-missing", lambda k: k.jwt(claims=k.claims(jti=DROP))),
        Case("jti-number", lambda k: k.jwt(claims=k.claims(jti=7))),
        Case("scope-list", lambda k: k.jwt(claims=k.claims(scope=["read"]))),
        Case("payload-array", lambda k: k.jwt(claims=b"[]")),
        Case("payload-string", lambda k: k.jwt(claims=b'"claims"')),
        Case("payload-empty", lambda k: k.jwt(claims=b"")),
        Case("payload-not-utf8", lambda k: k.jwt(claims=b'{"sub":"\xff"}')),
        Case("payload-trailing-garbage", lambda k: k.jwt(claims=compact(k.claims()) + b"x")),
        Case("payload-lone-surrogate", lambda k: k.jwt(claims=k.claims(sub="\ud800"))),
        Case("header-array", lambda k: k.jwt(b"[]")),
        Case("header-not-utf8", lambda k: k.jwt(b'{"alg":"ES256","kid":"\xff"}')),
        Case("header-nan", lambda k: k.jwt(k.header(x=float("nan")))),
        Case(
            "signature-of-other-token",
            lambda k: (
                k.jwt().rsplit(".", 1)[0] + "." + k.jwt(keyset="default", claims=k.claims(sub="x")).rsplit(".", 1)[1]
            ),
        ),
        Case("signature-truncated", lambda k: k.jwt()[:-4]),
        Case("signature-der-encoded", lambda k: der_signature_token(k)),
    ]


def next_kid(k: Kit) -> str:
    ks = k.rt.keys.snapshot.keysets["default"]
    assert ks.next is not None
    return ks.next.kid


def der_signature_token(k: Kit) -> str:
    """ES256 with an ASN.1 DER signature instead of r || s (RFC 7518 §3.4 wants the latter)."""

    def sign(message: bytes) -> bytes:
        raw = k.key().sign(message)
        return encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))

    return k.jwt(sign=sign)


CASES: list[Case] = [
    *_claim_cases(),
    *_none_cases(),
    *_confusion_cases(),
    *_kid_cases(),
    *_embedded_key_cases(),
    *_base64_cases(),
    *_size_cases(),
    *_duplicate_cases(),
    *_typ_cases(),
    *_iss_cases(),
    *_time_cases(),
]
assert len({c.name for c in CASES}) == len(CASES), "case names must be unique"


# ----- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kit(rt: Runtime) -> Kit:
    client, secret = rt.clients.create("security-introspector", ["read", "introspect"], ["api"], keyset="default")
    return Kit(rt, client.client_id, secret, ec.generate_private_key(ec.SECP256R1()))


@pytest.fixture(scope="module")
def start(clock: ManualClock) -> float:
    return clock.now()  # read before any test of this module moves the clock


@pytest.fixture(autouse=True)
def _clock_back(clock: ManualClock, rt: Runtime, start: float) -> Iterator[None]:
    clock.set(start)
    rt.keys.refresh()
    yield
    clock.set(start)
    rt.keys.refresh()


def introspect(http: TestClient, kit: Kit, token: str, *, auth: tuple[str, str] | None = None) -> Any:
    response = http.post("/oauth/introspect", data={"token": token}, auth=auth or (kit.client_id, kit.secret))
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    return response.json()


# ----- the tests --------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_introspection_of_forged_tokens(case: Case, kit: Kit, http: TestClient) -> None:
    token = case.build(kit)
    body = introspect(http, kit, token)
    if case.active and not case.service_refuses:
        assert body["active"] is True, body
        assert body["iss"] == ISSUER
        assert body["sub"] == kit.client_id
        assert body["kid"] in kit.rt.keys.snapshot.verify_keys
    else:
        assert body == {"active": False}


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_verify_access_token_refuses_forged_tokens(case: Case, kit: Kit) -> None:
    token = case.build(kit)
    keys = kit.rt.keys.snapshot.verify_keys
    verify = lambda: verify_access_token(  # noqa: E731
        token, keys, issuer=ISSUER, audiences=["api"], now=kit.now, leeway=kit.leeway
    )
    if case.active:
        verified = verify()
        assert verified.claims["sub"] == kit.client_id
        segment = token.split(".")[0]
        assert verified.kid == json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))["kid"]
    else:
        with pytest.raises(InvalidTokenError):
            verify()


def test_the_forged_table_holds_controls_and_attacks() -> None:
    """Control: the table is not all of one verdict (a broken helper would make every case inactive)."""
    assert sum(c.active for c in CASES) >= 10
    assert sum(not c.active for c in CASES) >= 150


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
@pytest.mark.parametrize("keyset", ["default", "hmac", "rsa"])
def test_genuine_token_from_the_token_endpoint_is_active(method: str, keyset: str, kit: Kit, http: TestClient) -> None:
    client, secret = kit.rt.clients.create(f"genuine-{keyset}", ["read"], ["api"], keyset=keyset)
    form = {"grant_type": "client_credentials"}
    if method == "client_secret_basic":
        response = http.post("/oauth/token", data=form, auth=(client.client_id, secret))
    else:
        response = http.post("/oauth/token", data={**form, "client_id": client.client_id, "client_secret": secret})
    assert response.status_code == 200, response.text
    token = response.json()["access_token"]
    body = introspect(http, kit, token, auth=(client.client_id, secret))
    assert body["active"] is True
    assert body["sub"] == body["client_id"] == client.client_id
    assert body["keyset"] == keyset
    assert body["kid"] == kit.key(keyset).kid
    # Flipping one signature character breaks it: the control can fail.
    last = token[-2]
    tampered = token[:-2] + ("A" if last != "A" else "B") + token[-1]
    assert introspect(http, kit, tampered, auth=(client.client_id, secret)) == {"active": False}


def test_foreign_token_without_introspect_scope_is_inactive(kit: Kit, http: TestClient) -> None:
    other, other_secret = kit.rt.clients.create("security-other", ["read"], ["api"], keyset="default")
    mine = kit.jwt()
    assert introspect(http, kit, mine)["active"] is True
    assert introspect(http, kit, mine, auth=(other.client_id, other_secret)) == {"active": False}
    own = kit.jwt(claims=kit.claims(sub=other.client_id, client_id=other.client_id))
    assert introspect(http, kit, own, auth=(other.client_id, other_secret))["active"] is True


def test_expiry_edges_with_a_moving_clock(kit: Kit, clock: ManualClock, http: TestClient) -> None:
    response = http.post("/oauth/token", data={"grant_type": "client_credentials"}, auth=(kit.client_id, kit.secret))
    assert response.status_code == 200
    token = response.json()["access_token"]
    claims = introspect(http, kit, token)
    exp, iat = claims["exp"], claims["iat"]
    assert claims["nbf"] == iat

    def at(instant: float) -> Any:
        clock.set(instant)
        kit.rt.keys.refresh()  # the background poll would do this; without it introspection is 503
        return introspect(http, kit, token)

    assert at(exp - 1)["active"] is True
    assert at(exp)["active"] is True  # within leeway
    assert at(exp + kit.leeway - 1)["active"] is True
    assert at(exp + kit.leeway) == {"active": False}
    assert at(exp + 10**6) == {"active": False}
    # Before its iat (and nbf) by more than the leeway: not yet valid.
    assert at(iat - kit.leeway)["active"] is True
    assert at(iat - kit.leeway - 1) == {"active": False}


def test_stale_revocation_state_is_not_vouched_for(kit: Kit, clock: ManualClock, http: TestClient) -> None:
    """Without a refresh for more than 5 s introspection answers 503, never a stale `active: true`."""
    token = kit.jwt()
    clock.advance(6)
    response = http.post("/oauth/introspect", data={"token": token}, auth=(kit.client_id, kit.secret))
    assert response.status_code == 503
    assert response.json()["error"] == "temporarily_unavailable"
    assert "retry-after" in response.headers


def test_only_the_owner_revokes_and_a_revoked_token_is_inactive(kit: Kit, http: TestClient) -> None:
    owner, owner_secret = kit.rt.clients.create("security-owner", ["read"], ["api"], keyset="default")
    token = kit.jwt(claims=kit.claims(sub=owner.client_id, client_id=owner.client_id))
    # Another client (even one allowed to introspect everything) gets 200 and revokes nothing.
    assert http.post("/oauth/revoke", data={"token": token}, auth=(kit.client_id, kit.secret)).status_code == 200
    assert introspect(http, kit, token)["active"] is True
    # Forged tokens are answered 200 too (RFC 7009 §2.2), and revoke nothing either.
    forged = token.rsplit(".", 1)[0] + "."
    assert http.post("/oauth/revoke", data={"token": forged}, auth=(owner.client_id, owner_secret)).status_code == 200
    assert introspect(http, kit, token)["active"] is True
    assert http.post("/oauth/revoke", data={"token": token}, auth=(owner.client_id, owner_secret)).status_code == 200
    assert introspect(http, kit, token) == {"active": False}
