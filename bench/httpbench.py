"""HTTP benchmarks on loopback: our service against OpenBao's identity token issuer, in one run.

What is loaded (each for ``--duration`` seconds with ``--connections`` open connections):

- issuance: ``POST /oauth/token`` (client_credentials, client_secret_basic, ES256, 15 min TTL) with
  1 and 2 uvicorn workers, against OpenBao's ``GET /v1/identity/oidc/token/:role`` (an ES256 named
  key, the same TTL, a userpass token with an entity: a Vault user's built-in token issuer);
- JWKS: ``GET /.well-known/jwks.json`` with 1 and 2 workers against OpenBao's
  ``GET /v1/identity/oidc/.well-known/keys``;
- HTTPS: issuance and the JWKS again over TLS on kept-alive connections (``[http] tls_cert`` with a
  certificate made for the run, one worker), against a second OpenBao started with ``-dev-tls``;
- introspection: ``POST /oauth/introspect`` of a valid token;
- Vault-backed issuance (a Transit ES256 keyset on the same OpenBao): micro-batched
  (``vault.max_batch = 256``) against naive (``vault.max_batch = 1``: one Transit call per token);
- latency against concurrency: issuance at 1, 8, 32 and 128 connections, ours and OpenBao's;
- memory: the worker's RSS sampled while it issues ``--memory-tokens`` tokens (peak and growth).

The load generator is wrk (Debian's package) when it is on PATH, else a bounded asyncio/httpx
generator written for this (slower: it takes more of the CPU it shares with the servers). Both
servers run on the same machine and cores as the generator; the CPU each server used is read from
/proc (psutil) and reported as cores busy on average.

    python bench/httpbench.py [--duration 5] [--connections 32] [--memory-tokens 1000000] [--quick] [--json F]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/baoserver.py
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from baoserver import OpenBaoServer, bao_version, free_port, stop_process
from certs import ServerCert, issue, make_ca

CLI = [sys.executable, "-m", "jwks_service"]
ROLE = "bench"
TTL = "15m"
Progress = Callable[[str], None]


# ----- load generation ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    body: str = ""
    ca_file: str = ""  # https: the CA the Python generator trusts (wrk does not check certificates)


@dataclass
class Load:
    """One load run against one endpoint."""

    name: str
    server: str  # "ours" / "openbao"
    workers: int
    connections: int
    seconds: float
    requests: int
    errors: int
    rps: float
    p50_ms: float
    p99_ms: float
    server_cpu: float  # cores busy on average (1.0 = one core all the time)
    generator: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


_WRK_DONE = """
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"errors":%d,"status":%d,"p50_us":%d,"p99_us":%d}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99)))
end
"""


def _lua_string(text: str) -> str:
    return json.dumps(text)  # a JSON string literal is a valid Lua string literal for our ASCII inputs


def wrk_path() -> str | None:
    return shutil.which("wrk")


def _wrk(request: Request, connections: int, seconds: float, workdir: Path) -> tuple[int, float, int, float, float]:
    script = workdir / "load.lua"
    lines = [f"wrk.method = {_lua_string(request.method)}"]
    if request.body:
        lines.append(f"wrk.body = {_lua_string(request.body)}")
    for name, value in request.headers.items():
        lines.append(f"wrk.headers[{_lua_string(name)}] = {_lua_string(value)}")
    script.write_text("\n".join(lines) + _WRK_DONE, encoding="utf-8")
    threads = max(1, min(2, connections))
    duration = max(1, round(seconds))
    out = subprocess.run(
        [
            str(wrk_path()),
            f"-t{threads}",
            f"-c{connections}",
            f"-d{duration}s",
            "--timeout",
            "10s",
            "-s",
            str(script),
            request.url,
        ],
        capture_output=True,
        text=True,
        timeout=duration + 60,
        check=False,
    )
    for line in out.stdout.splitlines():
        if line.startswith("WRKJSON "):
            data = json.loads(line[len("WRKJSON ") :])
            elapsed = data["duration_us"] / 1e6
            errors = data["errors"] + data["status"]
            return data["requests"], elapsed, errors, data["p50_us"] / 1e3, data["p99_us"] / 1e3
    raise RuntimeError(f"wrk gave no result (exit {out.returncode}): {out.stderr.strip()[-500:]}")


async def _python_load(
    request: Request, connections: int, seconds: float, max_requests: int = 10_000_000
) -> tuple[int, float, int, float, float]:
    import httpx

    latencies: list[float] = []
    errors = 0
    clock = time.perf_counter
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    verify = ssl.create_default_context(cafile=request.ca_file) if request.ca_file else True
    async with httpx.AsyncClient(limits=limits, timeout=10, verify=verify) as client:
        start = clock()
        deadline = start + seconds

        async def worker() -> None:
            nonlocal errors
            while clock() < deadline and len(latencies) < max_requests:
                t0 = clock()
                try:
                    r = await client.request(
                        request.method, request.url, headers=request.headers, content=request.body or None
                    )
                    ok = 200 <= r.status_code < 400
                except httpx.HTTPError:
                    ok = False
                latencies.append(clock() - t0)
                if not ok:
                    errors += 1

        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = clock() - start
    latencies.sort()

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1e3 if latencies else 0.0

    return len(latencies), elapsed, errors, pct(0.50), pct(0.99)


def _cpu_seconds(pids: Sequence[int]) -> float:
    import psutil

    total = 0.0
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            procs = [proc, *proc.children(recursive=True)]
        except psutil.Error:
            continue
        for p in procs:
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
    return total


def run_load(
    name: str,
    server: str,
    workers: int,
    request: Request,
    *,
    connections: int,
    seconds: float,
    pids: Sequence[int],
    workdir: Path,
    generator: str,
) -> Load:
    cpu_before = _cpu_seconds(pids)
    if generator == "wrk":
        requests, elapsed, errors, p50, p99 = _wrk(request, connections, seconds, workdir)
    else:
        requests, elapsed, errors, p50, p99 = asyncio.run(_python_load(request, connections, seconds))
    cpu = (_cpu_seconds(pids) - cpu_before) / elapsed if elapsed > 0 else 0.0
    return Load(
        name,
        server,
        workers,
        connections,
        round(elapsed, 3),
        requests,
        errors,
        requests / elapsed if elapsed > 0 else 0.0,
        p50,
        p99,
        round(cpu, 3),
        generator,
    )


# ----- the servers -------------------------------------------------------------------------------


class OurServer:
    """`jwks-service serve` (SQLite store, an ES256 keyset; optionally a Vault Transit keyset)."""

    def __init__(
        self,
        workdir: Path,
        *,
        workers: int = 1,
        bao: OpenBaoServer | None = None,
        max_batch: int = 256,
        tls: tuple[ServerCert, Path] | None = None,  # HTTPS: the certificate and the CA that signed it
    ) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.base = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.ca_file = str(tls[1]) if tls else ""
        self.workers = workers
        self.config = workdir / "jwks.toml"
        vault = ""
        keysets = f'[keysets.default]\nalg = "ES256"\ntoken_ttl = "{TTL}"\n'
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("JWKS_", "VAULT_"))}
        if bao is not None:
            token_file = workdir / "vault-token"
            token_file.write_text(bao.root_token)
            vault = f'[vault]\naddr = "{bao.addr}"\ntoken_file = "{token_file}"\nmax_batch = {max_batch}\n'
            keysets += f'[keysets.vaulted]\nalg = "ES256"\nbackend = "vault"\ntoken_ttl = "{TTL}"\n'
        https = f'[http]\ntls_cert = "{tls[0].cert_file}"\ntls_key = "{tls[0].key_file}"\n' if tls else ""
        self.config.write_text(
            f'issuer = "{self.base}"\n[store]\nurl = "sqlite:///{workdir}/jwks.db"\n'
            f'[secrets]\nkek_file = "{workdir}/kek"\n{https}{vault}{keysets}',
            encoding="utf-8",
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / "serve.log"

    def cli(self, *args: str) -> str:
        out = subprocess.run(
            [*CLI, *args, "--config", str(self.config)],
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.workdir,
            timeout=120,
            check=False,
        )
        if out.returncode != 0:
            raise RuntimeError(f"jwks-service {' '.join(args)}: {out.stderr.strip()}")
        return out.stdout

    def start(self) -> None:
        import httpx

        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [*CLI, "serve", "--config", str(self.config), "--listen", f"127.0.0.1:{self.port}"]
                + (["--workers", str(self.workers)] if self.workers > 1 else []),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.workdir,
            )
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jwks-service serve exited:\n{self.log.read_text(errors='replace')[-2000:]}")
            try:
                if httpx.get(self.base + "/readyz", timeout=2, verify=self.verify).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"jwks-service not ready:\n{self.log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.1)

    def client(self, keyset: str = "default") -> tuple[str, str]:
        created = json.loads(
            self.cli(
                "clients",
                "create",
                f"bench-{keyset}",
                "--scope",
                "read",
                "--scope",
                "introspect",
                "--audience",
                "api",
                "--keyset",
                keyset,
                "--json",
            )
        )
        return created["client_id"], created["client_secret"]

    @property
    def verify(self) -> ssl.SSLContext | bool:
        return ssl.create_default_context(cafile=self.ca_file) if self.ca_file else True

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def worker_pids(self) -> list[int]:
        import psutil

        proc = psutil.Process(self.pid)
        children = proc.children(recursive=True)
        # uvicorn --workers: a supervisor and its worker processes (plus multiprocessing helpers).
        workers = [c.pid for c in children if "python" in c.name().lower()]
        return workers or [self.pid]

    def stop(self) -> None:
        if self.proc is None:
            return
        stop_process(self.proc, timeout=15)
        self.proc = None


@contextmanager
def our_server(workdir: Path, **kw: Any) -> Iterator[OurServer]:
    server = OurServer(workdir, **kw)
    try:
        yield server
    finally:
        server.stop()


def token_request(ours: OurServer, client_id: str, secret: str) -> tuple[dict[str, str], Request]:
    """The form headers (client_secret_basic) and a client_credentials token request for a client."""
    basic = "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    form = {"Content-Type": "application/x-www-form-urlencoded", "Authorization": basic}
    return form, Request("POST", ours.base + "/oauth/token", form, "grant_type=client_credentials", ours.ca_file)


def setup_openbao_oidc(bao: OpenBaoServer) -> str:
    """An ES256 named key and role (TTL as ours) and a userpass login whose token has an entity
    (identity tokens are issued to entities). Returns that token."""
    import httpx

    root = {"X-Vault-Token": bao.root_token}

    def post(path: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> httpx.Response:
        r = httpx.post(f"{bao.addr}/v1/{path}", headers=headers or root, json=body, timeout=10, verify=bao.verify)
        if r.status_code >= 300:
            raise RuntimeError(f"OpenBao {path}: {r.status_code} {r.text}")
        return r

    post("sys/auth/userpass", {"type": "userpass"})
    post(f"identity/oidc/key/{ROLE}", {"algorithm": "ES256", "allowed_client_ids": ["*"]})
    post(f"identity/oidc/role/{ROLE}", {"key": ROLE, "ttl": TTL})
    post("sys/policies/acl/bench-oidc", {"policy": f'path "identity/oidc/token/{ROLE}" {{ capabilities = ["read"] }}'})
    post(f"auth/userpass/users/{ROLE}", {"password": "bench-password-1", "token_policies": "bench-oidc"})
    login = post(f"auth/userpass/login/{ROLE}", {"password": "bench-password-1"}, headers={})
    token = str(login.json()["auth"]["client_token"])
    probe = httpx.get(
        f"{bao.addr}/v1/identity/oidc/token/{ROLE}", headers={"X-Vault-Token": token}, timeout=10, verify=bao.verify
    )
    if probe.status_code != 200 or "token" not in probe.json().get("data", {}):
        raise RuntimeError(f"OpenBao identity token endpoint: {probe.status_code} {probe.text}")
    return token


# ----- the suite ---------------------------------------------------------------------------------


@dataclass
class MemoryRun:
    tokens: int
    seconds: float
    samples: list[tuple[int, float]]  # (tokens issued so far, worker RSS in MiB)
    peak_mib: float
    warm_mib: float  # RSS once 10% of the tokens were issued
    end_mib: float

    @property
    def growth_mib(self) -> float:
        return self.end_mib - self.warm_mib

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["growth_mib"] = self.growth_mib
        return out


@dataclass
class HttpResults:
    generator: str
    loads: list[Load] = field(default_factory=list)
    memory: MemoryRun | None = None
    notes: list[str] = field(default_factory=list)

    def find(self, name: str, server: str, workers: int | None = None, connections: int | None = None) -> Load | None:
        for load in self.loads:
            if load.name == name and load.server == server:
                if workers is not None and load.workers != workers:
                    continue
                if connections is not None and load.connections != connections:
                    continue
                return load
        return None

    def ratios(self) -> dict[str, float]:
        out: dict[str, float] = {}

        def ratio(key: str, a: Load | None, b: Load | None) -> None:
            if a is not None and b is not None and b.rps > 0:
                out[key] = a.rps / b.rps

        c = self.loads[0].connections if self.loads else 32
        bao = self.find("issuance", "openbao", connections=c)
        ratio("issuance_1w_vs_openbao", self.find("issuance", "ours", 1, c), bao)
        ratio("issuance_2w_vs_openbao", self.find("issuance", "ours", 2, c), bao)
        ratio("jwks_vs_openbao", self.find("jwks", "ours", 1), self.find("jwks", "openbao"))
        ratio("jwks_2w_vs_openbao", self.find("jwks", "ours", 2), self.find("jwks", "openbao"))
        ours_https = self.find("issuance-https", "ours")
        ratio("https_issuance_vs_openbao", ours_https, self.find("issuance-https", "openbao"))
        ratio("https_jwks_vs_openbao", self.find("jwks-https", "ours"), self.find("jwks-https", "openbao"))
        ratio("issuance_https_vs_http", ours_https, self.find("issuance", "ours", 1, c))
        ratio("jwks_https_vs_http", self.find("jwks-https", "ours"), self.find("jwks", "ours", 1))
        ratio("vault_batched_vs_naive", self.find("vault-batched", "ours"), self.find("vault-naive", "ours"))
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "generator": self.generator,
            "loads": [x.as_dict() for x in self.loads],
            "memory": self.memory.as_dict() if self.memory else None,
            "ratios": self.ratios(),
            "notes": self.notes,
        }


def _rss_mib(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process in MiB, from /proc."""
    values = {"VmRSS": 0.0, "VmHWM": 0.0}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in values:
            values[name] = float(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


def run_http(
    *,
    duration: float = 5.0,
    connections: int = 32,
    concurrency: Sequence[int] = (1, 8, 32, 128),
    memory_tokens: int = 1_000_000,
    generator: str | None = None,
    progress: Progress | None = None,
) -> HttpResults:
    gen = generator or ("wrk" if wrk_path() else "python")
    results = HttpResults(gen)
    say = progress or (lambda msg: None)
    with tempfile.TemporaryDirectory(prefix="jwks-bench-http-") as tmp, OpenBaoServer() as bao:
        work = Path(tmp)
        bao_token = setup_openbao_oidc(bao)
        bao_pid = bao.pid
        assert bao_pid is not None

        def load(name: str, server: str, workers: int, req: Request, pids: Sequence[int], conns: int) -> Load:
            say(f"{name}: {server} ({workers} worker{'s' if workers > 1 else ''}), {conns} connections")
            result = run_load(
                name,
                server,
                workers,
                req,
                connections=conns,
                seconds=duration,
                pids=pids,
                workdir=work,
                generator=gen,
            )
            results.loads.append(result)
            return result

        def warm_up(req: Request) -> None:
            run_load("warm-up", "", 0, req, connections=connections, seconds=1.0, pids=[], workdir=work, generator=gen)

        bao_token_req = Request("GET", f"{bao.addr}/v1/identity/oidc/token/{ROLE}", {"X-Vault-Token": bao_token})
        bao_keys_req = Request("GET", f"{bao.addr}/v1/identity/oidc/.well-known/keys")

        for workers in (1, 2):
            with our_server(work / f"ours-{workers}w", workers=workers) as ours:
                ours.start()
                client_id, secret = ours.client()
                form, token_req = token_request(ours, client_id, secret)
                pids = [ours.pid]
                warm_up(token_req)  # every worker up and warm; not measured
                load("issuance", "ours", workers, token_req, pids, connections)
                # Every JWKS answer is noted for adoption (API.md §6): measured with it, as served.
                load("jwks", "ours", workers, Request("GET", ours.base + "/.well-known/jwks.json"), pids, connections)
                if workers == 2:
                    continue
                import httpx

                token = httpx.post(
                    ours.base + "/oauth/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret)
                ).json()["access_token"]
                intro = Request("POST", ours.base + "/oauth/introspect", form, f"token={token}")
                load("introspect", "ours", 1, intro, pids, connections)
                for conns in concurrency:
                    if conns != connections:
                        load("issuance", "ours", 1, token_req, pids, conns)

        # HTTPS, kept-alive connections: ours with a certificate made now, OpenBao with -dev-tls.
        ca = make_ca(work)
        tls = (issue(ca, work), ca.file)
        with our_server(work / "ours-https", tls=tls) as ours:
            ours.start()
            form, token_req = token_request(ours, *ours.client())
            warm_up(token_req)
            load("issuance-https", "ours", 1, token_req, [ours.pid], connections)
            jwks_req = Request("GET", ours.base + "/.well-known/jwks.json", ca_file=ours.ca_file)
            load("jwks-https", "ours", 1, jwks_req, [ours.pid], connections)
        with OpenBaoServer(tls=True) as bao_tls:
            token = setup_openbao_oidc(bao_tls)
            ca_file = str(bao_tls.ca_file)
            req = Request("GET", f"{bao_tls.addr}/v1/identity/oidc/token/{ROLE}", {"X-Vault-Token": token}, "", ca_file)
            assert bao_tls.pid is not None
            warm_up(req)
            load("issuance-https", "openbao", 0, req, [bao_tls.pid], connections)
            keys_req = Request("GET", f"{bao_tls.addr}/v1/identity/oidc/.well-known/keys", ca_file=ca_file)
            load("jwks-https", "openbao", 0, keys_req, [bao_tls.pid], connections)

        warm_up(bao_token_req)
        load("issuance", "openbao", 0, bao_token_req, [bao_pid], connections)
        load("jwks", "openbao", 0, bao_keys_req, [bao_pid], connections)
        for conns in concurrency:
            if conns != connections:
                load("issuance", "openbao", 0, bao_token_req, [bao_pid], conns)

        vault_conns = max(connections, 64)
        for mode, max_batch in (("vault-batched", 256), ("vault-naive", 1)):
            with our_server(work / mode, bao=bao, max_batch=max_batch) as ours:
                ours.start()
                form, token_req = token_request(ours, *ours.client("vaulted"))
                warm_up(token_req)
                load(mode, "ours", 1, token_req, [ours.pid, bao_pid], vault_conns)
        # The soak runs last: minutes of sustained load first made the throughput runs after it
        # slower (two workers: 9.7k tokens/s after it, 15.1k without it, same build).
        with our_server(work / "ours-memory") as ours:
            ours.start()
            _, token_req = token_request(ours, *ours.client())
            say(f"memory: issuing {memory_tokens:,} tokens through one worker")
            results.memory = _memory_run(ours, token_req, memory_tokens, gen, work, connections, say)
        results.notes.append(
            "OpenBao's workers: one Go process using every core (GOMAXPROCS = CPUs); ours: 1 or 2 uvicorn workers. "
            "Vault-backed rows count the CPU of both our worker and OpenBao. "
            "The -https rows: TLS 1.3 on kept-alive connections (one handshake per connection), ours with a "
            "P-256 certificate made for the run, OpenBao's from -dev-tls; wrk does not check certificates."
        )
    return results


def _memory_run(
    ours: OurServer, request: Request, tokens: int, gen: str, work: Path, connections: int, say: Progress
) -> MemoryRun:
    pid = ours.pid
    issued = 0
    samples: list[tuple[int, float]] = [(0, _rss_mib(pid)[0])]
    start = time.perf_counter()
    warm: float | None = None
    chunk_seconds = 5.0
    while issued < tokens:
        rate_guess = issued / (time.perf_counter() - start) if issued else 3000.0
        seconds = max(1.0, min(chunk_seconds, (tokens - issued) / max(rate_guess, 1.0)))
        if gen == "wrk":
            n, _, errors, _, _ = _wrk(request, connections, seconds, work)
        else:
            n, _, errors, _, _ = asyncio.run(_python_load(request, connections, seconds, tokens - issued))
        issued += n - errors
        rss = _rss_mib(pid)[0]
        samples.append((issued, rss))
        if warm is None and issued >= tokens * 0.1:
            warm = rss
        say(f"memory: {issued:,} tokens, RSS {rss:.1f} MiB")
    rss, peak = _rss_mib(pid)
    return MemoryRun(issued, round(time.perf_counter() - start, 1), samples, peak, warm or rss, rss)


# ----- output --------------------------------------------------------------------------------------


def format_table(results: HttpResults) -> str:
    head = ("endpoint", "server", "workers", "conns", "req/s", "p50 ms", "p99 ms", "errors", "server CPU")
    body = [
        (
            x.name,
            x.server,
            str(x.workers) if x.workers else "all cores",
            str(x.connections),
            f"{x.rps:,.0f}",
            f"{x.p50_ms:.2f}",
            f"{x.p99_ms:.2f}",
            str(x.errors),
            f"{x.server_cpu:.2f} cores",
        )
        for x in results.loads
    ]
    widths = [max(len(line[i]) for line in (head, *body)) for i in range(len(head))]

    def fmt(line: Sequence[str]) -> str:
        cells = zip(line, widths, strict=True)
        return "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(cells))

    lines = [fmt(head), "  ".join("-" * w for w in widths), *(fmt(line) for line in body)]
    for key, value in results.ratios().items():
        lines.append(f"{key}: {value:.2f}x")
    if results.memory:
        m = results.memory
        lines.append(
            f"memory: {m.tokens:,} tokens in {m.seconds:.0f} s; worker RSS {m.warm_mib:.1f} MiB after 10%, "
            f"{m.end_mib:.1f} MiB at the end (growth {m.growth_mib:+.1f} MiB), peak {m.peak_mib:.1f} MiB"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/httpbench.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=5.0, help="seconds per load run (default 5)")
    p.add_argument("--connections", type=int, default=32, help="connections for the main runs (default 32)")
    p.add_argument("--memory-tokens", type=int, default=1_000_000, help="tokens for the memory run (default 1M)")
    p.add_argument("--generator", choices=("wrk", "python"), help="load generator (default: wrk when present)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    p.add_argument("--quick", action="store_true", help="smoke run: 1 s per load, 2,000 tokens for memory")
    args = p.parse_args(argv)
    if args.quick:
        args.duration, args.memory_tokens = 1.0, 2000
    if args.duration <= 0 or args.connections < 1 or args.memory_tokens < 1:
        p.error("--duration, --connections and --memory-tokens must be positive")
    if args.generator == "wrk" and not wrk_path():
        p.error("--generator wrk: wrk is not on PATH (apt-get install wrk)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    started = time.perf_counter()
    results = run_http(
        duration=args.duration,
        connections=args.connections,
        memory_tokens=args.memory_tokens,
        generator=args.generator,
        progress=lambda msg: print(f"  ... {msg}", file=sys.stderr, flush=True),
    )
    print(
        f"HTTP benchmark on loopback, load generator {results.generator}, {args.duration:g} s per run; "
        f"OpenBao {bao_version()}; python {platform.python_version()}; {os.cpu_count()} CPUs; "
        f"ran {time.perf_counter() - started:.0f} s\n"
    )
    print(format_table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results.as_dict(), indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
