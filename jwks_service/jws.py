"""Compact JWS (RFC 7515) parsing and verification, strict by RFC 8725. No I/O.

What is refused, and why:
- anything but compact serialisation; non-canonical base64url (RFC 7515 §2 has no padding, and
  trailing bits must be zero, or two strings would name one token);
- headers and payloads over a size bound, JSON with duplicate members (RFC 8725 §3.8 / RFC 7515 §5.2),
  NaN / Infinity, a header that is not an object;
- ``alg: none`` in any case, an ``alg`` other than the one of the key the ``kid`` names (one
  algorithm per key, RFC 8725 §3.1), so HS256 signed with an RSA public key never verifies;
- ``jku``, ``jwk``, ``x5u``, ``x5c`` (keys chosen by the attacker), ``crit`` (extensions we do not
  implement, RFC 7515 §4.1.11) and ``b64`` (RFC 7797 unencoded payloads).
"""

from __future__ import annotations

import binascii
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import InvalidTokenError

MAX_TOKEN_BYTES = 8192
MAX_HEADER_BYTES = 1024
# The length of the canonical base64url (no padding) of MAX_HEADER_BYTES bytes: ceil(4n / 3). Lengths
# grow with the decoded size, so a longer segment decodes to more than MAX_HEADER_BYTES and is refused
# before it is decoded.
MAX_HEADER_SEGMENT = -(-4 * MAX_HEADER_BYTES // 3)
MAX_KID_CHARS = 256
FORBIDDEN_HEADERS = frozenset({"jku", "jwk", "x5u", "x5c", "crit", "b64", "x5t", "x5t#S256"})

_B64_CHARS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_B64_VALUE = {c: i for i, c in enumerate(_B64_CHARS)}
_TO_STD = bytes.maketrans(b"-_", b"+/")
_FROM_STD = bytes.maketrans(b"+/", b"-_")


def b64encode(data: bytes) -> bytes:
    # One pass maps +/ to -_ and drops the padding and the newline (cheaper than translate + rstrip).
    return binascii.b2a_base64(data).translate(_FROM_STD, b"=\n")


def b64decode(segment: bytes) -> bytes:
    """Canonical base64url without padding; anything else is an InvalidTokenError."""
    n = len(segment)
    tail = n % 4
    # Deleting every alphabet character must leave nothing (one C pass; cheaper than a set test).
    if tail == 1 or segment.translate(None, _B64_CHARS):
        raise InvalidTokenError("malformed base64url")
    # Zero trailing bits only (RFC 4648 §3.5): otherwise two strings would name one token. The last
    # character carries 4 (two leftover characters) or 2 (three) bits that must be zero.
    if tail and _B64_VALUE[segment[-1]] & (0xF if tail == 2 else 0x3):
        raise InvalidTokenError("non-canonical base64url")
    try:
        return binascii.a2b_base64(segment.translate(_TO_STD) + b"=" * (-n % 4), strict_mode=True)
    except binascii.Error:
        raise InvalidTokenError("malformed base64url") from None


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise InvalidTokenError(f"duplicate JSON member {k!r}")
        out[k] = v
    return out


def _no_constants(name: str) -> Any:
    raise InvalidTokenError(f"invalid JSON constant {name}")


_decoder = json.JSONDecoder(object_pairs_hook=_no_duplicates, parse_constant=_no_constants)


def parse_json_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8")
        value = _decoder.decode(text)
        # I-JSON (RFC 7493 §2.1): an escaped lone surrogate ("\ud800") gives a string that no UTF-8
        # encoder can write back, so echoing the claims would fail later; refuse it here.
        if "\\u" in text:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
    except InvalidTokenError:
        raise
    except (ValueError, RecursionError):
        raise InvalidTokenError(f"{what} is not valid JSON") from None
    if not isinstance(value, dict):
        raise InvalidTokenError(f"{what} is not a JSON object")
    return value


@dataclass(frozen=True, slots=True)
class VerificationKey:
    kid: str
    alg: str
    verify: Callable[[bytes, bytes], bool]
    # True when `verify` calls out (a Vault Transit HMAC key): never call it on an event loop.
    remote: bool = False


@dataclass(frozen=True, slots=True)
class VerifiedJWS:
    header: dict[str, Any]
    payload: bytes
    key: VerificationKey


@dataclass(frozen=True, slots=True)
class ParsedJWS:
    header: dict[str, Any]
    signing_input: bytes
    payload_segment: bytes
    signature: bytes


def check_header(header: Mapping[str, Any]) -> tuple[str, str]:
    """The header rules every verifier here applies (server and SDK): a string ``alg`` that is not
    ``none``, no forbidden parameter, a usable ``kid``. Returns (alg, kid)."""
    alg = header.get("alg")
    if not isinstance(alg, str):
        raise InvalidTokenError("header has no alg")
    if alg.lower() == "none":
        raise InvalidTokenError("alg none is never accepted")
    bad = FORBIDDEN_HEADERS.intersection(header)
    if bad:
        raise InvalidTokenError(f"header parameter {sorted(bad)[0]} is not accepted")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid or len(kid) > MAX_KID_CHARS:
        raise InvalidTokenError("header has no usable kid")
    return alg, kid


def parse_compact(token: str | bytes, *, max_bytes: int = MAX_TOKEN_BYTES) -> ParsedJWS:
    """Split and decode a compact JWS and check its header; the signature is not checked here."""
    raw = token.encode("ascii", "replace") if isinstance(token, str) else token
    if not raw:
        raise InvalidTokenError("empty token")
    if len(raw) > max_bytes:
        raise InvalidTokenError(f"token longer than {max_bytes} bytes")
    if raw.count(b".") != 2:
        raise InvalidTokenError("not a compact JWS (three base64url parts separated by dots)")
    h64, p64, s64 = raw.split(b".")
    if not h64 or not s64:
        raise InvalidTokenError("missing header or signature")
    if len(h64) > MAX_HEADER_SEGMENT:
        raise InvalidTokenError("header too large")
    header = parse_json_object(b64decode(h64), "header")
    check_header(header)
    signature = b64decode(s64)
    return ParsedJWS(header, h64 + b"." + p64, p64, signature)


def verify_compact(
    token: str | bytes,
    keys: Mapping[str, VerificationKey],
    *,
    max_bytes: int = MAX_TOKEN_BYTES,
) -> VerifiedJWS:
    """Verify a compact JWS against the key its ``kid`` names, with that key's one algorithm."""
    parsed = parse_compact(token, max_bytes=max_bytes)
    kid = parsed.header["kid"]
    key = keys.get(kid)
    if key is None:
        raise InvalidTokenError("unknown kid")
    if parsed.header["alg"] != key.alg:
        raise InvalidTokenError(f"alg {parsed.header['alg']!r} does not match the key's alg")
    if not key.verify(parsed.signing_input, parsed.signature):
        raise InvalidTokenError("signature does not verify")
    return VerifiedJWS(parsed.header, b64decode(parsed.payload_segment), key)
