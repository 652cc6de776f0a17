"""Real-process fleets for the replica tests (tests/integration/test_replicas.py).

A `Fleet` is what an operator runs: a private `redis-server` with an append-only file (so that a
restart keeps the data), N `python -m jwks_service serve` replicas on loopback ports sharing it and
one KEK file, and one OAuth client created with the CLI. `CachingVerifier` is an outside verifier:
PyJWT with the JWKS cached for `jwks.max_age`, fetched from a random replica.

Everything listens on 127.0.0.1 only; every process is stopped by `Fleet.close()`.
"""

from __future__ import annotations

import base64
import json
import math
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
from redisserver import RedisServer
from support import free_port

from bench.baoserver import stop_process
from jwks_service.config import parse_duration
from jwks_service.model import AuditEvent
from jwks_service.stores.redis import RedisStore

CLI = [sys.executable, "-m", "jwks_service"]
# Debian's `faketime` package: /usr/lib/<multiarch triplet>/faketime/libfaketime.so.1
FAKETIME_LIBS = sorted(Path("/usr/lib").glob("*/faketime/libfaketime.so.1"))


def faketime_env(offset: str) -> dict[str, str]:
    """Environment that shifts a process's wall clock (time.time) by `offset`, e.g. "+2s"; the
    monotonic clock (asyncio's timers) stays real."""
    return {"LD_PRELOAD": str(FAKETIME_LIBS[0]), "FAKETIME": offset, "FAKETIME_DONT_FAKE_MONOTONIC": "1"}


def faketime_available() -> bool:
    return shutil.which("faketime") is not None and bool(FAKETIME_LIBS)


