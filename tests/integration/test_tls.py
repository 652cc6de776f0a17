"""HTTPS and the admin listener of a real `jwks-service serve` process ([http] tls_cert, tls_key,
admin_listen): a private CA made here, clients that trust only it, SIGHUP replacing the certificate
under open connections, and a bad TLS configuration refused in one line."""

from __future__ import annotations

import http.client
import json
import signal
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import jwt
import pytest
from support import free_port, wait_until

from bench.baoserver import stop_process
from bench.certs import Ca, ServerCert, issue, make_ca

pytestmark = pytest.mark.slow

CLI = [sys.executable, "-m", "jwks_service"]


@dataclass
class TlsServer:
    workdir: Path
    proc: subprocess.Popen[bytes]
    base: str  # the public listener, https
    admin: str  # the admin listener, https with the same certificate
    port: int
    ca: Ca
    cert: ServerCert
    log: Path

    def trust(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca.file))

    def client(self) -> httpx.Client:
        return httpx.Client(verify=self.trust(), timeout=10)

    def cli(self, *args: str) -> str:
        result = subprocess.run(
            [*CLI, "--config", "jwks.toml", *args], cwd=self.workdir, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
        return result.stdout


def write_config(workdir: Path, port: int, admin_port: int) -> None:
    (workdir / "jwks.toml").write_text(
        f'listen = "127.0.0.1:{port}"\n'
        "[http]\n"
        'tls_cert = "tls.crt"\n'
        'tls_key = "tls.key"\n'
        f'admin_listen = "127.0.0.1:{admin_port}"\n'
    )


@pytest.fixture
def server(tmp_path: Path) -> Iterator[TlsServer]:
    yield from serving(tmp_path)


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[TlsServer]:
    yield from serving(tmp_path, "--workers", "2")


def serving(tmp_path: Path, *args: str) -> Iterator[TlsServer]:
    ca = make_ca(tmp_path)
    cert = issue(ca, tmp_path)
    port, admin_port = free_port(), free_port()
    write_config(tmp_path, port, admin_port)
    log = tmp_path / "server.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [*CLI, "--config", "jwks.toml", "serve", *args], cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT
        )
    srv = TlsServer(tmp_path, proc, f"https://127.0.0.1:{port}", f"https://127.0.0.1:{admin_port}", port, ca, cert, log)
    try:
        with srv.client() as http:
            wait_until(lambda: http.get(f"{srv.base}/readyz").status_code == 200, timeout=20)
        yield srv
    finally:
        stop_process(proc)
    assert proc.returncode in (0, -15), log.read_text()


def test_tokens_and_jwks_over_https_verified_against_the_test_ca(server: TlsServer) -> None:
    created = json.loads(server.cli("clients", "create", "demo", "--scope", "read", "--audience", "api", "--json"))
    with server.client() as http:
        r = http.post(
            f"{server.base}/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=(created["client_id"], created["client_secret"]),
        )
        assert r.status_code == 200, r.text
        token = r.json()["access_token"]
        discovery = http.get(f"{server.base}/.well-known/openid-configuration").json()
        jwks = http.get(f"{server.base}/.well-known/jwks.json").json()
    # The embedded default issuer follows the scheme served, and so does every URL of discovery.
    assert discovery["issuer"].startswith("https://")
    assert all(v.startswith("https://") for k, v in discovery.items() if k.endswith(("_uri", "_endpoint")))
    (key,) = [k for k in jwks["keys"] if k["kid"] == jwt.get_unverified_header(token)["kid"]]
    claims = jwt.decode(token, jwt.PyJWK(key).key, algorithms=["ES256"], audience="api", issuer=discovery["issuer"])
    assert claims["client_id"] == created["client_id"]
    with pytest.raises(httpx.ConnectError):  # a client that does not trust the CA refuses the server
        httpx.get(f"{server.base}/healthz")


@pytest.mark.parametrize("processes", ["server", "workers"])
def test_admin_routes_and_metrics_only_on_the_admin_listener(processes: str, request: pytest.FixtureRequest) -> None:
    server: TlsServer = request.getfixturevalue(processes)
    with server.client() as http:
        issuer = http.get(f"{server.base}/.well-known/openid-configuration").json()["issuer"]
        created = json.loads(server.cli("clients", "create", "ops", "--scope", "admin", "--audience", issuer, "--json"))
        token = http.post(
            f"{server.base}/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=(created["client_id"], created["client_secret"]),
        ).json()["access_token"]
        bearer = {"Authorization": f"Bearer {token}"}
        r = http.get(f"{server.admin}/admin/keysets", headers=bearer)
        assert r.status_code == 200, r.text
        assert r.json()
        assert http.get(f"{server.admin}/admin/clients/{created['client_id']}", headers=bearer).status_code == 200
        assert http.get(f"{server.admin}/admin/keysets").status_code == 401  # still needs its token there
        metrics = http.get(f"{server.admin}/metrics")
        assert metrics.status_code == 200
        assert "jwks_tokens_issued_total" in metrics.text
        for path in ("/admin/keysets", f"/admin/clients/{created['client_id']}", "/metrics", "/admin/audit"):
            r = http.get(f"{server.base}{path}", headers=bearer)
            assert r.status_code == 404, (path, r.text)
            assert r.json()["error"] == "not_found"
        assert http.post(f"{server.base}/admin/keysets/default/rotate", headers=bearer).status_code == 404
        # ... and the admin listener serves nothing else.
        for path in ("/.well-known/jwks.json", "/healthz", "/openapi.json"):
            assert http.get(f"{server.admin}{path}").status_code == 404, path
        assert http.get(f"{server.base}/.well-known/jwks.json").status_code == 200


