"""Configuration that cannot surprise (API.md §8): the issuer follows `serve --listen` unless one is
configured, read-only commands create nothing, `check-config` runs every check `serve` runs, and a
busy port is one line and exit 1."""

from __future__ import annotations

import base64
import os
import secrets
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from clirun import run, scratch_workdir
from support import free_port

from jwks_service.config import build_settings, load_settings
from jwks_service.issuer import issuer_mismatch, listening_on


@pytest.fixture(autouse=True)
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return scratch_workdir(tmp_path, monkeypatch, ("JWKS_", "VAULT_"))


def write_kek(path: Path) -> Path:
    path.write_text(base64.b64encode(secrets.token_bytes(32)).decode() + "\n")
    path.chmod(0o600)
    return path


# ----- the issuer and the listen address ----------------------------------------------------------


def test_the_default_issuer_follows_listen_and_a_configured_one_never_does() -> None:
    embedded = build_settings({})
    assert embedded.issuer == "http://127.0.0.1:8000" and not issuer_mismatch(embedded)
    moved = listening_on(embedded, "127.0.0.1:18765")
    assert moved.issuer == "http://127.0.0.1:18765" and moved.listen == "127.0.0.1:18765"
    assert not issuer_mismatch(moved)
    assert build_settings({"listen": "0.0.0.0:9000"}).issuer == "http://0.0.0.0:9000"

    configured = build_settings({"issuer": "http://127.0.0.1:8000"})
    elsewhere = listening_on(configured, "127.0.0.1:18765")
    assert elsewhere.issuer == "http://127.0.0.1:8000"  # never changed
    assert "does not point at this server's listen address 127.0.0.1:18765" in issuer_mismatch(elsewhere)
    # A proxy declared in front: the issuer is its business.
    proxied = build_settings({"issuer": "https://auth.example.com", "http": {"trusted_proxies": ["10.0.0.0/8"]}})
    assert not issuer_mismatch(proxied)
    assert issuer_mismatch(build_settings({"issuer": "https://auth.example.com"}))
    # The same place under other names is no mismatch.
    assert not issuer_mismatch(build_settings({"issuer": "http://localhost:8000"}))
    assert not issuer_mismatch(build_settings({"issuer": "http://auth.internal:9000", "listen": "0.0.0.0:9000"}))


