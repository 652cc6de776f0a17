"""A private `haproxy` (Debian's package) in front of real replicas, for the fleet tests
(tests/integration/test_fleet.py, test_fleet_ops.py), as redisserver.py is for Redis.

Its configuration is TEMPLATE: deploy/haproxy.cfg on loopback with free ports, checks every 500 ms, a
stats socket (the runtime API) and a log line per request that names the request id, the server and
HAProxy's termination state. `same_policy` holds the template to the shipped file: the lines that
decide what is retried, where to, and how health is checked must be the same.
"""

from __future__ import annotations

import contextlib
import csv
import io
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from replicas import Replica
from support import PROJECT_ROOT

from bench.baoserver import stop_process

DEPLOY_HAPROXY = PROJECT_ROOT / "deploy" / "haproxy.cfg"
BACKENDS = ("jwks", "jwks_live")  # by readiness; by liveness, used only while no replica is ready
# The health options of every server (written into the template, and given to `add server`: a server
# added at run time takes no default-server line).
SERVER_OPTIONS = "check inter 500ms fall 2 rise 1 observe layer4 error-limit 1 on-error mark-down"

TEMPLATE = """\
# Written by the fleet tests (tests/haproxyserver.py): deploy/haproxy.cfg on loopback with free ports, checks
# every 500 ms, a stats socket and a log line per request. The retry and check lines are the shipped ones.
global
    log stdout format raw local0 info
    stats socket {socket} mode 600 level admin

defaults
    mode http
    log global
    option httplog
    option forwardfor
    # A retry goes to another server each time (a killed replica refuses the next connection).
    option redispatch 1
    retries 3
    # What is safe to retry; the backends narrow it to requests that can be replayed.
    retry-on conn-failure empty-response response-timeout 503
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    timeout check 1s

frontend public
    bind 127.0.0.1:{port}
    http-request capture req.hdr(x-request-id) len 64
    log-format "rid=%[capture.req.hdr(0)] srv=%s be=%b status=%ST term=%ts retries=%rc time=%Tt %HM %HU"
    use_backend jwks_live if {{ nbsrv(jwks) eq 0 }}
    default_backend jwks

backend jwks
    balance roundrobin
    # Replayed after an empty response, a timeout or a 503 only what has no effect when replayed:
    # GET/HEAD, introspection and token revocation. POST /oauth/token and admin changes are retried
    # only when the connection failed, before a byte was sent.
    http-request disable-l7-retry unless METH_GET || {{ path /oauth/introspect /oauth/revoke }}
    option httpchk
    http-check send meth GET uri /readyz
    http-check expect status 200
    default-server {options}
{servers}

# Used only while no replica is ready (a Redis outage): the replicas that are alive.
backend jwks_live
    balance roundrobin
    http-request disable-l7-retry unless METH_GET || {{ path /oauth/introspect /oauth/revoke }}
    option httpchk
    http-check send meth GET uri /healthz
    http-check expect status 200
    default-server {options}
{servers}
"""

# The lines that decide what is retried, where to, and how health is checked: the same as shipped.
POLICY_LINES = ("option redispatch", "retries ", "retry-on ", "http-request disable-l7-retry", "option httpchk")
POLICY_LINES += ("http-check ", "option forwardfor", "use_backend ", "default_backend ", "backend ", "balance ")


def same_policy(template: str, deployed: str) -> bool:
    def lines(text: str) -> list[str]:
        stripped = (line.split("#", 1)[0].strip() for line in text.replace("{{", "{").replace("}}", "}").splitlines())
        return sorted(line for line in stripped if line.startswith(POLICY_LINES))

    return lines(template) == lines(deployed)


