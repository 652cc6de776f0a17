"""The Starlette application: routes, error mapping, body limits, and the background scheduler."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio
import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from ..clock import Clock
from ..config import Settings, load_settings
from ..errors import InsufficientScopeError, InvalidTokenError, JwksServiceError
from ..runtime import Runtime, build_runtime
from ..stores import ChangeFeed
from . import admin, oauth, openapi, wellknown
from .drain import Drain
from .events import HEARTBEAT_SECONDS, EventHub
from .events import events as events_endpoint
from .limits import BodyLimitMiddleware
from .metrics import Metrics, metrics_endpoint
from .responses import error_body, error_response

log = logging.getLogger("jwks_service")

Endpoint = Callable[[Request], Awaitable[Response]]

POLL_SECONDS = 0.25  # how often a replica looks for changes made elsewhere (CLI, other replicas)
TICK_SECONDS = 1.0  # how often the scheduler plans transitions


async def _service_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, JwksServiceError)
    headers = None
    # RFC 6750 §3: bearer-protected (admin) resources say why a token was refused.
    if isinstance(exc, InvalidTokenError):
        headers = {"WWW-Authenticate": 'Bearer realm="jwks-service", error="invalid_token"'}
    elif isinstance(exc, InsufficientScopeError):
        headers = {"WWW-Authenticate": 'Bearer realm="jwks-service", error="insufficient_scope", scope="admin"'}
    return error_response(exc, headers)


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large", 400: "invalid_request"}


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "invalid_request" if exc.status_code < 500 else "server_error")
    return error_body(exc.status_code, code, str(exc.detail), headers=dict(exc.headers or {}))


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_body(500, "server_error", "the server could not complete the request")


async def _openapi(request: Request) -> Response:
    body: bytes = request.app.state.openapi_body
    return Response(body, media_type="application/json", headers={"Cache-Control": "public, max-age=3600"})


def _route(path: str, **endpoints: Endpoint) -> Route:
    """One Route for a path that several methods share, so that a 405 lists every method of the path
    in `Allow` (RFC 9110 §15.5.6), not only those of the first of several routes."""

    async def endpoint(request: Request) -> Response:
        return await endpoints["GET" if request.method == "HEAD" else request.method](request)

    return Route(path, endpoint, methods=list(endpoints))


async def _method_not_allowed(request: Request) -> Response:  # pragma: no cover - never routed to
    raise HTTPException(405)


class DirectRoutes:
    """The hot OAuth endpoints called straight from the middleware chain.

    The same handlers and the same exception handlers as through the router, without Starlette's
    exception middleware, route matching and request/response wrappers: about a tenth of the CPU
    of a token request in the profile. Other methods on these paths fall through to the router.
    """

    def __init__(self, app: ASGIApp, routes: dict[str, Endpoint]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = self.routes.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if endpoint is None:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive, send)
        try:
            response = await endpoint(request)
        except oauth.ClientAuthError as exc:
            response = await oauth.client_auth_error(request, exc)
        except JwksServiceError as exc:
            response = await _service_error(request, exc)
        except HTTPException as exc:
            response = await _http_error(request, exc)
        await response(scope, receive, send)


def _refresh(runtime: Runtime) -> None:
    if runtime.keys.refresh():
        runtime.clients.invalidate()


def _maintain(runtime: Runtime) -> None:
    runtime.keys.tick()
    runtime.prune_audit()  # audit.retention: once an hour per replica, bounded batches


async def _background(runtime: Runtime, hub: EventHub) -> None:
    """Reload on change notifications (when the store pushes them) and every POLL_SECONDS anyway,
    publishing key events; run the scheduler every TICK_SECONDS. The two are separate tasks, each
    with its blocking calls in a worker thread, so that a hung Vault (the scheduler asks it for new
    key versions) never delays the reload of the revocation list, nor a hung store the scheduler."""
    loop = asyncio.get_running_loop()
    wake = asyncio.Event()
    stop_feed = None

    def on_transition(*_: object) -> None:  # a change this process made (admin API): publish at once
        loop.call_soon_threadsafe(wake.set)

    runtime.keys.listeners.append(on_transition)
    if isinstance(runtime.store, ChangeFeed):

        def on_change(revision: int) -> None:
            loop.call_soon_threadsafe(wake.set)

        stop_feed = runtime.store.subscribe(on_change)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_refresh_loop, runtime, hub, wake)
            tg.start_soon(_tick_loop, runtime)
    finally:
        runtime.keys.listeners.remove(on_transition)
        if stop_feed is not None:
            await anyio.to_thread.run_sync(stop_feed)


async def _refresh_loop(runtime: Runtime, hub: EventHub, wake: asyncio.Event) -> None:
    while True:
        with anyio.move_on_after(POLL_SECONDS):
            await wake.wait()
        wake.clear()
        await _run("background refresh", _refresh, runtime)
        hub.observe()


async def _tick_loop(runtime: Runtime) -> None:
    while True:
        await anyio.sleep(TICK_SECONDS)
        await _run("scheduled maintenance", _maintain, runtime)


async def _run(what: str, call: Callable[..., object], *args: object) -> None:
    try:
        await anyio.to_thread.run_sync(call, *args)
    except JwksServiceError as exc:
        log.warning("%s failed: %s", what, exc.description)
    except Exception:
        log.exception("%s failed", what)


def create_app(
    settings: Settings | None = None,
    *,
    runtime: Runtime | None = None,
    clock: Clock | None = None,
    background: bool = True,
    events_heartbeat: float = HEARTBEAT_SECONDS,
    drain: Drain | None = None,
) -> Starlette:
    """The ASGI app. `background=False` leaves scheduling to the caller (tests with a manual clock);
    `drain`: set by the server on SIGTERM, it makes /healthz and /readyz answer 503 (http/drain.py)."""
    if runtime is None:
        runtime = build_runtime(settings or load_settings(), clock)
    rt = runtime
    hub = EventHub(rt, heartbeat=events_heartbeat)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with anyio.create_task_group() as tg:
            if background:
                tg.start_soon(_background, rt, hub)
            yield
            hub.close()
            tg.cancel_scope.cancel()

    routes = [
        # Routes are matched in order: the busiest first (the token endpoint's profile showed
        # Route.matches at 4% with it ninth).
        Route("/oauth/token", oauth.token, methods=["POST"]),
        # GET /.well-known/jwks.json is answered by wellknown.JwksFastPath (middleware) before routing;
        # this route only makes other methods a 405 like every other path.
        Route("/.well-known/jwks.json", _method_not_allowed, methods=["GET"]),
        Route("/.well-known/openid-configuration", wellknown.discovery, methods=["GET"]),
        Route("/.well-known/oauth-authorization-server", wellknown.discovery, methods=["GET"]),
        Route("/keys/status", wellknown.key_status, methods=["GET"]),
        Route("/keys/events", events_endpoint, methods=["GET"]),
        Route("/healthz", wellknown.healthz, methods=["GET"]),
        Route("/readyz", wellknown.readyz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        Route("/openapi.json", _openapi, methods=["GET"]),
        Route("/oauth/introspect", oauth.introspect, methods=["POST"]),
        Route("/oauth/revoke", oauth.revoke, methods=["POST"]),
        Route("/admin/keysets", admin.list_keysets, methods=["GET"]),
        Route("/admin/keysets/{name}/rotate", admin.rotate, methods=["POST"]),
        Route("/admin/keys/{kid}/revoke", admin.revoke_key, methods=["POST"]),
        _route("/admin/clients", GET=admin.list_clients, POST=admin.create_client),
        _route("/admin/clients/{client_id}", GET=admin.show_client, DELETE=admin.delete_client),
        Route("/admin/clients/{client_id}/secret", admin.rotate_secret, methods=["POST"]),
        Route("/admin/audit", admin.list_audit, methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(wellknown.JwksFastPath, runtime=rt),
            Middleware(BodyLimitMiddleware),
            Middleware(DirectRoutes, routes={"/oauth/token": oauth.token, "/oauth/introspect": oauth.introspect}),
        ],
        exception_handlers={
            JwksServiceError: _service_error,
            oauth.ClientAuthError: oauth.client_auth_error,
            HTTPException: _http_error,
            Exception: _unexpected,
        },
        lifespan=lifespan,
    )
    app.state.runtime = rt
    app.state.metrics = Metrics(rt, hub)
    app.state.events = hub
    app.state.readiness = wellknown.Readiness(rt)
    app.state.denied_audit = admin.DeniedAuditBudget()
    app.state.drain = drain or Drain()
    app.state.metadata_body = orjson.dumps(wellknown.metadata(rt.settings))
    app.state.openapi_body = openapi.render()
    return app


def app_from_env() -> Starlette:
    """Factory for `uvicorn --factory` and multi-worker serving: reads JWKS_CONFIG and the environment."""
    return create_app(load_settings(os.environ.get("JWKS_CONFIG") or None))
