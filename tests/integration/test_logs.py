"""Logs of a real `jwks-service serve` ([log] format, level, access; request ids), and a full session's
logs scanned for every secret it made."""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import free_port, wait_until

from bench.baoserver import OpenBaoServer, stop_process
from jwks_service.clock import parse_rfc3339

pytestmark = pytest.mark.slow

CLI = [sys.executable, "-m", "jwks_service"]
GRANT = {"grant_type": "client_credentials"}
TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+ \S")


class Served:
    """A `serve` process in `workdir` with its stdout and stderr kept apart, and the CLI beside it."""

    def __init__(self, workdir: Path, config: str, env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.config = workdir / "jwks.toml"
        self.config.write_text(f'issuer = "{self.base}"\nlisten = "127.0.0.1:{self.port}"\n{config}')
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("JWKS_", "VAULT_"))},
            **(env or {}),
        }
        self.cli_output: list[str] = []  # what the CLI wrote to stderr (its logs)

    def cli(self, *args: str) -> str:
        r = subprocess.run(
            [*CLI, *args, "--config", str(self.config)],
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        self.cli_output.append(r.stderr)
        assert r.returncode == 0, r.stderr
        return r.stdout

    @property
    def stderr(self) -> str:
        return (self.workdir / "serve.err").read_text()

    @property
    def stdout(self) -> str:
        return (self.workdir / "serve.out").read_text()


@contextmanager
def serving(served: Served, *args: str) -> Iterator[Served]:
    with (served.workdir / "serve.out").open("w") as out, (served.workdir / "serve.err").open("w") as err:
        proc = subprocess.Popen(
            [*CLI, "serve", "--config", str(served.config), *args],
            cwd=served.workdir,
            env=served.env,
            stdout=out,
            stderr=err,
        )
        try:
            wait_until(lambda: httpx.get(f"{served.base}/readyz").status_code == 200, timeout=30)
            yield served
        finally:
            stop_process(proc)
    assert proc.returncode in (0, -15), served.stderr


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def create_client(served: Served, name: str, *scopes: str, audience: str = "api") -> tuple[str, str]:
    args = ["clients", "create", name, "--audience", audience, "--json"]
    for scope in scopes:
        args += ["--scope", scope]
    created = json.loads(served.cli(*args))
    return created["client_id"], created["client_secret"]


def token(served: Served, client_id: str, secret: str) -> str:
    r = httpx.post(f"{served.base}/oauth/token", data=GRANT, auth=(client_id, secret))
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


# ----- format, request ids, level -----------------------------------------------------------------


def test_json_lines_request_ids_in_access_lines_and_in_the_audit_of_an_admin_call(tmp_path: Path) -> None:
    # JWKS_URL (another program's): its warning is logged while the settings load, before the format is known
    served = Served(
        tmp_path,
        '[http]\ntrusted_proxies = ["127.0.0.1"]\n[log]\nformat = "json"\naccess = true\n',
        env={"JWKS_URL": "https://elsewhere"},
    )
    with serving(served):
        admin_id, admin_secret = create_client(served, "ops", "admin", audience=served.base)
        bearer = {"Authorization": "Bearer " + token(served, admin_id, admin_secret)}
        jwks = httpx.get(
            f"{served.base}/.well-known/jwks.json",
            headers={"X-Request-ID": "jwks-check-1", "X-Forwarded-For": "203.0.113.9"},  # from a trusted proxy
        )
        assert jwks.headers["x-request-id"] == "jwks-check-1"
        generated = httpx.get(f"{served.base}/keys/status").headers["x-request-id"]
        rotate = httpx.post(
            f"{served.base}/admin/keysets/default/rotate",
            json={"force": True, "reason": "log test"},
            headers={**bearer, "X-Request-ID": "change-1234"},
        )
        assert rotate.status_code == 200 and rotate.headers["x-request-id"] == "change-1234"
        events = httpx.get(f"{served.base}/admin/audit", headers=bearer).json()["events"]
        time.sleep(0.3)
    lines = json_lines(served.stderr)  # every line is one JSON object
    for line in lines:
        assert {"time", "level", "logger", "message"} <= set(line), line
        assert line["time"].endswith("Z") and parse_rfc3339(line["time"]) > 0
        assert line["level"] in {"debug", "info", "warning", "error", "critical"}
    assert any(line["logger"].startswith("uvicorn") for line in lines)  # uvicorn's own lines too
    assert any(line["message"].startswith("ignoring environment variable JWKS_URL") for line in lines)
    assert json_lines(served.cli_output[0])  # the CLI's lines too
    access = {line["request_id"]: line for line in lines if line["logger"] == "jwks_service.access"}
    assert access["jwks-check-1"]["path"] == "/.well-known/jwks.json" and access["jwks-check-1"]["status"] == 200
    assert access["jwks-check-1"]["client"] == "203.0.113.9"
    assert access[generated]["path"] == "/keys/status"
    assert access["change-1234"]["method"] == "POST" and access["change-1234"]["client"] == "127.0.0.1"
    audited = [
        line for line in lines if line["logger"] == "jwks_service.audit" and line.get("request_id") == "change-1234"
    ]
    assert {line["action"] for line in audited} >= {"admin.keysets.rotate", "key.rotated"}
    assert all(line["details"]["request_id"] == "change-1234" for line in audited)
    stored = [e for e in events if e["details"].get("request_id") == "change-1234"]
    assert {e["action"] for e in stored} == {line["action"] for line in audited}
    served.cli("audit", "verify")  # the chain holds, events with request ids in it (exit 0)


def test_text_format_is_unchanged_and_the_default(tmp_path: Path) -> None:
    served = Served(tmp_path, "")
    with serving(served):
        client_id, secret = create_client(served, "demo", "read")
        r = httpx.post(f"{served.base}/oauth/token", data=GRANT, auth=(client_id, secret))
        assert r.status_code == 200 and r.headers["x-request-id"]
        httpx.get(f"{served.base}/.well-known/jwks.json")
        time.sleep(0.3)
    lines = served.stderr.splitlines()
    assert lines and all(TEXT_LINE.match(line) for line in lines), served.stderr
    assert not any(" jwks_service.access " in line for line in lines)  # the access log is off by default
    assert any(" INFO uvicorn.error Application startup complete." in line for line in lines)
    # A command other than serve prints its answer, not info lines: its audit event is in the store.
    assert " jwks_service.audit " not in served.cli_output[0]


def test_level_filters_the_service_s_and_uvicorn_s_lines(tmp_path: Path) -> None:
    served = Served(
        tmp_path, '[log]\nformat = "json"\nlevel = "warning"\naccess = true\n', env={"FORWARDED_ALLOW_IPS": "*"}
    )
    with serving(served):
        for _ in range(3):
            httpx.get(f"{served.base}/.well-known/jwks.json")
        time.sleep(0.3)
    lines = json_lines(served.stderr)
    assert {line["level"] for line in lines} == {"warning"}, lines
    assert any("FORWARDED_ALLOW_IPS is ignored" in line["message"] for line in lines)


def test_every_worker_logs_in_the_configured_format(tmp_path: Path) -> None:
    served = Served(tmp_path, '[log]\nformat = "json"\naccess = true\n')
    with serving(served, "--workers", "2"):
        ids = []
        for _ in range(20):
            with httpx.Client() as fresh:  # a new connection each time: both workers take some
                r = fresh.get(f"{served.base}/.well-known/jwks.json", headers={"X-Forwarded-For": "203.0.113.9"})
                ids.append(r.headers["x-request-id"])
        time.sleep(0.5)
    lines = json_lines(served.stderr)
    access = [line for line in lines if line["logger"] == "jwks_service.access"]
    assert {line["request_id"] for line in access} >= set(ids)
    assert {line["client"] for line in access} == {"127.0.0.1"}  # no trusted proxy: the header is not believed
    prefixes = {i.rsplit("-", 1)[0] for i in ids}
    startups = [line for line in lines if line["message"] == "Application startup complete."]
    assert len(startups) == 2 and len(prefixes) <= 2


# ----- no secret in any log -----------------------------------------------------------------------


def redis_with_password(workdir: Path, password: str) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed (apt-get install redis-server)", pytrace=False)
    port = free_port()
    options = ["--requirepass", password, "--dir", str(workdir), "--logfile", str(workdir / "redis.log")]
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", *options],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
    )
    import redis

    client = redis.Redis(host="127.0.0.1", port=port, password=password)
    try:
        wait_until(client.ping, timeout=10)
    finally:
        client.close()
    return proc, f"redis://:{password}@127.0.0.1:{port}/0"


