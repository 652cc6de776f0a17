"""bench/growth.py with tiny sizes: issuance against clients and live keys over HTTP (wrk), Redis
commands per token and per rotation. Never asserts a speed (DESIGN.md, Speed); it asserts what the
design makes countable: no store command per token."""

from __future__ import annotations

import importlib
import importlib.util
import json
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest
from support import PROJECT_ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def growth() -> ModuleType:
    if shutil.which("wrk") is None:
        pytest.skip("wrk is not on PATH (apt-get install wrk; .ci/run installs it)")
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not on PATH (apt-get install redis-server)")
    sys.path.insert(0, str(PROJECT_ROOT / "bench"))
    spec = importlib.util.spec_from_file_location("bench_growth", PROJECT_ROOT / "bench" / "growth.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def tiny(growth: ModuleType, **kw: object) -> object:
    base = {"clients": (3, 12), "keysets": (1,), "keys": (3, 5), "replicas": (1,), "seconds": 1.0, "rotations": 1}
    return growth.Sizes(**{**base, **kw}, connections=4)


def say(message: str) -> None:
    pass


def test_bulk_clients_then_issuance_through_all_of_them(growth: ModuleType, tmp_path: Path) -> None:
    points = growth.issuance_vs_clients(tiny(growth), tmp_path, say)
    assert [p["clients"] for p in points] == [3, 12]
    assert [p["load_clients"] for p in points] == [3, 12]  # every registered client took turns
    for p in points:
        assert p["requests"] > 0 and p["rps"] > 0 and p["errors"] == 0, p
        assert 0 <= p["p50_ms"] <= p["p99_ms"] and p["server_cpu"] > 0 and p["cpu_us_per_token"] > 0, p
        assert p["startup_rps"] > 0 and p["list_clients_s"] >= 0, p


def test_forced_rotations_grow_the_jwks_to_the_target(growth: ModuleType, tmp_path: Path) -> None:
    points = growth.vs_live_keys(tiny(growth), tmp_path, say)
    assert [p["keys"] for p in points] == [3, 5]  # served over HTTP, as many as asked
    assert points[0]["jwks_bytes"] < points[1]["jwks_bytes"]
    for p in points:
        assert p["render_per_s"] > 0 and p["jwks_rps"] > 0 and p["issuance_rps"] > 0 and p["errors"] == 0, p


def test_no_redis_command_per_token(growth: ModuleType, tmp_path: Path) -> None:
    t = growth.store_ops_per_token(tiny(growth), tmp_path, say)
    assert t["tokens"] > 0 and t["idle_commands_per_s"] > 0  # the revision poll, at least
    # Only client records not cached yet, and counter reads while the read of failing keys is not
    # fresh (the first second): far below one command per token. A store call per token would make this >= 1.
    assert t["commands_per_token"] < 1.0, t
    assert "evalsha" not in t["load_by_command"] and "eval" not in t["load_by_command"], t  # nothing written


def test_commands_per_rotation_with_one_replica(growth: ModuleType, tmp_path: Path) -> None:
    [point] = growth.store_ops_per_rotation(tiny(growth), tmp_path, say)
    assert point["replicas"] == 1 and point["rotations"] == 1
    assert point["commands_per_rotation"] > 0, point  # the compare-and-set write and the replica's reload
    assert {"evalsha", "eval"} & set(point["load_by_command"]), point


def test_report_and_chart_from_a_document(growth: ModuleType, tmp_path: Path) -> None:
    """markdown() and chart() on a document shaped as run_growth writes it (figures from this test)."""
    sizes = tiny(growth)
    doc = {
        "sizes": sizes.__dict__,
        "started": "00:00:00 UTC",
        "clients": [
            {
                "clients": 3,
                "startup_rps": 5.0,
                "rps": 10.0,
                "p99_ms": 2.0,
                "server_cpu": 0.5,
                "cpu_us_per_token": 50000.0,
                "errors": 0,
            }
        ],
        "keysets": [
            {"keysets": 1, "rps": 11.0, "p99_ms": 2.0, "server_cpu": 0.5, "cpu_us_per_token": 45454.5, "errors": 0}
        ],
        "keys": [
            {"keys": 3, "jwks_bytes": 600, "render_per_s": 9.0, "jwks_rps": 8.0, "issuance_rps": 7.0, "errors": 0}
        ],
        "per_token": [
            {
                "clients": 1,
                "commands_per_token": 0.01,
                "raw_commands_per_token": 0.02,
                "idle_commands_per_s": 4.0,
                "tokens": 100,
                "rps": 100.0,
                "load_by_command": {"get": 4},
            }
        ],
        "per_rotation": [{"replicas": 1, "commands_per_rotation": 30.0, "idle_commands_per_s": 4.0}],
    }
    json.dumps(doc)
    report = "\n".join(growth.markdown(doc))
    assert (
        "| 3 | 5 | 10 | 2.00 | 0.50 | 50,000 | 0 |" in report and "| 1 | 100 | 100 | 0.0100 | 4.0 | get 4 |" in report
    )
    png = tmp_path / "growth.png"
    assert growth.chart(doc, png) and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not growth.chart({"sizes": sizes.__dict__, "started": "x", "notes": ["n"]}, tmp_path / "none.png")
    # In the whole report of `python -m bench` (its quick run in the suite smoke test leaves growth out).
    bench_main = importlib.import_module("bench.__main__")
    whole = {"date": "2026-11-30", "host": "box", "machine": "test", "quick": True, "versions": {}, "growth": doc}
    _, md_path, charts = bench_main.write(whole, tmp_path / "whole")
    md = md_path.read_text(encoding="utf-8")
    assert "## How cost grows" in md and "| 1 | 100 | 100 | 0.0100 | 4.0 | get 4 |" in md
    [chart] = [Path(c) for c in charts if c.endswith("-growth.png")]
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"]({chart.name})" in md
