"""`python -m bench --quick` runs every benchmark for a fraction of a second and writes a well-formed
report (JSON, Markdown, PNG charts). Never asserts a speed (DESIGN.md, Speed).

The HTTP part starts its own OpenBao dev server and jwks-service processes on loopback.
"""

from __future__ import annotations

import asyncio
import http.server
import importlib.util
import json
import math
import subprocess
import sys
import threading
from pathlib import Path
from types import ModuleType

import pytest
from support import PROJECT_ROOT

pytestmark = pytest.mark.slow


def test_quick_suite_writes_json_markdown_and_charts(tmp_path: Path) -> None:
    """Every part but the growth curves and the new-connection runs, which their own smoke tests run
    (tests/benchmarks/test_bench_growth_smoke.py, test_bench_newconn_smoke.py; the growth report is
    checked there in the whole report too): they took half of this run's 142 s."""
    out = subprocess.run(
        [
            *(sys.executable, "-m", "bench", "--quick", "--no-newconn"),
            *("--only", "sign,verify,jwks,http", "--out", str(tmp_path)),
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "[5/5] writing the report" in out.stderr  # the progress display
    [json_path] = tmp_path.glob("*.json")
    doc = json.loads(json_path.read_text(encoding="utf-8"))
    assert doc["quick"] is True
    assert {"sign", "verify", "jwks", "http"} <= set(doc) and "growth" not in doc
    for row in doc["sign"]:
        assert all(row[k] > 0 and math.isfinite(row[k]) for k in ("ours", "pyjwt", "joserfc", "raw"))
    for row in doc["verify"]:
        assert all(row[k] > 0 and math.isfinite(row[k]) for k in ("sdk", "pyjwt", "joserfc", "raw"))
    assert doc["jwks"]["ours"] > 0 and doc["jwks"]["joserfc"] > 0
    loads = doc["http"]["loads"]
    names = {(x["name"], x["server"]) for x in loads}
    assert {
        ("issuance", "ours"),
        ("issuance", "openbao"),
        ("jwks", "ours"),
        ("jwks", "openbao"),
        ("introspect", "ours"),
        ("vault-batched", "ours"),
        ("vault-naive", "ours"),
        ("issuance-https", "ours"),
        ("issuance-https", "openbao"),
        ("jwks-https", "ours"),
        ("jwks-https", "openbao"),
    } <= names
    assert {x["workers"] for x in loads if x["name"] == "issuance" and x["server"] == "ours"} == {1, 2}
    assert not [x for x in loads if "newconn" in x["name"]]
    assert {x["connections"] for x in loads if x["name"] == "issuance" and x["server"] == "ours"} == {1, 8, 32, 128}
    for x in loads:
        assert x["requests"] > 0 and x["rps"] > 0, x
        assert x["errors"] == 0, x
        assert 0 <= x["p50_ms"] <= x["p99_ms"], x
        assert x["server_cpu"] >= 0, x
    assert set(doc["http"]["ratios"]) == {
        "issuance_1w_vs_openbao",
        "issuance_2w_vs_openbao",
        "jwks_vs_openbao",
        "jwks_2w_vs_openbao",
        "vault_batched_vs_naive",
        "https_issuance_vs_openbao",
        "https_jwks_vs_openbao",
        "issuance_https_vs_http",
        "jwks_https_vs_http",
    }
    memory = doc["http"]["memory"]
    assert memory["tokens"] >= 2000 and memory["peak_mib"] > 0 and len(memory["samples"]) >= 2
    md = json_path.with_suffix(".md").read_text(encoding="utf-8")
    assert "## Over HTTP on loopback" in md and "issuance_2w_vs_openbao" in md
    assert "not measured here" in md and "Ory Hydra" in md
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert len(pngs) == 5, pngs  # sign, verify, http, latency, memory
    for png in tmp_path.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({png.name})" in md


def _load_httpbench() -> ModuleType:
    sys.path.insert(0, str(PROJECT_ROOT / "bench"))
    spec = importlib.util.spec_from_file_location("bench_httpbench", PROJECT_ROOT / "bench" / "httpbench.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_python_load_generator_counts_requests_errors_and_latency() -> None:
    """The generator used where wrk is missing, against a stdlib server answering 200 or 500."""
    bench = _load_httpbench()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            status = 500 if self.path == "/fail" else 200
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        n, elapsed, errors, p50, p99 = asyncio.run(bench._python_load(bench.Request("GET", base + "/"), 4, 0.3))
        assert n > 0 and errors == 0 and 0 < elapsed < 5 and 0 < p50 <= p99
        n, _, errors, _, _ = asyncio.run(bench._python_load(bench.Request("GET", base + "/fail"), 2, 0.2, 50))
        assert 0 < n <= 50 + 2 and errors == n  # bounded by max_requests; every 500 is an error
    finally:
        server.shutdown()
        server.server_close()
