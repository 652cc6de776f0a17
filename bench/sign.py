"""In-process signing benchmark: our token issuance against PyJWT, joserfc and the raw primitive.

For every algorithm, four contenders each make one thing per call:

- ours:    ``KeyService.issue(client, scope, audience)`` on a real runtime (SQLite store, local backend,
           one keyset per algorithm, system clock): the full RFC 9068 access token as the service issues it;
- pyjwt:   ``jwt.encode`` of the same-shaped claims (fresh ``jti``) with the already-loaded key object;
- joserfc: ``joserfc.jwt.encode`` of the same header and claims with an imported joserfc key;
- raw:     the ``cryptography`` primitive alone signing a fixed 300-byte message (the floor).

All four use the same key. Cells are timed interleaved, round after round, so machine noise hits all
contenders alike; each cell reports the best rate of its rounds.

    python bench/sign.py [--seconds 0.5] [--rounds 3] [--algs HS256,ES256] [--json out.json] [--quick]
"""

from __future__ import annotations

import argparse
import hmac
import json
import os
import platform
import secrets
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from jwks_service.algorithms import ALGORITHMS

# Every algorithm of the registry, once: Ed25519 is EdDSA under its RFC 9864 name, the same signature.
ALGS = tuple(name for name in ALGORITHMS if name != "Ed25519")
CONTENDERS = ("ours", "pyjwt", "joserfc", "raw")
ISSUER = "https://issuer.example.com"
AUDIENCE = "https://api.example.com"
SCOPE = "read:orders write:orders"
RAW_MESSAGE = bytes(range(256)) + bytes(44)  # a fixed 300-byte signing input

Op = Callable[[], object]


@dataclass
class Cell:
    alg: str
    ours: Op
    pyjwt: Op
    joserfc: Op
    raw: Op
    # For checks: the key PyJWT verifies with (the public key, or the secret for HMAC), the kid, and
    # the KeyService and client behind `ours`.
    verify_key: Any = None
    kid: str = ""
    service: Any = None
    client: Any = None


@dataclass
class Row:
    alg: str
    ours: float  # tokens (or signatures) per second, best of the rounds
    pyjwt: float
    joserfc: float
    raw: float
    samples: dict[str, list[float]] = field(default_factory=dict)  # every round's rate per contender

    @property
    def ours_vs_raw(self) -> float:
        return self.ours / self.raw

    @property
    def ours_vs_pyjwt(self) -> float:
        return self.ours / self.pyjwt

    @property
    def ours_vs_joserfc(self) -> float:
        return self.ours / self.joserfc

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(ours_vs_raw=self.ours_vs_raw, ours_vs_pyjwt=self.ours_vs_pyjwt, ours_vs_joserfc=self.ours_vs_joserfc)
        return out


# ----- set-up --------------------------------------------------------------------------------------


def _keyset_name(alg: str) -> str:
    return alg.lower()


