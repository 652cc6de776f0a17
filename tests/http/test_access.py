"""Request ids and the access log (http/access.py) through the app: the fast routes, the router, admin
calls and their audit events, and the scheduler's work, which belongs to no request."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient
from support import ISSUER, basic, make_settings, wait_until

from jwks_service import logs, operations
from jwks_service.clock import ManualClock
from jwks_service.http import wellknown
from jwks_service.http.access import AccessLog, RequestIds
from jwks_service.http.app import create_app
from jwks_service.requestid import REQUEST_ID, sanitize
from jwks_service.runtime import Runtime, open_store

GRANT = {"grant_type": "client_credentials"}


@pytest.fixture
def lines() -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """The service's log lines in the json format, as written (context variables read at that moment)."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logs.JsonFormatter())
    service = logging.getLogger("jwks_service")
    saved = service.level
    service.addHandler(handler)
    service.setLevel(logging.INFO)
    try:
        yield lambda: [json.loads(line) for line in out.getvalue().splitlines()]
    finally:
        service.removeHandler(handler)
        service.setLevel(saved)


def app_client(runtime: Runtime, *, background: bool = False) -> TestClient:
    return TestClient(create_app(runtime=runtime, background=background), base_url=ISSUER)


def admin_headers(http: TestClient, runtime: Runtime) -> dict[str, str]:
    client, secret = runtime.clients.create("admin", ["admin"], [ISSUER])
    r = http.post("/oauth/token", data=GRANT, headers=basic(client.client_id, secret))
    return {"Authorization": "Bearer " + r.json()["access_token"]}


def test_every_answer_has_a_request_id_fast_routes_and_router_alike(http: TestClient, runtime: Runtime) -> None:
    client, secret = runtime.clients.create("c", ["read"], ["api"])
    answers = [
        http.get("/.well-known/jwks.json"),  # a fast route, plain ASGI
        http.options("/.well-known/jwks.json"),  # its preflight
        http.post("/oauth/token", data=GRANT, headers=basic(client.client_id, secret)),  # a fast request endpoint
        http.post("/oauth/token", data=GRANT, headers=basic(client.client_id, "wrong")),  # its error handler
        http.get("/keys/status"),  # through the router
        http.get("/nowhere"),  # 404
        http.delete("/oauth/token"),  # 405
    ]
    assert [r.status_code for r in answers] == [200, 204, 200, 401, 200, 404, 405]
    ids = [r.headers["x-request-id"] for r in answers]
    assert all(sanitize(i) == i for i in ids) and len(set(ids)) == len(ids)
    assert all(len(r.headers.get_list("x-request-id")) == 1 for r in answers)
    assert REQUEST_ID.get() == ""  # nothing left set in the caller's context


@pytest.mark.parametrize("path", ["/.well-known/jwks.json", "/keys/status"])
def test_a_sane_request_id_is_echoed_and_another_is_replaced(http: TestClient, path: str) -> None:
    assert http.get(path, headers={"X-Request-ID": "trace.1:a-b_c"}).headers["x-request-id"] == "trace.1:a-b_c"
    for bad in (b"has space", b"x" * 129, b"a\tb", "é".encode()):
        new = http.get(path, headers={"X-Request-ID": bad}).headers["x-request-id"]
        assert new.encode() != bad and sanitize(new) == new


def test_the_jwks_head_is_not_changed_by_the_id_it_carries(http: TestClient) -> None:
    """The JWKS sends one pre-built head for every request: each answer has its own id, and only one."""
    first = http.get("/.well-known/jwks.json", headers={"X-Request-ID": "one"})
    second = http.get("/.well-known/jwks.json", headers={"X-Request-ID": "two"})
    assert first.headers.get_list("x-request-id") == ["one"] and second.headers.get_list("x-request-id") == ["two"]


