"""CPU per request of the OAuth endpoints, two source trees side by side (paired, alternating rounds).

Starts `jwks-service serve` (one worker, SQLite, an ES256 keyset, as bench/httpbench.py does) from
this checkout and from `--before` (a source tree, e.g. `git archive BASE | tar -x -C DIR`), then loads
each with wrk in turn, round after round, alternating which goes first: POST /oauth/token
(client_credentials, client_secret_basic) and POST /oauth/introspect of a valid token. The CPU each
server used is read from /proc; the report is the median over the rounds of CPU microseconds per
request and requests per second. On a shared, noisy machine only the paired comparison means much.

With ``--openbao``, each round also loads OpenBao's identity token endpoint (set up as
bench/httpbench.py does) and the report gives issuance requests per second against OpenBao's, for
both trees (the ratio bench/httpbench.py publishes); ``--workers 2`` serves ours with two workers.

    python bench/oauthcpu.py --before /tmp/base [--rounds 6] [--seconds 5] [--connections 32]
                             [--only token|introspect] [--workers N] [--openbao]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx
from baoserver import OpenBaoServer
from httpbench import ROLE, OurServer, Request, run_load, setup_openbao_oidc, token_request, wrk_path


def _server(work: Path, name: str, source: Path | None, workers: int) -> OurServer:
    server = OurServer(work / name, workers=workers)
    if source is not None:
        server.env["PYTHONPATH"] = str(source)
    server.start()
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, required=True, help="the source tree to compare against")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--only", choices=("token", "introspect"), default=None)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--openbao", action="store_true", help="also load OpenBao's token endpoint each round")
    args = parser.parse_args(argv)
    if wrk_path() is None:
        print("wrk is not on PATH", file=sys.stderr)
        return 2
    here = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory(prefix="oauthcpu-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        bao_request: Request | None = None
        bao_rps: list[float] = []
        if args.openbao:
            bao = stack.enter_context(OpenBaoServer())
            bao_token = setup_openbao_oidc(bao)
            bao_request = Request("GET", f"{bao.addr}/v1/identity/oidc/token/{ROLE}", {"X-Vault-Token": bao_token})
            run_load(
                "warm",
                "openbao",
                1,
                bao_request,
                connections=args.connections,
                seconds=1,
                pids=[],
                workdir=work,
                generator="wrk",
            )
        servers = {
            "before": _server(work, "before", args.before.resolve(), args.workers),
            "after": _server(work, "after", here, args.workers),
        }
        try:
            requests: dict[str, dict[str, Request]] = {}
            for name, server in servers.items():
                client_id, secret = server.client()
                form, token_req = token_request(server, client_id, secret)
                token = httpx.post(
                    server.base + "/oauth/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret)
                ).json()["access_token"]
                intro = Request("POST", server.base + "/oauth/introspect", form, f"token={token}")
                requests[name] = {"token": token_req, "introspect": intro}
                for req in requests[name].values():  # warm up, not measured
                    run_load(
                        "warm",
                        name,
                        1,
                        req,
                        connections=args.connections,
                        seconds=1,
                        pids=[],
                        workdir=work,
                        generator="wrk",
                    )
            kinds = [args.only] if args.only else ["token", "introspect"]
            cpu: dict[tuple[str, str], list[float]] = {}
            rps: dict[tuple[str, str], list[float]] = {}
            for r in range(args.rounds):
                order = ["before", "after"] if r % 2 == 0 else ["after", "before"]
                if bao_request is not None:
                    bao_load = run_load(
                        "openbao",
                        "openbao",
                        1,
                        bao_request,
                        connections=args.connections,
                        seconds=args.seconds,
                        pids=[],
                        workdir=work,
                        generator="wrk",
                    )
                    bao_rps.append(bao_load.rps)
                    print(f"round {r + 1} openbao token {bao_load.rps:8.0f} req/s", flush=True)
                for kind in kinds:
                    for name in order:
                        server = servers[name]
                        load = run_load(
                            kind,
                            name,
                            1,
                            requests[name][kind],
                            connections=args.connections,
                            seconds=args.seconds,
                            pids=server.worker_pids(),
                            workdir=work,
                            generator="wrk",
                        )
                        if load.errors:
                            print(f"  {name} {kind}: {load.errors} errors", file=sys.stderr)
                        us = load.server_cpu / load.rps * 1e6 if load.rps else float("nan")
                        cpu.setdefault((kind, name), []).append(us)
                        rps.setdefault((kind, name), []).append(load.rps)
                        print(
                            f"round {r + 1} {kind:10} {name:6} {load.rps:8.0f} req/s  {us:6.1f} µs CPU/req "
                            f"({load.server_cpu:.2f} cores)",
                            flush=True,
                        )
            print("\nmedians over", args.rounds, "rounds")
            for kind in kinds:
                b, a = statistics.median(cpu[(kind, "before")]), statistics.median(cpu[(kind, "after")])
                rb, ra = statistics.median(rps[(kind, "before")]), statistics.median(rps[(kind, "after")])
                print(
                    f"{kind:10} CPU/req before {b:6.1f} µs  after {a:6.1f} µs  ({b / a:.2f}x)   "
                    f"req/s before {rb:7.0f}  after {ra:7.0f}"
                )
            if bao_rps and "token" in kinds:
                bao_median = statistics.median(bao_rps)
                for name in ("before", "after"):
                    ratios = [a / b for a, b in zip(rps[("token", name)], bao_rps, strict=True) if b > 0]
                    print(
                        f"issuance vs OpenBao ({args.workers} worker(s)) {name}: median of per-round ratios "
                        f"{statistics.median(ratios):.2f}x (OpenBao median {bao_median:.0f} req/s)"
                    )
        finally:
            for server in servers.values():
                server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
