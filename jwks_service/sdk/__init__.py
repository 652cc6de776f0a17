"""Verifier SDK: verify this service's access tokens in other services, and obtain tokens.

    from jwks_service.sdk import Verifier, AsyncVerifier, InvalidTokenError

    verifier = Verifier(issuer="https://auth.example.com", audience="api")  # finds jwks_uri by RFC 8414
    claims = verifier.verify(token)          # raises an InvalidTokenError subclass on any failure

It needs only httpx, cryptography and joserfc, none of the server's dependencies: the
``jwks-service-sdk`` distribution (``make sdk-dist``; sdk-dist/README.md) installs it alone; the
Starlette middleware (``jwks_service.sdk.starlette``) needs Starlette. The exceptions and claim
rules import without httpx (the server uses them); the HTTP parts load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import errors
from .cache import CacheSettings
from .errors import *  # noqa: F403 - every exception, as sdk.errors lists them

if TYPE_CHECKING:
    from .client import AsyncTokenClient, TokenClient
    from .verifier import AsyncVerifier, Verifier

_LAZY = {
    "Verifier": "verifier",
    "AsyncVerifier": "verifier",
    "TokenClient": "client",
    "AsyncTokenClient": "client",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f"{__name__}.{module}"), name)


__all__ = ["AsyncTokenClient", "AsyncVerifier", "CacheSettings", "TokenClient", "Verifier"]
__all__ += errors.__all__