def forms(secret: str) -> set[str]:
    """A secret and the ways it could be written down encoded."""
    raw = secret.encode()
    out = {secret, base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()}
    out |= {f.rstrip("=") for f in out}
    try:  # a base64 secret (the KEK): its bytes, in every form
        decoded = base64.b64decode(secret, validate=True)
    except ValueError:
        decoded = b""
    if len(decoded) >= 16:
        out |= {decoded.hex(), base64.urlsafe_b64encode(decoded).decode().rstrip("=")}
    return {f for f in out if len(f) >= 12}


def test_a_full_session_logs_no_secret(tmp_path: Path, openbao: OpenBaoServer) -> None:
    password = "redis-" + secrets.token_urlsafe(24)
    redis_proc, redis_url = redis_with_password(tmp_path, password)
    vault_token = openbao.client().auth.token.create(policies=["root"], ttl="1h")["auth"]["client_token"]
    (tmp_path / "vault-token").write_text(vault_token)
    kek = base64.b64encode(secrets.token_bytes(32)).decode()
    (tmp_path / "kek").write_text(kek)
    (tmp_path / "kek").chmod(0o600)
    audit_file = tmp_path / "audit.jsonl"
    served = Served(
        tmp_path,
        f'[store]\nurl = "{redis_url}"\n[secrets]\nkek_file = "{tmp_path / "kek"}"\n'
        f'[vault]\naddr = "{openbao.addr}"\ntoken_file = "{tmp_path / "vault-token"}"\n'
        f'[audit]\nfile = "{audit_file}"\n'
        '[log]\nformat = "json"\nlevel = "debug"\naccess = true\n'
        '[keysets.default]\nalg = "ES256"\n'
        f'[keysets.vaulted]\nalg = "ES256"\nbackend = "vault"\n',
    )
    made: list[tuple[str, str]] = [("the Redis password", password), ("the Vault token", vault_token), ("the KEK", kek)]
    try:
        with serving(served):
            base = served.base
            admin = create_client(served, "ops", "admin", audience=base)
            app = create_client(served, "app", "read", "introspect")
            vaulted = json.loads(
                served.cli(
                    "clients", "create", "v", "--scope", "read", "--audience", "api", "--keyset", "vaulted", "--json"
                )
            )
            made += [("a client secret", s) for s in (admin[1], app[1], vaulted["client_secret"])]
            made += [("a Basic credential", f"{i}:{s}") for i, s in (admin, app)]  # its base64 is the header
            admin_token = token(served, *admin)
            bearer = {"Authorization": f"Bearer {admin_token}"}
            tokens = [admin_token, token(served, *app), token(served, vaulted["client_id"], vaulted["client_secret"])]
            with httpx.Client(base_url=base) as http:
                for t in tokens:
                    assert http.post("/oauth/introspect", data={"token": t}, auth=app).json()["active"] is True
                # credentials where they do not belong: the wrong secret, one client's secret for another
                assert http.post("/oauth/token", data=GRANT, auth=(app[0], admin[1])).status_code == 401
                assert http.post("/oauth/token", data=GRANT, auth=("no-such-client", app[1])).status_code == 401
                post = {**GRANT, "client_id": app[0], "client_secret": app[1] + "x"}
                assert http.post("/oauth/token", data=post).status_code == 401
                assert http.get(f"/.well-known/jwks.json?client_secret={app[1]}").status_code == 200
                assert http.get("/admin/clients", headers={"Authorization": f"Bearer {tokens[1]}"}).status_code == 403
                assert http.get("/admin/clients", headers={"Authorization": "Bearer " + app[1]}).status_code == 401
                # admin calls, two of which return new secrets
                created = http.post(
                    "/admin/clients", json={"name": "svc", "scopes": ["read"], "audiences": ["api"]}, headers=bearer
                ).json()
                rotated = http.post(f"/admin/clients/{app[0]}/secret", json={}, headers=bearer).json()
                made += [("a client secret", created["client_secret"]), ("a client secret", rotated["client_secret"])]
                tokens.append(token(served, created["client_id"], created["client_secret"]))
                tokens.append(token(served, app[0], rotated["client_secret"]))
                assert (
                    http.post("/admin/keysets/default/rotate", json={"force": True}, headers=bearer).status_code == 200
                )
                assert (
                    http.post("/admin/keysets/vaulted/rotate", json={"force": True}, headers=bearer).status_code == 200
                )
                for path in ("/admin/keysets", "/admin/clients", "/admin/audit", f"/admin/clients/{app[0]}"):
                    assert http.get(path, headers=bearer).status_code == 200
                assert (
                    http.post(
                        "/oauth/revoke", data={"token": tokens[1]}, auth=(app[0], rotated["client_secret"])
                    ).status_code
                    == 200
                )
                assert http.post("/oauth/introspect", data={"token": tokens[1]}, auth=app).json() == {"active": False}
            served.cli("keys", "rotate", "default", "--force", "--reason", "scan")
            # stdout (not scanned) is where these two print a secret and a token, as they should
            rotated_cli = json.loads(served.cli("clients", "rotate-secret", vaulted["client_id"], "--json"))
            made.append(("a client secret", rotated_cli["client_secret"]))
            tokens.append(served.cli("token", admin[0]).strip())
            served.cli("keys", "list")
            served.cli("audit", "verify")
            time.sleep(0.5)
        made += [("an access token", t) for t in tokens]
        logs = {"serve stderr": served.stderr, "serve stdout": served.stdout, "audit file": audit_file.read_text()}
        logs |= {f"cli stderr {i}": text for i, text in enumerate(served.cli_output)}
    finally:
        stop_process(redis_proc)
    lines = json_lines(logs["serve stderr"])
    assert sum(line["logger"] == "jwks_service.access" for line in lines) >= 25  # the session was logged
    assert sum(line["logger"] == "jwks_service.audit" for line in lines) >= 8
    assert len(logs["audit file"].splitlines()) >= 8
    count = len(made)  # 3 + 6 client secrets + 2 Basic pairs + 6 access tokens (a count: a list's values would show)
    assert count == 17
    found = {
        (what, where) for what, secret in made for form in forms(secret) for where, text in logs.items() if form in text
    }
    assert not found, f"secrets in the logs (what, where): {sorted(found)}"  # names them, never the values