@dataclass(frozen=True)
class Policy:
    """The [jwks] max_age and the [keysets.default] policy of a fleet."""

    max_age: str = "1s"
    rotation_period: str = "1s"
    prepublish: str = "1s"
    token_ttl: str = "5s"
    leeway: str = "0s"
    alg: str = "ES256"
    # Off unless a test is about the gate (API.md §6): these fleets rotate every second, and a test's
    # one-off JWKS fetches would otherwise hold every rotation for adoption_max_wait.
    adoption_gate: str = "0"
    adoption_max_wait: str = "7d"

    def seconds(self, name: str) -> int:
        return parse_duration(getattr(self, name), name)


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0-100)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def kid_of(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


class Replica:
    def __init__(
        self, name: str, port: int, config: Path, workdir: Path, env: dict[str, str], args: Sequence[str] = ()
    ) -> None:
        self.name = name
        self.args = list(args)  # more `serve` options
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.config = config
        self.workdir = workdir
        self.env = env
        self.log_path = workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def __repr__(self) -> str:
        return f"<{self.name} {self.base}>"

    def url(self, path: str) -> str:
        return self.base + path

    def start(self) -> None:
        assert self.proc is None, f"{self.name} is already running"
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"\n===== start #{self.starts} at {time.time():.3f} =====\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [*CLI, "serve", "--config", str(self.config), "--listen", f"127.0.0.1:{self.port}", *self.args],
                cwd=self.workdir,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                if httpx.get(self.url("/readyz"), timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} not ready within {timeout}s:\n{self.tail()}")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no shutdown of any kind, as a crash or an OOM kill."""
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is None:
            return
        stop_process(self.proc)
        self.proc = None

    def tail(self, chars: int = 2500) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return text[-chars:]


class Fleet:
    """Redis + N replicas sharing it, one issuer, one KEK file, one client with read/admin/introspect."""

    def __init__(
        self,
        workdir: Path,
        policy: Policy,
        *,
        replicas: int = 3,
        replica_env: dict[int, dict[str, str]] | None = None,
        issuer: str | None = None,
        serve_args: Sequence[str] = (),
        store_extra: str = "",
        extra_config: str = "",
    ) -> None:
        """`issuer`: the URL clients use (a proxy in front), by default the first replica's. `store_extra`:
        more lines of the [store] table; `extra_config`: more tables at the end of the configuration."""
        self.workdir = workdir
        self.policy = policy
        self.redis = RedisServer(workdir, appendfsync="always")
        ports = [free_port() for _ in range(replicas)]
        self.issuer = issuer or f"http://127.0.0.1:{ports[0]}"
        self.config = workdir / "jwks.toml"
        self.kek = workdir / "kek"
        base_env = {k: v for k, v in os.environ.items() if not k.startswith(("JWKS_", "FAKETIME", "LD_PRELOAD"))}
        self.env = base_env
        self.replicas = [
            Replica(
                f"replica{i + 1}",
                port,
                self.config,
                workdir,
                {**base_env, **(replica_env or {}).get(i, {})},
                serve_args,
            )
            for i, port in enumerate(ports)
        ]
        self.store_extra, self.extra_config = store_extra, extra_config
        self.client_id = ""
        self.client_secret = ""
        self.http = httpx.Client(timeout=5)
        self.rng = random.Random()

    # -- lifecycle -------------------------------------------------------------------------------

    def __enter__(self) -> Fleet:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        self.redis.start()
        self.kek.write_text(base64.b64encode(secrets.token_bytes(32)).decode() + "\n")
        self.kek.chmod(0o600)
        p = self.policy
        self.config.write_text(
            f'issuer = "{self.issuer}"\n'
            f'[store]\nurl = "{self.redis.url}"\n{self.store_extra}'
            f'[secrets]\nkek_file = "{self.kek}"\n'
            f'[jwks]\nmax_age = "{p.max_age}"\n'
            f'[keysets.default]\nalg = "{p.alg}"\nrotation_period = "{p.rotation_period}"\n'
            f'prepublish = "{p.prepublish}"\ntoken_ttl = "{p.token_ttl}"\nleeway = "{p.leeway}"\n'
            f'adoption_gate = {p.adoption_gate}\nadoption_max_wait = "{p.adoption_max_wait}"\n'
            f"{self.extra_config}"
        )
        for r in self.replicas:
            r.start()
        for r in self.replicas:
            r.wait_ready()
        created = json.loads(
            self.cli(
                "clients",
                "create",
                "fleet-load",
                "--scope",
                "read",
                "--scope",
                "admin",
                "--scope",
                "introspect",
                "--audience",
                self.issuer,
                "--audience",
                "api",
                "--json",
            ).stdout
        )
        self.client_id, self.client_secret = created["client_id"], created["client_secret"]

    def close(self) -> None:
        try:
            for r in self.replicas:
                try:
                    r.stop()
                except Exception:
                    r.kill()
        finally:
            self.redis.stop()
            self.http.close()

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*CLI, *args, "--config", str(self.config)],
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if result.returncode != 0:
            raise AssertionError(f"jwks-service {' '.join(args)} failed ({result.returncode}): {result.stderr}")
        return result

    # -- calls -----------------------------------------------------------------------------------

    @property
    def auth(self) -> tuple[str, str]:
        return (self.client_id, self.client_secret)

    def pick(self, among: Iterable[Replica] | None = None) -> Replica:
        return self.rng.choice(list(among if among is not None else self.replicas))

    def token_response(
        self, replica: Replica, *, audience: str = "api", scope: str | None = None, http: httpx.Client | None = None
    ) -> httpx.Response:
        data = {"grant_type": "client_credentials", "audience": audience}
        if scope:
            data["scope"] = scope
        return (http or self.http).post(replica.url("/oauth/token"), data=data, auth=self.auth)

    def token(self, replica: Replica, *, audience: str = "api", http: httpx.Client | None = None) -> str:
        r = self.token_response(replica, audience=audience, http=http)
        assert r.status_code == 200, f"token from {replica.name}: {r.status_code} {r.text}\n{self.logs()}"
        return str(r.json()["access_token"])

    def admin_token(self, replica: Replica) -> str:
        r = self.token_response(replica, audience=self.issuer, scope="admin")
        assert r.status_code == 200, f"admin token from {replica.name}: {r.status_code} {r.text}"
        return str(r.json()["access_token"])

    def admin_post(
        self, replica: Replica, path: str, body: dict[str, Any], *, token: str | None = None, timeout: float = 10
    ) -> httpx.Response:
        bearer = token or self.admin_token(replica)
        return self.http.post(
            replica.url(path), json=body, headers={"Authorization": f"Bearer {bearer}"}, timeout=timeout
        )

    def introspect(self, replica: Replica, token: str, http: httpx.Client | None = None) -> httpx.Response:
        return (http or self.http).post(replica.url("/oauth/introspect"), data={"token": token}, auth=self.auth)

    def jwks(self, replica: Replica, http: httpx.Client | None = None) -> dict[str, Any]:
        r = (http or self.http).get(replica.url("/.well-known/jwks.json"))
        assert r.status_code == 200, f"JWKS of {replica.name}: {r.status_code} {r.text}"
        return dict(r.json())

    def kids(self, replica: Replica, http: httpx.Client | None = None) -> set[str]:
        return {str(k["kid"]) for k in self.jwks(replica, http)["keys"]}

    def status(self, replica: Replica) -> dict[str, Any]:
        r = self.http.get(replica.url("/keys/status"))
        assert r.status_code == 200, f"/keys/status of {replica.name}: {r.status_code} {r.text}"
        return dict(r.json())

    def currents(self, replica: Replica) -> list[str]:
        return [k["kid"] for k in self.status(replica)["keys"] if k["state"] == "current"]

    @contextmanager
    def store(self) -> Iterator[RedisStore]:
        """The replicas' store, read directly (default namespace, as the server uses)."""
        s = RedisStore(self.redis.url)
        try:
            yield s
        finally:
            s.close()

    def audit(self) -> list[AuditEvent]:
        with self.store() as s:
            return list(reversed(s.list_audit(limit=100_000)))  # oldest first

    def logs(self, chars: int = 2500) -> str:
        parts = [f"--- {r.name} ({r.base}) log tail ---\n{r.tail(chars)}" for r in self.replicas]
        return "\n".join(parts)


