"""The CLI in process, as the CLI tests drive it: in a scratch directory with no JWKS_ settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from jwks_service.cli import main


def scratch_workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefixes: tuple[str, ...] = ("JWKS_",)) -> Path:
    """Run from `tmp_path` (embedded defaults write under ./var) with no setting from the environment."""
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith(prefixes):
            monkeypatch.delenv(name)
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """`jwks-service ARGV...`: (exit code, stdout, stderr)."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err
