"""One exception hierarchy for the whole service.

Every error carries a machine ``error`` code (an OAuth / RFC 6750 code where one applies), a
human ``description`` and the HTTP ``status`` it maps to. Errors of dependencies (sqlite3,
cryptography, joserfc) become one of these at the edge that called them, exactly once.

`JoseError` is the JOSE core's branch (`jws`, `claims`): the server and the verifier SDK raise the
same classes, and each maps them once at its own edge (introspection answers ``{"active": false}``,
the SDK's middleware a 401 with ``WWW-Authenticate``). ``jwks_service.sdk.SDKError`` is `JoseError`.

    JwksServiceError
     ├── ConfigError                    refused configuration (one line naming field and rule)
     ├── InvalidRequestError            400 invalid_request
     │    ├── UnsupportedGrantTypeError 400 unsupported_grant_type
     │    └── InvalidScopeError         400 invalid_scope
     ├── InvalidClientError             401 invalid_client
     ├── JoseError                      the JOSE core's errors (and the SDK's)
     │    └── InvalidTokenError         401 invalid_token (JWS / JWT verification failures)
     │         ├── MalformedTokenError ── TokenTooLargeError
     │         ├── InvalidTypeError, UnsupportedAlgorithmError, InvalidSignatureError
     │         ├── UnknownKeyError ── RevokedKeyError
     │         ├── TaintedKeyError      (a verifier with reject_tainted=True)
     │         ├── ExpiredTokenError, ImmatureTokenError
     │         └── InvalidIssuerError, InvalidAudienceError, InvalidClaimsError
     ├── InsufficientScopeError         403 insufficient_scope
     ├── NotFoundError                  404 not_found
     ├── ConflictError                  409 conflict
     │    ├── RotationRefusedError      409 rotation_refused (prepublish gate)
     │    ├── TaintRefusedError         409 taint_refused (only a current or previous key)
     │    └── RevisionConflictError     409 (lost a compare-and-set race; callers retry)
     ├── PayloadTooLargeError           413 request_too_large
     ├── TooManyRequestsError           429 slow_down
     ├── UnavailableError               503 temporarily_unavailable
     │    └── StoreError                503 the store could not be read or written
     └── KeyValidationError             a key failed its canary before promotion
"""

from __future__ import annotations

from typing import Any


class JwksServiceError(Exception):
    """A subclass names its code and status in its header: ``class X(Base, error="x", status=400)``."""

    error = "server_error"
    status = 500

    def __init_subclass__(cls, *, error: str = "", status: int = 0, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if error:
            cls.error = error
        if status:
            cls.status = status

    def __init__(self, description: str = "") -> None:
        super().__init__(description or self.error)
        self.description = description or self.error

    def as_dict(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


class ConfigError(JwksServiceError, error="invalid_config"):
    pass


class InvalidRequestError(JwksServiceError, error="invalid_request", status=400):
    pass


class UnsupportedGrantTypeError(InvalidRequestError, error="unsupported_grant_type"):
    pass


class InvalidScopeError(InvalidRequestError, error="invalid_scope"):
    pass


class InvalidClientError(JwksServiceError, error="invalid_client", status=401):
    pass


class InsufficientScopeError(JwksServiceError, error="insufficient_scope", status=403):
    pass


class NotFoundError(JwksServiceError, error="not_found", status=404):
    pass


class ConflictError(JwksServiceError, error="conflict", status=409):
    pass


class RotationRefusedError(ConflictError, error="rotation_refused"):
    pass


class TaintRefusedError(ConflictError, error="taint_refused"):
    pass


class RevisionConflictError(ConflictError):
    """Another writer changed the keyset since it was read (compare-and-set lost)."""


class PayloadTooLargeError(JwksServiceError, error="request_too_large", status=413):
    pass


class TooManyRequestsError(JwksServiceError, error="slow_down", status=429):
    def __init__(self, description: str = "", retry_after: int = 60) -> None:
        super().__init__(description)
        self.retry_after = retry_after


class UnavailableError(JwksServiceError, error="temporarily_unavailable", status=503):
    def __init__(self, description: str = "", retry_after: int = 1) -> None:
        super().__init__(description)
        self.retry_after = retry_after


class StoreError(UnavailableError):
    pass


class KeyValidationError(JwksServiceError, error="key_validation_failed"):
    pass


# ----- the JOSE core's branch ---------------------------------------------------------------------


class JoseError(JwksServiceError):
    """What the JOSE core (and the SDK, whose ``SDKError`` this is) raises: a machine ``error`` code
    and a ``description``, as joserfc's ``JoseError``."""


class InvalidTokenError(JoseError, error="invalid_token", status=401):
    """The token is not acceptable (RFC 6750 §3.1 ``invalid_token``)."""


class MalformedTokenError(InvalidTokenError):
    """Not a well-formed compact JWS, or a header this verifier refuses (``jku``, ``crit``, ...)."""


class TokenTooLargeError(MalformedTokenError):
    pass


class InvalidTypeError(InvalidTokenError):
    """The ``typ`` header is not the one expected (``at+jwt`` for RFC 9068 access tokens)."""


class UnsupportedAlgorithmError(InvalidTokenError):
    """The ``alg`` is not allowed here, or is not the algorithm of the key the ``kid`` names."""


class UnknownKeyError(InvalidTokenError):
    """No key with this ``kid`` in the issuer's key set (for the SDK: even after a refresh)."""


class RevokedKeyError(UnknownKeyError):
    """The issuer revoked this key (pushed by ``/keys/events``)."""


class TaintedKeyError(InvalidTokenError):
    """The issuer marked this key as suspect (pushed by ``/keys/events``) and the verifier refuses it."""


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
