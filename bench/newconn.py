"""A new connection per request, plain and TLS: ours (1 and 2 workers) against OpenBao, in one run.

wrk keeps its connections open, so every handshake is paid once per connection; Keycloak's published
figures are the other way round: a new TCP (and TLS) connection per request. This mode loads both
servers that way with ApacheBench (``ab``, Debian's apache2-utils): without ``-k`` it opens a new
connection for each request (HTTP/1.0, closed after the answer) and it speaks HTTPS. It is a C
program on one event loop, so it takes less of the CPU it shares with the servers than a Python
generator would (which would also spend most of its time on its own handshakes); h2load
(nghttp2-client) keeps connections open too. Without ``ab`` on PATH these rows are skipped, and the
report says why.

Rows: ``issuance-newconn``, ``issuance-newconn-https``, ``jwks-newconn``, ``jwks-newconn-https``,
ours with 1 and 2 workers, OpenBao (one Go process, every core). TLS: TLS 1.3, a full handshake per
request (ab resumes no sessions); ours with a P-256 certificate made for the run, OpenBao's from
``-dev-tls``.

    python bench/newconn.py [--duration 5] [--concurrency 32] [--json F]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

from baoserver import OpenBaoServer
from certs import issue, make_ca
from httpbench import (
    ROLE,
    HttpResults,
    Load,
    Progress,
    Request,
    our_server,
    setup_openbao_oidc,
    token_request,
)

GENERATOR = "ab"
NAMES = ("issuance-newconn", "issuance-newconn-https", "jwks-newconn", "jwks-newconn-https")
# Published figures of other token services, NOT measured here: their conditions differ from ours.
PUBLISHED = (
    (
        "Ory Hydra",
        "513 client_credentials tokens/s",
        "2 CPUs, BCRYPT_COST=8 (client secrets hashed with bcrypt), in-memory store",
    ),
    (
        "Keycloak",
        "about 120 client_credentials tokens/s per vCPU",
        "mostly TLS handshakes: a new connection per request",
    ),
    ("ZITADEL", "424 tokens/s", "several nodes of 6 vCPUs"),
)


def ab_path() -> str | None:
    return shutil.which("ab")


def _field(pattern: str, text: str, default: str | None = None) -> str:
    m = re.search(pattern, text, re.MULTILINE)
    if m is None:
        if default is not None:
            return default
        raise RuntimeError(f"ab output has no {pattern!r}:\n{text[-1500:]}")
    return m.group(1)


def parse_ab(text: str) -> tuple[int, float, int, float, float]:
    """(completed, seconds, errors, p50 ms, p99 ms) from ab's report. Errors: connect, receive and
    exception failures plus non-2xx answers; ``-l`` makes a token's varying length no failure."""
    complete = int(_field(r"^Complete requests:\s+(\d+)", text))
    seconds = float(_field(r"^Time taken for tests:\s+([\d.]+) seconds", text))
    failed = int(_field(r"^Failed requests:\s+(\d+)", text))
    non2xx = int(_field(r"^Non-2xx responses:\s+(\d+)", text, "0"))
    p50 = float(_field(r"^\s+50%\s+(\d+)", text, "0"))
    p99 = float(_field(r"^\s+99%\s+(\d+)", text, "0"))
    return complete, seconds, failed + non2xx, p50, p99


def _ab(request: Request, concurrency: int, seconds: float, workdir: Path) -> tuple[int, float, int, float, float]:
    duration = max(1, round(seconds))
    # ab keeps a record per request, sized by -n: bound it by what a few thousand a second can reach.
    cmd = [str(ab_path()), "-q", "-r", "-l", "-s", "10", "-t", str(duration), "-n", str(duration * 20_000)]
    cmd += ["-c", str(concurrency)]
    for name, value in request.headers.items():
        if name.lower() != "content-type":
            cmd += ["-H", f"{name}: {value}"]
    if request.method == "POST":
        body = workdir / "ab-body"
        body.write_text(request.body, encoding="utf-8")
        ctype = next((v for k, v in request.headers.items() if k.lower() == "content-type"), "text/plain")
        cmd += ["-p", str(body), "-T", ctype]
    elif request.method != "GET":
        raise ValueError(f"ab: {request.method} is not supported here")
    out = subprocess.run([*cmd, request.url], capture_output=True, text=True, timeout=duration + 60, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"ab failed (exit {out.returncode}): {(out.stderr or out.stdout).strip()[-800:]}")
    return parse_ab(out.stdout)


def cpu_seconds(pids: Sequence[int]) -> float:
    """CPU time of `pids` and their children, counting children that exited and were reaped (uvicorn's
    supervisor replaces a worker that misses its health check on a starved machine: without them the
    total could go down)."""
    import psutil

    total = 0.0
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            procs = [proc, *proc.children(recursive=True)]
            t = proc.cpu_times()
            total += t.children_user + t.children_system
        except psutil.Error:
            continue
        for p in procs:
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
    return total


def run_newconn_load(
    name: str,
    server: str,
    workers: int,
    request: Request,
    *,
    concurrency: int,
    seconds: float,
    pids: Sequence[int],
    workdir: Path,
) -> Load:
    cpu_before = cpu_seconds(pids)
    requests, elapsed, errors, p50, p99 = _ab(request, concurrency, seconds, workdir)
    cpu = (cpu_seconds(pids) - cpu_before) / elapsed if elapsed > 0 else 0.0
    rps = requests / elapsed if elapsed > 0 else 0.0
    return Load(
        name, server, workers, concurrency, round(elapsed, 3), requests, errors, rps, p50, p99, round(cpu, 3), GENERATOR
    )


