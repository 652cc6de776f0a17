"""One exception hierarchy for the whole service.

Every error carries a machine ``error`` code (an OAuth / RFC 6750 code where one applies), a
human ``description`` and the HTTP ``status`` it maps to. Errors of dependencies (sqlite3,
cryptography, joserfc) become one of these at the edge that called them, exactly once.

    JwksServiceError
     ├── ConfigError                    refused configuration (one line naming field and rule)
     ├── InvalidRequestError            400 invalid_request
     │    ├── UnsupportedGrantTypeError 400 unsupported_grant_type
     │    └── InvalidScopeError         400 invalid_scope
     ├── InvalidClientError             401 invalid_client
     ├── InvalidTokenError              401 invalid_token (JWS / JWT verification failures)
     ├── InsufficientScopeError         403 insufficient_scope
     ├── NotFoundError                  404 not_found
     ├── ConflictError                  409 conflict
     │    ├── RotationRefusedError      409 rotation_refused (prepublish gate)
     │    └── RevisionConflictError     409 (lost a compare-and-set race; callers retry)
     ├── PayloadTooLargeError           413 request_too_large
     ├── TooManyRequestsError           429 slow_down
     ├── UnavailableError               503 temporarily_unavailable
     │    └── StoreError                503 the store could not be read or written
     └── KeyValidationError             a key failed its canary before promotion
"""

from __future__ import annotations


class JwksServiceError(Exception):
    error = "server_error"
    status = 500

    def __init__(self, description: str = "") -> None:
        super().__init__(description or self.error)
        self.description = description or self.error

    def as_dict(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


class ConfigError(JwksServiceError):
    error = "invalid_config"


class InvalidRequestError(JwksServiceError):
    error = "invalid_request"
    status = 400


class UnsupportedGrantTypeError(InvalidRequestError):
    error = "unsupported_grant_type"


class InvalidScopeError(InvalidRequestError):
    error = "invalid_scope"


class InvalidClientError(JwksServiceError):
    error = "invalid_client"
    status = 401


class InvalidTokenError(JwksServiceError):
    error = "invalid_token"
    status = 401


class InsufficientScopeError(JwksServiceError):
    error = "insufficient_scope"
    status = 403


class NotFoundError(JwksServiceError):
    error = "not_found"
    status = 404


class ConflictError(JwksServiceError):
    error = "conflict"
    status = 409


class RotationRefusedError(ConflictError):
    error = "rotation_refused"


class RevisionConflictError(ConflictError):
    """Another writer changed the keyset since it was read (compare-and-set lost)."""


class PayloadTooLargeError(JwksServiceError):
    error = "request_too_large"
    status = 413


class TooManyRequestsError(JwksServiceError):
    error = "slow_down"
    status = 429

    def __init__(self, description: str = "", retry_after: int = 60) -> None:
        super().__init__(description)
        self.retry_after = retry_after


class UnavailableError(JwksServiceError):
    error = "temporarily_unavailable"
    status = 503

    def __init__(self, description: str = "", retry_after: int = 1) -> None:
        super().__init__(description)
        self.retry_after = retry_after


class StoreError(UnavailableError):
    pass


class KeyValidationError(JwksServiceError):
    error = "key_validation_failed"