@contextmanager
def service_cells(algs: Sequence[str], *, rsa_bits: int | None = None) -> Iterator[dict[str, Cell]]:
    """A runtime with one keyset per algorithm and the four contenders for each, on the same key.

    ``rsa_bits`` overrides the RSA key size (the default is each algorithm's: 2048 / 3072 / 4096).
    """
    import jwt as pyjwt
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
    from joserfc import jwt as jose_jwt
    from joserfc.jwk import ECKey, OctKey, OKPKey, RSAKey

    from jwks_service.backends.local import LocalBackend
    from jwks_service.config import build_settings
    from jwks_service.runtime import build_runtime

    hash_cls = {"sha256": hashes.SHA256, "sha384": hashes.SHA384, "sha512": hashes.SHA512}
    with tempfile.TemporaryDirectory(prefix="jwks-bench-") as tmp:
        keysets: dict[str, dict[str, Any]] = {}
        for alg in algs:
            table: dict[str, Any] = {"alg": alg}
            if rsa_bits and ALGORITHMS[alg].family in ("RSA", "RSA-PSS"):
                table["key_size"] = rsa_bits
            keysets[_keyset_name(alg)] = table
        settings = build_settings(
            {
                "issuer": ISSUER,
                "store": {"url": f"sqlite:///{tmp}/jwks.db"},
                "secrets": {"kek_file": f"{tmp}/kek"},
                "keysets": keysets,
            }
        )
        rt = build_runtime(settings)  # system clock: `now` is time.time(), as in the service
        try:
            service = rt.keys
            cells: dict[str, Cell] = {}
            for alg in algs:
                name = _keyset_name(alg)
                client, _ = rt.clients.create(f"bench-{name}", SCOPE.split(), [AUDIENCE], keyset=name)
                signing = service.snapshot.signing[name]
                kid = signing.kid
                keyset = service.snapshot.keysets[name]
                version = keyset.find(kid)
                assert version is not None
                backend = service.backends[keyset.backend]
                assert isinstance(backend, LocalBackend)
                key = backend._private(version)  # the very key the service signs with, loaded once
                algorithm = ALGORITHMS[alg]
                ttl = min(client.token_ttl, settings.keysets[name].token_ttl)
                client_id = client.client_id

                def ours(issue: Callable[..., Any] = service.issue, client: Any = client) -> object:
                    return issue(client, SCOPE, AUDIENCE)

                def claims(client_id: str = client_id, ttl: int = ttl) -> dict[str, Any]:
                    now = int(time.time())
                    return {
                        "iss": ISSUER,
                        "sub": client_id,
                        "aud": AUDIENCE,
                        "exp": now + ttl,
                        "iat": now,
                        "nbf": now,
                        "jti": secrets.token_urlsafe(16),
                        "client_id": client_id,
                        "scope": SCOPE,
                    }

                jwt_headers = {"kid": kid, "typ": "at+jwt"}

                def with_pyjwt(
                    key: Any = key, alg: str = alg, headers: dict[str, str] = jwt_headers, claims: Any = claims
                ) -> object:
                    return pyjwt.encode(claims(), key, algorithm=alg, headers=headers)

                jose_key: Any
                raw: Op
                verify_key: Any
                fam = algorithm.family
                if fam == "HMAC":
                    assert isinstance(key, bytes)
                    jose_key = OctKey.import_key(key)
                    verify_key = key

                    def raw_hmac(key: bytes = key, name: str = algorithm.hash_name) -> object:
                        return hmac.digest(key, RAW_MESSAGE, name)

                    raw = raw_hmac
                elif fam in ("RSA", "RSA-PSS"):
                    assert isinstance(key, rsa.RSAPrivateKey)
                    jose_key = RSAKey.import_key(key)
                    verify_key = key.public_key()
                    h = hash_cls[algorithm.hash_name]()
                    pad: padding.AsymmetricPadding = (
                        padding.PKCS1v15()
                        if fam == "RSA"
                        else padding.PSS(mgf=padding.MGF1(h), salt_length=algorithm.hash_bytes)
                    )

                    def raw_rsa(sign: Any = key.sign, pad: Any = pad, h: Any = h) -> object:
                        return sign(RAW_MESSAGE, pad, h)

                    raw = raw_rsa
                elif fam == "EC":
                    assert isinstance(key, ec.EllipticCurvePrivateKey)
                    jose_key = ECKey.import_key(key)
                    verify_key = key.public_key()
                    ecdsa = ec.ECDSA(hash_cls[algorithm.hash_name]())

                    def raw_ec(sign: Any = key.sign, ecdsa: Any = ecdsa) -> object:
                        return sign(RAW_MESSAGE, ecdsa)

                    raw = raw_ec
                else:
                    assert isinstance(key, ed25519.Ed25519PrivateKey)
                    jose_key = OKPKey.import_key(key)
                    verify_key = key.public_key()

                    def raw_ed(sign: Any = key.sign) -> object:
                        return sign(RAW_MESSAGE)

                    raw = raw_ed

                jose_header = {"alg": alg, "kid": kid, "typ": "at+jwt"}
                allowed = (alg,)  # joserfc refuses algorithms it does not recommend unless they are named

                def with_joserfc(
                    key: Any = jose_key, header: dict[str, str] = jose_header, algs: Any = allowed, claims: Any = claims
                ) -> object:
                    return jose_jwt.encode(dict(header), claims(), key, algorithms=algs)

                cells[alg] = Cell(
                    alg,
                    ours,
                    with_pyjwt,
                    with_joserfc,
                    raw,
                    verify_key=verify_key,
                    kid=kid,
                    service=service,
                    client=client,
                )
            yield cells
        finally:
            rt.close()


# ----- timing --------------------------------------------------------------------------------------


def _rate(op: Op, seconds: float) -> float:
    """Calls per second of `op` over about `seconds`, timed in batches to keep loop overhead small."""
    clock = time.perf_counter
    target = max(seconds / 20, 0.002)  # a batch takes ~1/20 of the budget, at least 2 ms
    n = 1
    while True:  # this calibration doubles as the cell's warm-up
        start = clock()
        for _ in range(n):
            op()
        took = clock() - start
        if took >= target:
            break
        n *= 10 if took < target / 10 else 2
    calls, elapsed = 0, 0.0
    deadline = clock() + seconds
    while True:
        start = clock()
        for _ in range(n):
            op()
        end = clock()
        calls += n
        elapsed += end - start
        if end >= deadline:
            return calls / elapsed


def interleaved_samples(
    cells: Mapping[str, Any],
    contenders: Sequence[str],
    *,
    seconds: float,
    rounds: int,
    progress: Callable[[str], None] | None = None,
) -> dict[str, dict[str, list[float]]]:
    """Rates of every (alg, contender) op, interleaved: a short warm-up of each, then round 1 of every
    cell, round 2, ... (bench/verify.py uses this too)."""
    samples: dict[str, dict[str, list[float]]] = {alg: {c: [] for c in contenders} for alg in cells}
    warm = max(seconds / 5, 0.01)
    for cell in cells.values():
        for contender in contenders:
            _rate(getattr(cell, contender), warm)
    for r in range(rounds):
        if progress:
            progress(f"round {r + 1}/{rounds}")
        for alg, cell in cells.items():
            for contender in contenders:
                samples[alg][contender].append(_rate(getattr(cell, contender), seconds))
    return samples