def test_with_the_access_log_off_it_is_not_installed(runtime_factory: Callable[..., Runtime]) -> None:
    off = create_app(runtime=runtime_factory(), background=False)
    on = create_app(runtime=runtime_factory(log={"access": True, "access_sample": 0.5}), background=False)
    assert off.user_middleware[0].cls is RequestIds
    assert AccessLog not in [m.cls for m in off.user_middleware]
    assert on.user_middleware[0].cls is AccessLog
    assert on.user_middleware[0].kwargs == {"sample": 0.5}


def test_access_line_fields_and_no_query_string(
    runtime_factory: Callable[..., Runtime], lines: Callable[[], list[dict[str, Any]]]
) -> None:
    rt = runtime_factory(log={"access": True})
    with app_client(rt) as http:
        r = http.get("/.well-known/jwks.json?client_secret=hunter2", headers={"X-Request-ID": "q-1"})
        http.post("/oauth/token", data=GRANT, headers=basic("nobody", "hunter3"))
    access = [d for d in lines() if d["logger"] == "jwks_service.access"]
    assert len(access) == 2
    jwks, token = access
    assert r.headers["x-request-id"] == "q-1"
    assert {k: jwks[k] for k in ("method", "path", "status", "client", "request_id")} == {
        "method": "GET",
        "path": "/.well-known/jwks.json",
        "status": 200,
        "client": "testclient",
        "request_id": "q-1",
    }
    assert isinstance(jwks["duration_ms"], float) and 0 <= jwks["duration_ms"] < 10_000
    assert (token["method"], token["path"], token["status"]) == ("POST", "/oauth/token", 401)
    assert sanitize(token["request_id"]) == token["request_id"] != "q-1"
    assert "hunter" not in json.dumps(access)


def test_access_sample_logs_a_share_of_the_requests(
    runtime_factory: Callable[..., Runtime], lines: Callable[[], list[dict[str, Any]]]
) -> None:
    rt = runtime_factory(log={"access": True, "access_sample": 0.05})
    with app_client(rt) as http:
        for _ in range(400):
            assert http.get("/healthz").status_code == 200
    logged = sum(d["logger"] == "jwks_service.access" for d in lines())
    assert 1 <= logged <= 60  # binomial(400, 0.05): mean 20; outside this range about once in 10^9 runs


def test_an_error_is_always_logged_with_its_request_id_then_goes_on(
    lines: Callable[[], list[dict[str, Any]]],
) -> None:
    async def failing(scope: Any, receive: Any, send: Any) -> None:
        logging.getLogger("jwks_service").warning("inside")
        raise RuntimeError("bug")

    scope = {"type": "http", "method": "GET", "path": "/x", "headers": [(b"x-request-id", b"e-1")], "client": None}
    middleware = AccessLog(failing, sample=0.000001)
    with pytest.raises(RuntimeError, match="bug"):
        asyncio.run(middleware(scope, None, None))  # type: ignore[arg-type]
    inside, access = lines()
    assert inside["message"] == "inside" and inside["request_id"] == "e-1"
    assert (access["status"], access["path"], access["request_id"], access["client"]) == (500, "/x", "e-1", "")


def test_an_admin_call_s_audit_events_and_log_lines_carry_its_request_id(
    runtime_factory: Callable[..., Runtime], lines: Callable[[], list[dict[str, Any]]]
) -> None:
    rt = runtime_factory(log={"access": True})
    with app_client(rt) as http:
        headers = {**admin_headers(http, rt), "X-Request-ID": "drill-42"}
        r = http.post("/admin/keysets/default/rotate", json={"force": True, "reason": "drill"}, headers=headers)
        assert r.status_code == 200 and r.headers["x-request-id"] == "drill-42"
        events = http.get("/admin/audit", headers=admin_headers(http, rt)).json()["events"]
    mine = [e for e in events if e["details"].get("request_id") == "drill-42"]
    actions = {e["action"] for e in mine}
    assert "admin.keysets.rotate" in actions and len(actions) >= 2  # the call, and the key transitions it made
    assert all(e["details"].get("request_id") for e in events if e["actor"].startswith("client:"))
    written = [d for d in lines() if d.get("request_id") == "drill-42"]
    assert {d["logger"] for d in written} == {"jwks_service.audit", "jwks_service.access"}
    audit_lines = [d for d in written if d["logger"] == "jwks_service.audit"]
    assert {d["action"] for d in audit_lines} == actions
    assert all(d["details"]["request_id"] == "drill-42" for d in audit_lines)
    assert rt.audit_log.verify().ok


