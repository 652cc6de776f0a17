"""The whole benchmark suite in one command: ``python -m bench`` (or ``make bench``).

In process: signing per algorithm (bench/sign.py: ours, PyJWT, joserfc, the raw primitive),
verification (bench/verify.py: the SDK, PyJWT, joserfc, raw), JWKS rendering (ours against
joserfc exporting the same key set). Over HTTP on loopback (bench/httpbench.py): issuance, JWKS and
introspection against OpenBao's identity token issuer, Vault-backed issuance batched against naive,
1 and 2 workers, the token endpoint and the JWKS over HTTPS (against OpenBao -dev-tls), latency
against concurrency, and a worker's memory over many tokens; with a new connection per request, plain
and TLS (bench/newconn.py, ApacheBench), ours and OpenBao, beside published figures of other services.
How the cost grows (bench/growth.py): issuance against clients, keysets and live keys, the JWKS
against live keys, Redis commands per token and per rotation against replicas.

Writes ``bench/results/<date>-<host>.json``, a Markdown report beside it (``.md``) and PNG charts
(matplotlib, ``bench/results/<date>-<host>-*.png``).

    python -m bench [--quick] [--only sign,verify,jwks,http,growth] [--duration 5] [--memory-tokens 1000000]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import socket
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))

import growth  # noqa: E402 - bench/ is put on the path first
import httpbench  # noqa: E402
import newconn  # noqa: E402
import sign  # noqa: E402
import simulate  # noqa: E402
import verify  # noqa: E402

PARTS = ("sign", "verify", "jwks", "http", "growth", "simulate")
DEFAULT_PARTS = PARTS[:5]  # the simulation (minutes, bench/simulate.py) runs when asked: --only simulate
TARGETS = {
    "issuance_2w_vs_openbao": 4.0,
    "jwks_vs_openbao": 1.5,
    "jwks_2w_vs_openbao": 3.0,
    "vault_batched_vs_naive": 10.0,
}
RSS_TARGET_MIB = 100.0
MEMORY_TARGET_TOKENS = 1_000_000  # the memory target is judged over this many tokens through one worker


class Progress:
    """`[step/total] what` lines on stderr with the time elapsed."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.step = 0
        self.start = time.perf_counter()

    def part(self, name: str) -> None:
        self.step += 1
        print(f"[{self.step}/{self.total}] {name} ({time.perf_counter() - self.start:.0f} s)", file=sys.stderr)

    def detail(self, message: str) -> None:
        print(f"      {message}", file=sys.stderr, flush=True)


def jwks_rendering(seconds: float, rounds: int) -> dict[str, Any]:
    """Render a JWKS of three ES256 keys and one RS256 key: ours (render_jwks: JSON, ETag) against
    joserfc's KeySet export plus json.dumps of the same keys."""
    import json as stdjson

    from joserfc.jwk import KeySet

    from jwks_service.algorithms import ALGORITHMS
    from jwks_service.crypto import generate_private_key, public_jwk
    from jwks_service.jwks import render_jwks
    from jwks_service.model import Keyset, KeyState, KeyVersion

    now = time.time()
    keys = []
    jwks = []
    layout = (
        ("ES256", KeyState.NEXT),
        ("ES256", KeyState.CURRENT),
        ("ES256", KeyState.PREVIOUS),
        ("RS256", KeyState.CURRENT),
    )
    for i, (alg, state) in enumerate(layout):
        private = generate_private_key(ALGORITHMS[alg], ALGORITHMS[alg].default_key_bits)
        jwk, kid = public_jwk(ALGORITHMS[alg], private)  # type: ignore[arg-type]
        keys.append(KeyVersion(kid, f"ks{alg}", alg, state, now - i, {**jwk, "kid": kid, "alg": alg, "use": "sig"}))
        jwks.append({**jwk, "kid": kid, "alg": alg, "use": "sig"})
    keysets = [
        Keyset("ksES256", "ES256", "local", 1, tuple(k for k in keys if k.alg == "ES256")),
        Keyset("ksRS256", "RS256", "local", 1, tuple(k for k in keys if k.alg == "RS256")),
    ]
    key_set = KeySet.import_key_set({"keys": jwks})

    def ours() -> object:
        return render_jwks(keysets)

    def joserfc() -> object:
        return stdjson.dumps(key_set.as_dict(private=False)).encode()

    samples: dict[str, list[float]] = {"ours": [], "joserfc": []}
    for _ in range(rounds):
        samples["ours"].append(sign._rate(ours, seconds))
        samples["joserfc"].append(sign._rate(joserfc, seconds))
    best = {k: max(v) for k, v in samples.items()}
    return {"ours": best["ours"], "joserfc": best["joserfc"], "ours_vs_joserfc": best["ours"] / best["joserfc"]}


