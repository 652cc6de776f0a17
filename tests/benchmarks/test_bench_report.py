"""The benchmark report judges targets only on full runs: a `--quick` run writes under a name of its
own and never says a target was met (bench/__main__.py)."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

bench_main = importlib.import_module("bench.__main__")


def doc(*, quick: bool, tokens: int) -> dict[str, Any]:
    return {
        "date": "2026-11-29",
        "host": "box",
        "machine": "test",
        "quick": quick,
        "versions": {},
        "http": {
            "generator": "python",
            "loads": [],
            "ratios": {key: 99.0 for key in bench_main.TARGETS},
            "memory": {
                "tokens": tokens,
                "seconds": 1.0,
                "warm_mib": 50.0,
                "end_mib": 50.0,
                "growth_mib": 0.0,
                "peak_mib": 50.0,
            },
            "notes": [],
        },
    }


def test_a_quick_run_judges_nothing_and_is_written_under_its_own_name(tmp_path: Path) -> None:
    quick = doc(quick=True, tokens=2000)
    report = bench_main.markdown(quick, [])
    assert "met" not in report.replace("not judged", "")
    assert "not judged: a --quick run" in report
    json_path, md_path, _ = bench_main.write(quick, tmp_path)
    assert json_path.name == "2026-11-29-box-quick.json" and md_path.name == "2026-11-29-box-quick.md"


def test_a_full_run_judges_and_a_short_memory_run_does_not_count() -> None:
    full = bench_main.markdown(doc(quick=False, tokens=bench_main.MEMORY_TARGET_TOKENS), [])
    assert "flat over 1,000,000 tokens: met]" in full
    short = bench_main.markdown(doc(quick=False, tokens=5000), [])
    assert "not judged: 5,000 of 1,000,000 tokens" in short
    assert "tokens: met" not in short
