"""Request ids and the access log, as the outermost of the app's middleware (ahead of the fast routes,
http/routes.FastRoutes, so that they are covered too).

Every request gets an id (requestid): the caller's sane `X-Request-ID` or a new one, set for the log
lines and audit events made while it is handled, and sent back as `X-Request-ID`. With `[log] access
= true`, `AccessLog` does that and writes one line per request to the `jwks_service.access` logger, for
a share `access_sample` of the requests (and every 5xx): method, path (never the query string, which
may hold a secret), status, duration in milliseconds, client address (uvicorn's, which follows
X-Forwarded-For only from `[http] trusted_proxies`) and request id. With the access log off, it is not
installed at all: only `RequestIds` is, the least a request id costs.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable

from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..configparts import LogSettings
from ..logs import Fields, Lines
from ..requestid import HEADER, REQUEST_ID, from_headers

access_log = logging.getLogger("jwks_service.access")

MAX_LOGGED_PATH = 512  # a longer path is cut: the log is not a place to store what strangers send


def middleware(settings: LogSettings) -> list[Middleware]:
    """What `[log]` asks the app to put first in its chain."""
    if settings.access:
        return [Middleware(AccessLog, sample=settings.access_sample)]
    return [Middleware(RequestIds)]


def _with_id(message: Message, header: tuple[bytes, bytes]) -> Message:
    # A copy: an endpoint may send the same head (message and header list) for every request.
    return {**message, "headers": [*message.get("headers", ()), header]}


class RequestIds:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = from_headers(scope["headers"])
        token = REQUEST_ID.set(rid)
        header = (HEADER, rid.encode("ascii"))

        def send_with_id(message: Message) -> Awaitable[None]:  # not a coroutine: one frame less a message
            if message["type"] == "http.response.start":
                message = _with_id(message, header)
            return send(message)

        # When the app raises, the id stays set: the server-error handler (Starlette's, outside this
        # middleware) logs the error with it, and the request's task ends there.
        await self.app(scope, receive, send_with_id)
        REQUEST_ID.reset(token)


def _printable(path: str) -> str:
    """The path for a text line: control characters escaped (no forged lines), at most MAX_LOGGED_PATH."""
    if len(path) > MAX_LOGGED_PATH:
        path = path[:MAX_LOGGED_PATH] + "..."
    return path if path.isprintable() else path.encode("unicode_escape").decode("ascii")


class AccessLog:
    def __init__(self, app: ASGIApp, sample: float = 1.0) -> None:
        self.app = app
        self.sample = sample
        self.lines = Lines(access_log)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        rid = from_headers(scope["headers"])
        token = REQUEST_ID.set(rid)
        header = (HEADER, rid.encode("ascii"))
        status = 0

        def send_logged(message: Message) -> Awaitable[None]:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = _with_id(message, header)
            return send(message)

        try:
            await self.app(scope, receive, send_logged)
        except BaseException:  # a 500 (or the client went away): always logged, then on its way
            self.log(scope, status or 500, start)
            raise
        if status >= 500 or self.sample >= 1.0 or random.random() < self.sample:  # noqa: S311 (sampling)
            self.log(scope, status, start)
        REQUEST_ID.reset(token)

    def log(self, scope: Scope, status: int, start: float) -> None:
        """The line, while the request's id is set (the formatters read it there)."""
        duration_ms = round((time.perf_counter() - start) * 1000, 3)
        client = scope.get("client")
        address = client[0] if client else ""
        method: str = scope["method"]
        path: str = scope["path"]
        fields = {
            "method": method,
            "path": path[:MAX_LOGGED_PATH],
            "status": status,
            "duration_ms": duration_ms,
            "client": address,
        }
        text = f"{method} {_printable(path)} {status} {duration_ms:.1f}ms {address}"
        self.lines.write(Fields(text, fields, text))
