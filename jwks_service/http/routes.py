"""The route table, declared once: each path with its methods' endpoints, and whether it is fast.

From the one table come both ways in:

- `starlette_routes`: one Starlette `Route` per path (so that a 405 lists every method of the path in
  `Allow`, RFC 9110 §15.5.6), which also answers every method a path does not have with that 405;
- `FastRoutes`: the fast routes, called by exact path and method from the front of the middleware
  chain, without Starlette's exception middleware, route matching and, for plain ASGI endpoints,
  request/response wrappers. Profiled, those were about a tenth of the CPU of a token request and a
  fifth of serving the JWKS. A fast route behaves as through the router: request endpoints get the
  body limit and the app's exception handlers; a GET route answers HEAD.

An endpoint is either `async def endpoint(request) -> Response` or a plain ASGI app (an object with
`__call__(scope, receive, send)`, such as `wellknown.JwksEndpoint`, or `JsonApp`, which answers the
token and introspection endpoints with the body limit and the exception handlers of its own), as
Starlette's `Route` takes.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, request_response
from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import InvalidRequestError, PayloadTooLargeError
from .limits import MAX_BODY_BYTES, BodyLimitMiddleware
from .responses import error_body

Endpoint = Callable[[Request], Awaitable[Response]]
ExceptionHandler = Callable[[Request, Exception], Awaitable[Response]]


@dataclass(frozen=True)
class RouteSpec:
    path: str
    methods: Mapping[str, Endpoint | ASGIApp]  # "GET" also answers HEAD
    fast: bool = False  # answered by FastRoutes ahead of routing (an exact path: no {parameters})
    admin: bool = False  # served only on the admin listener when there is one (AdminSplit)


def _is_request_endpoint(endpoint: Endpoint | ASGIApp) -> bool:
    return inspect.isfunction(endpoint) or inspect.ismethod(endpoint)  # Starlette's own test in Route


def _route(spec: RouteSpec) -> Route:
    if len(spec.methods) == 1:
        ((method, endpoint),) = spec.methods.items()
        return Route(spec.path, endpoint, methods=[method])
    if not all(_is_request_endpoint(e) for e in spec.methods.values()):
        return Route(spec.path, _ByMethod(spec.methods), methods=list(spec.methods))
    endpoints: dict[str, Endpoint] = dict(spec.methods)  # type: ignore[arg-type]

    async def dispatch(request: Request) -> Response:
        return await endpoints["GET" if request.method == "HEAD" else request.method](request)

    return Route(spec.path, dispatch, methods=list(endpoints))


class _ByMethod:
    """A path with a plain ASGI endpoint among its methods (the JWKS and its CORS preflight): one ASGI
    app that hands each method to its endpoint (Route has said 405 to the others already)."""

    def __init__(self, methods: Mapping[str, Endpoint | ASGIApp]) -> None:
        self.apps: dict[str, ASGIApp] = {
            method: request_response(e) if _is_request_endpoint(e) else e  # type: ignore[arg-type,misc]
            for method, e in methods.items()
        }
        if "GET" in self.apps:
            self.apps["HEAD"] = self.apps["GET"]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.apps[scope["method"]](scope, receive, send)


def starlette_routes(table: Sequence[RouteSpec]) -> list[Route]:
    paths = [spec.path for spec in table]
    if len(paths) != len(set(paths)):
        raise ValueError(f"paths declared twice: {sorted({p for p in paths if paths.count(p) > 1})}")
    return [_route(spec) for spec in table]


class _Direct:
    """A request endpoint as plain ASGI, its errors answered by the app's exception handlers (those
    the router's exception middleware applies; anything else goes on to the server-error handler)."""

    def __init__(self, endpoint: Endpoint, handlers: Mapping[type[Exception], ExceptionHandler]) -> None:
        self.endpoint = endpoint
        self.handlers = handlers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive, send)
        try:
            response = await self.endpoint(request)
        except Exception as exc:
            handler = next((self.handlers[c] for c in type(exc).__mro__ if c in self.handlers), None)
            if handler is None:
                raise
            response = await handler(request, exc)
        await response(scope, receive, send)


JsonAnswer = Callable[[Scope, Mapping[bytes, bytes], bytes], Awaitable[bytes]]

# The head of every JsonApp answer but its length (responses.NO_STORE, as the JSONResponse sends it).
_JSON_HEAD = ((b"content-type", b"application/json"), (b"cache-control", b"no-store"), (b"pragma", b"no-cache"))


