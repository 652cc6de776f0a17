"""Compact JWS (RFC 7515) parsing and verification, strict by RFC 8725. No I/O.

The JOSE core's one copy of these rules: the server (`tokens`, introspection) and the verifier SDK
(`sdk.rules`) both parse with them and raise the same errors (`errors.JoseError`).

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
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import (
    InvalidSignatureError,
    InvalidTypeError,
    MalformedTokenError,
    TokenTooLargeError,
    UnknownKeyError,
    UnsupportedAlgorithmError,
)

MAX_TOKEN_BYTES = 8192
MAX_HEADER_BYTES = 1024
# The length of the canonical base64url (no padding) of MAX_HEADER_BYTES bytes: ceil(4n / 3). Lengths
# grow with the decoded size, so a longer segment decodes to more than MAX_HEADER_BYTES and is refused
# before it is decoded.
MAX_HEADER_SEGMENT = -(-4 * MAX_HEADER_BYTES // 3)
MAX_PAYLOAD_BYTES = 4096
MAX_PAYLOAD_SEGMENT = MAX_PAYLOAD_BYTES * 4 // 3 + 4  # a longer segment decodes to more: refused undecoded
MAX_KID_CHARS = 256
FORBIDDEN_HEADERS = frozenset({"jku", "jwk", "x5u", "x5c", "crit", "b64", "x5t", "x5t#S256"})
ACCESS_TOKEN_TYPES = frozenset({"at+jwt", "application/at+jwt"})  # RFC 9068 §4, case-insensitive


@dataclass(frozen=True, slots=True)
class VerificationKey:
    kid: str
    alg: str
    verify: Callable[[bytes, bytes], bool]
    # True when `verify` calls out (a Vault Transit HMAC key): never call it on an event loop.
    remote: bool = False


_B64_CHARS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_B64_VALUE = {c: i for i, c in enumerate(_B64_CHARS)}
_TO_STD = bytes.maketrans(b"-_", b"+/")
_FROM_STD = bytes.maketrans(b"+/", b"-_")


def b64encode(data: bytes) -> bytes:
    # One pass maps +/ to -_ and drops the padding and the newline (cheaper than translate + rstrip).
    return binascii.b2a_base64(data).translate(_FROM_STD, b"=\n")


def _malformed(what: str, problem: str) -> MalformedTokenError:
    return MalformedTokenError(f"{what}: {problem}" if what else problem)


def b64decode(segment: bytes, what: str = "") -> bytes:
    """Canonical base64url without padding; anything else is a MalformedTokenError (its description
    starts with `what`, the segment's name, when given)."""
    n = len(segment)
    tail = n % 4
    # Deleting every alphabet character must leave nothing (one C pass; cheaper than a set test).
    if tail == 1 or segment.translate(None, _B64_CHARS):
        raise _malformed(what, "malformed base64url")
    # Zero trailing bits only (RFC 4648 §3.5): otherwise two strings would name one token. The last
    # character carries 4 (two leftover characters) or 2 (three) bits that must be zero.
    if tail and _B64_VALUE[segment[-1]] & (0xF if tail == 2 else 0x3):
        raise _malformed(what, "non-canonical base64url")
    try:
        return binascii.a2b_base64(segment.translate(_TO_STD) + b"=" * (-n % 4), strict_mode=True)
    except binascii.Error:
        raise _malformed(what, "malformed base64url") from None


class DuplicateMemberError(ValueError):
    """A JSON object names one member twice (RFC 8725 §3.8 / RFC 7515 §5.2; I-JSON, RFC 7493 §2.3)."""


def unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A ``json`` ``object_pairs_hook`` that refuses duplicate members (any JSON this service reads)."""
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise DuplicateMemberError(f"duplicate JSON member {k!r}")
        out[k] = v
    return out


def _no_constants(name: str) -> Any:
    raise MalformedTokenError(f"invalid JSON constant {name}")


_decoder = json.JSONDecoder(object_pairs_hook=unique_members, parse_constant=_no_constants)

# A faster parse for texts it can vouch for: their value when it is exactly what the strict parser
# would give, else None (then the strict parser decides). The server passes tokens.canonical_json.
JsonShortcut = Callable[[bytes], Any]


def parse_json_object(raw: bytes, what: str, shortcut: JsonShortcut | None = None) -> dict[str, Any]:
    if shortcut is not None:
        value = shortcut(raw)
        if isinstance(value, dict):
            return value
    try:
        text = raw.decode("utf-8")
        value = _decoder.decode(text)
        # I-JSON (RFC 7493 §2.1): an escaped lone surrogate ("\ud800") gives a string that no UTF-8
        # encoder can write back, so echoing the claims would fail later; refuse it here.
        if "\\u" in text:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
    except MalformedTokenError:
        raise
    except DuplicateMemberError as exc:
        raise MalformedTokenError(str(exc)) from None
    except (ValueError, RecursionError):
        raise MalformedTokenError(f"{what} is not valid JSON") from None
    if not isinstance(value, dict):
        raise MalformedTokenError(f"{what} is not a JSON object")
    return value


def split_compact(token: str | bytes, max_bytes: int = MAX_TOKEN_BYTES) -> tuple[bytes, bytes, bytes, bytes]:
    """The signing input (``header.payload``) and the header, payload and signature segments of a
    compact JWS; nothing is decoded yet."""
    if isinstance(token, str):
        try:
            raw = token.encode("ascii")
        except UnicodeEncodeError:
            raise MalformedTokenError("token is not ASCII") from None
    else:
        raw = token
    if len(raw) > max_bytes:
        raise TokenTooLargeError(f"token longer than {max_bytes} bytes")
    parts = raw.split(b".")
    if len(parts) != 3:
        raise MalformedTokenError("not a compact JWS (three base64url parts separated by dots)")
    h64, p64, s64 = parts
    if not h64 or not s64:
        raise MalformedTokenError("missing header or signature")
    return raw[: len(h64) + 1 + len(p64)], h64, p64, s64


def check_typ(header: Mapping[str, Any], token_types: Collection[str]) -> None:
    """``typ`` must be one of `token_types` (lower case; media types compare case-insensitively)."""
    typ = header.get("typ")
    if not isinstance(typ, str) or typ.lower() not in token_types:
        raise InvalidTypeError(f"typ must be one of {', '.join(sorted(token_types))}")


def check_header(
    header: Mapping[str, Any],
    algorithms: Collection[str] | None = None,
    token_types: Collection[str] | None = None,
) -> tuple[str, str]:
    """The header rules every verifier here applies (server and SDK): a string ``alg`` that is not
    ``none`` (and one of `algorithms`, when given), no forbidden parameter, a usable ``kid``, and a
    ``typ`` among `token_types` when given. Returns (alg, kid)."""
    alg = header.get("alg")
    if not isinstance(alg, str):
        raise MalformedTokenError("header has no alg")
    if alg.lower() == "none":
        raise UnsupportedAlgorithmError("alg none is never accepted")
    if algorithms is not None and alg not in algorithms:
        raise UnsupportedAlgorithmError(f"alg {alg!r} is not accepted here")
    bad = FORBIDDEN_HEADERS.intersection(header)
    if bad:
        raise MalformedTokenError(f"header parameter {sorted(bad)[0]} is not accepted")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid or len(kid) > MAX_KID_CHARS:
        raise MalformedTokenError("header has no usable kid")
    if token_types is not None:
        check_typ(header, token_types)
    return alg, kid


def parse_header(
    h64: bytes,
    algorithms: Collection[str] | None = None,
    token_types: Collection[str] | None = None,
    shortcut: JsonShortcut | None = None,
) -> tuple[dict[str, Any], str, str]:
    """Decode a header segment and apply `check_header`: (header, alg, kid)."""
    if len(h64) > MAX_HEADER_SEGMENT:
        raise MalformedTokenError("header too large")
    header = parse_json_object(b64decode(h64, "header"), "header", shortcut)
    alg, kid = check_header(header, algorithms, token_types)
    return header, alg, kid


def parse_claims(p64: bytes, shortcut: JsonShortcut | None = None) -> dict[str, Any]:
    """The payload segment as a JSON object, at most MAX_PAYLOAD_BYTES."""
    if len(p64) > MAX_PAYLOAD_SEGMENT:
        raise MalformedTokenError("payload too large")
    payload = b64decode(p64, "payload")
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise MalformedTokenError("payload too large")
    return parse_json_object(payload, "payload", shortcut)


def key_for(keys: Mapping[str, VerificationKey], kid: str, alg: str) -> VerificationKey:
    """The key `kid` names, if its one algorithm is `alg` (RFC 8725 §3.1)."""
    key = keys.get(kid)
    if key is None:
        raise UnknownKeyError("unknown kid")
    if alg != key.alg:
        raise wrong_alg(alg, key)
    return key


# The two refusals the hot paths test for inline (a comparison, a call) and raise from here.
def wrong_alg(alg: str, key: VerificationKey) -> UnsupportedAlgorithmError:
    return UnsupportedAlgorithmError(f"alg {alg!r} does not match the alg of key {key.kid}")


def bad_signature() -> InvalidSignatureError:
    return InvalidSignatureError("signature does not verify")


@dataclass(frozen=True, slots=True)
class ParsedJWS:
    header: dict[str, Any]
    signing_input: bytes
    payload_segment: bytes
    signature: bytes


def parse_compact(
    token: str | bytes, *, max_bytes: int = MAX_TOKEN_BYTES, shortcut: JsonShortcut | None = None
) -> ParsedJWS:
    """Split and decode a compact JWS and check its header; the signature is not checked here."""
    signing_input, h64, p64, s64 = split_compact(token, max_bytes)
    header, _, _ = parse_header(h64, shortcut=shortcut)
    return ParsedJWS(header, signing_input, p64, b64decode(s64, "signature"))


@dataclass(frozen=True, slots=True)
class VerifiedJWS:
    header: dict[str, Any]
    payload: bytes
    key: VerificationKey


def verify_compact(
    token: str | bytes,
    keys: Mapping[str, VerificationKey],
    *,
    max_bytes: int = MAX_TOKEN_BYTES,
) -> VerifiedJWS:
    """Verify a compact JWS against the key its ``kid`` names, with that key's one algorithm."""
    parsed = parse_compact(token, max_bytes=max_bytes)
    key = key_for(keys, parsed.header["kid"], parsed.header["alg"])
    if not key.verify(parsed.signing_input, parsed.signature):
        raise bad_signature()
    return VerifiedJWS(parsed.header, b64decode(parsed.payload_segment, "payload"), key)