def test_the_scheduler_s_work_carries_no_request_id(
    runtime_factory: Callable[..., Runtime], clock: ManualClock, lines: Callable[[], list[dict[str, Any]]]
) -> None:
    """The scheduler starts with the app, outside any request: a rotation it makes after requests
    were served (with ids) names none."""
    policy = {"alg": "ES256", "rotation_period": "2h", "prepublish": "10m", "token_ttl": "15m", "leeway": "30s"}
    rt = runtime_factory(keysets={"default": policy}, log={"access": True})
    with app_client(rt, background=True) as http:
        for i in range(5):
            assert http.get("/.well-known/jwks.json", headers={"X-Request-ID": f"before-{i}"}).status_code == 200
        before = rt.keys.snapshot.keysets["default"].current
        clock.advance(2 * 3600)  # the rotation period: the scheduler's next tick rotates
        wait_until(lambda: rt.keys.snapshot.keysets["default"].current != before, timeout=15)
        http.get("/healthz", headers={"X-Request-ID": "after"})
    by_scheduler = [e for e in rt.audit_log.page(None, 100, None)[0] if e.actor == "scheduler"]
    assert by_scheduler and all("request_id" not in e.details for e in by_scheduler)
    scheduler_lines = [d for d in lines() if d["logger"] == "jwks_service.audit" and d["actor"] == "scheduler"]
    assert scheduler_lines and all("request_id" not in d for d in scheduler_lines)


def test_an_unexpected_error_s_500_and_its_log_line_carry_the_request_id(
    runtime_factory: Callable[..., Runtime], lines: Callable[[], list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(request: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(wellknown, "key_status", broken)
    for log in ({}, {"access": True}):
        app = create_app(runtime=runtime_factory(log=log), background=False)
        with TestClient(app, base_url=ISSUER, raise_server_exceptions=False) as http:
            r = http.get("/keys/status", headers={"X-Request-ID": f"bug-{len(log)}"})
        assert r.status_code == 500 and r.json()["error"] == "server_error"
        assert r.headers["x-request-id"] == f"bug-{len(log)}"
    errors = [d for d in lines() if d["message"].startswith("unexpected error on GET /keys/status")]
    assert [d["request_id"] for d in errors] == ["bug-0", "bug-1"]
    assert all("RuntimeError: a bug" in d["exception"] for d in errors)
    access = [d for d in lines() if d["logger"] == "jwks_service.access"]
    assert [(d["status"], d["request_id"]) for d in access] == [(500, "bug-1")]


def test_events_with_request_ids_survive_a_backup_and_their_chain_verifies(
    runtime_factory: Callable[..., Runtime], tmp_path: Path, clock: ManualClock
) -> None:
    rt = runtime_factory()
    with app_client(rt) as http:
        headers = {**admin_headers(http, rt), "X-Request-ID": "before-backup"}
        assert http.post("/admin/keysets/default/rotate", json={"force": True}, headers=headers).status_code == 200
    assert rt.audit_log.verify().ok  # old events (bootstrap, CLI) without ids, new ones with them
    data = operations.export_backup(rt.settings, clock.now(), print, print)
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy2(tmp_path / "kek", other / "kek")
    settings = make_settings(other)
    backup = operations.check_backup(settings, data, print)
    operations.import_backup(settings, backup, force=False, source="test", actor="test", say=print, progress=print)
    assert operations.verify_audit(settings).ok
    restored = open_store(settings)
    try:
        events = restored.list_audit(limit=1000)
    finally:
        restored.close()
    tagged = [e for e in events if e.details.get("request_id") == "before-backup"]
    assert {"admin.keysets.rotate", "key.rotated"} <= {e.action for e in tagged}