class JsonApp:
    """A POST endpoint answered with none of Starlette's request and response objects (they were a
    fifth of the CPU of a token request): `answer(scope, headers, body)` gets the request's headers
    (the first of each name) and its whole body, and gives the JSON of a 200 no-store answer. The
    body limit is BodyLimitMiddleware's (a declared Content-Length over it, or a body growing past
    it, is a 413); errors go to the app's exception handlers, as through `_Direct`."""

    def __init__(
        self,
        answer: JsonAnswer,
        handlers: Mapping[type[Exception], ExceptionHandler],
        max_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        self.answer = answer
        self.handlers = handlers
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            payload = await self._answer(scope, receive)
        except _Disconnected:
            return  # nobody to answer
        except Exception as exc:
            handler = next((self.handlers[c] for c in type(exc).__mro__ if c in self.handlers), None)
            if handler is None:
                raise
            response = await handler(Request(scope, receive, send), exc)
            await response(scope, receive, send)
            return
        head = [*_JSON_HEAD, (b"content-length", b"%d" % len(payload))]
        await send({"type": "http.response.start", "status": 200, "headers": head})
        await send({"type": "http.response.body", "body": payload})

    async def _answer(self, scope: Scope, receive: Receive) -> bytes:
        limit = self.max_bytes
        headers: dict[bytes, bytes] = {}
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit():
                    raise InvalidRequestError("malformed Content-Length")
                if int(value) > limit:
                    raise PayloadTooLargeError(f"request bodies are limited to {limit} bytes")
            if name not in headers:
                headers[name] = value
        body = b""
        while True:
            message = await receive()
            if message["type"] != "http.request":
                raise _Disconnected
            body += message.get("body", b"")
            if len(body) > limit:
                raise PayloadTooLargeError(f"request bodies are limited to {limit} bytes")
            if not message.get("more_body", False):
                break
        return await self.answer(scope, headers, body)


class _Disconnected(Exception):
    """The client went away before its request's body was read."""


class FastRoutes:
    """The table's fast routes, by exact path and method, ahead of the rest of the middleware chain;
    everything else goes on to `app`. `handlers`: the app's exception handlers, without `Exception`."""

    def __init__(
        self, app: ASGIApp, table: Sequence[RouteSpec], handlers: Mapping[type[Exception], ExceptionHandler]
    ) -> None:
        self.app = app
        self.routes: dict[str, dict[str, ASGIApp]] = {}
        for spec in table:
            if not spec.fast:
                continue
            if "{" in spec.path:
                raise ValueError(f"{spec.path}: a fast route is matched by its exact path")
            methods = self.routes.setdefault(spec.path, {})
            for method, endpoint in spec.methods.items():
                if _is_request_endpoint(endpoint):
                    handler: ASGIApp = BodyLimitMiddleware(_Direct(endpoint, handlers))  # type: ignore[arg-type]
                else:
                    handler = endpoint  # type: ignore[assignment]
                methods[method] = handler
                if method == "GET":
                    methods["HEAD"] = handler

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # Not a coroutine itself: it hands back the handler's, one frame less on every request.
        if scope["type"] == "http":
            methods = self.routes.get(scope["path"])
            if methods is not None:
                handler = methods.get(scope["method"])
                if handler is not None:
                    return handler(scope, receive, send)
        return self.app(scope, receive, send)


class AdminSplit:
    """With `[http] admin_listen`: the admin routes are answered only on the admin listener, and
    only they are; anything else is a 404, as for a path that does not exist.

    Which listener a request came in on is the port of its socket (the ASGI scope's `server`): the
    two listeners of a process never share a port (config.py refuses it). A path is an admin one
    when it is an admin route's path, or begins as an admin route with parameters does
    (`/admin/clients/`); other paths under `/admin/` are not found anywhere."""

    def __init__(self, app: ASGIApp, table: Sequence[RouteSpec], admin_port: int) -> None:
        self.app = app
        self.admin_port = admin_port
        admin = [spec.path for spec in table if spec.admin]
        self.exact = frozenset(p for p in admin if "{" not in p)
        self.prefixes = tuple(sorted({p.split("{", 1)[0] for p in admin if "{" in p}))

    def is_admin(self, path: str) -> bool:
        return path in self.exact or path.startswith(self.prefixes)

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        if scope["type"] == "http":
            server = scope.get("server")
            on_admin = server is not None and server[1] == self.admin_port
            if self.is_admin(scope["path"]) != on_admin:
                return error_body(404, "not_found", "Not Found")(scope, receive, send)
        return self.app(scope, receive, send)
