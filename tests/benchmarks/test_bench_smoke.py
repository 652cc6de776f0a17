"""bench/sign.py and bench/vault.py run and report well-formed rows, and the tuned signing path still makes
valid tokens.

Never asserts a speed: benchmarks are not timed tests (DESIGN.md, Speed).
"""

from __future__ import annotations

import base64
import hmac
import importlib.util
import json
import math
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from support import PROJECT_ROOT, algorithms

from jwks_service.algorithms import ALGORITHMS
from jwks_service.crypto import generate_private_key, make_signer
from jwks_service.tokens import access_token_claims, encode_header, encode_token, new_jti

BENCH = PROJECT_ROOT / "bench" / "sign.py"
VAULT_BENCH = BENCH.with_name("vault.py")
NUMBERS = ("ours", "pyjwt", "joserfc", "raw", "ours_vs_raw", "ours_vs_pyjwt", "ours_vs_joserfc")


def _load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return _load(BENCH, "bench_sign")


@pytest.fixture(scope="module")
def vault_bench() -> ModuleType:
    return _load(VAULT_BENCH, "bench_vault")


def _well_formed(row: dict[str, Any], alg: str) -> None:
    assert row["alg"] == alg
    for name in NUMBERS:
        value = row[name]
        assert isinstance(value, float), name
        assert math.isfinite(value), name
        assert value > 0, name
    assert set(row["samples"]) == {"ours", "pyjwt", "joserfc", "raw"}
    assert all(len(rates) == 3 and all(r > 0 for r in rates) for rates in row["samples"].values())