def measure(
    cells: dict[str, Cell], *, seconds: float, rounds: int, progress: Callable[[str], None] | None = None
) -> list[Row]:
    samples = interleaved_samples(cells, CONTENDERS, seconds=seconds, rounds=rounds, progress=progress)
    return [Row(alg, *(max(samples[alg][c]) for c in CONTENDERS), samples=samples[alg]) for alg in cells]


def run_benchmark(
    algs: Sequence[str] = ALGS,
    *,
    seconds: float = 0.5,
    rounds: int = 3,
    rsa_bits: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[Row]:
    """Set up and time every cell; the rows in `algs` order."""
    with warnings.catch_warnings():
        # joserfc flags some algorithms (e.g. EdDSA) as not recommended; that is not what we measure.
        warnings.simplefilter("ignore")
        with service_cells(algs, rsa_bits=rsa_bits) as cells:
            return measure(cells, seconds=seconds, rounds=rounds, progress=progress)


# ----- output --------------------------------------------------------------------------------------


def _fmt_rate(value: float) -> str:
    return f"{value:,.0f}"


def format_table(rows: Sequence[Row]) -> str:
    head = ("alg", "ours/s", "pyjwt/s", "joserfc/s", "raw/s", "ours÷raw", "ours÷pyjwt", "ours÷joserfc")
    body = [
        (
            r.alg,
            _fmt_rate(r.ours),
            _fmt_rate(r.pyjwt),
            _fmt_rate(r.joserfc),
            _fmt_rate(r.raw),
            f"{r.ours_vs_raw:.3f}x",
            f"{r.ours_vs_pyjwt:.3f}x",
            f"{r.ours_vs_joserfc:.3f}x",
        )
        for r in rows
    ]
    widths = [max(len(line[i]) for line in (head, *body)) for i in range(len(head))]
    lines = ["  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(head, widths, strict=True)))]
    lines.append("  ".join("-" * w for w in widths))
    for line in body:
        lines.append(
            "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths, strict=True)))
        )
    return "\n".join(lines)


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    out = {"python": platform.python_version()}
    for dist in ("cryptography", "PyJWT", "joserfc", "orjson", "jwks-service"):
        try:
            out[dist] = version(dist)
        except Exception:  # a missing peer only leaves its version out
            out[dist] = "?"
    return out


def parse_in_process_args(
    argv: Sequence[str] | None, *, prog: str, description: str, algs: Sequence[str]
) -> argparse.Namespace:
    """The options of the in-process benchmarks (this one and bench/verify.py)."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--seconds", type=float, default=0.5, help="time budget per cell and round (default 0.5)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; each cell reports its best (default 3)")
    p.add_argument("--algs", default=",".join(algs), help="comma-separated algorithms (default: all)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    p.add_argument("--quick", action="store_true", help="smoke run: 0.05 s per cell, 2048-bit RSA keys")
    args = p.parse_args(argv)
    args.alg_list = [a.strip() for a in args.algs.split(",") if a.strip()]
    unknown = [a for a in args.alg_list if a not in algs]
    if unknown or not args.alg_list:
        p.error(f"--algs: unknown {', '.join(unknown) or '(none given)'}; known: {', '.join(algs)}")
    if args.quick:
        args.seconds = 0.05
    if args.seconds <= 0 or args.rounds < 1:
        p.error("--seconds must be positive and --rounds at least 1")
    return args


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    return parse_in_process_args(argv, prog="bench/sign.py", description=__doc__.split("\n\n")[0], algs=ALGS)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    versions = _versions()

    def progress(msg: str) -> None:
        print(f"  ... {msg}", file=sys.stderr, flush=True)

    started = time.perf_counter()
    rsa_bits = 2048 if args.quick else None
    rows = run_benchmark(args.alg_list, seconds=args.seconds, rounds=args.rounds, rsa_bits=rsa_bits, progress=progress)
    took = time.perf_counter() - started
    print(
        "Signing benchmark: one RFC 9068 access token per call (ours = KeyService.issue; raw = the cryptography\n"
        f"primitive signing a fixed {len(RAW_MESSAGE)}-byte message). All contenders use the same key.\n"
        f"{args.rounds} interleaved rounds of {args.seconds:g} s per cell, best round reported "
        "(noise hits every contender alike).\n"
        + f"{' '.join(f'{k} {v}' for k, v in versions.items())}; {os.cpu_count()} CPUs; "
        + f"{'2048-bit RSA keys (--quick); ' if args.quick else ''}ran {took:.0f} s\n"
    )
    print(format_table(rows))
    if args.json:
        doc = {
            "seconds_per_cell": args.seconds,
            "rounds": args.rounds,
            "statistic": "best of rounds",
            "quick": bool(args.quick),
            "versions": versions,
            "rows": [r.as_dict() for r in rows],
        }
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