def test_check_config_prints_listen_and_names_the_environment(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JWKS_LISTEN", "127.0.0.1:18765")
    monkeypatch.setenv("JWKS_JWKS__MAX_AGE", "1m")
    code, out, err = run(capsys, "check-config")
    assert code == 0, err
    assert "configuration: embedded defaults, with JWKS_JWKS__MAX_AGE, JWKS_LISTEN from the environment" in out
    assert "issuer http://127.0.0.1:18765, listen 127.0.0.1:18765" in out
    assert load_settings().from_environment == ("JWKS_JWKS__MAX_AGE", "JWKS_LISTEN")


# ----- read-only commands create nothing ------------------------------------------------------------


@pytest.mark.parametrize(
    "argv", [("keys", "list"), ("clients", "list"), ("clients", "show", "abc"), ("backup", "export", "out.json")]
)
def test_read_only_commands_in_another_directory_create_nothing(
    capsys: pytest.CaptureFixture[str], workdir: Path, argv: tuple[str, ...]
) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 1 and out == ""
    assert "no store at" in err
    assert list(workdir.iterdir()) == []  # no ./var, no KEK, no store


def test_check_config_creates_nothing_and_says_what_the_first_start_makes(
    capsys: pytest.CaptureFixture[str], workdir: Path
) -> None:
    code, out, err = run(capsys, "check-config")
    assert code == 0, err
    assert "KEK: var/kek does not exist yet: the first start generates it" in out
    assert "does not exist yet: the first start creates it" in out
    assert list(workdir.iterdir()) == []


# ----- check-config runs serve's checks ---------------------------------------------------------------


def test_check_config_refuses_a_redis_store_without_its_kek_file_as_serve_does(
    capsys: pytest.CaptureFixture[str], workdir: Path
) -> None:
    cfg = workdir / "redis.toml"
    cfg.write_text(f'[store]\nurl = "redis://127.0.0.1:{free_port()}/0"\n[secrets]\nkek_file = "{workdir}/kek"\n')
    code, out, err = run(capsys, "check-config", "--config", str(cfg))
    assert code == 2 and "configuration OK" not in out
    assert "secrets.kek_file" in err and "does not exist" in err


def test_check_config_fails_when_the_store_cannot_be_reached(capsys: pytest.CaptureFixture[str], workdir: Path) -> None:
    cfg = workdir / "redis.toml"
    kek = write_kek(workdir / "kek")
    cfg.write_text(f'[store]\nurl = "redis://127.0.0.1:{free_port()}/0"\n[secrets]\nkek_file = "{kek}"\n')
    code, out, err = run(capsys, "check-config", "--config", str(cfg))
    assert code == 1 and "configuration OK" not in out
    assert "Redis" in err or "store" in err


def _vault_config(workdir: Path, openbao: Any, **vault: str) -> Path:
    cfg = workdir / "vault.toml"
    extra = "".join(f'{k} = "{v}"\n' for k, v in vault.items())
    cfg.write_text(
        f'[secrets]\nkek_file = "{workdir}/kek"\n[vault]\naddr = "{openbao.addr}"\n{extra}'
        '[keysets.default]\nalg = "ES256"\nbackend = "vault"\n'
    )
    return cfg


def test_check_config_names_a_missing_transit_mount(
    capsys: pytest.CaptureFixture[str], workdir: Path, openbao: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VAULT_TOKEN", openbao.root_token)
    code, out, err = run(capsys, "check-config", "--config", str(_vault_config(workdir, openbao)))
    assert code == 0, err
    assert "transit engine at transit/; policy OK" in out
    cfg = _vault_config(workdir, openbao, transit_mount="elsewhere")
    code, out, err = run(capsys, "check-config", "--config", str(cfg))
    assert code == 2 and "configuration OK" not in out
    assert "vault: transit engine not mounted at elsewhere/" in err


def test_check_config_names_the_capabilities_the_token_lacks(
    capsys: pytest.CaptureFixture[str], workdir: Path, openbao: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = openbao.client()
    root.sys.create_or_update_policy("jwks-read-only", 'path "transit/keys/jwks-*" { capabilities = ["read"] }\n')
    token = root.auth.token.create(policies=["jwks-read-only"], ttl="10m")["auth"]["client_token"]
    monkeypatch.setenv("VAULT_TOKEN", token)
    code, out, err = run(capsys, "check-config", "--config", str(_vault_config(workdir, openbao)))
    assert code == 2 and "configuration OK" not in out
    assert "must allow create, update on transit/keys/jwks-default" in err
    assert "must allow update on transit/sign/jwks-default" in err


# ----- a busy port ------------------------------------------------------------------------------------


def test_serve_on_a_busy_port_is_one_line_and_exit_1(capsys: pytest.CaptureFixture[str], workdir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, out, err = run(capsys, "serve", "--listen", f"127.0.0.1:{port}")
    assert code == 1 and out == ""
    assert err.splitlines() == [
        f"jwks-service: listen: 127.0.0.1:{port} is in use by another process; stop it, or serve --listen"
        " HOST:PORT elsewhere"
    ]
    assert list(workdir.iterdir()) == []  # nothing made before the refusal


# ----- a Redis outage in the log ------------------------------------------------------------------------


@pytest.mark.slow
def test_a_redis_outage_is_one_line_then_a_recovery_not_lines_per_second(tmp_path: Path) -> None:
    """Before: 2-3 lines a second per replica for as long as Redis was down. Now the first failure,
    (a count a minute later), and one line when it recovers."""
    from replicas import Fleet, Policy

    with Fleet(tmp_path, Policy(rotation_period="1d", prepublish="1h", token_ttl="5m"), replicas=1) as fleet:
        [replica] = fleet.replicas
        start = replica.log_path.stat().st_size

        def down() -> None:
            time.sleep(4.0)  # 16 reloads, 4 ticks

        fleet.redis.restart(while_down=down)
        deadline = time.monotonic() + 10
        while "background refresh recovered after" not in replica.log_path.read_text()[start:]:
            assert time.monotonic() < deadline, replica.tail()
            time.sleep(0.1)
        log = replica.log_path.read_text()[start:]
    failed = [line for line in log.splitlines() if "background refresh failed" in line]
    assert len(failed) == 1, log
    assert "still failing" not in log  # no summary before a minute has passed
    recovered = next(line for line in log.splitlines() if "recovered after" in line)
    assert int(recovered.split("recovered after ")[1].split()[0]) >= 4


@pytest.mark.slow
def test_serve_listen_moves_the_default_issuer_of_a_real_server(workdir: Path) -> None:
    import subprocess
    import sys

    import httpx

    from bench.baoserver import stop_process

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("JWKS_")}
    serve = [str(Path(sys.executable).parent / "jwks-service"), "serve", "--listen", f"127.0.0.1:{port}"]
    with (workdir / "serve.log").open("wb") as log:
        proc = subprocess.Popen(serve, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                metadata = httpx.get(f"http://127.0.0.1:{port}/.well-known/openid-configuration", timeout=1).json()
                break
            except httpx.HTTPError:
                assert proc.poll() is None and time.monotonic() < deadline, (workdir / "serve.log").read_text()
                time.sleep(0.1)
    finally:
        stop_process(proc)
    assert metadata["issuer"] == f"http://127.0.0.1:{port}"
    assert metadata["jwks_uri"] == f"http://127.0.0.1:{port}/.well-known/jwks.json"
    assert "does not point at" not in (workdir / "serve.log").read_text()
