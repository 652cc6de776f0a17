"""What `Verifier.verify` checks, in two halves around the key lookup (which may do I/O). No I/O here.

1. `split`: size, compact form, canonical base64url, a JSON-object header without duplicate members,
   an allowed ``alg`` (never ``none``), the expected ``typ``, a ``kid``, and no header that lets the
   token choose its own key or demand unknown processing (``jku``, ``jwk``, ``x5u``, ``x5c``,
   ``crit``, ``b64``, ...). Headers are shared by every token of one key, so a validated header
   segment is remembered (a few hundred of them) and the next token skips its JSON parsing.
2. `finish`: the key's one algorithm must be the header's (RFC 8725 §3.1), the signature must
   verify, then the claims (`jwks_service.claims.ClaimRules`, which `Rules` extends).

Every rule is the JOSE core's (`jwks_service.jws`, `jwks_service.claims`); this adds the header cache
and the order the SDK checks in.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, NamedTuple

from ..claims import ClaimRules
from ..jws import (
    ACCESS_TOKEN_TYPES,
    MAX_PAYLOAD_BYTES,
    MAX_TOKEN_BYTES,
    VerificationKey,
    b64decode,
    bad_signature,
    parse_claims,
    parse_header,
    split_compact,
    wrong_alg,
)

HEADER_CACHE_SIZE = 256

__all__ = ["ACCESS_TOKEN_TYPES", "HEADER_CACHE_SIZE", "MAX_PAYLOAD_BYTES", "Rules", "Split"]


class Split(NamedTuple):
    """A token cut at its dots, its header checked. A named tuple: made once per verification, and
    a frozen dataclass costs three times as much to make."""

    kid: str
    alg: str
    signing_input: bytes
    payload_segment: bytes
    signature_segment: bytes


class Rules(ClaimRules):
    """The header rules (with a cache of the header segments that passed them) and the claim rules."""

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
        super().__init__(issuer, None if audiences is None else frozenset(audiences), leeway, tuple(required_claims))
        self.algorithms = frozenset(algorithms)
        self.token_types = None if token_types is None else frozenset(t.lower() for t in token_types)
        self.max_token_bytes = max_token_bytes
        self._headers: dict[bytes, tuple[str, str]] = {}

    def _header(self, h64: bytes) -> tuple[str, str]:
        _, alg, kid = parse_header(h64, self.algorithms, self.token_types)
        if len(self._headers) >= HEADER_CACHE_SIZE:
            self._headers.clear()  # a flood of distinct headers only costs the parse it would anyway
        self._headers[h64] = (kid, alg)
        return kid, alg

    def split(self, token: str | bytes) -> Split:
        signing_input, h64, p64, s64 = split_compact(token, self.max_token_bytes)
        known = self._headers.get(h64)
        kid, alg = known if known is not None else self._header(h64)
        return Split(kid, alg, signing_input, p64, s64)

    def finish(self, split: Split, key: VerificationKey, now: float) -> dict[str, Any]:
        if split.alg != key.alg:
            raise wrong_alg(split.alg, key)
        if not key.verify(split.signing_input, b64decode(split.signature_segment, "signature")):
            raise bad_signature()
        claims = parse_claims(split.payload_segment)
        self.check_claims(claims, now)
        return claims
