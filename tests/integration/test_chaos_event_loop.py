"""No store or Vault call runs on the event loop (issue 11, defect 4), proved on a real replica.

One `jwks-service serve` process on a private Redis, with a local ES256 keyset and a Vault-backed
HS256 keyset on the OpenBao fixture. Redis and OpenBao are frozen (SIGSTOP: connections are accepted
by the kernel, nothing answers) while strangers hammer the token, introspection and admin endpoints
with bad credentials and forged HMAC bearer tokens; meanwhile the JWKS is fetched every few
milliseconds. Its p99 must stay under 50 ms: a handler that waited for Redis or Vault on the event
loop would stall it for seconds. Both processes are resumed (SIGCONT) whatever happens.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from redisserver import RedisServer
from replicas import CLI, Replica, percentile
from support import free_port

pytestmark = [pytest.mark.slow, pytest.mark.chaos]

HAMMER_SECONDS = 4.0
ATTACKERS = 8
P99_LIMIT_MS = 50.0


# GET the JWKS on one keep-alive connection every 10 ms for argv[3] seconds; print the latencies (ms).
PROBE = """
import http.client, json, sys, time
conn = http.client.HTTPConnection(sys.argv[1], int(sys.argv[2]), timeout=60)
def get():
    conn.request("GET", "/.well-known/jwks.json")
    response = conn.getresponse()
    response.read()
    assert response.status == 200, response.status
get()
out, end = [], time.monotonic() + float(sys.argv[3])
while time.monotonic() < end:
    started = time.perf_counter()
    get()
    out.append((time.perf_counter() - started) * 1000)
    time.sleep(0.01)
