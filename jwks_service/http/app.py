"""The Starlette application: routes, error mapping, body limits; it starts and stops the background
work (`scheduler`)."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator

import anyio
import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response

from .. import fetchers, scheduler
from ..addresses import split_listen
from ..clock import Clock
from ..config import Settings, load_settings
from ..errors import InsufficientScopeError, InvalidTokenError, JwksServiceError
from ..requestid import REQUEST_ID
from ..runtime import Runtime, build_runtime
from ..store_warnings import StoreWarnings
from . import access, admin, oauth, openapi, status, wellknown
from .drain import Drain
from .events import HEARTBEAT_SECONDS, EventHub
from .events import events as events_endpoint
from .front import ServiceApp
from .limits import BodyLimitMiddleware
from .metrics import Metrics, metrics_endpoint
from .responses import error_body, error_response
from .routes import AdminSplit, ExceptionHandler, FastRoutes, JsonApp, RouteSpec, starlette_routes

log = logging.getLogger("jwks_service")


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
    # Answered outside http/access, which left the request's id set for this line and this header.
    rid = REQUEST_ID.get()
    return error_body(
        500, "server_error", "the server could not complete the request", {"X-Request-ID": rid} if rid else None
    )


async def _openapi(request: Request) -> Response:
    body: bytes = request.app.state.openapi_body
    return Response(body, media_type="application/json", headers={"Cache-Control": "public, max-age=3600"})


# Errors the handlers raise, mapped once: through the router (Starlette's exception middleware) and
# on the fast routes (routes.FastRoutes). Anything else is a 500 (`_unexpected`).
EXCEPTION_HANDLERS: dict[type[Exception], ExceptionHandler] = {
    JwksServiceError: _service_error,
    oauth.ClientAuthError: oauth.client_auth_error,
    HTTPException: _http_error,
}


def route_table(jwks: wellknown.JwksEndpoint) -> list[RouteSpec]:
    """Every route of the service, each path once. Routes are matched in this order, the busiest
    first (the token endpoint's profile showed Route.matches at 4% with it ninth); `fast` ones are
    answered ahead of routing (routes.FastRoutes), the router then only says 405 to other methods.
    `jwks`: the JWKS endpoint (also answered by `serve`'s protocol, http/protocol)."""
    preflight = wellknown.Preflight()
    return [
        RouteSpec("/oauth/token", {"POST": JsonApp(oauth.token, EXCEPTION_HANDLERS)}, fast=True),
        RouteSpec("/.well-known/jwks.json", {"GET": jwks, "OPTIONS": preflight}, fast=True),
        RouteSpec("/.well-known/openid-configuration", {"GET": wellknown.discovery, "OPTIONS": preflight}),
        RouteSpec("/.well-known/oauth-authorization-server", {"GET": wellknown.discovery, "OPTIONS": preflight}),
        RouteSpec("/keys/status", {"GET": wellknown.key_status}),
        RouteSpec("/keys/events", {"GET": events_endpoint}),
        RouteSpec("/status", {"GET": status.status_page}),
        RouteSpec("/healthz", {"GET": wellknown.healthz}),
        RouteSpec("/readyz", {"GET": wellknown.readyz}),
        RouteSpec("/metrics", {"GET": metrics_endpoint}, admin=True),
        RouteSpec("/openapi.json", {"GET": _openapi}),
        RouteSpec("/oauth/introspect", {"POST": JsonApp(oauth.introspect, EXCEPTION_HANDLERS)}, fast=True),
        RouteSpec("/oauth/revoke", {"POST": oauth.revoke}),
        RouteSpec("/admin/keysets", {"GET": admin.list_keysets}, admin=True),
        RouteSpec("/admin/keysets/{name}/rotate", {"POST": admin.rotate}, admin=True),
        RouteSpec("/admin/keysets/{name}/plan", {"GET": admin.keyset_plan}, admin=True),
        RouteSpec("/admin/keysets/{name}/adoption", {"GET": admin.keyset_adoption}, admin=True),
        RouteSpec("/admin/keys/{kid}/revoke", {"POST": admin.revoke_key}, admin=True),
        RouteSpec("/admin/keys/{kid}/taint", {"POST": admin.taint_key}, admin=True),
        RouteSpec("/admin/clients", {"GET": admin.list_clients, "POST": admin.create_client}, admin=True),
        RouteSpec(
            "/admin/clients/{client_id}",
            {"GET": admin.show_client, "PATCH": admin.update_client, "DELETE": admin.delete_client},
            admin=True,
        ),
        RouteSpec("/admin/clients/{client_id}/secret", {"POST": admin.rotate_secret}, admin=True),
        RouteSpec("/admin/audit", {"GET": admin.list_audit}, admin=True),
    ]


def create_app(
    settings: Settings | None = None,
    *,
    runtime: Runtime | None = None,
    clock: Clock | None = None,
    background: bool = True,
    events_heartbeat: float = HEARTBEAT_SECONDS,
    drain: Drain | None = None,
) -> ServiceApp:
    """The ASGI app. `background=False` leaves scheduling to the caller (tests with a manual clock);
    `drain`: set by the server on SIGTERM, it makes /healthz and /readyz answer 503 (http/drain.py)."""
    if runtime is None:
        runtime = build_runtime(settings or load_settings(), clock)
    rt = runtime
    hub = EventHub(rt, heartbeat=events_heartbeat)
    store_warnings = StoreWarnings(rt.store, rt.clock)  # /readyz "warnings", checked in the background

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with anyio.create_task_group() as tg:
            if background:
                tg.start_soon(scheduler.run, rt, hub.observe)
                tg.start_soon(store_warnings.run)
                tg.start_soon(fetchers.flush_loop, rt.fetches, rt.adoption, rt.store, rt.clock)
            yield
            hub.close()
            tg.cancel_scope.cancel()

    metrics = Metrics(rt, hub)
    jwks = wellknown.JwksEndpoint(rt, metrics.jwks_requests)
    table = route_table(jwks)
    split = []  # with an admin listener: admin routes there, the others on the public port
    admin_port = split_listen(rt.settings.admin_listen)[1] if rt.settings.admin_listen else None
    if admin_port is not None:
        split = [Middleware(AdminSplit, table=table, admin_port=admin_port)]
    app = ServiceApp(
        routes=starlette_routes(table),
        middleware=[
            *access.middleware(rt.settings.log),  # request ids, and the access log when it is on
            *split,
            Middleware(FastRoutes, table=table, handlers=EXCEPTION_HANDLERS),
            Middleware(BodyLimitMiddleware),
        ],
        exception_handlers={**EXCEPTION_HANDLERS, Exception: _unexpected},
        lifespan=lifespan,
    )
    if not rt.settings.log.access:  # the access log sees every request: then the JWKS goes its way too
        app.front_jwks = jwks
        app.admin_port = admin_port
    app.state.runtime = rt
    app.state.metrics = metrics
    app.state.events = hub
    app.state.readiness = wellknown.Readiness(rt)
    app.state.store_warnings = store_warnings
    app.state.public_adoption = status.PublicAdoption(rt)
    app.state.denied_audit = admin.DeniedAuditBudget()
    app.state.drain = drain or Drain()
    app.state.metadata_body = orjson.dumps(wellknown.metadata(rt.settings))
    app.state.openapi_body = openapi.render()
    return app


def app_from_env() -> Starlette:
    """Factory for `uvicorn --factory` and multi-worker serving: reads JWKS_CONFIG and the environment."""
    return create_app(load_settings(os.environ.get("JWKS_CONFIG") or None))
