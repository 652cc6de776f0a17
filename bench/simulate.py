"""Internet scale on paper: 10^5-10^6 simulated verifiers, one origin JWKS, a CDN, a key rollover.

    python bench/simulate.py [--verifiers 1000000] [--sweep-verifiers 100000] [--seed 1] [--quick]
    python -m bench --only simulate

An event-driven model, vectorised with numpy: each verifier sleeps until its next event (its cache
due for a refresh, or the next token whose kid its cached set lacks), and events are handled in
one-second buckets, a numpy batch per bucket. Seeded, so a run is reproducible.

The issuer (API.md §2): key k0 signs; k1 is published at `t_pub`, signs from `t_sign`; k0 stays
published until `t_drop` (scheduled and forced: retire_at = t_sign + verify_window; revoke: at
once). Tokens are presented with an age uniform in [0, token_ttl), so the share signed by k1 rises
linearly from t_sign to t_sign + token_ttl. Each verifier sees tokens as a Poisson stream (rate drawn
per verifier, lognormal around `rate`).

The CDN: `pops` points of presence, each caching the document for its `max-age` and serving a stale
copy for `stale-if-error` past it while the origin fails (RFC 5861 §4); each POP is assumed to have
demand every second (true from a few thousand verifiers per POP), so it refetches when its copy
expires. Origin requests are the POPs' fetches with a CDN, every verifier fetch without.

Verifier strategies, each as its code or documentation says (the constants in bench/simmodel.py):

- ``sdk``: jwks_service.sdk (jwks_service/keycache.py): Cache-Control max-age clamped to [1 s,
  1 h]; refreshes on the first use in the last 10% of that lifetime; an unknown kid refetches at
  most once per 2 s; on failure serves its set for min(stale-if-error, 1 h) past expiry, backing off
  1 s doubling to 60 s. It ignores a CDN's ``Age`` header, so behind a CDN its copy can be up to
  2 x max-age old (modelled so).
- ``pyjwt``: PyJWT 2.15.1 ``jwt.PyJWKClient`` defaults (jwt/jwks_client.py): cache_jwk_set=True,
  lifespan=300 s whatever Cache-Control says, refetched on the first use after expiry; an unknown
  kid refetches once unless a successful fetch happened within cooldown_duration=30 s; a failed
  fetch fails the token (no stale copy once the 300 s are over).
- ``jose``: panva/jose ``createRemoteJWKSet`` documented defaults of v5 and v6 (RemoteJWKSetOptions):
  cacheMaxAge 600000 ms ("maximum time between successful HTTP requests"), cooldownDuration 30000 ms
  ("no more HTTP requests ... after a previous successful fetch"); an unknown kid reloads unless
  cooling down; Cache-Control is not read; a failed reload fails the token.
- ``once``: fetches the set when it starts and never again.

The adoption gate (API.md §6) is a separate, longer study (`gate_study`): a scheduled rotation
waits until `adoption_gate` of the fetchers seen in the adoption window hold next, at most
`adoption_max_wait`; fetch-once verifiers restart (mean uptime `uptime`) and fetch only then.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import socket
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # run as a script, by `python -m bench`, or loaded by a test
    sys.path.insert(0, str(HERE))

from simmodel import (  # noqa: E402 - bench/ is put on the path first
    JOSE,
    ONCE,
    PYJWT,
    SDK,
    STRATEGIES,
    Config,
    GateConfig,
    Result,
    gate_study,
    simulate,
)

__all__ = ["JOSE", "ONCE", "PYJWT", "SDK", "STRATEGIES", "Config", "GateConfig", "Result", "gate_study", "simulate"]


# ----- the whole study, its report and charts -----------------------------------------------------


def sweep_configs(n: int, seed: int) -> list[tuple[str, Config]]:
    """A scheduled rollover behind the CDN, one setting moved at a time."""
    base = Config(verifiers=n, seed=seed)
    out = [(f"prepublish={p:g}s", dataclasses.replace(base, prepublish=p)) for p in (60.0, 330.0, 3600.0)]
    out += [(f"max_age={m:g}s", dataclasses.replace(base, max_age=m)) for m in (60.0, 900.0)]
    # The origin unreachable for 20 minutes around the promotion, with each stale-if-error.
    for sie in (0.0, 300.0, None):
        label = "derived" if sie is None else f"{sie:g}s"
        out.append(
            (
                f"outage 20 min, stale-if-error={label}",
                dataclasses.replace(base, outage=(-600.0, 600.0), stale_if_error=sie),
            )
        )
    return out


def gate_configs(n: int, seed: int) -> list[tuple[str, GateConfig]]:
    base = GateConfig(verifiers=n, seed=seed)
    every = 10 * n  # max_fetchers large enough to keep every fetcher
    return [
        ("gate off", dataclasses.replace(base, gate=0.0)),
        ("gate 95%, max_fetchers 10,000 (default)", base),
        ("gate 95%, behind the CDN (origin sees POPs)", dataclasses.replace(base, cdn=True)),
        ("gate 95%, every fetcher kept, window 24 h", dataclasses.replace(base, max_fetchers=every)),
        ("gate 95%, every fetcher kept, window 7 d", dataclasses.replace(base, max_fetchers=every, window=7 * 86400.0)),
        (
            "gate 95%, every fetcher kept, fetch-once never restarts",
            dataclasses.replace(base, max_fetchers=every, uptime=math.inf),
        ),
    ]


def study(
    verifiers: int, sweep_verifiers: int, seed: int, progress: Callable[[str], None] = lambda _: None
) -> tuple[dict[str, Any], dict[str, Result]]:
    started = time.perf_counter()
    main: dict[str, Result] = {}
    for scenario in ("scheduled", "forced", "revoke"):
        for cdn in (True, False):
            key = f"{scenario}, {'CDN' if cdn else 'no CDN'}"
            progress(f"{key}: {verifiers:,} verifiers")
            main[key] = simulate(Config(scenario=scenario, verifiers=verifiers, cdn=cdn, seed=seed))
            progress(f"{key}: {main[key].seconds:.1f} s")
    sweep = {}
    for label, c in sweep_configs(sweep_verifiers, seed):
        progress(f"sweep {label}: {sweep_verifiers:,} verifiers")
        sweep[label] = simulate(c).summary()
    gates = {}
    for label, g in gate_configs(verifiers, seed):
        progress(f"adoption gate: {label}")
        gates[label] = gate_study(g)
    now = datetime.datetime.now(datetime.UTC)
    doc = {
        "date": now.strftime("%Y-%m-%d"),
        "time": now.isoformat(timespec="seconds"),
        "host": socket.gethostname().split(".")[0] or "host",
        "verifiers": verifiers,
        "sweep_verifiers": sweep_verifiers,
        "seed": seed,
        "wall_seconds": round(time.perf_counter() - started, 1),
        "runs": {k: r.summary() for k, r in main.items()},
        "sweep": sweep,
        "gate": gates,
    }
    return doc, main


def _pct(x: float) -> str:
    return f"{x:.2%}" if x else "0"


def markdown(doc: dict[str, Any], charts: Sequence[str]) -> str:
    out = [
        f"# Simulation: {doc['verifiers']:,} verifiers, one origin JWKS, a CDN ({doc['date']}, {doc['host']})",
        "",
        f"`python bench/simulate.py --verifiers {doc['verifiers']} --sweep-verifiers {doc['sweep_verifiers']} "
        f"--seed {doc['seed']}`: {doc['wall_seconds']:.0f} s of wall time in all. A model, not a measurement: "
        "bench/simulate.py says what it assumes. Mix: 40% SDK, 30% PyJWT PyJWKClient, 20% jose "
        "createRemoteJWKSet, 10% fetch-once; 8 POPs; max_age 5 min, prepublish 1 h, token_ttl 15 min, "
        "leeway 30 s, 1 token/s per verifier on average.",
        "",
        "## Rollovers",
        "",
        "Failing: share of verifiers with at least one failed token (a valid token refused: unknown kid "
        "or no usable key set). Tokens signed by a revoked key that are refused are not failures.",
        "",
    ]
    head = ["run", "wall s", "origin req/s steady", "origin peak req/s", "edge peak req/s", "unknown-kid refetches"]
    head += [f"failing {s}" for s in STRATEGIES]
    rows = []
    for key, r in doc["runs"].items():
        st = r["strategies"]
        rows.append(
            [
                key,
                f"{r['wall_seconds']:.0f}",
                f"{r['origin_steady_rps']:,.2f}",
                f"{r['origin_peak_rps']:,.0f}",
                f"{r['edge_peak_rps']:,.0f}",
                f"{r['unknown_kid_refetches']:,.0f}",
            ]
            + [_pct(st[s]["failing_share"]) if s in st else "-" for s in STRATEGIES]
        )
    out.append(_table(head, rows))
    exposures = [(k, r["revoked_key_exposure_s"]) for k, r in doc["runs"].items() if r["revoked_key_exposure_s"]]
    if exposures:
        out += [
            "",
            "After a revoke, how long a verifier still accepts the revoked key (s after the revocation; "
            "p50 / p99 / max; -1: never within the run):",
            "",
        ]
        for key, e in exposures:
            cells = ", ".join(f"{s} {v['p50']:.0f} / {v['p99']:.0f} / {v['max']:.0f}" for s, v in e.items())
            out.append(f"- {key}: {cells}")
    out += [
        "",
        f"## One setting at a time (scheduled rollover behind the CDN, {doc['sweep_verifiers']:,} verifiers)",
        "",
    ]
    rows = []
    for label, r in doc["sweep"].items():
        st = r["strategies"]
        rows.append(
            [
                label,
                f"{r['origin_peak_rps']:,.0f}",
                f"{r['origin_steady_rps']:,.2f}",
                f"{r['unknown_kid_refetches']:,.0f}",
            ]
            + [_pct(st[s]["failing_share"]) if s in st else "-" for s in STRATEGIES]
        )
    out.append(
        _table(
            ["setting", "origin peak req/s", "origin steady req/s", "unknown-kid refetches"]
            + [f"failing {s}" for s in STRATEGIES],
            rows,
        )
    )
    out += [
        "",
        "prepublish below max_age + leeway (60 s here) is refused by `check-config`; it is run to show why.",
        "",
        f"## Adoption gate (API.md §6), {doc['verifiers']:,} verifiers, fetch-once restarting every 24 h on average",
        "",
    ]
    rows = [
        [
            label,
            f"{g['promoted_after_due_s'] / 3600:.1f} h",
            g["reason"],
            _pct(g["once_failing_share"]),
            _pct(g["all_failing_share"]),
        ]
        for label, g in doc["gate"].items()
    ]
    out.append(
        _table(["gate", "promotion delayed by", "why it opened", "fetch-once failing", "all verifiers failing"], rows)
    )
    out += [""] + [f"![{Path(c).stem}]({Path(c).name})" for c in charts]
    return "\n".join(out) + "\n"


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def charts(main: dict[str, Result], doc: dict[str, Any], stem: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []

    def save(fig: Any, name: str) -> None:
        path = stem.with_name(f"{stem.name}-{name}.png")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(str(path))

    scenarios = ("scheduled", "forced", "revoke")
    fig, axes = plt.subplots(len(scenarios), 1, figsize=(10, 9))
    for ax, scenario in zip(axes, scenarios, strict=True):
        for cdn, color in (("CDN", "tab:blue"), ("no CDN", "tab:red")):
            r = main[f"{scenario}, {cdn}"]
            end = r.horizon - 1  # the last second is cut short by the end of the run
            x = (np.arange(end) - r.t_sign) / 60
            ax.plot(x, np.maximum(r.origin[:end], 0.1), color=color, lw=0.8, label=f"origin, {cdn}")
        r = main[f"{scenario}, CDN"]
        ax.plot(x, np.maximum(r.edge[:end], 0.1), color="tab:gray", lw=0.6, alpha=0.7, label="verifiers -> CDN")
        ax.axvline(0, color="k", ls=":", lw=0.8)
        ax.set_yscale("log")
        ax.set_ylabel("requests/s")
        ax.set_title(f"{scenario}: JWKS requests per second (new key signs at 0)", fontsize=10)
        ax.legend(fontsize=7, loc="upper left")
    axes[-1].set_xlabel("minutes from the moment the new key signs")
    save(fig, "origin")

    fig, axes = plt.subplots(len(scenarios), 2, figsize=(11, 9), sharey=True)
    for row, scenario in enumerate(scenarios):
        for col, cdn in enumerate(("CDN", "no CDN")):
            ax = axes[row][col]
            r = main[f"{scenario}, {cdn}"]
            x = (np.arange(r.failed.shape[1]) - r.t_sign) / 60
            for i, name in enumerate(STRATEGIES):
                if r.tokens[i] > 0:
                    ax.plot(x, 100 * r.failed[i] / r.tokens[i], lw=0.8, label=name)
            ax.set_title(f"{scenario}, {cdn}", fontsize=9)
            ax.set_ylim(-2, 102)
        axes[row][0].set_ylabel("% of tokens failing")
    axes[0][0].legend(fontsize=7)
    axes[-1][0].set_xlabel("minutes from the moment the new key signs")
    axes[-1][1].set_xlabel("minutes from the moment the new key signs")
    save(fig, "failures")

    fig, ax = plt.subplots(figsize=(10, 4.5))
    labels = list(doc["sweep"])
    width = 0.2
    for i, name in enumerate(STRATEGIES):
        vals = [100 * doc["sweep"][lab]["strategies"].get(name, {}).get("failing_share", 0) for lab in labels]
        ax.bar(np.arange(len(labels)) + i * width, vals, width, label=name)
    ax.set_xticks(np.arange(len(labels)) + 1.5 * width, [lab.replace(", ", "\n") for lab in labels], fontsize=7)
    ax.set_ylabel("% of verifiers failing")
    ax.set_title("Scheduled rollover behind the CDN: one setting at a time")
    ax.legend(fontsize=8)
    save(fig, "sweep")

    fig, ax = plt.subplots(figsize=(9, 4))
    for label, g in doc["gate"].items():
        series = g["share_series"]
        if len(series) > 1:
            ax.plot([p[0] / 3600 for p in series], [100 * p[1] for p in series], label=label)
    ax.axhline(95, color="k", ls=":", lw=0.8)
    ax.set_xlabel("hours since next was published")
    ax.set_ylabel("% of counted fetchers holding next")
    ax.set_title("Adoption gate: what the origin sees while a due rotation waits")
    ax.legend(fontsize=7)
    save(fig, "gate")
    return written


def write(doc: dict[str, Any], main: dict[str, Result], out: Path) -> tuple[Path, Path, list[str]]:
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"simulate-{doc['date']}-{doc['verifiers']}"
    json_path = stem.with_suffix(".json")
    json_path.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    pngs = charts(main, doc, stem)
    md_path = stem.with_suffix(".md")
    md_path.write_text(markdown(doc, pngs), encoding="utf-8")
    return json_path, md_path, pngs


def run(verifiers: int, sweep_verifiers: int, seed: int, out: Path, progress: Callable[[str], None]) -> dict[str, Any]:
    """The whole study, written to `out`; returns the document (for ``python -m bench``)."""
    doc, main = study(verifiers, sweep_verifiers, seed, progress)
    json_path, md_path, pngs = write(doc, main, out)
    progress(f"wrote {json_path}, {md_path} and {len(pngs)} charts")
    return doc


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python bench/simulate.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--verifiers", type=int, default=1_000_000, help="verifiers of the main runs (default 10^6)")
    p.add_argument("--sweep-verifiers", type=int, default=100_000, help="verifiers of each sweep run (default 10^5)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", default=str(HERE / "results"), help="folder for the results (default bench/results)")
    p.add_argument("--quick", action="store_true", help="a smoke run: 10^4 verifiers, 10^4 in the sweep")
    args = p.parse_args(argv)
    if args.quick:
        args.verifiers = args.sweep_verifiers = 10_000
    doc = run(args.verifiers, args.sweep_verifiers, args.seed, Path(args.out), lambda m: print(m, file=sys.stderr))
    print(json.dumps({k: doc[k] for k in ("verifiers", "wall_seconds")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