def run_newconn(
    results: HttpResults, *, duration: float = 5.0, concurrency: int = 32, progress: Progress | None = None
) -> None:
    """Appends the new-connection rows to `results` (or a note saying why there are none)."""
    say = progress or (lambda msg: None)
    if ab_path() is None:
        results.notes.append(
            "New connection per request: not measured, ApacheBench (ab) is not on PATH (apt-get install apache2-utils)."
        )
        return
    with tempfile.TemporaryDirectory(prefix="jwks-bench-newconn-") as tmp:
        work = Path(tmp)
        ca = make_ca(work)
        cert = issue(ca, work)

        def load(name: str, server: str, workers: int, req: Request, pids: Sequence[int]) -> None:
            say(f"{name}: {server}" + (f" ({workers} worker{'s' if workers > 1 else ''})" if workers else ""))
            kw: dict[str, Any] = {"concurrency": concurrency, "seconds": duration, "pids": pids, "workdir": work}
            results.loads.append(run_newconn_load(name, server, workers, req, **kw))

        for workers in (1, 2):
            for tls in (False, True):
                suffix = "-https" if tls else ""
                folder = work / f"ours-{workers}w{suffix}"
                with our_server(folder, workers=workers, tls=(cert, ca.file) if tls else None) as ours:
                    ours.start()
                    _, token_req = token_request(ours, *ours.client())
                    jwks_req = Request("GET", ours.base + "/.well-known/jwks.json", ca_file=ours.ca_file)
                    _ab(token_req, concurrency, 1.0, work)  # every worker up and warm; not measured
                    load(f"issuance-newconn{suffix}", "ours", workers, token_req, [ours.pid])
                    load(f"jwks-newconn{suffix}", "ours", workers, jwks_req, [ours.pid])
        for tls in (False, True):
            suffix = "-https" if tls else ""
            with OpenBaoServer(tls=tls) as bao:
                token = setup_openbao_oidc(bao)
                ca_file = str(bao.ca_file) if tls else ""
                assert bao.pid is not None
                req = Request("GET", f"{bao.addr}/v1/identity/oidc/token/{ROLE}", {"X-Vault-Token": token}, "", ca_file)
                keys_req = Request("GET", f"{bao.addr}/v1/identity/oidc/.well-known/keys", ca_file=ca_file)
                _ab(req, concurrency, 1.0, work)
                load(f"issuance-newconn{suffix}", "openbao", 0, req, [bao.pid])
                load(f"jwks-newconn{suffix}", "openbao", 0, keys_req, [bao.pid])
    results.notes.append(
        f"The -newconn rows: a new connection per request (ab without -k, HTTP/1.0, {concurrency} concurrent); "
        "-newconn-https: a full TLS 1.3 handshake per request (ab resumes no sessions)."
    )


def newconn_ratios(results: HttpResults) -> dict[str, float]:
    """Ours against OpenBao in the new-connection mode, and what a new connection costs ours."""
    out: dict[str, float] = {}
    for name in NAMES:
        bao = results.find(name, "openbao")
        for workers in (1, 2):
            ours = results.find(name, "ours", workers)
            if ours is not None and bao is not None and bao.rps > 0:
                out[f"{name.replace('-', '_')}_{workers}w_vs_openbao"] = ours.rps / bao.rps
    return out


def published_table() -> str:
    """The published figures, in Markdown, marked as not measured here."""
    lines = [
        "Published figures of other services (**not measured here**; their own hardware and conditions):",
        "",
        "| service | published figure | conditions |",
        "|---|---|---|",
    ]
    lines += [f"| {who} | {figure} | {conditions} |" for who, figure, conditions in PUBLISHED]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench/newconn.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=5.0, help="seconds per load run (default 5)")
    p.add_argument("--concurrency", type=int, default=32, help="concurrent requests (default 32)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    if args.duration <= 0 or args.concurrency < 1:
        p.error("--duration and --concurrency must be positive")
    if ab_path() is None:
        p.error("ab is not on PATH (apt-get install apache2-utils)")
    results = HttpResults(GENERATOR)
    started, clock = time.perf_counter(), time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    run_newconn(
        results,
        duration=args.duration,
        concurrency=args.concurrency,
        progress=lambda msg: print(f"  ... {msg}", file=sys.stderr, flush=True),
    )
    print(f"A new connection per request ({GENERATOR}), started {clock}, ran {time.perf_counter() - started:.0f} s")
    for x in results.loads:
        print(
            f"{x.name:24} {x.server:8} {x.workers or 'all':>3}  {x.rps:9,.0f} req/s  p50 {x.p50_ms:5.0f} ms  "
            f"p99 {x.p99_ms:5.0f} ms  errors {x.errors}  server CPU {x.server_cpu:.2f}"
        )
    for key, value in newconn_ratios(results).items():
        print(f"{key}: {value:.2f}x")
    if args.json:
        doc = {"started": clock, "loads": [x.as_dict() for x in results.loads], "ratios": newconn_ratios(results)}
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
