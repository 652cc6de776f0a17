"""`jwks-service serve` as a real process, under operator mistakes and signals: a wrong KEK file is
refused at start, and SIGHUP (`systemctl reload`) leaves the server serving."""

from __future__ import annotations

import base64
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from support import free_port, wait_until

from bench.baoserver import stop_process
from jwks_service.algorithms import ALGORITHMS
from jwks_service.backends.local import LocalBackend
from jwks_service.config import load_settings
from jwks_service.errors import ConfigError
from jwks_service.kek import load_kek
from jwks_service.model import KeyState
from jwks_service.runtime import build_runtime

pytestmark = pytest.mark.slow

JWKS_SERVICE = str(Path(sys.executable).parent / "jwks-service")


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Embedded defaults in `tmp_path` (SQLite and KEK under ./var); the process environment without
    JWKS_ variables, for the subprocesses and for the in-process runtimes alike."""
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("JWKS_"):
            monkeypatch.delenv(name)
    port = free_port()
    return {**os.environ, "JWKS_ISSUER": f"http://127.0.0.1:{port}", "JWKS_LISTEN": f"127.0.0.1:{port}"}


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([JWKS_SERVICE, *args], env=env, capture_output=True, text=True, timeout=60, check=False)


def write_kek(path: Path) -> None:
    path.write_text(base64.b64encode(secrets.token_bytes(32)).decode() + "\n")
    path.chmod(0o600)


@pytest.fixture
def serve(env: dict[str, str], tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    log = tmp_path / "server.log"
    with log.open("w") as out:
        proc = subprocess.Popen([JWKS_SERVICE, "serve"], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc, log
    finally:
        if proc.poll() is None:
            stop_process(proc)


# ----- defect 15: a wrong KEK is refused, not silent ------------------------------------------------


def test_serve_refuses_to_start_when_the_kek_unseals_no_live_key(env: dict[str, str], tmp_path: Path) -> None:
    assert (
        cli(env, "clients", "create", "boot", "--scope", "s", "--audience", "a").returncode == 0
    )  # store and KEK made, two live keys sealed under it
    write_kek(tmp_path / "var" / "kek")  # a valid KEK file, but not the one the keys were sealed under
    port = env["JWKS_LISTEN"].rsplit(":", 1)[1]
    proc = subprocess.Popen([JWKS_SERVICE, "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        up = httpx.get(f"http://127.0.0.1:{port}/readyz").text
        proc.kill()
        proc.communicate()
        raise AssertionError(f"serve started with a wrong KEK (readyz: {up})") from None
    assert proc.returncode == 2, err
    assert "Traceback" not in err
    problem = [line for line in err.splitlines() if "secrets.kek_file" in line]
    assert len(problem) == 1, err
    assert "unseals none of the 2 live keys of keyset default" in problem[0]
    assert "restore the KEK file" in problem[0]


def test_check_config_refuses_the_same_wrong_kek(env: dict[str, str], tmp_path: Path) -> None:
    assert cli(env, "clients", "create", "boot", "--scope", "s", "--audience", "a").returncode == 0
    assert cli(env, "check-config").returncode == 0
    write_kek(tmp_path / "var" / "kek")
    result = cli(env, "check-config")
    assert result.returncode == 2
    assert "secrets.kek_file" in result.stderr and "unseals none" in result.stderr
    # A missing KEK file with keys in the store: serve would make a new KEK and refuse; so does check-config,
    # and serve keeps no new KEK file behind.
    (tmp_path / "var" / "kek").unlink()
    result = cli(env, "check-config")
    assert result.returncode == 2 and "does not exist" in result.stderr
    result = cli(env, "serve")
    assert result.returncode == 2 and "does not exist, but the store holds keys" in result.stderr
    assert not (tmp_path / "var" / "kek").exists()


def test_keys_under_another_kek_are_logged_and_keep_the_replica_unready(
    env: dict[str, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Some live keys unseal, some do not (e.g. made by a replica with another KEK file): the start
    goes on, logs an error naming those keys, and readiness says why."""
    assert cli(env, "clients", "create", "boot", "--scope", "s", "--audience", "a").returncode == 0
    settings = load_settings()
    other = LocalBackend(secrets.token_bytes(32)).generate("default", ALGORITHMS["ES256"], 256)
    rt = build_runtime(settings)
    try:
        ks = rt.store.get_keyset("default")
        assert ks is not None and ks.next is not None
        foreign = replace(ks.next, kid=other.kid, public_jwk=other.public_jwk, sealed_private=other.sealed_private)
        rt.store.save_keyset(
            replace(ks, keys=tuple(foreign if k.state == KeyState.NEXT else k for k in ks.keys)), ks.revision
        )
    finally:
        rt.close()
    with caplog.at_level("ERROR", logger="jwks_service"):
        rt = build_runtime(settings)
    try:
        errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
        assert any(other.kid in e and "do not unseal" in e for e in errors), errors
        problems = rt.keys.readiness()
        assert other.kid in problems["default"] and "another KEK" in problems["default"]
    finally:
        rt.close()


def test_runtime_refusal_names_the_keyset(env: dict[str, str], tmp_path: Path) -> None:
    assert cli(env, "clients", "create", "boot", "--scope", "s", "--audience", "a").returncode == 0
    write_kek(tmp_path / "var" / "kek")
    with pytest.raises(ConfigError, match="unseals none of the 2 live keys of keyset default"):
        build_runtime(load_settings())
    assert load_kek(str(tmp_path / "var" / "kek"), create=False)  # the operator's file is left alone


# ----- defect 16: SIGHUP -------------------------------------------------------------------------


def test_sighup_leaves_a_single_worker_server_serving(
    env: dict[str, str], serve: tuple[subprocess.Popen[bytes], Path]
) -> None:
    proc, log = serve
    base = env["JWKS_ISSUER"]
    wait_until(lambda: httpx.get(f"{base}/readyz").status_code == 200, timeout=30)
    for _ in range(2):  # `systemctl reload`, twice
        proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        assert proc.poll() is None, log.read_text()
        assert httpx.get(f"{base}/.well-known/jwks.json").status_code == 200
        assert httpx.get(f"{base}/readyz").status_code == 200
    lines = [line for line in log.read_text().splitlines() if "SIGHUP" in line]
    assert len(lines) == 2, log.read_text()
    assert "nothing to reload" in lines[0] and "still serving" in lines[0]
