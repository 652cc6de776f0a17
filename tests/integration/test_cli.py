"""The command line: same store as the server, clear errors, JSON output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jwks_service.cli import main


@pytest.fixture(autouse=True)
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for name in list(__import__("os").environ):
        if name.startswith("JWKS_"):
            monkeypatch.delenv(name)
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_check_config_prints_derived_windows(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "check-config")
    assert code == 0
    assert "embedded defaults" in out
    assert "default  ES256  local" in out
    assert "1230s" in out or "20m30s" in out  # 15m + 30s + 5m


def test_bad_config_is_refused_with_one_line_per_problem(capsys: pytest.CaptureFixture[str], workdir: Path) -> None:
    cfg = workdir / "bad.toml"
    cfg.write_text(
        '[jwks]\nmax_age = "10m"\n[keysets.a]\nalg = "HS256"\nkey_size = 128\nprepublish = "5m"\n'
        '[keysets.b]\nalg = "RS999"\n'
    )
    code, out, err = run(capsys, "check-config", "--config", str(cfg))
    assert code == 2
    assert "keysets.a.key_size" in err and "keysets.a.prepublish" in err and "keysets.b.alg" in err
    assert "Traceback" not in err and out == ""
    assert not (workdir / "var").exists()  # nothing started half-configured


def test_alg_change_with_existing_keys_is_refused(capsys: pytest.CaptureFixture[str], workdir: Path) -> None:
    assert run(capsys, "keys", "list")[0] == 0
    cfg = workdir / "rs.toml"
    cfg.write_text('[keysets.default]\nalg = "RS256"\n')
    code, _, err = run(capsys, "keys", "list", "--config", str(cfg))
    assert code == 2
    assert "keysets.default.alg" in err and "ES256" in err


def test_keys_list_json_and_rotation_rules(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "keys", "list", "--json")
    assert code == 0
    keys = json.loads(out)["keys"]
    assert sorted(k["state"] for k in keys) == ["current", "next"]
    assert "Generated a new key-encryption key" in err
    code, _, err = run(capsys, "keys", "rotate", "default")
    assert code == 1
    assert "rotation_refused" in err and "prepublish" in err
    code, out, _ = run(capsys, "keys", "rotate", "default", "--force", "--json")
    assert code == 0
    result = json.loads(out)
    assert result["current"] == next(k["kid"] for k in keys if k["state"] == "next")
    assert result["previous"] == [next(k["kid"] for k in keys if k["state"] == "current")]


def test_unknown_things_are_named(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "keys", "rotate", "nope")
    assert code == 1
    assert "no keyset nope" in err
    code, _, err = run(capsys, "keys", "revoke", "no-such-kid", "--reason", "x")
    assert code == 1
    assert "no key with kid no-such-kid" in err
    code, _, err = run(capsys, "token", "no-such-client")
    assert code == 1
    assert "no client no-such-client" in err
    code, _, err = run(capsys, "clients", "create", "x", "--scope", "bad scope\x7f", "--audience", "api")
    assert code == 1
    assert "scope" in err
    code, _, err = run(capsys, "clients", "create", "x", "--scope", "a", "--audience", "api", "--keyset", "zzz")
    assert code == 1
    assert "unknown keyset" in err


def test_clients_and_token(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys,
        "clients",
        "create",
        "svc",
        "--scope",
        "read",
        "--scope",
        "write",
        "--audience",
        "api",
        "--ttl",
        "5m",
        "--json",
    )
    assert code == 0
    created = json.loads(out)
    assert len(created["client_secret"]) >= 43 and created["token_ttl"] == 300
    code, out, _ = run(capsys, "clients", "list", "--json")
    listed = json.loads(out)["clients"]
    assert [c["client_id"] for c in listed] == [created["client_id"]]
    assert "client_secret" not in listed[0] and "secrets" not in listed[0]
    code, out, _ = run(capsys, "token", created["client_id"])
    assert code == 0
    assert out.count(".") == 2
