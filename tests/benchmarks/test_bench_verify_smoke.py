"""bench/verify.py runs and reports well-formed rows. Never asserts a speed (DESIGN.md, Speed)."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest
from support import PROJECT_ROOT

BENCH = PROJECT_ROOT / "bench" / "verify.py"
NUMBERS = ("sdk", "pyjwt", "joserfc", "raw", "sdk_vs_pyjwt", "sdk_vs_joserfc", "sdk_vs_raw")


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_verify", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_quick_run_prints_the_table_and_writes_json(
    bench: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "verify.json"
    assert bench.main(["--quick", "--rounds", "2", "--algs", "ES256,PS256,EdDSA", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "sdk÷pyjwt" in printed and "interleaved rounds" in printed
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert (doc["seconds_per_cell"], doc["rounds"], doc["quick"]) == (0.05, 2, True)
    assert [row["alg"] for row in doc["rows"]] == ["ES256", "PS256", "EdDSA"]
    for row in doc["rows"]:
        for name in NUMBERS:
            assert isinstance(row[name], float) and math.isfinite(row[name]) and row[name] > 0, name
        assert set(row["samples"]) == {"sdk", "pyjwt", "joserfc", "raw"}
        assert all(len(rates) == 2 for rates in row["samples"].values())


def test_rejects_unknown_algorithms(bench: ModuleType) -> None:
    with pytest.raises(SystemExit):
        bench.parse_args(["--algs", "HS256"])  # HMAC tokens are verified by introspection, not here