def _get(conn: http.client.HTTPSConnection, path: str) -> int:
    conn.request("GET", path)
    response = conn.getresponse()
    response.read()
    return response.status


def _peer(conn: http.client.HTTPSConnection) -> bytes:
    sock = conn.sock
    assert isinstance(sock, ssl.SSLSocket)
    der = sock.getpeercert(binary_form=True)
    assert der is not None
    return der


def _reloads(server: TlsServer) -> list[str]:
    return [line for line in server.log.read_text().splitlines() if "SIGHUP" in line]


def test_sighup_serves_a_new_certificate_and_keeps_open_connections(server: TlsServer) -> None:
    before = http.client.HTTPSConnection("127.0.0.1", server.port, context=server.trust(), timeout=10)
    assert _get(before, "/.well-known/jwks.json") == 200
    sock = before.sock
    assert _peer(before) == server.cert.der

    renewed = issue(server.ca, server.workdir, common_name="jwks-service renewed")  # over the same files
    server.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: any("reloaded the TLS certificate" in line for line in _reloads(server)), timeout=10)

    # The connection made before is the same one, still answering (uvicorn keeps it alive 5 s).
    assert _get(before, "/.well-known/jwks.json") == 200
    assert before.sock is sock
    assert _peer(before) == server.cert.der
    before.close()
    # A new connection gets the new certificate, on both listeners.
    for port in (server.port, int(server.admin.rsplit(":", 1)[1])):
        after = http.client.HTTPSConnection("127.0.0.1", port, context=server.trust(), timeout=10)
        assert _get(after, "/metrics") in (200, 404)
        assert _peer(after) == renewed.der
        after.close()

    # Files that fail the check leave the certificate served as it was, and say why.
    (server.workdir / "tls.key").write_text("not a key\n")
    server.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: any("was not reloaded" in line for line in _reloads(server)), timeout=10)
    assert "tls.key holds no PEM private key" in _reloads(server)[-1]
    assert server.proc.poll() is None
    with server.client() as client:
        assert client.get(f"{server.base}/healthz").status_code == 200


def test_sighup_to_several_workers_serves_the_new_certificate(workers: TlsServer) -> None:
    """With --workers, uvicorn's supervisor replaces the workers one by one; each new one loads the
    files, so new connections get the new certificate, on both listeners."""
    renewed = issue(workers.ca, workers.workdir, common_name="jwks-service renewed")
    workers.proc.send_signal(signal.SIGHUP)

    def served(port: int) -> bytes:
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=workers.trust(), timeout=10)
        try:
            assert _get(conn, "/metrics") in (200, 404)
            return _peer(conn)
        finally:
            conn.close()

    ports = (workers.port, int(workers.admin.rsplit(":", 1)[1]))
    # Each of the two workers, at random, takes a connection: ask until only the new one answers.
    wait_until(lambda: all(served(port) == renewed.der for port in ports for _ in range(8)), timeout=60)
    assert workers.proc.poll() is None


@pytest.mark.parametrize(
    ("http_table", "message"),
    [
        ('tls_cert = "tls.crt"\n', "http.tls_key: http.tls_cert is set; HTTPS needs both"),
        ('tls_cert = "missing.crt"\ntls_key = "tls.key"\n', "http.tls_cert: file missing.crt does not exist"),
        (
            'tls_cert = "ca.crt"\ntls_key = "tls.key"\n',
            "http.tls_key: tls.key is not the key of the certificate in ca.crt",
        ),
        ('tls_cert = "tls.key"\ntls_key = "tls.key"\n', "http.tls_cert: tls.key holds no PEM certificate"),
        ('tls_cert = "tls.crt"\ntls_key = "tls.crt"\n', "http.tls_key: tls.crt holds no PEM private key"),
        ('admin_listen = "127.0.0.1"\n', "http.admin_listen: must be HOST:PORT"),
    ],
)
@pytest.mark.parametrize("command", ["serve", "check-config"])
def test_bad_tls_configuration_is_refused_in_one_line(
    tmp_path: Path, http_table: str, message: str, command: str
) -> None:
    issue(make_ca(tmp_path), tmp_path)
    (tmp_path / "jwks.toml").write_text(f'listen = "127.0.0.1:{free_port()}"\n[http]\n{http_table}')
    result = subprocess.run(
        [*CLI, "--config", "jwks.toml", command], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2, result
    first, reason = result.stderr.splitlines()
    assert first == "jwks-service: configuration refused:"
    assert reason.startswith(f"  {message}"), reason
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "var").exists()  # refused before a store or a KEK was made


def test_serve_refuses_a_listen_override_on_the_admin_port(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "jwks.toml").write_text(f'[http]\nadmin_listen = "127.0.0.1:{port}"\n')
    result = subprocess.run(
        [*CLI, "--config", "jwks.toml", "serve", "--listen", f"127.0.0.1:{port}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result
    assert (
        result.stderr.splitlines()[1]
        == f"  http.admin_listen: must use another port than the one served (127.0.0.1:{port})"
    )
    assert not (tmp_path / "var").exists()
