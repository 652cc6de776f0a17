"""Three replicas whose Redis credentials change under load (API.md §7), as real processes on a real
redis-server with ACL users and a real OpenBao:

- `password_file`: the file is rewritten and the user's password replaced (the old one stops working),
  three times, each time with every connection of the user closed, so that every replica must
  authenticate again at once;
- `vault_kv`: the same with a new version of the KV v2 secret;
- `vault_creds`: dynamic credentials with default_ttl 4s and max_ttl 10s, so that every replica renews
  and replaces its lease several times in the run.

Through each run three load workers ask for tokens, introspect them on another replica and now and then
create a client through the admin API (a write); every answer must be a success. Then no password used
(the file's, the KV versions', and every dynamic one, known by the hash Redis keeps) may appear in a
replica's log nor in `check-config`'s output. Run with `pytest -s` to see the counts.
"""

from __future__ import annotations

import os
import random
import re
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from redisacl import AclRedis, VaultRedis, hashed_passwords_in
from replicas import Fleet, Policy

from bench.baoserver import OpenBaoServer

pytestmark = [pytest.mark.slow, pytest.mark.fleet]

# Seconds of load: a rotated password (password_file, vault_kv) three times, at ROTATE_AT; Vault's
# dynamic credentials (vault_creds) long enough for each replica to replace its lease twice (max TTL 10 s).
RUN_SECONDS = 13.0
LEASES_SECONDS = 25.0
ROTATE_AT = (2.5, 6.0, 9.5)  # seconds into the run: the password_file and vault_kv rotations
POLICY = Policy(rotation_period="5s", prepublish="1s", token_ttl="10s")
SOURCES = ("password_file", "vault_kv", "vault_creds")
DYNAMIC_PASSWORD_LENGTH = 20  # Vault's default password policy, which the redis-database-plugin uses


@dataclass
class Run:
    source: str
    requests: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    rotations: int = 0
    killed: int = 0  # connections closed by the rotations
    passwords: set[str] = field(default_factory=set)
    users_seen: set[str] = field(default_factory=set)
    hashes: set[str] = field(default_factory=set)  # SHA-256 of the dynamic passwords (Redis knows no more)
    logs: dict[str, str] = field(default_factory=dict)
    check_config: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, what: str, ok: bool, detail: str) -> None:
        with self.lock:
            self.requests[what] += 1
            if not ok:
                self.failures.append(f"{what}: {detail}")

    def log_count(self, pattern: str) -> int:
        return sum(len(re.findall(pattern, text)) for text in self.logs.values())


def load_worker(fleet: Fleet, run: Run, stop: threading.Event, seed: int) -> None:
    rng = random.Random(seed)
    with httpx.Client(timeout=10) as http:
        i = 0
        while not stop.is_set():
            i += 1
            a, b = rng.sample(fleet.replicas, 2)
            try:
                r = fleet.token_response(a, http=http)
                run.record("token", r.status_code == 200, f"{a.name} {r.status_code} {r.text[:200]}")
                if r.status_code == 200:
                    q = fleet.introspect(b, r.json()["access_token"], http=http)
                    active = q.status_code == 200 and q.json().get("active") is True
                    run.record("introspect", active, f"{b.name} {q.status_code} {q.text[:200]}")
                if i % 10 == 0:
                    t = fleet.token_response(a, audience=fleet.issuer, scope="admin", http=http)
                    run.record("token", t.status_code == 200, f"admin token {t.status_code} {t.text[:200]}")
                    admin = t.json().get("access_token", "") if t.status_code == 200 else ""
                    w = http.post(
                        b.url("/admin/clients"),
                        json={"name": f"load-{seed}-{i}", "scopes": ["read"], "audiences": ["api"]},
                        headers={"Authorization": f"Bearer {admin}"},
                    )
                    run.record("admin write", w.status_code == 201, f"{b.name} {w.status_code} {w.text[:200]}")
            except httpx.HTTPError as exc:
                run.record("transport", False, repr(exc))
            stop.wait(0.02)


def serve_under_load(fleet: Fleet, run: Run, server: AclRedis, rotate: Callable[[], int] | None) -> None:
    """RUN_SECONDS of load by three workers (LEASES_SECONDS without `rotate`); `rotate` at ROTATE_AT
    (returns the connections it closed)."""
    stop = threading.Event()
    start = time.monotonic()
    seconds = RUN_SECONDS if rotate is not None else LEASES_SECONDS
    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(load_worker, fleet, run, stop, seed) for seed in range(3)]
        try:
            pending = list(ROTATE_AT) if rotate is not None else []
            while time.monotonic() - start < seconds:
                if pending and time.monotonic() - start >= pending[0]:
                    pending.pop(0)
                    assert rotate is not None
                    run.killed += rotate()
                    run.rotations += 1
                for user in {u for u in server.users() if u.startswith("V_")} - run.users_seen:
                    run.users_seen.add(user)  # a new lease: learn its password's hash while the user lives
                    run.hashes |= server.password_hashes(user)
                time.sleep(0.1)
        finally:
            stop.set()
        for f in futures:
            f.result()


def new_password() -> str:
    return "pw-" + secrets.token_urlsafe(18)


