"""What an RFC 7662 introspection answer means to the verifier (HS* tokens), and the short cache of
active answers. No I/O: `verifier._Core._introspect_flow` sends the request.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from typing import Any

import httpx

from .errors import InactiveTokenError, IntrospectionUnavailableError, SDKError
from .flows import retry_after
from .rules import Rules

INTROSPECTION_CACHE_ENTRIES = 10_000
_NOT_CLAIMS = ("active", "kid", "keyset")  # members of our issuer's answer that are not the token's claims


def failed(exc: Exception) -> IntrospectionUnavailableError:
    """Introspection could not be asked (unreachable, a body over the bound, no metadata, ...)."""
    reason = exc.description if isinstance(exc, SDKError) else type(exc).__name__
    return IntrospectionUnavailableError(f"introspection failed: {reason}")


class Introspections:
    """Active answers, each kept for `ttl` seconds (never past the token's ``exp``), by the token's
    SHA-256; at most INTROSPECTION_CACHE_ENTRIES, the oldest dropped first. ``ttl = 0``: no cache."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._active: OrderedDict[bytes, tuple[float, dict[str, Any]]] = OrderedDict()

    def cached(self, token: str | bytes, now: float) -> tuple[bytes, dict[str, Any] | None]:
        """The token's digest, and its claims if an active answer for it is still cached."""
        digest = hashlib.sha256(token.encode() if isinstance(token, str) else token).digest()
        hit = self._active.get(digest)
        if hit is not None and hit[0] > now:
            return digest, hit[1]
        return digest, None

    def answer(self, digest: bytes, response: httpx.Response, raw: bytes, rules: Rules, now: float) -> dict[str, Any]:
        """The claims of an active token; InactiveTokenError for {"active": false}; and for anything
        that is not a verdict (401 after our secret rotated out, 429, 5xx, not JSON, ...)
        IntrospectionUnavailableError: a 503 for the middleware, never a bare error."""
        status = response.status_code
        if status != 200:
            what = "refused our client credentials" if status in (401, 403) else "answered"
            retry = retry_after(response)
            raise IntrospectionUnavailableError(
                f"introspection {what} (HTTP {status})", retry_after=5 if retry is None else int(min(60, max(1, retry)))
            )
        try:
            body = json.loads(raw)
        except ValueError:
            raise IntrospectionUnavailableError("introspection answered something other than JSON") from None
        if not isinstance(body, dict) or not isinstance(body.get("active"), bool):
            raise IntrospectionUnavailableError("introspection answered no verdict (RFC 7662: a boolean active)")
        if body["active"] is not True:
            raise InactiveTokenError("the issuer says this token is not active")
        claims = {k: v for k, v in body.items() if k not in _NOT_CLAIMS}
        rules.check_claims(claims, now)
        if self.ttl > 0:
            self._active[digest] = (min(now + self.ttl, float(claims["exp"])), claims)
            while len(self._active) > INTROSPECTION_CACHE_ENTRIES:
                self._active.popitem(last=False)
        return claims