class HAProxy:
    """A private haproxy in the foreground; its per-request log is kept in `workdir/haproxy.log`."""

    def __init__(self, workdir: Path, port: int, servers: list[Replica]) -> None:
        self.workdir = workdir
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.socket = workdir / "haproxy.sock"
        self.config = workdir / "haproxy.cfg"
        self.log = workdir / "haproxy.log"
        self.servers = servers
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert same_policy(TEMPLATE, DEPLOY_HAPROXY.read_text()), "the template and deploy/haproxy.cfg differ"
        binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
        if not Path(binary).exists():
            pytest.fail("haproxy is not installed (Debian/Ubuntu: apt-get install haproxy)", pytrace=False)
        lines = "\n".join(f"    server {r.name} 127.0.0.1:{r.port}" for r in self.servers)
        text = TEMPLATE.format(port=self.port, socket=self.socket, servers=lines, options=SERVER_OPTIONS)
        self.config.write_text(text)
        check = subprocess.run([binary, "-c", "-f", str(self.config)], capture_output=True, text=True, check=False)
        assert check.returncode == 0, check.stdout + check.stderr
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [binary, "-db", "-f", str(self.config)], stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        for name in (r.name for r in self.servers):
            self.wait_status(name, "UP", timeout=15)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    # -- the runtime API --------------------------------------------------------------------------------

    def command(self, line: str) -> str:
        """One command on the stats socket, its answer."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(2)
            s.connect(str(self.socket))
            s.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def stats(self, backend: str = "jwks") -> dict[str, dict[str, str]]:
        """Server name -> its row of `show stat` (status, scur, ...) in `backend`."""
        text = self.command("show stat").lstrip("# ")
        return {
            row["svname"]: row
            for row in csv.DictReader(io.StringIO(text))
            if row.get("pxname") == backend and row["svname"] not in ("FRONTEND", "BACKEND")
        }

    def statuses(self, backend: str = "jwks") -> dict[str, str]:
        """Server name -> UP / DOWN / MAINT ..., from the stats socket."""
        return {name: row["status"] for name, row in self.stats(backend).items()}

    def wait_status(self, name: str, status: str, timeout: float, backend: str = "jwks") -> float:
        """Seconds until HAProxy reports server `name` in `status` (AssertionError after `timeout`)."""
        start = time.monotonic()
        while True:
            with contextlib.suppress(OSError):
                if self.statuses(backend).get(name, "").startswith(status):
                    return time.monotonic() - start
            if time.monotonic() - start > timeout:
                raise AssertionError(f"HAProxy: {name} not {status} within {timeout}s: {self.statuses(backend)}")
            time.sleep(0.05)

    def add(self, replica: Replica, timeout: float = 10) -> float:
        """Add a (ready) replica to every backend without a reload; seconds until it is UP in `jwks`."""
        start = time.monotonic()
        for backend in BACKENDS:
            answer = self.command(f"add server {backend}/{replica.name} 127.0.0.1:{replica.port} {SERVER_OPTIONS}")
            assert "New server registered" in answer, answer
            for what in ("health", "server"):  # a server added at run time starts in maintenance
                self.command(f"enable {what} {backend}/{replica.name}")
        self.servers.append(replica)
        self.wait_status(replica.name, "UP", timeout)
        return time.monotonic() - start

    def retire(self, replica: Replica, timeout: float = 10) -> float:
        """Take a replica out of every backend for good: maintenance (no new request goes there; those in
        flight finish), then wait until it has no connection left. Seconds that took."""
        start = time.monotonic()
        for backend in BACKENDS:
            self.command(f"set server {backend}/{replica.name} state maint")
        while any(self.stats(b).get(replica.name, {}).get("scur", "0") != "0" for b in BACKENDS):
            if time.monotonic() - start > timeout:
                raise AssertionError(f"HAProxy: {replica.name} still has requests after {timeout}s")
            time.sleep(0.05)
        return time.monotonic() - start

    def delete(self, replica: Replica, timeout: float = 10) -> None:
        """Delete a retired replica's server entries (once its pooled connections are gone)."""
        deadline = time.monotonic() + timeout
        for backend in BACKENDS:
            while "Server deleted" not in (answer := self.command(f"del server {backend}/{replica.name}")):
                if time.monotonic() > deadline:
                    raise AssertionError(f"HAProxy: del server {backend}/{replica.name}: {answer}")
                self.command(f"shutdown sessions server {backend}/{replica.name}")
                time.sleep(0.1)
        self.servers.remove(replica)

    # -- the log ------------------------------------------------------------------------------------------

    def requests(self) -> dict[str, dict[str, str]]:
        """Request id -> the fields of HAProxy's log line for it."""
        out: dict[str, dict[str, str]] = {}
        for line in self.log.read_text(errors="replace").splitlines():
            if not line.startswith("rid="):
                continue
            head, _, request = line.partition(" time=")
            fields = dict(part.split("=", 1) for part in head.split() if "=" in part)
            fields["time"], _, fields["request"] = request.partition(" ")
            out[fields["rid"]] = fields
        return out