def promotions(events: Iterable[AuditEvent]) -> list[AuditEvent]:
    """Audit events that made a key `current` (scheduled, manual, forced, revoke, bootstrap)."""
    return [
        e
        for e in events
        if e.action in ("key.rotated", "key.created") and e.details.get("state") == "current" and e.outcome == "ok"
    ]


def transition_problems(events: Iterable[AuditEvent]) -> list[str]:
    """Each kid is created once, becomes current at most once, previous at most once, and leaves the
    lifecycle (retired / revoked / discarded) at most once."""
    seen: Counter[tuple[str, str]] = Counter()
    for e in events:
        if not e.action.startswith("key.") or e.outcome != "ok" or e.action == "key.validate":
            continue
        state = str(e.details.get("state", ""))
        kind = {"current": "current", "previous": "previous", "next": "created"}.get(state, "ended")
        if e.action == "key.created":
            seen[(e.target, "created")] += 1
            if state == "current":
                seen[(e.target, "current")] += 1
            continue
        seen[(e.target, kind)] += 1
    return [f"{kid} {what} {n} times" for (kid, what), n in sorted(seen.items()) if n > 1]


class CachingVerifier:
    """An outside verifier: PyJWT with the JWKS of a random replica cached for `max_age`; on a kid it
    does not know it refetches, at most once per `max_age` (a refetch cooldown, as verifier SDKs have)."""

    def __init__(
        self,
        urls: Callable[[], Sequence[str]],
        *,
        issuer: str,
        audience: str,
        max_age: float,
        leeway: float,
        http: httpx.Client,
        rng: random.Random,
        algorithm: str = "ES256",
    ) -> None:
        self.urls = urls
        self.issuer = issuer
        self.audience = audience
        self.max_age = max_age
        self.leeway = leeway
        self.http = http
        self.rng = rng
        self.algorithm = algorithm
        self.keys: dict[str, jwt.PyJWK] = {}
        self.fetched_at = float("-inf")
        self.last_refetch = float("-inf")
        self.fetches = 0
        self.unknown_kid_refetches = 0
        self.source = ""
        self.requested_at = 0.0  # wall clock: when the cached JWKS was asked for
        # Tokens whose kid was not in a cache still fresh for max_age: (wall time, kid, source,
        # requested_at of that cache, whether the refetch found it).
        self.misses: list[tuple[float, str, str, float, bool]] = []

    def fetch(self) -> None:
        last: Exception | None = None
        for url in self.rng.sample(list(self.urls()), k=len(self.urls())):
            requested_at = time.time()
            try:
                r = self.http.get(url)
                r.raise_for_status()
            except httpx.HTTPError as exc:  # a replica that was just killed: try another one
                last = exc
                continue
            self.keys = {str(k["kid"]): jwt.PyJWK(k) for k in r.json()["keys"]}
            self.fetched_at = time.monotonic()
            self.fetches += 1
            self.source, self.requested_at = url, requested_at
            return
        raise RuntimeError(f"no replica served the JWKS: {last}")

    def verify(self, token: str) -> dict[str, Any]:
        if time.monotonic() - self.fetched_at >= self.max_age:
            self.fetch()
        kid = kid_of(token)
        key = self.keys.get(kid)
        if key is None and time.monotonic() - self.last_refetch >= self.max_age:
            self.last_refetch = time.monotonic()
            self.unknown_kid_refetches += 1
            miss = (time.time(), kid, self.source, self.requested_at)
            self.fetch()
            key = self.keys.get(kid)
            self.misses.append((*miss, key is not None))
        if key is None:
            raise jwt.InvalidTokenError(f"kid {kid} is not in the cached JWKS")
        return dict(
            jwt.decode(
                token,
                key.key,
                algorithms=[self.algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
            )
        )


def verify_with_jwks(
    token: str, jwks: dict[str, Any], *, issuer: str, audience: str, leeway: float, algorithm: str = "ES256"
) -> dict[str, Any]:
    """PyJWT verification of `token` against one JWKS document (no cache)."""
    keys = {str(k["kid"]): k for k in jwks["keys"]}
    kid = kid_of(token)
    if kid not in keys:
        raise jwt.InvalidTokenError(f"kid {kid} is not in the JWKS")
    key = jwt.PyJWK(keys[kid])
    return dict(jwt.decode(token, key.key, algorithms=[algorithm], audience=audience, issuer=issuer, leeway=leeway))
