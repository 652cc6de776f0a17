"""GET /openapi.json: a valid OpenAPI 3.1 document that names exactly the app's routes (issue 11)."""

from __future__ import annotations

from typing import Any

import orjson
import schemathesis
from starlette.routing import Route
from starlette.testclient import TestClient

from jwks_service.http import create_app, openapi
from jwks_service.runtime import Runtime

METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def test_openapi_json_is_the_document_served_once_as_static_json(http: TestClient) -> None:
    r = http.get("/openapi.json")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert "max-age" in r.headers["cache-control"]
    assert r.json() == openapi.document()
    assert r.content == http.app.state.openapi_body  # type: ignore[attr-defined]  # rendered once, at start
    assert http.head("/openapi.json").status_code == 200
    assert http.post("/openapi.json").status_code == 405


def test_the_document_is_valid_openapi_3_1(http: TestClient) -> None:
    """schemathesis validates the document against the OpenAPI 3.1 meta-schema as it loads it."""
    document = http.get("/openapi.json").json()
    assert document["openapi"].startswith("3.1.")
    schema = schemathesis.openapi.from_dict(document)
    schema.validate()
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == sum(len(METHODS & set(item)) for item in document["paths"].values())


def _route_operations(runtime: Runtime) -> set[tuple[str, str]]:
    app = create_app(runtime=runtime, background=False)
    paths = [route.path for route in app.routes if isinstance(route, Route)]
    # One Route per path (routes.starlette_routes), or a 405's Allow names only the first route's methods.
    assert len(paths) == len(set(paths)), sorted(p for p in paths if paths.count(p) > 1)
    out = set()
    for route in app.routes:
        assert isinstance(route, Route), route
        assert route.methods is not None
        # Starlette adds HEAD to every GET route; the document lists GET only (RFC 9110 §9.3.2).
        out |= {(method.lower(), route.path) for method in route.methods if method != "HEAD"}
    return out


def _document_operations() -> set[tuple[str, str]]:
    paths = openapi.document()["paths"]
    return {(method, path) for path, item in paths.items() for method in item if method in METHODS}


def test_every_route_is_in_the_document_and_every_operation_is_routed(runtime: Runtime) -> None:
    routed, documented = _route_operations(runtime), _document_operations()
    assert routed - documented == set(), "routes missing from jwks_service/http/openapi.py"
    assert documented - routed == set(), "documented operations the app does not route"


def test_every_reference_resolves_and_every_component_is_used() -> None:
    document = openapi.document()
    text = orjson.dumps(document).decode()
    components = document["components"]
    for kind in ("schemas", "responses", "headers"):
        for name in components[kind]:
            assert f'"#/components/{kind}/{name}"' in text, f"unused component {kind}/{name}"

    def walk(node: object) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str):
                _, _, kind, name = ref.split("/")
                assert name in components[kind], ref
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document)


def test_every_error_response_is_the_oauth_error_body() -> None:
    """400/401/403/404/405/409/413/429/503 all answer {"error", "error_description"} (API.md §3)."""
    responses = openapi.document()["components"]["responses"]
    statuses = set()
    for path_item in openapi.document()["paths"].values():
        for method, operation in path_item.items():
            if method not in METHODS:
                continue
            for status, response in operation["responses"].items():
                if status.startswith(("4", "5")) and "$ref" in response:
                    statuses.add(status)
                    resolved = responses[response["$ref"].rsplit("/", 1)[1]]
                    assert resolved["content"]["application/json"]["schema"]["allOf"][0] == {
                        "$ref": "#/components/schemas/Error"
                    }
                assert not status.startswith("5") or status == "503", (method, status)
    assert statuses == {"400", "401", "403", "404", "409", "413", "429", "503"}
    error = openapi.document()["components"]["schemas"]["Error"]
    assert error["required"] == ["error", "error_description"]
    assert error["additionalProperties"] is False
    assert {"Retry-After"} <= set(responses["TooManyRequests"]["headers"]) & set(responses["Unavailable"]["headers"])


def test_last_event_id_with_non_ascii_digits_is_400_not_500(http: TestClient) -> None:
    """'²'.isdigit() is true but int('²') raises: such an id answered 500, in the header (latin-1)
    or the query; and '١٢٣' (Arabic-Indic digits) was taken for an event id."""
    requests: list[dict[str, Any]] = [{"params": {"last_event_id": v}} for v in ("²", "1²", "١٢٣-x")]
    requests += [{"headers": {"Last-Event-ID": v.encode("latin-1")}} for v in ("²", "1²")]
    for request in requests:
        r = http.get("/keys/events", **request)
        assert r.status_code == 400, (request, r.status_code)
        assert r.json()["error"] == "invalid_request"


def test_405_allow_names_every_method_of_the_path(http: TestClient) -> None:
    """RFC 9110 §15.5.6: a 405 lists the methods the path supports, all of them (schemathesis found
    /admin/clients answering `Allow: GET, HEAD` although POST is routed there too)."""
    for path, item in openapi.document()["paths"].items():
        methods = {m.upper() for m in item if m in METHODS}
        if "GET" in methods:
            methods.add("HEAD")
        url = path.replace("{", "").replace("}", "")
        r = http.request("TRACE", url)
        assert r.status_code == 405, (path, r.status_code)
        assert r.json()["error"] == "method_not_allowed"
        assert {m.strip() for m in r.headers["allow"].split(",")} == methods, path
