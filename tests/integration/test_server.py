"""The real thing: `jwks-service serve` as a uvicorn process, the CLI beside it, PyJWT outside."""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import jwt
import pytest
from support import free_port, wait_until

from bench.baoserver import stop_process

pytestmark = pytest.mark.slow

CLI = [sys.executable, "-m", "jwks_service"]


class Server:
    def __init__(self, workdir: Path, port: int) -> None:
        self.workdir = workdir
        self.base = f"http://127.0.0.1:{port}"
        self.env = {**os.environ, "JWKS_ISSUER": self.base, "JWKS_LISTEN": f"127.0.0.1:{port}"}

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*CLI, *args], cwd=self.workdir, env=self.env, capture_output=True, text=True, timeout=60, check=False
        )
        if check and result.returncode != 0:
            raise AssertionError(f"{args} failed: {result.stderr}")
        return result

    def token(self, client_id: str, secret: str) -> str:
        r = httpx.post(f"{self.base}/oauth/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret))
        assert r.status_code == 200, r.text
        return str(r.json()["access_token"])


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """Embedded defaults (no config file): SQLite and KEK under ./var of the working directory."""
    with serving(tmp_path) as srv:
        yield srv


@contextmanager
def serving(tmp_path: Path, *args: str) -> Iterator[Server]:
    srv = Server(tmp_path, free_port())
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen([*CLI, "serve", *args], cwd=tmp_path, env=srv.env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: httpx.get(f"{srv.base}/readyz").status_code == 200, timeout=20)
        yield srv
    finally:
        stop_process(proc)
        log.close()
    assert proc.returncode in (0, -15), (tmp_path / "server.log").read_text()


def test_cli_client_gets_token_that_pyjwkclient_verifies(server: Server) -> None:
    created = json.loads(
        server.cli("clients", "create", "demo", "--scope", "read", "--audience", "api", "--json").stdout
    )
    assert set(created) >= {"client_id", "client_secret"}
    token = server.token(created["client_id"], created["client_secret"])
    discovery = httpx.get(f"{server.base}/.well-known/openid-configuration").json()
    assert discovery["issuer"] == server.base
    client = jwt.PyJWKClient(discovery["jwks_uri"])
    key = client.get_signing_key_from_jwt(token)
    claims = jwt.decode(token, key, algorithms=["ES256"], audience="api", issuer=server.base)
    assert claims["client_id"] == created["client_id"]
    assert (server.workdir / "var" / "kek").stat().st_mode & 0o777 == 0o600


def test_running_server_sees_cli_rotation_and_revocation_within_a_second(server: Server) -> None:
    created = json.loads(
        server.cli("clients", "create", "demo", "--scope", "read", "--audience", "api", "--json").stdout
    )
    auth = (created["client_id"], created["client_secret"])
    old = server.token(*auth)
    old_kid = jwt.get_unverified_header(old)["kid"]

    rotated = server.cli("keys", "rotate", "default", "--force", "--reason", "test", "--json")
    new_kid = json.loads(rotated.stdout)["current"]
    assert new_kid != old_kid
    took = wait_until(lambda: jwt.get_unverified_header(server.token(*auth))["kid"] == new_kid, timeout=5)
    assert took < 1.0, f"the server took {took:.2f}s to sign with the rotated key"
    # The previous key still verifies its tokens.
    r = httpx.post(f"{server.base}/oauth/introspect", data={"token": old}, auth=auth)
    assert r.json()["active"] is True

    server.cli("keys", "revoke", old_kid, "--reason", "leaked")
    took = wait_until(
        lambda: (
            httpx.post(f"{server.base}/oauth/introspect", data={"token": old}, auth=auth).json() == {"active": False}
        ),
        timeout=5,
    )
    assert took < 1.0, f"the server took {took:.2f}s to honour the revocation"
    kids = {k["kid"] for k in httpx.get(f"{server.base}/.well-known/jwks.json").json()["keys"]}
    assert old_kid not in kids
    assert new_kid in kids


def test_jwks_etag_and_cache_headers(server: Server) -> None:
    r = httpx.get(f"{server.base}/.well-known/jwks.json")
    assert r.headers["cache-control"].startswith("public, max-age=300, stale-if-error=")
    etag = r.headers["etag"]
    assert etag.startswith('"')
    assert httpx.get(f"{server.base}/.well-known/jwks.json", headers={"If-None-Match": etag}).status_code == 304
    assert httpx.get(f"{server.base}/.well-known/jwks.json", headers={"If-None-Match": '"x"'}).status_code == 200


def _data_segments_received(sock: socket.socket) -> int:
    """Linux's tcp_info.tcpi_data_segs_in (since 4.6): segments that carried data, ACKs not counted."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    if len(info) < 156:
        pytest.skip("this kernel's TCP_INFO has no tcpi_data_segs_in")
    return int(struct.unpack_from("I", info, 152)[0])


def _segments_per_response(base: str, path: str) -> int:
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        before = _data_segments_received(sock)
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        response = b""
        while b"\r\n\r\n" not in response:
            response += sock.recv(65536)
        head, _, body = response.partition(b"\r\n\r\n")
        length = next(
            int(v) for k, _, v in (h.partition(b":") for h in head.split(b"\r\n")) if k.lower() == b"content-length"
        )
        while len(body) < length:
            body += sock.recv(65536)
        time.sleep(0.05)  # anything the server sent after the body would be counted now
        return _data_segments_received(sock) - before


@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_writes_each_response_in_one_segment(tmp_path: Path, workers: str) -> None:
    """`serve` runs uvicorn with http/corked.py's protocol (with one worker and with several): head
    and body leave in one write, so one TCP segment. uvicorn's own protocol writes them apart (two
    segments with TCP_NODELAY); measured, the corked one serves the JWKS about 1.6x as fast and
    tokens about 1.1x (see http/corked.py)."""
    with serving(tmp_path, "--workers", workers) as srv:
        for path in ("/.well-known/jwks.json", "/healthz", "/.well-known/openid-configuration"):
            assert [_segments_per_response(srv.base, path) for _ in range(3)] == [1, 1, 1], path


def test_scheduler_rotates_a_live_server(tmp_path: Path) -> None:
    """Seconds-long periods so the real scheduler loop rotates several times while we watch."""
    port = free_port()
    cfg = tmp_path / "fast.toml"
    cfg.write_text(
        f'issuer = "http://127.0.0.1:{port}"\nlisten = "127.0.0.1:{port}"\n'
        f'[store]\nurl = "sqlite:///{tmp_path}/jwks.db"\n[secrets]\nkek_file = "{tmp_path}/kek"\n'
        '[jwks]\nmax_age = "1s"\n'
        '[keysets.default]\nalg = "EdDSA"\nrotation_period = "2s"\nprepublish = "1s"\ntoken_ttl = "1s"\nleeway = "0s"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("JWKS_")}
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen([*CLI, "serve", "--config", str(cfg)], env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: httpx.get(f"{base}/readyz").status_code == 200, timeout=20)
        seen: list[str] = []

        def current_changed_three_times() -> bool:
            current = next(k["kid"] for k in httpx.get(f"{base}/keys/status").json()["keys"] if k["state"] == "current")
            if not seen or seen[-1] != current:
                seen.append(current)
            return len(seen) >= 4

        wait_until(current_changed_three_times, timeout=15, interval=0.1)
        status = httpx.get(f"{base}/keys/status").json()
        assert [k["state"] for k in status["keys"]].count("current") == 1
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


def test_sigterm_with_drain_reports_unhealthy_first_then_stops(tmp_path: Path) -> None:
    """`serve --drain 2s`: on SIGTERM /healthz answers 503 at once while requests are still served;
    the process stops after the drain period (uvicorn's graceful shutdown), and a second SIGTERM
    would not wait."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "JWKS_ISSUER": base, "JWKS_LISTEN": f"127.0.0.1:{port}"}
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen([*CLI, "serve", "--drain", "2s"], cwd=tmp_path, env=env, stdout=log, stderr=log)
    try:
        wait_until(lambda: httpx.get(f"{base}/readyz").status_code == 200, timeout=20)
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        wait_until(lambda: httpx.get(f"{base}/healthz").status_code == 503, timeout=1)
        assert httpx.get(f"{base}/readyz").status_code == 503
        assert httpx.get(f"{base}/.well-known/jwks.json").status_code == 200
        assert proc.poll() is None
        proc.wait(timeout=10)
        stopped = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    text = (tmp_path / "server.log").read_text()
    assert 2.0 <= stopped < 6.0, f"stopped {stopped:.2f}s after SIGTERM\n{text}"
    assert proc.returncode in (0, -15), text
    assert "/healthz answers 503 for 2s" in text, text


def test_drain_needs_one_worker(tmp_path: Path) -> None:
    result = subprocess.run(
        [*CLI, "serve", "--drain", "2s", "--workers", "2"],
        cwd=tmp_path,
        env={**os.environ, "JWKS_LISTEN": f"127.0.0.1:{free_port()}"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "--drain" in result.stderr, result.stderr
