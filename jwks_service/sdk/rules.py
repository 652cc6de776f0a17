"""What `Verifier.verify` checks, in two halves around the key lookup (which may do I/O). No I/O here.

1. `split`: size, compact form, canonical base64url, a JSON-object header without duplicate members,
   an allowed ``alg`` (never ``none``), the expected ``typ``, a ``kid``, and no header that lets the
   token choose its own key or demand unknown processing (``jku``, ``jwk``, ``x5u``, ``x5c``,
   ``crit``, ``b64``, ...). Headers are shared by every token of one key, so a validated header
   segment is remembered (a few hundred of them) and the next token skips its JSON parsing.
2. `finish`: the key's one algorithm must be the header's (RFC 8725 §3.1), the signature must
   verify, then the claims (see `claims.check_claims`).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidTokenError as _ParseError
from ..jws import MAX_HEADER_SEGMENT, MAX_TOKEN_BYTES, VerificationKey, b64decode, check_header, parse_json_object
from .claims import check_claims
from .errors import (
    InvalidSignatureError,
    InvalidTypeError,
    MalformedTokenError,
    TokenTooLargeError,
    UnsupportedAlgorithmError,
)

MAX_PAYLOAD_BYTES = 4096
HEADER_CACHE_SIZE = 256
ACCESS_TOKEN_TYPES = frozenset({"at+jwt", "application/at+jwt"})  # RFC 9068 §4, case-insensitive


@dataclass(frozen=True, slots=True)
class Split:
    kid: str
    alg: str
    signing_input: bytes
    payload_segment: bytes
    signature_segment: bytes


def _decode(segment: bytes, what: str) -> bytes:
    try:
        return b64decode(segment)
    except _ParseError as exc:
        raise MalformedTokenError(f"{what}: {exc.description}") from None


def _json(raw: bytes, what: str) -> dict[str, Any]:
    try:
        return parse_json_object(raw, what)
    except _ParseError as exc:
        raise MalformedTokenError(exc.description) from None


class Rules:
    def __init__(
        self,
        *,
        issuer: str,
        audiences: Collection[str] | None,
        algorithms: Collection[str],
        leeway: float,
        token_types: Collection[str] | None = ACCESS_TOKEN_TYPES,
        required_claims: Collection[str] = (),
        max_token_bytes: int = MAX_TOKEN_BYTES,
    ) -> None:
        self.issuer = issuer
        self.audiences = None if audiences is None else frozenset(audiences)
        self.algorithms = frozenset(algorithms)
        self.leeway = leeway
        self.token_types = None if token_types is None else frozenset(t.lower() for t in token_types)
        self.required_claims = tuple(required_claims)
        self.max_token_bytes = max_token_bytes
        self._headers: dict[bytes, tuple[str, str]] = {}

    def _header(self, h64: bytes) -> tuple[str, str]:
        if len(h64) > MAX_HEADER_SEGMENT:
            raise MalformedTokenError("header too large")
        header = _json(_decode(h64, "header"), "header")
        alg = header.get("alg")
        if isinstance(alg, str) and alg not in self.algorithms:
            what = "alg none is never accepted" if alg.lower() == "none" else f"alg {alg!r} is not accepted here"
            raise UnsupportedAlgorithmError(what)
        try:
            alg, kid = check_header(header)
        except _ParseError as exc:
            raise MalformedTokenError(exc.description) from None
        if self.token_types is not None:
            typ = header.get("typ")
            if not isinstance(typ, str) or typ.lower() not in self.token_types:
                raise InvalidTypeError(f"typ must be one of {', '.join(sorted(self.token_types))}")
        if len(self._headers) >= HEADER_CACHE_SIZE:
            self._headers.clear()  # a flood of distinct headers only costs the parse it would anyway
        self._headers[h64] = (kid, alg)
        return kid, alg

    def split(self, token: str | bytes) -> Split:
        if isinstance(token, str):
            try:
                raw = token.encode("ascii")
            except UnicodeEncodeError:
                raise MalformedTokenError("token is not ASCII") from None
        else:
            raw = token
        if len(raw) > self.max_token_bytes:
            raise TokenTooLargeError(f"token longer than {self.max_token_bytes} bytes")
        parts = raw.split(b".")
        if len(parts) != 3:
            raise MalformedTokenError("not a compact JWS (three base64url parts separated by dots)")
        h64, p64, s64 = parts
        if not h64 or not s64:
            raise MalformedTokenError("missing header or signature")
        known = self._headers.get(h64)
        kid, alg = known if known is not None else self._header(h64)
        return Split(kid, alg, raw[: len(h64) + 1 + len(p64)], p64, s64)

    def finish(self, split: Split, key: VerificationKey, now: float) -> dict[str, Any]:
        if split.alg != key.alg:
            raise UnsupportedAlgorithmError(f"alg {split.alg!r} is not the alg of key {key.kid}")
        signature = _decode(split.signature_segment, "signature")
        if not key.verify(split.signing_input, signature):
            raise InvalidSignatureError("signature does not verify")
        payload = _decode(split.payload_segment, "payload")
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise MalformedTokenError("payload too large")
        claims = _json(payload, "payload")
        check_claims(
            claims,
            issuer=self.issuer,
            audiences=self.audiences,
            now=now,
            leeway=self.leeway,
            required=self.required_claims,
        )
        return claims
