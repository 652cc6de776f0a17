"""The app's front door: the JWKS answered before Starlette's middleware chain.

The JWKS is the busiest endpoint and does almost nothing per request (one pre-rendered body), so the
layers in front of it were most of its cost: in process, 13.4 µs a request through the whole app
against 6.6 µs in the endpoint itself, of which request ids took 5 µs (a send wrapper copying each
response head to add `X-Request-ID`) and Starlette's app and server-error middleware 2 µs. Here the
JWKS gets its request id as the rest of the app does (the caller's sane `X-Request-ID` or a new one,
set for the request's log lines and sent back) but adds it to its pre-built head itself, and a
failure is answered as the server-error handler would (logged with the id, then a 500 with the id).

Everything else, and the JWKS itself when it must go through the chain, takes the usual way: with the
access log on (it times and logs every request) and on the admin listener (http/routes.AdminSplit
answers 404 for the JWKS there).
"""

from __future__ import annotations

import logging

from starlette.applications import Starlette
from starlette.types import Receive, Scope, Send

from ..requestid import HEADER, REQUEST_ID, from_headers
from .responses import error_body
from .wellknown import JwksEndpoint

log = logging.getLogger("jwks_service")

JWKS_PATH = "/.well-known/jwks.json"


class ServiceApp(Starlette):
    """Starlette, with the JWKS at its front door when `front_jwks` is set (see the module's text).
    `admin_port`: the admin listener's port, where the JWKS is not served."""

    front_jwks: JwksEndpoint | None = None
    admin_port: int | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # A coroutine function, as servers tell an ASGI 3 app by (uvicorn's interface "auto").
        jwks = self.front_jwks
        if (
            jwks is not None
            and scope["type"] == "http"
            and scope["path"] == JWKS_PATH
            and scope["method"] in ("GET", "HEAD")
            and (self.admin_port is None or (scope.get("server") or ("", 0))[1] != self.admin_port)
        ):
            await _answer(jwks, scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


async def _answer(jwks: JwksEndpoint, scope: Scope, receive: Receive, send: Send) -> None:
    rid = from_headers(scope["headers"])
    token = REQUEST_ID.set(rid)
    try:
        await jwks.answer(scope, send, (HEADER, rid.encode("ascii")))
    except Exception:
        # As the app's server-error handler (http/app._unexpected): logged with the id, then a 500.
        # When the head had gone out already, sending another raises, as through Starlette.
        log.exception("unexpected error on %s %s", scope["method"], JWKS_PATH)
        await error_body(500, "server_error", "the server could not complete the request", {"X-Request-ID": rid})(
            scope, receive, send
        )
    REQUEST_ID.reset(token)