def test_quick_run_prints_the_table_and_writes_json(
    bench: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bench.json"
    assert bench.main(["--quick", "--algs", "HS256,ES256", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "ours÷raw" in printed and "interleaved rounds" in printed
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert doc["seconds_per_cell"] == 0.05
    assert doc["rounds"] == 3
    assert [row["alg"] for row in doc["rows"]] == ["HS256", "ES256"]
    for row in doc["rows"]:
        _well_formed(row, row["alg"])


def test_results_as_data(bench: ModuleType) -> None:
    rows = bench.run_benchmark(["EdDSA", "PS256"], seconds=0.01, rounds=3, rsa_bits=2048)
    assert [r.alg for r in rows] == ["EdDSA", "PS256"]
    for r in rows:
        _well_formed(r.as_dict(), r.alg)


def test_rejects_unknown_algorithms(bench: ModuleType) -> None:
    with pytest.raises(SystemExit):
        bench.parse_args(["--algs", "none"])


# ----- bench/vault.py: Vault-backed signing, naive vs batched vs local (starts its own OpenBao) --------


def _vault_row_well_formed(row: dict[str, Any], alg: str, rounds: int) -> None:
    assert row["alg"] == alg
    for mode in ("naive", "batched", "local"):
        cell = row[mode]
        for name in ("tokens_per_s", "p50_ms", "p99_ms", "seconds"):
            assert isinstance(cell[name], float) and math.isfinite(cell[name]) and cell[name] > 0, (mode, name)
        assert cell["p50_ms"] <= cell["p99_ms"], mode
        assert isinstance(cell["tokens"], int) and cell["tokens"] > 0, mode
        assert len(cell["samples"]) == rounds and all(r > 0 for r in cell["samples"]), mode
    # One Transit call per naive token; batches of at least one token; none for local keys.
    assert row["naive"]["vault_calls"] == row["naive"]["tokens"] and row["naive"]["avg_batch"] == 1.0
    assert 1 <= row["batched"]["vault_calls"] <= row["batched"]["tokens"]
    assert row["batched"]["avg_batch"] >= 1.0
    assert row["local"]["vault_calls"] == 0 and row["local"]["avg_batch"] is None
    for name in ("batched_vs_naive", "batched_vs_local"):
        assert isinstance(row[name], float) and math.isfinite(row[name]) and row[name] > 0, name


def test_vault_quick_run_prints_the_table_and_writes_json(
    vault_bench: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "vault.json"
    argv = ["--quick", "--algs", "ES256,HS256", "--rounds", "2", "--concurrency", "16", "--json", str(out)]
    assert vault_bench.main(argv) == 0
    printed = capsys.readouterr().out
    assert "batched÷naive" in printed and "batched÷local" in printed and "interleaved rounds" in printed
    for alg in ("ES256", "HS256"):
        assert {mode for mode in ("naive", "batched", "local") if f"{alg}  {mode}" in printed} == {
            "naive",
            "batched",
            "local",
        }
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert doc["seconds_per_cell"] == 0.3
    assert (doc["rounds"], doc["concurrency"], doc["quick"]) == (2, 16, True)
    assert doc["max_batch"] >= 1 and doc["max_in_flight"] >= 1
    assert [row["alg"] for row in doc["rows"]] == ["ES256", "HS256"]
    for row in doc["rows"]:
        _vault_row_well_formed(row, row["alg"], rounds=2)


def test_vault_results_as_data(vault_bench: ModuleType) -> None:
    rows = vault_bench.run_benchmark(["EdDSA"], seconds=0.05, rounds=2, concurrency=4, max_batch=2, max_in_flight=1)
    assert [r.alg for r in rows] == ["EdDSA"]
    _vault_row_well_formed(rows[0].as_dict(), "EdDSA", rounds=2)
    assert rows[0].batched.avg_batch <= 2  # the batcher parameters given were used


def test_vault_bench_rejects_bad_arguments(vault_bench: ModuleType) -> None:
    for argv in (["--algs", "none"], ["--concurrency", "0"], ["--max-batch", "0"]):
        with pytest.raises(SystemExit):
            vault_bench.parse_args(argv)


# ----- the tuned signing path makes valid tokens ----------------------------------------------------


def test_issued_tokens_of_every_algorithm_verify_with_pyjwt(bench: ModuleType) -> None:
    with bench.service_cells(bench.ALGS, rsa_bits=2048) as cells:
        for alg, cell in cells.items():
            public = {k["kid"]: k for k in json.loads(cell.service.snapshot.jwks.body)["keys"]}
            # HMAC keys are never published; the others are checked against the JWKS we serve.
            key = cell.verify_key if ALGORITHMS[alg].symmetric else jwt.PyJWK(public[cell.kid]).key
            for _ in range(40 if alg.startswith("ES") else 2):  # several ECDSA tokens: r, s of every length
                issued = cell.service.issue(cell.client, bench.SCOPE, bench.AUDIENCE)
                assert jwt.get_unverified_header(issued.token) == {"alg": alg, "kid": cell.kid, "typ": "at+jwt"}
                claims = jwt.decode(issued.token, key, algorithms=[alg], audience=bench.AUDIENCE, issuer=bench.ISSUER)
                assert claims == issued.claims
                assert set(claims) == {"iss", "sub", "aud", "exp", "iat", "nbf", "jti", "client_id", "scope"}
                assert claims["exp"] - claims["iat"] == issued.expires_in
                assert issued.kid == cell.kid and issued.scope == bench.SCOPE


def _reference_b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def test_encode_token_matches_the_textbook_encoding() -> None:
    secret = os.urandom(32)
    claims = access_token_claims(
        issuer="https://issuer.example", client_id="c1", audience="api", scope="a b", now=1_800_000_000.5, ttl=900
    )
    header = encode_header("HS256", "kid-1")
    assert header == _reference_b64(b'{"alg":"HS256","kid":"kid-1","typ":"at+jwt"}')
    token = encode_token(header, claims, make_signer(ALGORITHMS["HS256"], secret))
    payload = json.dumps(claims, separators=(",", ":")).encode()
    signing_input = header + b"." + _reference_b64(payload)
    assert token == (signing_input + b"." + _reference_b64(hmac.digest(secret, signing_input, "sha256"))).decode()


@pytest.mark.parametrize("alg", algorithms("HMAC"))
def test_hmac_signer_is_hmac(alg: str) -> None:
    secret = os.urandom(64)
    sign = make_signer(ALGORITHMS[alg], secret)
    for size in (0, 1, 63, 64, 65, 1000):
        data = os.urandom(size)
        assert sign(data) == hmac.digest(secret, data, ALGORITHMS[alg].hash_name)


@pytest.mark.parametrize("alg", algorithms("EC"))
def test_ecdsa_signer_gives_fixed_length_r_s(alg: str) -> None:
    """The DER -> r || s conversion, over enough signatures to meet short and 00-prefixed r and s."""
    count = {"ES256": 600, "ES384": 150, "ES512": 100}[alg]
    algorithm = ALGORITHMS[alg]
    key = generate_private_key(algorithm, algorithm.default_key_bits)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    sign = make_signer(algorithm, key)
    size = {"ES256": 32, "ES384": 48, "ES512": 66}[alg]
    ecdsa = ec.ECDSA({"ES256": hashes.SHA256(), "ES384": hashes.SHA384(), "ES512": hashes.SHA512()}[alg])
    public = key.public_key()
    for i in range(count):
        data = i.to_bytes(4, "big") * 40
        sig = sign(data)
        assert len(sig) == 2 * size
        r, s = int.from_bytes(sig[:size], "big"), int.from_bytes(sig[size:], "big")
        public.verify(encode_dss_signature(r, s), data, ecdsa)  # raises if r, s were mangled


def test_jtis_are_unique_16_byte_base64url() -> None:
    seen = set()
    for _ in range(1000):  # crosses several refills of the pool
        jti = new_jti()
        assert len(jti) == 22
        raw = base64.urlsafe_b64decode(jti + "==")
        assert len(raw) == 16 and _reference_b64(raw).decode() == jti
        seen.add(jti)
    assert len(seen) == 1000


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_does_not_reuse_the_parents_jtis() -> None:
    new_jti()  # the pool now holds jtis the child would inherit
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        os.close(read)
        os.write(write, new_jti().encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        child_jti = pipe.read().decode()
    os.waitpid(pid, 0)
    assert len(child_jti) == 22
    assert child_jti != new_jti()