print(json.dumps(out))
"""


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@contextmanager
def frozen(*pids: int) -> Iterator[None]:
    stopped: list[int] = []
    try:
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
            stopped.append(pid)
        yield
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)


@pytest.fixture
def replica(tmp_path: Path, openbao: Any) -> Iterator[tuple[Replica, RedisServer, str]]:
    redis = RedisServer(tmp_path, appendfsync="always")
    redis.start()
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    kek = tmp_path / "kek"
    kek.write_text(base64.b64encode(secrets.token_bytes(32)).decode() + "\n")
    kek.chmod(0o600)
    hmac_keyset = f"chaos-{uuid.uuid4().hex[:8]}"  # the OpenBao server is shared by the session
    config = tmp_path / "jwks.toml"
    config.write_text(
        f'issuer = "{issuer}"\n'
        f'[store]\nurl = "{redis.url}"\n'
        f'[secrets]\nkek_file = "{kek}"\n'
        f'[vault]\naddr = "{openbao.addr}"\n'
        '[keysets.default]\nalg = "ES256"\n'
        f'[keysets.{hmac_keyset}]\nalg = "HS256"\nbackend = "vault"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JWKS_", "VAULT_", "FAKETIME", "LD_PRELOAD"))}
    env["VAULT_TOKEN"] = openbao.root_token
    rep = Replica("replica", port, config, tmp_path, env)
    try:
        rep.start()
        rep.wait_ready()
        yield rep, redis, hmac_keyset
    finally:
        rep.stop()
        redis.stop()


def forged_hmac_token(kid: str, issuer: str, client_id: str) -> str:
    """Passes every cheap check (structure, kid, alg, typ, claims); only the signature is wrong, so
    only Transit can tell."""
    now = int(time.time())
    header = {"alg": "HS256", "kid": kid, "typ": "at+jwt"}
    claims = {
        "iss": issuer,
        "sub": client_id,
        "aud": issuer,
        "exp": now + 300,
        "iat": now,
        "nbf": now,
        "jti": secrets.token_urlsafe(16),
        "client_id": client_id,
        "scope": "admin",
    }
    return ".".join((b64(json.dumps(header).encode()), b64(json.dumps(claims).encode()), b64(secrets.token_bytes(32))))


def test_frozen_redis_and_vault_never_stall_the_jwks(
    replica: tuple[Replica, RedisServer, str], openbao: Any, tmp_path: Path
) -> None:
    rep, redis, hmac_keyset = replica
    create = ["clients", "create", "chaos", "--scope", "admin", "--audience", rep.base, "--json"]
    created = subprocess.run(
        [*CLI, *create, "--config", str(rep.config)],
        env=rep.env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert created.returncode == 0, created.stderr
    client_id = json.loads(created.stdout)["client_id"]
    status = httpx.get(rep.url("/keys/status"), timeout=5).json()
    hmac_kid = next(k["kid"] for k in status["keys"] if k["keyset"] == hmac_keyset and k["state"] == "current")
    assert redis.proc is not None and openbao.pid is not None

    outcomes: Counter[str] = Counter()
    lock = threading.Lock()
    stop = threading.Event()

    def attack(n: int) -> None:
        forged = forged_hmac_token(hmac_kid, rep.base, client_id)
        with httpx.Client(timeout=3) as http:
            i = n
            while not stop.is_set():
                i += 1
                kind = ("token-unknown", "token-wrong-secret", "introspect", "admin")[i % 4]
                try:
                    if kind == "token-unknown":
                        r = http.post(
                            rep.url("/oauth/token"),
                            data={"grant_type": "client_credentials"},
                            auth=(secrets.token_hex(10), "wrong"),
                        )
                    elif kind == "token-wrong-secret":
                        r = http.post(
                            rep.url("/oauth/token"), data={"grant_type": "client_credentials"}, auth=(client_id, "x")
                        )
                    elif kind == "introspect":
                        r = http.post(
                            rep.url("/oauth/introspect"), data={"token": forged}, auth=(secrets.token_hex(10), "x")
                        )
                    else:
                        r = http.get(rep.url("/admin/keysets"), headers={"Authorization": f"Bearer {forged}"})
                    outcome = f"{kind} {r.status_code}"
                except httpx.TimeoutException:
                    outcome = f"{kind} client timeout"
                with lock:
                    outcomes[outcome] += 1
                time.sleep(0.005)

    with frozen(redis.proc.pid, openbao.pid), ThreadPoolExecutor(ATTACKERS) as pool:
        # The prober is a process of its own, so that the attackers' threads here never delay it.
        prober = subprocess.Popen(
            [sys.executable, "-c", PROBE, "127.0.0.1", str(rep.port), str(HAMMER_SECONDS)],
            stdout=subprocess.PIPE,
            text=True,
        )
        futures = [pool.submit(attack, n) for n in range(ATTACKERS)]
        try:
            out, _ = prober.communicate(timeout=HAMMER_SECONDS + 60)
        finally:
            stop.set()
            prober.kill()
            for f in futures:
                f.result(timeout=60)
    assert prober.returncode == 0, out
    latencies = json.loads(out)

    p99 = percentile(latencies, 99)
    summary = (
        f"JWKS during the freeze: {len(latencies)} requests, p50 {percentile(latencies, 50):.1f} ms, "
        f"p99 {p99:.1f} ms, max {max(latencies):.1f} ms; attackers: {dict(sorted(outcomes.items()))}"
    )
    print(f"\n[chaos] {summary}")
    assert p99 < P99_LIMIT_MS, summary
    assert len(latencies) >= 50, summary
    assert not [o for o in outcomes if o.endswith(" 500") or o.endswith(" 200")], summary
    # Resumed: the replica is ready again and still refuses the forged token.
    deadline = time.monotonic() + 20
    while httpx.get(rep.url("/readyz"), timeout=5).status_code != 200:
        assert time.monotonic() < deadline, rep.tail()
        time.sleep(0.1)
    forged = forged_hmac_token(hmac_kid, rep.base, client_id)
    r = httpx.get(rep.url("/admin/keysets"), headers={"Authorization": f"Bearer {forged}"}, timeout=10)
    assert r.status_code == 401, r.text


@pytest.mark.parametrize(
    ("header", "claims"),
    [
        pytest.param({}, {"exp": -10}, id="expired"),
        pytest.param({}, {"iss": "https://evil.example"}, id="wrong-iss"),
        pytest.param({"typ": "JWT"}, {}, id="wrong-typ"),
        pytest.param({"alg": "HS512"}, {}, id="alg-not-the-keys"),
        pytest.param({"kid": "no-such-kid"}, {}, id="unknown-kid"),
        pytest.param({}, {"iat": -7200, "nbf": -7200, "exp": 3600}, id="lives-too-long"),
    ],
)
def test_tokens_failing_cheap_checks_never_reach_vault(
    openbao: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, header: dict[str, Any], claims: dict[str, int]
) -> None:
    """The Transit /verify call of an HMAC key is the last check: with OpenBao frozen, a forged token
    that any cheap check refuses is a 401 at once (a call to Vault would wait for its timeout)."""
    from starlette.testclient import TestClient
    from support import ISSUER, make_settings

    from jwks_service.http import create_app
    from jwks_service.runtime import build_runtime

    monkeypatch.setenv("VAULT_TOKEN", openbao.root_token)
    name = f"cheap-{uuid.uuid4().hex[:8]}"
    rt = build_runtime(
        make_settings(tmp_path, {name: {"alg": "HS256", "backend": "vault"}}, vault={"addr": openbao.addr})
    )
    try:
        client, _ = rt.clients.create("admin", ["admin"], [ISSUER], keyset=name)
        current = rt.keys.snapshot.signing[name]
        now = int(time.time())
        head = {"alg": "HS256", "kid": current.kid, "typ": "at+jwt", **header}
        body: dict[str, Any] = {"iss": ISSUER, "sub": client.client_id, "aud": ISSUER, "jti": "j", "scope": "admin"}
        body |= {"client_id": client.client_id, "iat": now, "nbf": now, "exp": now + 60}
        body |= {k: (v if k == "iss" else now + v) for k, v in claims.items()}
        forged = ".".join((b64(json.dumps(head).encode()), b64(json.dumps(body).encode()), b64(b"\0" * 32)))
        http = TestClient(create_app(runtime=rt, background=False), base_url=ISSUER)
        with frozen(openbao.pid):
            started = time.monotonic()
            r = http.get("/admin/keysets", headers={"Authorization": f"Bearer {forged}"})
            took = time.monotonic() - started
        assert r.status_code == 401, r.text
        assert took < 1.0, f"{took:.1f} s: the token reached Vault"
    finally:
        rt.close()