# ----- report ------------------------------------------------------------------------------------


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def markdown(doc: dict[str, Any], charts: Sequence[str]) -> str:
    started = f", started {doc['time']}" if doc.get("time") else ""  # the time of day: a shared machine's load varies
    out = [f"# Benchmarks, {doc['date']} on {doc['host']}{started}", "", doc["machine"], ""]
    if "sign" in doc:
        out += ["## Signing (in process, tokens/s)", ""]
        out.append(
            _table(
                ("alg", "ours", "PyJWT", "joserfc", "raw", "ours÷raw", "ours÷PyJWT"),
                [
                    (
                        r["alg"],
                        f"{r['ours']:,.0f}",
                        f"{r['pyjwt']:,.0f}",
                        f"{r['joserfc']:,.0f}",
                        f"{r['raw']:,.0f}",
                        f"{r['ours_vs_raw']:.2f}x",
                        f"{r['ours_vs_pyjwt']:.2f}x",
                    )
                    for r in doc["sign"]
                ],
            )
        )
        out.append("")
    if "verify" in doc:
        out += ["## Verification (in process, cached key, verifications/s)", ""]
        out.append(
            _table(
                ("alg", "SDK", "PyJWT", "joserfc", "raw", "SDK÷PyJWT"),
                [
                    (
                        r["alg"],
                        f"{r['sdk']:,.0f}",
                        f"{r['pyjwt']:,.0f}",
                        f"{r['joserfc']:,.0f}",
                        f"{r['raw']:,.0f}",
                        f"{r['sdk_vs_pyjwt']:.2f}x",
                    )
                    for r in doc["verify"]
                ],
            )
        )
        out.append("")
    if "jwks" in doc:
        j = doc["jwks"]
        out += [
            "## JWKS rendering (in process, renders/s)",
            "",
            f"ours {j['ours']:,.0f}/s, joserfc export + json.dumps {j['joserfc']:,.0f}/s: {j['ours_vs_joserfc']:.2f}x",
            "",
        ]
    if "http" in doc:
        h = doc["http"]
        out += [f"## Over HTTP on loopback (load generator: {h['generator']})", ""]
        out.append(
            _table(
                ("endpoint", "server", "workers", "connections", "req/s", "p50 ms", "p99 ms", "errors", "server CPU"),
                [
                    (
                        x["name"],
                        x["server"],
                        str(x["workers"]) if x["workers"] else "all cores",
                        str(x["connections"]),
                        f"{x['rps']:,.0f}",
                        f"{x['p50_ms']:.2f}",
                        f"{x['p99_ms']:.2f}",
                        str(x["errors"]),
                        f"{x['server_cpu']:.2f} cores",
                    )
                    for x in h["loads"]
                ],
            )
        )
        # A quick run is a smoke test: its figures judge nothing, and say so.
        unjudged = "not judged: a --quick run" if doc.get("quick") else ""
        out += ["", "Ratios (targets in brackets):", ""]
        for key, value in h["ratios"].items():
            target = TARGETS.get(key)
            verdict = unjudged or ("met" if target is not None and value >= target else "MISSED")
            mark = "" if target is None else f" [≥ {target:g}x: {verdict}]"
            out.append(f"- {key}: {value:.2f}x{mark}")
        if h.get("memory"):
            m = h["memory"]
            ok = m["peak_mib"] <= RSS_TARGET_MIB and m["growth_mib"] <= 5.0
            # The target is about MEMORY_TARGET_TOKENS tokens: fewer prove nothing about growth.
            short = (
                m["tokens"] < MEMORY_TARGET_TOKENS and f"not judged: {m['tokens']:,} of {MEMORY_TARGET_TOKENS:,} tokens"
            )
            verdict = unjudged or short or ("met" if ok else "MISSED")
            out.append(
                f"- memory: {m['tokens']:,} tokens through one worker in {m['seconds']:.0f} s; RSS "
                f"{m['warm_mib']:.1f} MiB after 10%, {m['end_mib']:.1f} MiB at the end "
                f"(growth {m['growth_mib']:+.1f} MiB), peak {m['peak_mib']:.1f} MiB "
                f"[≤ {RSS_TARGET_MIB:g} MB and flat over {MEMORY_TARGET_TOKENS:,} tokens: {verdict}]"
            )
        out += [""] + [f"- {n}" for n in h.get("notes", [])] + [""]
        out += [newconn.published_table(), ""]
    if "growth" in doc:
        out += growth.markdown(doc["growth"])
    if "simulate" in doc:
        name = f"simulate-{doc['simulate']['date']}-{doc['simulate']['verifiers']}.md"
        out += ["## Simulation", "", f"{doc['simulate']['verifiers']:,} simulated verifiers: [{name}]({name})", ""]
    out += [f"![{Path(c).stem}]({Path(c).name})" for c in charts]
    return "\n".join(out) + "\n"


