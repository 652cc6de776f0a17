"""What request ids and the access log cost the hot paths: `/.well-known/jwks.json` and `/oauth/token`
(ES256, client_secret_basic) under wrk, one worker, with `[log] access` off, on (every request) and on
with `access_sample = 0.01`; with `--baseline DIR`, also the service from the source tree DIR (e.g. the
code before request ids: `git archive REV | tar -x -C DIR`). The configurations are alternated, round
after round, on one store, so that a busy machine weighs on each alike; the access lines go to a file.

    python bench/logcost.py [--rounds 3] [--seconds 5] [--connections 32] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

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


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--baseline", default="", help="a source tree to measure as 'baseline' (PYTHONPATH)")
    args = p.parse_args(argv)
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
