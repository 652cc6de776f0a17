"""Access tokens (RFC 9068): headers, claims and the checks a verifier makes. No I/O; `now` is a parameter.

The checks are the JOSE core's (`jws`, `claims`), in the server's order: everything cheap first, the
signature last. Their errors (`errors.InvalidTokenError` and its subclasses) are the SDK's too.

Signing here only builds bytes: the header is encoded once per key, the claims once per token,
and the backend signs ``header.payload`` (as dex's Vault signer does).
"""

from __future__ import annotations

import binascii
import json
import os
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, TypedDict, Unpack

from .claims import check_claims
from .errors import MalformedTokenError
from .jws import (
    ACCESS_TOKEN_TYPES,
    JsonShortcut,
    ParsedJWS,
    VerificationKey,
    b64encode,
    bad_signature,
    check_typ,
    key_for,
    parse_claims,
    parse_compact,
)

ALLOWED_HEADERS = frozenset({"alg", "kid", "typ"})
REQUIRED_CLAIMS = ("sub", "client_id", "jti")  # besides iss, exp and iat, which `check_claims` needs

canonical_json: JsonShortcut | None
try:  # orjson is the server's fast encoder; the SDK imports this module without it
    import orjson

    _dumps: Callable[[Any], bytes] = orjson.dumps
    _loads = orjson.loads

    def canonical_json(raw: bytes) -> Any:
        """The value of `raw` when it is exactly orjson's compact rendering of that value (as every
        token this service signs is), else None: a jws.JsonShortcut. Such a text names no member
        twice (a dict holds each key once, and its rendering is `raw` byte for byte), holds no NaN
        and no escapes but of control characters: it is what the strict parser (jws.parse_json_object)
        would give, at a third of the cost (that parser's duplicate check is a Python hook)."""
        try:
            value = _loads(raw)
            same = _dumps(value) == raw
        except (ValueError, TypeError):  # orjson.JSONDecodeError, orjson.JSONEncodeError
            return None
        return value if same else None

except ImportError:  # pragma: no cover - exercised only in SDK-only installs
    canonical_json = None

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


@dataclass(frozen=True, slots=True)
class CheckedToken(ParsedJWS):
    """A token that passed every check but its signature, and what checking the signature needs
    (``key``, ``signing_input``, ``signature``)."""

    claims: dict[str, Any]
    key: VerificationKey


class ClaimRules(TypedDict):
    """What the claims are checked against (`check_claims`'s keyword arguments)."""

    issuer: str
    audiences: Collection[str] | None  # None: not checked
    now: float
    leeway: float


def check_access_token(
    token: str | bytes, keys: Mapping[str, VerificationKey], **rules: Unpack[ClaimRules]
) -> CheckedToken:
    """Every check of `verify_access_token` except the signature: size, structure, a known kid whose
    alg the header names, typ, header members, claims. All of it is CPU only and cheap, so a forged
    token costs no signature check (for a Vault HMAC key, no round trip) unless it passes them all.
    Parsing the unverified payload is safe: its size is bounded and the JSON parser is strict."""
    parsed = parse_compact(token, shortcut=canonical_json)
    header = parsed.header
    key = key_for(keys, header["kid"], header["alg"])
    check_typ(header, ACCESS_TOKEN_TYPES)
    extra = set(header) - ALLOWED_HEADERS
    if extra:
        raise MalformedTokenError(f"header parameter {sorted(extra)[0]} is not accepted")
    claims = parse_claims(parsed.payload_segment, canonical_json)
    check_claims(claims, **rules, required=REQUIRED_CLAIMS)
    return CheckedToken(parsed.header, parsed.signing_input, parsed.payload_segment, parsed.signature, claims, key)


def verify_access_token(
    token: str | bytes, keys: Mapping[str, VerificationKey], **rules: Unpack[ClaimRules]
) -> VerifiedToken:
    """`check_access_token` (same keyword arguments), then the signature, last."""
    checked = check_access_token(token, keys, **rules)
    key = checked.key
    if not key.verify(checked.signing_input, checked.signature):
        raise bad_signature()
    return VerifiedToken(checked.claims, key.kid, key.alg)


__all__ = [
    "ALLOWED_HEADERS",
    "REQUIRED_CLAIMS",
    "CheckedToken",
    "ClaimRules",
    "VerifiedToken",
    "access_token_claims",
    "assemble",
    "canonical_json",
    "check_access_token",
    "check_claims",
    "encode_header",
    "encode_token",
    "new_jti",
    "signing_input",
    "verify_access_token",
]
