"""Exceptions of the verifier SDK.

Every reason a token is refused is an :class:`InvalidTokenError` subclass, so one ``except`` clause
maps them all to an RFC 6750 ``invalid_token`` response (``.error`` and ``.description`` are what
goes into ``WWW-Authenticate``). Failing to obtain keys is not the token's fault: that is
:class:`KeysUnavailableError`, a 503 rather than a 401; so is every other `SDKError`.

    SDKError
    ├── InvalidTokenError                      401 invalid_token
    │   ├── MalformedTokenError ── TokenTooLargeError
    │   ├── InvalidTypeError, UnsupportedAlgorithmError, InvalidSignatureError
    │   ├── UnknownKeyError ── RevokedKeyError
    │   ├── ExpiredTokenError, ImmatureTokenError
    │   ├── InvalidIssuerError, InvalidAudienceError, InvalidClaimsError
    │   └── InactiveTokenError
    ├── KeysUnavailableError                   503 temporarily_unavailable, Retry-After
    │   └── IntrospectionUnavailableError
    └── TokenRequestError                      (TokenClient)
"""

from __future__ import annotations


class SDKError(Exception):
    """Base of everything the SDK raises."""

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


class InvalidTokenError(SDKError):
    """The token is not acceptable (RFC 6750 §3.1 ``invalid_token``)."""

    error = "invalid_token"


class MalformedTokenError(InvalidTokenError):
    """Not a well-formed compact JWS, or a header this verifier refuses (``jku``, ``crit``, ...)."""


class TokenTooLargeError(MalformedTokenError):
    pass


class InvalidTypeError(InvalidTokenError):
    """The ``typ`` header is not the one expected (``at+jwt`` for RFC 9068 access tokens)."""


class UnsupportedAlgorithmError(InvalidTokenError):
    """The ``alg`` is not allowed here, or is not the algorithm of the key the ``kid`` names."""


class UnknownKeyError(InvalidTokenError):
    """No key with this ``kid`` in the issuer's key set, even after a refresh."""


class RevokedKeyError(UnknownKeyError):
    """The issuer revoked this key (pushed by ``/keys/events``)."""


class InvalidSignatureError(InvalidTokenError):
    pass


class ExpiredTokenError(InvalidTokenError):
    pass


class ImmatureTokenError(InvalidTokenError):
    """``nbf`` or ``iat`` lies in the future (beyond the leeway)."""


class InvalidIssuerError(InvalidTokenError):
    pass


class InvalidAudienceError(InvalidTokenError):
    pass


class InvalidClaimsError(InvalidTokenError):
    """A required claim is missing or has the wrong type."""


class InactiveTokenError(InvalidTokenError):
    """Introspection said ``{"active": false}`` (revoked, expired, or unknown to the issuer)."""


class KeysUnavailableError(SDKError):
    """No usable key set: the issuer could not be reached and nothing (fresh enough) is cached."""

    error = "temporarily_unavailable"

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
