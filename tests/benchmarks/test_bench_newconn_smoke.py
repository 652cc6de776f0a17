"""bench/newconn.py: a new connection per request with ApacheBench (ab), plain and TLS, and the report's
table of published figures. Never asserts a speed (DESIGN.md, Speed)."""

from __future__ import annotations

import http.server
import importlib.util
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from support import PROJECT_ROOT

pytestmark = pytest.mark.slow


def _load(name: str) -> ModuleType:
    sys.path.insert(0, str(PROJECT_ROOT / "bench"))
    spec = importlib.util.spec_from_file_location(f"bench_{name}", PROJECT_ROOT / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def newconn() -> ModuleType:
    module = _load("newconn")
    if module.ab_path() is None:
        pytest.skip("ab is not on PATH (apt-get install apache2-utils; .ci/run installs it)")
    return module


@pytest.fixture
def plain_server() -> Iterator[tuple[str, list[tuple[str, str, int]]]]:
    """A stdlib HTTP server: 200 on /, 500 on /fail; records (method, connection header, body length)."""
    seen: list[tuple[str, str, int]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def answer(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            seen.append((method, self.headers.get("Content-Type") or "", len(body)))
            status = 500 if self.path == "/fail" else 200
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def do_GET(self) -> None:
            self.answer("GET")

        def do_POST(self) -> None:
            self.answer("POST")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def test_ab_counts_requests_errors_and_sends_the_body(
    newconn: ModuleType, plain_server: tuple[str, list[tuple[str, str, int]]], tmp_path: Path
) -> None:
    base, seen = plain_server
    form = {"Content-Type": "application/x-www-form-urlencoded", "X-Probe": "1"}
    req = newconn.Request("POST", base + "/", form, "grant_type=client_credentials")
    n, elapsed, errors, p50, p99 = newconn._ab(req, 2, 1.0, tmp_path)
    assert n > 0 and errors == 0 and 0 < elapsed < 10 and 0 <= p50 <= p99
    assert ("POST", "application/x-www-form-urlencoded", len("grant_type=client_credentials")) in seen
    n, _, errors, _, _ = newconn._ab(newconn.Request("GET", base + "/fail"), 2, 1.0, tmp_path)
    # Every 500 is an error; so is a request still in flight when the time is up (at most one a connection).
    assert n > 0 and n <= errors <= n + 2


def test_newconn_rows_against_our_server_over_tls(newconn: ModuleType, tmp_path: Path) -> None:
    """One server with a certificate made now: tokens and the JWKS, a TLS handshake per request."""
    ca = newconn.make_ca(tmp_path)
    cert = newconn.issue(ca, tmp_path)
    with newconn.our_server(tmp_path / "ours", tls=(cert, ca.file)) as ours:
        ours.start()
        _, token_req = newconn.token_request(ours, *ours.client())
        rows = [
            newconn.run_newconn_load(
                name, "ours", 1, req, concurrency=4, seconds=1.0, pids=[ours.pid], workdir=tmp_path
            )
            for name, req in (
                ("issuance-newconn-https", token_req),
                ("jwks-newconn-https", newconn.Request("GET", ours.base + "/.well-known/jwks.json")),
            )
        ]
    for row in rows:
        assert row.generator == "ab" and row.connections == 4
        assert row.requests > 0 and row.rps > 0 and row.errors == 0, row
        assert 0 <= row.p50_ms <= row.p99_ms and row.server_cpu > 0, row
    results = newconn.HttpResults("wrk", loads=rows)
    bao = newconn.Load("issuance-newconn-https", "openbao", 0, 4, 1.0, 10, 0, 10.0, 1.0, 2.0, 0.1, "ab")
    results.loads.append(bao)
    assert newconn.newconn_ratios(results) == {"issuance_newconn_https_1w_vs_openbao": rows[0].rps / 10.0}


def test_published_figures_are_marked_not_measured(newconn: ModuleType) -> None:
    table = newconn.published_table()
    assert "not measured here" in table
    for service, figure, conditions in newconn.PUBLISHED:
        assert f"| {service} | {figure} | {conditions} |" in table
    assert {p[0] for p in newconn.PUBLISHED} == {"Ory Hydra", "Keycloak", "ZITADEL"}
