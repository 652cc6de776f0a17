"""Access tokens (RFC 9068): headers, claims and the checks a verifier makes. No I/O; `now` is a parameter.

Signing here only builds bytes: the header is encoded once per key, the claims once per token,
and the backend signs ``header.payload`` (as dex's Vault signer does).
"""

from __future__ import annotations

import binascii
import json
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

from .errors import InvalidTokenError
from .jws import VerificationKey, b64decode, b64encode, parse_compact, parse_json_object
from .sdk.claims import check_claims as sdk_check_claims
from .sdk.errors import InvalidTokenError as SDKInvalidTokenError
from .sdk.rules import ACCESS_TOKEN_TYPES as TOKEN_TYPES
from .sdk.rules import MAX_PAYLOAD_BYTES

ALLOWED_HEADERS = frozenset({"alg", "kid", "typ"})

try:  # orjson is the server's fast encoder; the SDK imports this module without it
    import orjson

    _dumps: Callable[[Any], bytes] = orjson.dumps
except ImportError:  # pragma: no cover - exercised only in SDK-only installs

    def _dumps(value: Any) -> bytes:
        return json.dumps(value, separators=(",", ":")).encode()


def encode_header(alg: str, kid: str) -> bytes:
    """The protected header, base64url-encoded, computed once per key."""
    return b64encode(_dumps({"alg": alg, "kid": kid, "typ": "at+jwt"}))


# Fresh jtis (16 random bytes, base64url: 22 characters) come from a pool filled 256 at a time: one
# os.urandom call and one base64 pass per refill instead of per token. list.pop is atomic, so threads
# never share a jti; a forked child drops its copy of the parent's pool.
_JTI_BATCH = 256
_jti_pool: list[str] = []
_split_random = itemgetter(*(slice(i, i + 16) for i in range(0, 16 * _JTI_BATCH, 16)))
_split_text = itemgetter(*(slice(i, i + 22) for i in range(0, 24 * _JTI_BATCH, 24)))
if hasattr(os, "register_at_fork"):  # POSIX; the SDK also runs where there is no fork
    os.register_at_fork(after_in_child=_jti_pool.clear)


def _refill_jtis() -> None:
    # Each 16-byte value followed by two zero bytes is 18 bytes = 24 base64 characters, of which the
    # first 22 are exactly the unpadded base64url of the 16 bytes: encode the whole batch in one go.
    blocks = b"\0\0".join(_split_random(os.urandom(16 * _JTI_BATCH))) + b"\0\0"
    _jti_pool.extend(_split_text(b64encode(blocks).decode("ascii")))


def new_jti() -> str:
    while True:
        try:
            return _jti_pool.pop()
        except IndexError:
            _refill_jtis()


def access_token_claims(
    *,
    issuer: str,
    client_id: str,
    audience: str,
    scope: str,
    now: float,
    ttl: int,
    jti: str | None = None,
) -> dict[str, Any]:
    iat = int(now)
    return {
        "iss": issuer,
        "sub": client_id,
        "aud": audience,
        "exp": iat + ttl,
        "iat": iat,
        "nbf": iat,
        "jti": jti or new_jti(),
        "client_id": client_id,
        "scope": scope,
    }


_b2a = binascii.b2a_base64
_URLSAFE = bytes.maketrans(b"+/", b"-_")


def encode_token(header_b64: bytes, claims: Mapping[str, Any], sign: Callable[[bytes], bytes]) -> str:
    # jws.b64encode, inlined: this runs once per token and every call counts at HMAC speeds.
    signing_input = header_b64 + b"." + _b2a(_dumps(claims)).translate(_URLSAFE, b"=\n")
    return (signing_input + b"." + _b2a(sign(signing_input)).translate(_URLSAFE, b"=\n")).decode("ascii")


def signing_input(header_b64: bytes, claims: Mapping[str, Any]) -> bytes:
    """``header.payload``, for a backend that signs elsewhere (then `assemble`)."""
    return header_b64 + b"." + _b2a(_dumps(claims)).translate(_URLSAFE, b"=\n")


def assemble(signing_input: bytes, signature: bytes) -> str:
    return (signing_input + b"." + _b2a(signature).translate(_URLSAFE, b"=\n")).decode("ascii")


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    claims: dict[str, Any]
    kid: str
    alg: str


def check_claims(
    claims: Mapping[str, Any],
    *,
    issuer: str,
    audiences: Iterable[str] | None,
    now: float,
    leeway: float,
) -> None:
    """RFC 9068 §4 / RFC 8725 §3.8-3.10: exact iss, aud, and exp / nbf / iat with leeway (the SDK's rules)."""
    try:
        sdk_check_claims(
            claims, issuer=issuer, audiences=None if audiences is None else set(audiences), now=now, leeway=leeway
        )
    except SDKInvalidTokenError as exc:
        raise InvalidTokenError(exc.description) from None


@dataclass(frozen=True, slots=True)
class CheckedToken:
    """A token that passed every check but its signature, and what checking the signature needs."""

    claims: dict[str, Any]
    key: VerificationKey
    signing_input: bytes
    signature: bytes


def check_access_token(
    token: str | bytes,
    keys: Mapping[str, VerificationKey],
    *,
    issuer: str,
    audiences: Iterable[str] | None,
    now: float,
    leeway: float,
) -> CheckedToken:
    """Every check of `verify_access_token` except the signature: size, structure, a known kid whose
    alg the header names, typ, header members, claims. All of it is CPU only and cheap, so a forged
    token costs no signature check (for a Vault HMAC key, no round trip) unless it passes them all.
    Parsing the unverified payload is safe: its size is bounded and the JSON parser is strict."""
    parsed = parse_compact(token)
    header = parsed.header
    key = keys.get(header["kid"])
    if key is None:
        raise InvalidTokenError("unknown kid")
    if header["alg"] != key.alg:
        raise InvalidTokenError(f"alg {header['alg']!r} does not match the key's alg")
    typ = header.get("typ")
    if not isinstance(typ, str) or typ.lower() not in TOKEN_TYPES:
        raise InvalidTokenError("typ must be at+jwt")
    extra = set(header) - ALLOWED_HEADERS
    if extra:
        raise InvalidTokenError(f"header parameter {sorted(extra)[0]} is not accepted")
    if len(parsed.payload_segment) > MAX_PAYLOAD_BYTES * 4 // 3 + 4:
        raise InvalidTokenError("payload too large")
    payload = b64decode(parsed.payload_segment)
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise InvalidTokenError("payload too large")
    claims = parse_json_object(payload, "payload")
    check_claims(claims, issuer=issuer, audiences=audiences, now=now, leeway=leeway)
    for required in ("sub", "client_id", "jti"):
        if required not in claims:
            raise InvalidTokenError(f"claim {required} missing")
    return CheckedToken(claims, key, parsed.signing_input, parsed.signature)


def verify_access_token(
    token: str | bytes,
    keys: Mapping[str, VerificationKey],
    *,
    issuer: str,
    audiences: Iterable[str] | None,
    now: float,
    leeway: float,
) -> VerifiedToken:
    """`check_access_token`, then the signature, last."""
    checked = check_access_token(token, keys, issuer=issuer, audiences=audiences, now=now, leeway=leeway)
    key = checked.key
    if not key.verify(checked.signing_input, checked.signature):
        raise InvalidTokenError("signature does not verify")
    return VerifiedToken(checked.claims, key.kid, key.alg)
