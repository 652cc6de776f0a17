"""Exceptions of the verifier SDK.

Every reason a token is refused is an :class:`InvalidTokenError` subclass, so one ``except`` clause
maps them all to an RFC 6750 ``invalid_token`` response (``.error`` and ``.description`` are what
goes into ``WWW-Authenticate``). Failing to obtain keys is not the token's fault: that is
:class:`KeysUnavailableError`, a 503 rather than a 401; so is every other `SDKError`.

The token errors are the JOSE core's own (`jwks_service.errors`), which the server raises too;
`SDKError` is the core's `JoseError`. Only what is about reaching the issuer is defined here.

    SDKError (= JoseError)
    ├── InvalidTokenError                      401 invalid_token
    │   ├── MalformedTokenError ── TokenTooLargeError
    │   ├── InvalidTypeError, UnsupportedAlgorithmError, InvalidSignatureError
    │   ├── UnknownKeyError ── RevokedKeyError
    │   ├── TaintedKeyError                    (only with Verifier(reject_tainted=True))
    │   ├── ExpiredTokenError, ImmatureTokenError
    │   ├── InvalidIssuerError, InvalidAudienceError, InvalidClaimsError
    │   └── InactiveTokenError
    ├── KeysUnavailableError                   503 temporarily_unavailable, Retry-After
    │   └── IntrospectionUnavailableError
    └── TokenRequestError                      (TokenClient)
"""

from __future__ import annotations

from ..errors import (
    ExpiredTokenError,
    ImmatureTokenError,
    InvalidAudienceError,
    InvalidClaimsError,
    InvalidIssuerError,
    InvalidSignatureError,
    InvalidTokenError,
    InvalidTypeError,
    MalformedTokenError,
    RevokedKeyError,
    TaintedKeyError,
    TokenTooLargeError,
    UnknownKeyError,
    UnsupportedAlgorithmError,
)
from ..errors import JoseError as SDKError


class InactiveTokenError(InvalidTokenError):
    """Introspection said ``{"active": false}`` (revoked, expired, or unknown to the issuer)."""


class KeysUnavailableError(SDKError):
    """No usable key set: the issuer could not be reached and nothing (fresh enough) is cached."""

    error = "temporarily_unavailable"
    status = 503

    def __init__(self, description: str, retry_after: int = 5) -> None:
        super().__init__(description)
        self.retry_after = retry_after


class IntrospectionUnavailableError(KeysUnavailableError):
    """Introspection gave no verdict: the issuer refused our client credentials (a secret rotated out,
    a missing ``introspect`` scope), answered 429/5xx or something unusable, or could not be reached.
    Not the token's fault either: a 503 too."""


class TokenRequestError(SDKError):
    """The token endpoint refused a client_credentials request (RFC 6749 §5.2 error code)."""

    def __init__(self, error: str, description: str, status: int = 0) -> None:
        super().__init__(f"{error}: {description}" if description else error)
        self.error = error
        self.status = status


__all__ = [
    "ExpiredTokenError",
    "ImmatureTokenError",
    "InactiveTokenError",
    "IntrospectionUnavailableError",
    "InvalidAudienceError",
    "InvalidClaimsError",
    "InvalidIssuerError",
    "InvalidSignatureError",
    "InvalidTokenError",
    "InvalidTypeError",
    "KeysUnavailableError",
    "MalformedTokenError",
    "RevokedKeyError",
    "SDKError",
    "TaintedKeyError",
    "TokenRequestError",
    "TokenTooLargeError",
    "UnknownKeyError",
    "UnsupportedAlgorithmError",
]
