"""Starlette integration: a middleware that authenticates bearer tokens, and a scope check.

    app = Starlette(routes=..., middleware=[Middleware(BearerAuthMiddleware, verifier=AsyncVerifier(...))])

    async def orders(request):
        require_scopes(request, "read:orders")          # 403 insufficient_scope otherwise
        return JSONResponse({"client": request.user.client_id, "claims": request.state.claims})

A request with a valid token gets ``request.state.claims``, ``request.user`` (a `TokenUser`) and
``request.auth`` (Starlette's ``AuthCredentials`` with the token's scopes, so Starlette's own
``@requires("scope")`` works too). Anything else is answered here (RFC 6750 §3): no token → 401
with ``WWW-Authenticate: Bearer realm=...``; a bad one → 401 ``error="invalid_token"``; no keys to
check it with → 503 with ``Retry-After``. Paths in ``public`` are let through without a token.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any

from starlette.authentication import AuthCredentials, BaseUser
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import InvalidTokenError, KeysUnavailableError
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


class BearerAuthMiddleware:
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
        if scope["type"] != "http" or scope["path"] in self.public:
            await self.app(scope, receive, send)
            return
        header = ""
        for name, value in scope["headers"]:
            if name == b"authorization":
                header = value.decode("latin-1")
                break
        scheme, _, token = header.partition(" ")
        if not header:
            await self._refuse(send, 401, f'Bearer realm="{self.realm}"', {"error": "invalid_request"})
            return
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            await self._invalid(send, "the Authorization header is not a Bearer token")
            return
        try:
            claims = await self.verifier.verify(token)
        except InvalidTokenError as exc:
            await self._invalid(send, exc.description)
            return
        except KeysUnavailableError as exc:
            body = {"error": "temporarily_unavailable", "error_description": exc.description}
            await self._send(send, 503, body, [(b"retry-after", str(exc.retry_after).encode())])
            return
        user = TokenUser(claims)
        scope["user"] = user
        scope["auth"] = AuthCredentials(list(user.scopes))
        scope.setdefault("state", {})["claims"] = claims
        await self.app(scope, receive, send)

    async def _invalid(self, send: Send, description: str) -> None:
        challenge = f'Bearer realm="{self.realm}", error="invalid_token", error_description={_quote(description)}'
        await self._refuse(send, 401, challenge, {"error": "invalid_token", "error_description": description})

    async def _refuse(self, send: Send, status: int, challenge: str, body: dict[str, str]) -> None:
        await self._send(send, status, body, [(b"www-authenticate", challenge.encode("latin-1"))])

    @staticmethod
    async def _send(send: Send, status: int, body: dict[str, str], headers: list[tuple[bytes, bytes]]) -> None:
        payload = json.dumps(body).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                    (b"cache-control", b"no-store"),
                    *headers,
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})


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
