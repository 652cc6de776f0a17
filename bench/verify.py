"""In-process verification benchmark: the SDK's Verifier against PyJWT and joserfc with a cached key.

For every asymmetric algorithm, one RFC 9068 access token (made by the service's own signer) is
verified over and over by four contenders, each holding the key already:

- sdk:     ``jwks_service.sdk.Verifier(issuer, audience, jwks=...).verify(token)``: every check of a
           real verification (strict parse, typ, kid -> key, one alg per key, signature, iss, aud,
           exp/nbf/iat with leeway, required RFC 9068 claims). A fixed key set is the same hot path as
           a fetched one inside its max-age (one comparison decides that no refresh is due);
- pyjwt:   ``jwt.decode(token, key, algorithms=[alg], audience=..., issuer=..., leeway=30,
           options={"require": [...]})`` with the key object loaded once (what PyJWKClient hands back);
- joserfc: ``joserfc.jwt.decode(token, key, algorithms=[alg])`` and a ``JWTClaimsRegistry`` validating
           iss / aud / exp / nbf / iat;
- raw:     the ``cryptography`` primitive alone verifying the token's signature (the floor).

Cells are timed interleaved, round after round; each reports its best round.

    python bench/verify.py [--seconds 0.5] [--rounds 3] [--algs ES256,RS256] [--json out.json] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/sign.py: the timing loop and versions
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from sign import ALGS as SIGN_ALGS
from sign import _versions, interleaved_samples, parse_in_process_args

from jwks_service.algorithms import ALGORITHMS

# The signing benchmark's algorithms but HMAC: a verifier holds public keys only.
ALGS = tuple(name for name in SIGN_ALGS if not ALGORITHMS[name].symmetric)
CONTENDERS = ("sdk", "pyjwt", "joserfc", "raw")
ISSUER = "https://issuer.example.com"
AUDIENCE = "https://api.example.com"
REQUIRED = ["iss", "exp", "aud", "sub", "iat", "jti"]

Op = Callable[[], object]


@dataclass
class Cell:
    sdk: Op
    pyjwt: Op
    joserfc: Op
    raw: Op


@dataclass
class Row:
    alg: str
    sdk: float
    pyjwt: float
    joserfc: float
    raw: float
    samples: dict[str, list[float]] = field(default_factory=dict)

    @property
    def sdk_vs_pyjwt(self) -> float:
        return self.sdk / self.pyjwt

    @property
    def sdk_vs_joserfc(self) -> float:
        return self.sdk / self.joserfc

    @property
    def sdk_vs_raw(self) -> float:
        return self.sdk / self.raw

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(sdk_vs_pyjwt=self.sdk_vs_pyjwt, sdk_vs_joserfc=self.sdk_vs_joserfc, sdk_vs_raw=self.sdk_vs_raw)
        return out


def make_cell(alg_name: str, rsa_bits: int | None = None) -> Cell:
    import jwt as pyjwt
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
    from joserfc import jwt as jose_jwt
    from joserfc.jwk import JWKRegistry

    from jwks_service.crypto import generate_private_key, make_signer, public_jwk
    from jwks_service.jws import b64decode
    from jwks_service.sdk import Verifier
    from jwks_service.tokens import access_token_claims, encode_header, encode_token

    alg = ALGORITHMS[alg_name]
    bits = rsa_bits if rsa_bits and alg.family in ("RSA", "RSA-PSS") else alg.default_key_bits
    private = generate_private_key(alg, bits)
    jwk, thumbprint = public_jwk(alg, private)  # type: ignore[arg-type]
    kid = thumbprint
    jwk = {**jwk, "kid": kid, "alg": alg_name, "use": "sig"}
    now = int(time.time())
    claims = access_token_claims(
        issuer=ISSUER, client_id="bench-client", audience=AUDIENCE, scope="read:orders", now=now, ttl=3600
    )
    token = encode_token(encode_header(alg_name, kid), claims, make_signer(alg, private))
    token_b = token.encode()

    verifier = Verifier(ISSUER, AUDIENCE, jwks={"keys": [jwk]})
    assert verifier.verify(token)["client_id"] == "bench-client"

    def sdk() -> object:
        return verifier.verify(token)

    key_object = pyjwt.PyJWK(jwk).key
    decode = pyjwt.decode

    def with_pyjwt() -> object:
        return decode(
            token,
            key_object,
            algorithms=[alg_name],
            audience=AUDIENCE,
            issuer=ISSUER,
            leeway=30,
            options={"require": REQUIRED},
        )

    with_pyjwt()
    jose_key = JWKRegistry.import_key(jwk)
    registry = jose_jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": ISSUER},
        aud={"essential": True, "value": AUDIENCE},
        sub={"essential": True},
        jti={"essential": True},
        leeway=30,
    )
    jose_decode = jose_jwt.decode
    jose_algs = [alg_name]

    def with_joserfc() -> object:
        decoded = jose_decode(token, jose_key, algorithms=jose_algs)
        registry.validate(decoded.claims)
        return decoded

    with_joserfc()
    signing_input, _, sig64 = token_b.rpartition(b".")
    signature = b64decode(sig64)
    public = private.public_key()  # type: ignore[union-attr]
    if alg.family in ("RSA", "RSA-PSS"):
        assert isinstance(public, rsa.RSAPublicKey)
        h = getattr(hashes, alg.hash_name.upper())()
        pad = (
            padding.PKCS1v15()
            if alg.family == "RSA"
            else padding.PSS(mgf=padding.MGF1(h), salt_length=padding.PSS.DIGEST_LENGTH)
        )

        def raw() -> object:
            return public.verify(signature, signing_input, pad, h)

    elif alg.family == "EC":
        assert isinstance(public, ec.EllipticCurvePublicKey)
        half = len(signature) // 2
        der = encode_dss_signature(int.from_bytes(signature[:half], "big"), int.from_bytes(signature[half:], "big"))
        ecdsa = ec.ECDSA(getattr(hashes, alg.hash_name.upper())())

        def raw() -> object:
            return public.verify(der, signing_input, ecdsa)

    else:
        verify_ed = public.verify

        def raw() -> object:
            return verify_ed(signature, signing_input)

    raw()
    return Cell(sdk, with_pyjwt, with_joserfc, raw)


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
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # joserfc flags EdDSA as not recommended; not what we measure
        cells = {alg: make_cell(alg, rsa_bits) for alg in algs}
        return measure(cells, seconds=seconds, rounds=rounds, progress=progress)


def format_table(rows: Sequence[Row]) -> str:
    head = ("alg", "sdk/s", "pyjwt/s", "joserfc/s", "raw/s", "sdk÷pyjwt", "sdk÷joserfc", "sdk÷raw")
    body = [
        (
            r.alg,
            f"{r.sdk:,.0f}",
            f"{r.pyjwt:,.0f}",
            f"{r.joserfc:,.0f}",
            f"{r.raw:,.0f}",
            f"{r.sdk_vs_pyjwt:.2f}x",
            f"{r.sdk_vs_joserfc:.2f}x",
            f"{r.sdk_vs_raw:.3f}x",
        )
        for r in rows
    ]
    widths = [max(len(line[i]) for line in (head, *body)) for i in range(len(head))]

    def fmt(line: Sequence[str]) -> str:
        cells = zip(line, widths, strict=True)
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(cells))

    return "\n".join([fmt(head), "  ".join("-" * w for w in widths), *(fmt(line) for line in body)])


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    return parse_in_process_args(argv, prog="bench/verify.py", description=__doc__.split("\n\n")[0], algs=ALGS)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    versions = _versions()
    started = time.perf_counter()
    rows = run_benchmark(
        args.alg_list,
        seconds=args.seconds,
        rounds=args.rounds,
        rsa_bits=2048 if args.quick else None,
        progress=lambda msg: print(f"  ... {msg}", file=sys.stderr, flush=True),
    )
    took = time.perf_counter() - started
    print(
        "Verification benchmark: one RFC 9068 access token verified per call, every contender holding the key\n"
        "already (sdk = jwks_service.sdk.Verifier.verify; raw = the cryptography primitive on the signature alone).\n"
        f"{args.rounds} interleaved rounds of {args.seconds:g} s per cell, best round reported.\n"
        f"{' '.join(f'{k} {v}' for k, v in versions.items())}; {os.cpu_count()} CPUs; ran {took:.0f} s\n"
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
