"""Starlette integration: a middleware that authenticates bearer tokens, and a scope check.

    app = Starlette(routes=..., middleware=[Middleware(BearerAuthMiddleware, verifier=AsyncVerifier(...))])

    async def orders(request):
        require_scopes(request, "read:orders")          # 403 insufficient_scope otherwise
        return JSONResponse({"client": request.user.client_id, "claims": request.state.claims})

A request with a valid token gets ``request.state.claims``, ``request.user`` (a `TokenUser`) and
``request.auth`` (Starlette's ``AuthCredentials`` with the token's scopes, so Starlette's own
``@requires("scope")`` works too). Anything else is answered here (RFC 6750 §3): no token → 401
with ``WWW-Authenticate: Bearer realm=...``; a bad one → 401 ``error="invalid_token"``; no way to
check it now (no keys, introspection refused or down: any other `SDKError`) → 503 with
``Retry-After`` and a JSON body, never a 500. Paths in ``public`` are let through without a token.

WebSocket handshakes are authenticated the same way (the token in the ``Authorization`` header);
a refused one is closed before it is accepted: 1008 (policy violation) where HTTP would say 401,
1013 (try again later) where it would say 503, the error code and description as the reason.
The endpoint finds ``websocket.user``, ``websocket.auth`` and ``websocket.state.claims``.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from starlette.authentication import AuthCredentials, BaseUser
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import InvalidTokenError, KeysUnavailableError, SDKError
from .verifier import AsyncVerifier

MAX_DESCRIPTION = 200


class TokenUser(BaseUser):
    def __init__(self, claims: dict[str, Any]) -> None:
        self.claims = claims
        self.client_id = str(claims.get("client_id", claims.get("sub", "")))
        scope = claims.get("scope", "")
        self.scopes = tuple(scope.split()) if isinstance(scope, str) else ()

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def display_name(self) -> str:
        return self.client_id

    @property
    def identity(self) -> str:
        return str(self.claims.get("sub", ""))


def _quote(text: str) -> str:
    # RFC 6750 §3: error_description is quoted-string of %x20-21 / %x23-5B / %x5D-7E.
    safe = "".join(c for c in text[:MAX_DESCRIPTION] if 0x20 <= ord(c) <= 0x7E and c not in '"\\')
    return f'"{safe}"'


# RFC 6455 §7.4.1 / the IANA registry: the close codes a refused WebSocket handshake carries.
WS_POLICY_VIOLATION = 1008  # no token, or a bad one (HTTP would say 401)
WS_TRY_AGAIN_LATER = 1013  # the token could not be checked now (HTTP would say 503)
MAX_CLOSE_REASON = 123  # RFC 6455 §5.5: a control frame's payload is at most 125 bytes, 2 of them the code


@dataclass(frozen=True, slots=True)
class _Refusal:
    status: int
    body: dict[str, str]
    headers: list[tuple[bytes, bytes]]


class BearerAuthMiddleware:
    """Authenticates every ``http`` and ``websocket`` scope; only ``lifespan`` passes untouched, and
    a scope type it does not know is refused (ASGI: an application raises on an unknown type) rather
    than let through unauthenticated."""

    def __init__(
        self,
        app: ASGIApp,
        verifier: AsyncVerifier,
        *,
        realm: str = "api",
        public: Collection[str] = (),
    ) -> None:
        self.app = app
        self.verifier = verifier
        self.realm = realm
        self.public = frozenset(public)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self.app(scope, receive, send)
            return
        if kind not in ("http", "websocket"):
            raise RuntimeError(f"BearerAuthMiddleware does not know ASGI scope type {kind!r}; refused")
        if scope["path"] in self.public:
            await self.app(scope, receive, send)
            return
        outcome = await self._authenticate(scope)
        if isinstance(outcome, _Refusal):
            if kind == "websocket":
                await self._close(send, outcome)
            else:
                await self._send(send, outcome)
            return
        user = TokenUser(outcome)
        scope["user"] = user
        scope["auth"] = AuthCredentials(list(user.scopes))
        scope.setdefault("state", {})["claims"] = outcome
        await self.app(scope, receive, send)

    async def _authenticate(self, scope: Scope) -> dict[str, Any] | _Refusal:
        header = ""
        for name, value in scope["headers"]:
            if name == b"authorization":
                header = value.decode("latin-1")
                break
        scheme, _, token = header.partition(" ")
        if not header:
            return self._refusal(
                401, {"error": "invalid_request"}, ("www-authenticate", f'Bearer realm="{self.realm}"')
            )
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return self._invalid("the Authorization header is not a Bearer token")
        try:
            return await self.verifier.verify(token)
        except InvalidTokenError as exc:
            return self._invalid(exc.description)
        except SDKError as exc:
            # Not the token's fault (no keys, introspection refused or down, ...): never a 500.
            retry_after = exc.retry_after if isinstance(exc, KeysUnavailableError) else 5
            body = {"error": "temporarily_unavailable", "error_description": exc.description}
            return self._refusal(503, body, ("retry-after", str(retry_after)))

    def _invalid(self, description: str) -> _Refusal:
        challenge = f'Bearer realm="{self.realm}", error="invalid_token", error_description={_quote(description)}'
        body = {"error": "invalid_token", "error_description": description}
        return self._refusal(401, body, ("www-authenticate", challenge))

    @staticmethod
    def _refusal(status: int, body: dict[str, str], header: tuple[str, str]) -> _Refusal:
        return _Refusal(status, body, [(header[0].encode(), header[1].encode("latin-1"))])

    @staticmethod
    async def _send(send: Send, refusal: _Refusal) -> None:
        payload = json.dumps(refusal.body).encode()
        await send(
            {
                "type": "http.response.start",
                "status": refusal.status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                    (b"cache-control", b"no-store"),
                    *refusal.headers,
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    @staticmethod
    async def _close(send: Send, refusal: _Refusal) -> None:
        """Refuse the handshake before accepting it (the server answers it with HTTP 403)."""
        code = WS_TRY_AGAIN_LATER if refusal.status == 503 else WS_POLICY_VIOLATION
        text = refusal.body["error"]
        if refusal.body.get("error_description"):
            text += ": " + refusal.body["error_description"]
        reason = text.encode()[:MAX_CLOSE_REASON].decode(errors="ignore")
        await send({"type": "websocket.close", "code": code, "reason": reason})


def require_scopes(request: Request, *scopes: str, realm: str = "api") -> dict[str, Any]:
    """The request's claims when its token holds every one of `scopes`; else 403 insufficient_scope."""
    user = request.scope.get("user")
    if not isinstance(user, TokenUser):
        raise HTTPException(401, "no bearer token", headers={"WWW-Authenticate": f'Bearer realm="{realm}"'})
    missing = [s for s in scopes if s not in user.scopes]
    if missing:
        challenge = f'Bearer realm="{realm}", error="insufficient_scope", scope="{" ".join(scopes)}"'
        raise HTTPException(403, f"missing scope {missing[0]}", headers={"WWW-Authenticate": challenge})
    return user.claims
