"""Claim checks of a token (RFC 9068 §4, RFC 8725 §3.8-3.10). No I/O; `now` is a parameter.

Part of the JOSE core: the server's introspection (`tokens`) and the verifier SDK (`sdk.rules`,
introspection answers) apply these same rules and raise the same errors.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from typing import Any

from .errors import (
    ExpiredTokenError,
    ImmatureTokenError,
    InvalidAudienceError,
    InvalidClaimsError,
    InvalidIssuerError,
)

# RFC 9068 §2.2: what every JWT access token carries.
ACCESS_TOKEN_CLAIMS = ("iss", "exp", "aud", "sub", "client_id", "iat", "jti")
_STRING_CLAIMS = ("sub", "client_id", "jti", "scope")


def number(claims: Mapping[str, Any], name: str) -> float:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidClaimsError(f"claim {name} must be a number")
    try:
        result = float(value)
    except OverflowError:  # an integer beyond the float range, e.g. 400 digits
        raise InvalidClaimsError(f"claim {name} must be a number") from None
    if not math.isfinite(result):
        raise InvalidClaimsError(f"claim {name} must be a number")
    return result


def audience_matches(aud: Any, wanted: Collection[str]) -> bool:
    if isinstance(aud, str):
        return aud in wanted
    if isinstance(aud, list) and aud and all(isinstance(a, str) for a in aud):
        return any(a in wanted for a in aud)
    return False


class ClaimRules:
    """What a token's claims are held to: exact ``iss``; ``aud`` one of `audiences` (None: not
    checked); ``exp`` / ``iat`` / ``nbf`` with `leeway`; string claims are strings; every name in
    `required_claims` present. The SDK's `Rules` are these and the header rules."""

    def __init__(
        self, issuer: str, audiences: Collection[str] | None, leeway: float, required_claims: Collection[str] = ()
    ) -> None:
        self.issuer = issuer
        self.audiences = audiences
        self.leeway = leeway
        self.required_claims = required_claims

    def check_claims(self, claims: Mapping[str, Any], now: float) -> None:
        leeway = self.leeway
        if claims.get("iss") != self.issuer:
            raise InvalidIssuerError("wrong issuer")
        exp = number(claims, "exp")
        iat = number(claims, "iat")
        if now >= exp + leeway:
            raise ExpiredTokenError("token expired")
        if iat > now + leeway:
            raise ImmatureTokenError("token issued in the future")
        if "nbf" in claims and number(claims, "nbf") > now + leeway:
            raise ImmatureTokenError("token not yet valid")
        if exp < iat:
            raise InvalidClaimsError("token expires before it was issued")
        if self.audiences is not None and not audience_matches(claims.get("aud"), self.audiences):
            raise InvalidAudienceError("wrong audience")
        for name in _STRING_CLAIMS:
            if name in claims and not isinstance(claims[name], str):
                raise InvalidClaimsError(f"claim {name} must be a string")
        for name in self.required_claims:
            if name not in claims:
                raise InvalidClaimsError(f"claim {name} missing")


def check_claims(
    claims: Mapping[str, Any],
    *,
    issuer: str,
    audiences: Collection[str] | None,
    now: float,
    leeway: float,
    required: Collection[str] = (),
) -> None:
    """`ClaimRules` applied once (the server's introspection)."""
    ClaimRules(issuer, audiences, leeway, required).check_claims(claims, now)