def charts(doc: dict[str, Any], stem: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: list[str] = []

    def save(fig: Any, name: str) -> None:
        path = stem.with_name(f"{stem.name}-{name}.png")
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(str(path))

    for part, contenders, unit in (
        ("sign", ("ours", "pyjwt", "joserfc", "raw"), "tokens/s"),
        ("verify", ("sdk", "pyjwt", "joserfc", "raw"), "verifications/s"),
    ):
        rows = doc.get(part)
        if not rows:
            continue
        fig, ax = plt.subplots(figsize=(10, 4.5))
        width = 0.8 / len(contenders)
        for i, c in enumerate(contenders):
            ax.bar([x + i * width for x in range(len(rows))], [r[c] for r in rows], width, label=c)
        ax.set_xticks([x + 0.4 - width / 2 for x in range(len(rows))], [r["alg"] for r in rows])
        ax.set_yscale("log")
        ax.set_ylabel(f"{unit} (log scale)")
        ax.set_title(f"{'Signing' if part == 'sign' else 'Verification'}: higher is better")
        ax.legend()
        save(fig, part)
    http = doc.get("http")
    if http and http["loads"]:
        loads = http["loads"]
        main = [
            x
            for x in loads
            if (x["connections"] == loads[0]["connections"] or x["name"].startswith("vault"))
            and x["name"] not in newconn.NAMES
        ]
        fig, ax = plt.subplots(figsize=(10, 4.5))
        labels = [f"{x['name']}\n{x['server']}" + (f" {x['workers']}w" if x["workers"] else "") for x in main]
        colors = ["tab:blue" if x["server"] == "ours" else "tab:gray" for x in main]
        ax.bar(range(len(main)), [x["rps"] for x in main], color=colors)
        ax.set_xticks(range(len(main)), labels, fontsize=8)
        ax.set_ylabel("requests/s")
        ax.set_title("Over HTTP on loopback (blue: jwks-service, gray: OpenBao)")
        save(fig, "http")
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for server in ("ours", "openbao"):
            points = sorted(
                (x["connections"], x["p50_ms"], x["p99_ms"])
                for x in loads
                if x["name"] == "issuance" and x["server"] == server and x["workers"] in (0, 1)
            )
            if points:
                xs, color = [p[0] for p in points], "tab:blue" if server == "ours" else "tab:gray"
                ax.plot(xs, [p[1] for p in points], marker="o", color=color, label=f"{server} p50")
                ax.plot(xs, [p[2] for p in points], marker="x", linestyle="--", color=color, label=f"{server} p99")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("connections")
        ax.set_ylabel("latency, ms (log scale)")
        ax.set_title("Token issuance latency against concurrency")
        ax.legend()
        save(fig, "latency")
        memory = http.get("memory")
        if memory and len(memory["samples"]) > 1:
            fig, ax = plt.subplots(figsize=(7, 4))
            ax.plot([s[0] for s in memory["samples"]], [s[1] for s in memory["samples"]], marker=".")
            ax.set_xlabel("tokens issued")
            ax.set_ylabel("worker RSS, MiB")
            ax.set_ylim(bottom=0)
            ax.set_title("Memory of one worker while issuing tokens")
            save(fig, "memory")
        if newconn_chart(http["loads"], stem):
            written.append(str(stem.with_name(f"{stem.name}-newconn.png")))
    if "growth" in doc and growth.chart(doc["growth"], stem.with_name(f"{stem.name}-growth.png")):
        written.append(str(stem.with_name(f"{stem.name}-growth.png")))
    return written


def newconn_chart(loads: Sequence[dict[str, Any]], stem: Path) -> bool:
    """A new connection per request: ours (1 and 2 workers) and OpenBao per endpoint, plain and TLS."""
    import matplotlib.pyplot as plt

    rows = [x for x in loads if x["name"] in newconn.NAMES]
    if not rows:
        return False
    fig, ax = plt.subplots(figsize=(10, 4.5))
    contenders = (("ours", 1, "tab:blue"), ("ours", 2, "tab:cyan"), ("openbao", 0, "tab:gray"))
    width = 0.8 / len(contenders)
    for i, (server, workers, color) in enumerate(contenders):
        values = [
            next((x["rps"] for x in rows if x["name"] == n and x["server"] == server and x["workers"] == workers), 0)
            for n in newconn.NAMES
        ]
        label = f"{server} {workers}w" if workers else server
        ax.bar([j + i * width for j in range(len(newconn.NAMES))], values, width, label=label, color=color)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(newconn.NAMES))], newconn.NAMES, fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("requests/s (log scale)")
    ax.set_title("A new connection per request (ab, no keep-alive)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(stem.with_name(f"{stem.name}-newconn.png"), dpi=110)
    plt.close(fig)
    return True


# ----- main --------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default=",".join(DEFAULT_PARTS), help=f"comma-separated parts of {','.join(PARTS)}")
    p.add_argument("--seconds", type=float, default=0.5, help="in-process budget per cell and round (default 0.5)")
    p.add_argument("--rounds", type=int, default=3, help="in-process interleaved rounds (default 3)")
    p.add_argument("--duration", type=float, default=5.0, help="seconds per HTTP load run (default 5)")
    p.add_argument("--connections", type=int, default=32, help="connections of the main HTTP runs (default 32)")
    p.add_argument(
        "--memory-tokens", type=int, default=MEMORY_TARGET_TOKENS, help="tokens for the memory run (default 1M)"
    )
    p.add_argument("--generator", choices=("wrk", "python"), help="HTTP load generator (default: wrk if present)")
    p.add_argument("--out", default=str(HERE / "results"), help="folder for the results (default bench/results)")
    p.add_argument("--quick", action="store_true", help="smoke run: a fraction of a second per benchmark")
    p.add_argument(
        "--no-newconn", action="store_true", help="the HTTP part without its new-connection runs (bench/newconn.py)"
    )
    args = p.parse_args(argv)
    args.parts = [x.strip() for x in args.only.split(",") if x.strip()]
    unknown = [x for x in args.parts if x not in PARTS]
    if unknown or not args.parts:
        p.error(f"--only: unknown {', '.join(unknown) or '(none)'}; known: {', '.join(PARTS)}")
    if args.quick:
        args.seconds, args.rounds, args.duration, args.memory_tokens = 0.02, 2, 1.0, 2000
    return args


def run(args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    now = datetime.datetime.now(datetime.UTC)
    host = socket.gethostname().split(".")[0] or "host"
    versions = sign._versions()
    doc: dict[str, Any] = {
        "date": now.strftime("%Y-%m-%d"),
        "time": now.isoformat(timespec="seconds"),
        "host": host,
        "machine": f"{platform.platform()}; {os.cpu_count()} CPUs; "
        + ", ".join(f"{k} {v}" for k, v in versions.items()),
        "quick": bool(args.quick),
        "versions": versions,
    }
    rsa_bits = 2048 if args.quick else None
    if "sign" in args.parts:
        progress.part("signing, in process")
        rows = sign.run_benchmark(
            sign.ALGS, seconds=args.seconds, rounds=args.rounds, rsa_bits=rsa_bits, progress=progress.detail
        )
        doc["sign"] = [r.as_dict() for r in rows]
    if "verify" in args.parts:
        progress.part("verification, in process")
        vrows = verify.run_benchmark(
            verify.ALGS, seconds=args.seconds, rounds=args.rounds, rsa_bits=rsa_bits, progress=progress.detail
        )
        doc["verify"] = [r.as_dict() for r in vrows]
    if "jwks" in args.parts:
        progress.part("JWKS rendering, in process")
        doc["jwks"] = jwks_rendering(args.seconds, args.rounds)
    if "http" in args.parts:
        progress.part("over HTTP: OpenBao and jwks-service on loopback")
        http = httpbench.run_http(
            duration=args.duration,
            connections=args.connections,
            memory_tokens=args.memory_tokens,
            generator=args.generator,
            progress=progress.detail,
        )
        if not args.no_newconn:
            newconn.run_newconn(http, duration=args.duration, concurrency=args.connections, progress=progress.detail)
        doc["http"] = http.as_dict()
        doc["http"]["ratios"].update(newconn.newconn_ratios(http))
        doc["http"]["published"] = [
            dict(zip(("service", "figure", "conditions"), p, strict=True)) for p in newconn.PUBLISHED
        ]
        doc["openbao"] = httpbench.bao_version()
    if "growth" in args.parts:
        progress.part("how cost grows: clients, keysets, live keys, store commands")
        doc["growth"] = growth.run_growth(growth.QUICK if args.quick else growth.FULL, progress.detail)
    if "simulate" in args.parts:
        progress.part("simulation: verifiers, a CDN and rollovers (bench/simulate.py)")
        n = 10_000 if args.quick else 1_000_000
        doc["simulate"] = simulate.run(n, min(n, 100_000), 1, Path(args.out), progress.detail)
    return doc


def write(doc: dict[str, Any], out: Path) -> tuple[Path, Path, list[str]]:
    out.mkdir(parents=True, exist_ok=True)
    # A quick run never takes the name of a real one (nor is taken for one).
    stem = out / f"{doc['date']}-{doc['host']}{'-quick' if doc.get('quick') else ''}"
    json_path = stem.with_suffix(".json")
    json_path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    pngs = charts(doc, stem)
    md_path = stem.with_suffix(".md")
    md_path.write_text(markdown(doc, pngs), encoding="utf-8")
    return json_path, md_path, pngs


def main(argv: Sequence[str] | None = None, *, say: Callable[[str], None] = print) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    progress = Progress(len(args.parts) + 1)
    doc = run(args, progress)
    progress.part("writing the report")
    json_path, md_path, pngs = write(doc, Path(args.out))
    say(md_path.read_text(encoding="utf-8"))
    say(f"wrote {json_path}, {md_path} and {len(pngs)} charts")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
