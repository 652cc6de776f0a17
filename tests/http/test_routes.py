"""http/routes.py: one route table, from which the router and the fast routes are both derived."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.testclient import TestClient

from jwks_service.errors import InvalidRequestError
from jwks_service.http import app as app_module
from jwks_service.http import oauth, wellknown
from jwks_service.http.limits import MAX_BODY_BYTES, BodyLimitMiddleware
from jwks_service.http.metrics import Metrics
from jwks_service.http.routes import AdminSplit, FastRoutes, RouteSpec, starlette_routes
from jwks_service.runtime import Runtime

FAILURES: dict[str, Exception] = {
    "service": InvalidRequestError("bad input"),
    "client": oauth.ClientAuthError(basic=True),
    "http": HTTPException(404),
    "unexpected": RuntimeError("boom"),
}


async def fail(request: Request) -> Response:
    raise FAILURES[request.query_params["what"]]


async def read_body(request: Request) -> Response:
    return Response(str(len(await request.body())))


async def hello(request: Request) -> Response:
    return Response("hello")


def _client() -> TestClient:
    table = [
        RouteSpec("/fast/fail", {"POST": fail}, fast=True),
        RouteSpec("/slow/fail", {"POST": fail}),
        RouteSpec("/fast/body", {"POST": read_body}, fast=True),
        RouteSpec("/fast/hello", {"GET": hello}, fast=True),
    ]
    app = Starlette(
        routes=starlette_routes(table),
        middleware=[
            Middleware(FastRoutes, table=table, handlers=app_module.EXCEPTION_HANDLERS),
            Middleware(BodyLimitMiddleware),
        ],
        exception_handlers={**app_module.EXCEPTION_HANDLERS, Exception: app_module._unexpected},
    )
    return TestClient(app, raise_server_exceptions=False)


@pytest.mark.parametrize("what", sorted(FAILURES))
def test_a_fast_route_maps_errors_as_the_router_does(what: str) -> None:
    client = _client()
    fast, slow = (client.post(f"/{way}/fail", params={"what": what}) for way in ("fast", "slow"))
    assert fast.status_code == slow.status_code >= 400
    assert fast.json() == slow.json() and set(fast.json()) == {"error", "error_description"}
    assert fast.headers.get("www-authenticate") == slow.headers.get("www-authenticate")


def test_a_fast_route_has_the_body_limit_head_and_405_of_a_route() -> None:
    client = _client()
    assert client.post("/fast/body", content=b"x" * 10).text == "10"
    big = client.post("/fast/body", content=b"x" * (MAX_BODY_BYTES + 1))
    assert big.status_code == 413 and big.json()["error"] == "request_too_large"
    assert client.head("/fast/hello").status_code == 200
    wrong = client.put("/fast/body")
    assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"


def test_the_table_declares_each_path_once_and_fast_routes_by_exact_path() -> None:
    with pytest.raises(ValueError, match="declared twice"):
        starlette_routes([RouteSpec("/a", {"GET": hello}), RouteSpec("/a", {"POST": hello})])
    with pytest.raises(ValueError, match="exact path"):
        FastRoutes(hello, [RouteSpec("/a/{x}", {"GET": hello}, fast=True)], {})  # type: ignore[arg-type]


def _table(runtime: Runtime) -> list[RouteSpec]:
    return app_module.route_table(wellknown.JwksEndpoint(runtime, Metrics(runtime).jwks_requests))


def test_the_app_answers_its_fast_routes_ahead_of_routing(runtime: Runtime) -> None:
    """The service's own table: the token, introspection and JWKS routes are the fast ones, and the
    router holds every path of the table (for the 405s)."""
    app = app_module.create_app(runtime=runtime, background=False)
    table = _table(runtime)
    fast = {(spec.path, method) for spec in table if spec.fast for method in spec.methods}
    assert fast == {
        ("/oauth/token", "POST"),
        ("/oauth/introspect", "POST"),
        ("/.well-known/jwks.json", "GET"),
        ("/.well-known/jwks.json", "OPTIONS"),  # the CORS preflight
    }
    assert [r.path for r in app.routes] == [spec.path for spec in table]  # type: ignore[attr-defined]


def test_with_an_admin_listener_admin_routes_and_metrics_answer_only_there(
    runtime_factory: Callable[..., Runtime],
) -> None:
    """The port a request came in on (the scope's `server`) decides: admin routes and /metrics on
    the admin port only, everything else on the others; the rest is 404, as for an unknown path."""
    rt = runtime_factory(http={"admin_listen": "127.0.0.1:8001"})
    app = app_module.create_app(runtime=rt, background=False)
    with (
        TestClient(app, base_url="http://127.0.0.1:8000") as public,
        TestClient(app, base_url="http://127.0.0.1:8001") as admin,
    ):
        for path in ("/metrics", "/admin/keysets", "/admin/clients/abc", "/admin/audit"):
            r = public.get(path)
            assert r.status_code == 404 and r.json()["error"] == "not_found", path
            assert admin.get(path).status_code == (200 if path == "/metrics" else 401), path
        assert public.post("/admin/keysets/default/rotate").status_code == 404
        assert admin.post("/admin/keysets/default/rotate").status_code == 401
        for path in ("/.well-known/jwks.json", "/healthz", "/openapi.json", "/admin"):
            assert admin.get(path).status_code == 404, path
            assert public.get(path).status_code == (404 if path == "/admin" else 200), path
    split = AdminSplit(hello, _table(rt), 8001)  # type: ignore[arg-type]
    assert split.is_admin("/admin/clients/x/secret") and split.is_admin("/metrics")
    assert not split.is_admin("/metrics/x") and not split.is_admin("/admin") and not split.is_admin("/oauth/token")


def test_without_an_admin_listener_every_route_answers_on_the_one_port(runtime: Runtime) -> None:
    app = app_module.create_app(runtime=runtime, background=False)
    with TestClient(app, base_url="http://127.0.0.1:8001") as client:
        assert client.get("/metrics").status_code == 200
        assert client.get("/.well-known/jwks.json").status_code == 200