def scenario(source: str, workdir: Path, bao: OpenBaoServer) -> Run:
    run = Run(source)
    vault = VaultRedis(bao, workdir)
    server = AclRedis(workdir, url_user="" if source == "vault_creds" else "jwks", appendfsync="always")
    rotate: Callable[[], int] | None = None
    password_file = workdir / "redis-password"
    if source == "password_file":
        store, extra = f'password_file = "{password_file}"\n', ""
    elif source == "vault_kv":
        store, extra = f'vault_kv = "{vault.kv_path}#password"\n', vault.config()
    else:
        store, extra = f'vault_creds = "{vault.creds_path}"\n', vault.config()
    fleet = Fleet(workdir, POLICY, store_extra=store, extra_config=extra)
    fleet.redis = server
    try:
        if source in ("password_file", "vault_kv"):
            first = new_password()
            run.passwords.add(first)
            server.user("jwks", first)
            password_file.write_text(first + "\n")
            if source == "vault_kv":
                vault.put_password(first)

            def rotate() -> int:
                new = new_password()
                run.passwords.add(new)
                if source == "password_file":  # as an agent renders it: a new file moved into place
                    tmp = workdir / ".redis-password.tmp"
                    tmp.write_text(new + "\n")
                    os.replace(tmp, password_file)
                else:
                    vault.put_password(new)
                return server.rotate("jwks", new)

        server.start()
        if source == "vault_creds":
            vault.database(server, default_ttl="4s", max_ttl="10s")
        fleet.start()  # its redis is up already (AclRedis.start leaves a running server alone)
        serve_under_load(fleet, run, server, rotate)
        check = fleet.cli("check-config")
        run.check_config = check.stdout + check.stderr
    finally:
        for r in fleet.replicas:
            r.stop()
        run.logs = {r.name: r.tail(10_000_000) for r in fleet.replicas}
        vault.close()
        fleet.close()
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, openbao: OpenBaoServer) -> Callable[[str], Run]:
    """Each source's run, made when a test first asks for it."""
    done: dict[str, Run] = {}

    def get(source: str) -> Run:
        if source not in done:
            done[source] = scenario(source, tmp_path_factory.mktemp(source), openbao)
            r = done[source]
            print(
                f"\n{source}: {sum(r.requests.values())} requests ({dict(r.requests)}), {len(r.failures)} failed;"
                f" {r.rotations} rotations closing {r.killed} connections;"
                f" {r.log_count('Redis refused the credentials: re-read')} re-reads on refusal;"
                f" {r.log_count('new Redis credentials from Vault')} leases obtained by the replicas"
                f" ({r.log_count('sys/leases/renew')} renewals),"
                f" {len(r.users_seen)} dynamic Redis users seen; {len(r.passwords) or len(r.hashes)} passwords used;"
                f" log lines: {r.log_count(' WARNING ')} warnings, {r.log_count(' ERROR ')} errors"
            )
        return done[source]

    return get


@pytest.mark.parametrize("source", SOURCES)
def test_credentials_change_under_three_replicas_with_no_failed_request(
    runs: Callable[[str], Run], source: str
) -> None:
    run = runs(source)
    assert run.requests["token"] > 100 and run.requests["introspect"] > 100 and run.requests["admin write"] > 10
    assert run.failures == [], run.failures[:10]
    if source == "vault_creds":
        # Each replica renews and replaces its lease before the 10 s max TTL: >= 3 leases each in 25 s.
        assert run.log_count("new Redis credentials from Vault") >= 9
        assert len(run.users_seen) >= 9
    else:
        assert run.rotations == len(ROTATE_AT) and run.killed >= 3 * len(ROTATE_AT)
        # Every replica re-read the source after each rotation (once for all its connections at a time).
        assert run.log_count(r"Redis refused the credentials: re-read \S+ \S+ \(changed\)") >= 3 * len(ROTATE_AT)
    assert f"store.{source}" in run.check_config


@pytest.mark.parametrize("source", SOURCES)
def test_no_password_in_the_logs_or_check_config(runs: Callable[[str], Run], source: str) -> None:
    run = runs(source)
    texts = {**run.logs, "check-config": run.check_config}
    assert all(texts.values())
    if source != "vault_creds":
        assert len(run.passwords) == 1 + len(ROTATE_AT)
        for password in run.passwords:
            for name, text in texts.items():
                assert password not in text, f"a Redis password is in the output of {name}"
        return
    # Vault's dynamic passwords are known here by their hash only (Redis keeps the SHA-256).
    assert len(run.hashes) >= 9
    for name, text in texts.items():
        assert not hashed_passwords_in(text, run.hashes, DYNAMIC_PASSWORD_LENGTH), f"a Redis password is in {name}"


def test_the_hash_search_finds_a_dynamic_password(openbao: OpenBaoServer, tmp_path: Path) -> None:
    """The search of the test above can fail: it finds a password Vault generated, by its hash in Redis."""
    server = AclRedis(tmp_path)
    server.start()
    vault = VaultRedis(openbao, tmp_path)
    try:
        vault.database(server, default_ttl="1m", max_ttl="2m")
        creds = vault.client.read(vault.creds_path)["data"]
        assert len(creds["password"]) == DYNAMIC_PASSWORD_LENGTH
        hashes = server.password_hashes(creds["username"])
        text = f"2026-11-30 INFO something happened near {creds['password']}, and then more"
        assert hashed_passwords_in(text, hashes, DYNAMIC_PASSWORD_LENGTH) == hashes != set()
    finally:
        vault.close()
        server.stop()
