"""What request ids and the access log cost the hot paths: `/.well-known/jwks.json` and `/oauth/token`
(ES256, client_secret_basic) under wrk, one worker, with `[log] access` off, on (every request) and on
with `access_sample = 0.01`; with `--baseline DIR`, also the service from the source tree DIR (e.g. the
code before request ids: `git archive REV | tar -x -C DIR`). The configurations are alternated, round
after round, on one store, so that a busy machine weighs on each alike; the access lines go to a file.
`--in-process`: the middleware alone instead (no server, no socket), the CPU time of a request through
it with an endpoint that does nothing, each format, the lines written to a file: steadier on a busy
machine than a server under load.

    python bench/logcost.py [--rounds 3] [--seconds 5] [--connections 32] [--baseline DIR] [--in-process]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from httpbench import OurServer, Request, run_load, token_request, wrk_path

CONFIGS = {
    "access off": "",
    "access on, sample 1.0": "[log]\naccess = true\n",
    "access on, sample 0.01": "[log]\naccess = true\naccess_sample = 0.01\n",
}


def _server(workdir: Path, config: str, baseline: str, like: OurServer) -> OurServer:
    """A server on `like`'s port, store and issuer, with `config` as its configuration file."""
    server = OurServer(workdir)
    server.port, server.base, server.config = like.port, like.base, like.config
    server.config.write_text(config, encoding="utf-8")
    if baseline:
        server.env["PYTHONPATH"] = baseline
    return server


def in_process(rounds: int, n: int = 20_000) -> None:
    import asyncio
    import logging
    import time

    from jwks_service import logs
    from jwks_service.configparts import LogSettings
    from jwks_service.http.access import AccessLog, RequestIds

    async def endpoint(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"{}"})

    async def sent(message: Any) -> None:
        pass

    scope = {
        "type": "http",
        "method": "GET",
        "path": "/.well-known/jwks.json",
        "headers": [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"wrk")],
        "client": ("127.0.0.1", 50000),
    }
    apps = {
        "no middleware": endpoint,
        "request ids (access off)": RequestIds(endpoint),
        "access on, sample 1.0": AccessLog(endpoint, 1.0),
        "access on, sample 0.01": AccessLog(endpoint, 0.01),
    }

    async def run(app: Any) -> float:
        start = time.process_time()
        for _ in range(n):
            await app(scope, None, sent)
        return (time.process_time() - start) / n * 1e6

    with tempfile.TemporaryDirectory(prefix="logcost-") as tmp:
        stderr = sys.stderr
        print("\n| in process, µs CPU per request (best of rounds) | text | json |\n|---|---:|---:|")
        best: dict[tuple[str, str], float] = {}
        with open(Path(tmp) / "lines.log", "w", encoding="utf-8") as out:
            sys.stderr = out  # logs.StderrHandler writes to whatever sys.stderr is
            try:
                for _ in range(rounds):
                    for fmt in ("text", "json"):
                        logs.configure(LogSettings(format=fmt, level="info"))
                        for name, app in apps.items():
                            took = asyncio.run(run(app))
                            best[(name, fmt)] = min(best.get((name, fmt), took), took)
            finally:
                sys.stderr = stderr
                logging.getLogger().handlers.clear()
        for name in apps:
            print(f"| {name} | {best[(name, 'text')]:.2f} | {best[(name, 'json')]:.2f} |")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--baseline", default="", help="a source tree to measure as 'baseline' (PYTHONPATH)")
    p.add_argument("--in-process", action="store_true", help="the middleware alone, in this process")
    args = p.parse_args(argv)
    if args.in_process:
        in_process(args.rounds)
        return 0
    if wrk_path() is None:
        p.error("wrk is not on PATH (apt-get install wrk)")
    configs = dict(CONFIGS)
    if args.baseline:
        configs = {"baseline": "", **configs}
    results: dict[tuple[str, str], list[float]] = {}
    cpu: dict[tuple[str, str], list[float]] = {}  # the server's CPU time per request, in µs
    with tempfile.TemporaryDirectory(prefix="logcost-") as tmp:
        workdir = Path(tmp)
        first = OurServer(workdir)
        base_config = first.config.read_text(encoding="utf-8")
        first.start()
        client_id, secret = first.client()
        first.stop()
        _, token = token_request(first, client_id, secret)
        jwks = Request("GET", first.base + "/.well-known/jwks.json")
        for round_ in range(args.rounds):
            for name, section in configs.items():
                server = _server(workdir, base_config + section, args.baseline if name == "baseline" else "", first)
                server.start()
                try:
                    for label, request in (("jwks", jwks), ("token", token)):
                        run_load(  # warm-up
                            label, "ours", 1, request, connections=args.connections, seconds=1,
                            pids=[server.pid], workdir=workdir, generator="wrk",
                        )  # fmt: skip
                        load = run_load(
                            label, "ours", 1, request, connections=args.connections, seconds=args.seconds,
                            pids=[server.pid], workdir=workdir, generator="wrk",
                        )  # fmt: skip
                        if load.errors:
                            raise RuntimeError(f"{name} {label}: {load.errors} errors")
                        cpu_us = load.server_cpu / load.rps * 1e6 if load.rps else 0.0
                        results.setdefault((name, label), []).append(load.rps)
                        cpu.setdefault((name, label), []).append(cpu_us)
                        print(
                            f"round {round_ + 1} {name:24} {label:5} {load.rps:9,.0f} req/s {cpu_us:6.1f} µs CPU/req",
                            file=sys.stderr,
                        )
                finally:
                    server.stop()
    print(
        f"\n| one worker, {args.connections} connections, median of {args.rounds} rounds (all rounds)"
        " | JWKS req/s | JWKS µs CPU/req | token req/s | token µs CPU/req |"
    )
    print("|---|---:|---:|---:|---:|")
    for name in configs:
        cells = []
        for label in ("jwks", "token"):
            runs = results[(name, label)]
            cells.append(f"{statistics.median(runs):,.0f} (" + ", ".join(f"{r:,.0f}" for r in runs) + ")")
            cells.append(f"{statistics.median(cpu[(name, label)]):.1f}")
        print(f"| {name} | {' | '.join(cells)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
