"""Our signers produce what independent verifiers accept, for every alg, many times over.

ECDSA signatures are converted from DER to r || s by hand on the hot path; a few thousand
signatures cover the short-integer cases (a leading zero byte turns up once in 256)."""

from __future__ import annotations

import os

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from support import algorithms

from jwks_service.algorithms import ALGORITHMS
from jwks_service.crypto import generate_private_key, make_signer, make_verifier

# alg: (coordinate bytes, hash, signatures to try: enough that a leading zero byte turns up)
EC = {"ES256": (32, hashes.SHA256, 3000), "ES384": (48, hashes.SHA384, 1500), "ES512": (66, hashes.SHA512, 200)}


@pytest.mark.parametrize("alg", algorithms("EC"))
def test_ecdsa_signatures_are_fixed_width_and_verify(alg: str) -> None:
    size, hash_cls, rounds = EC[alg]
    key = generate_private_key(ALGORITHMS[alg], 0)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    sign = make_signer(ALGORITHMS[alg], key)
    pub = key.public_key()
    short = 0
    for i in range(rounds):
        data = os.urandom(8) + i.to_bytes(4, "big")
        sig = sign(data)
        assert len(sig) == 2 * size
        r, s = int.from_bytes(sig[:size], "big"), int.from_bytes(sig[size:], "big")
        short += sig[0] == 0 or sig[size] == 0
        try:
            pub.verify(encode_dss_signature(r, s), data, ec.ECDSA(hash_cls()))
        except InvalidSignature:
            pytest.fail(f"signature {i} does not verify: {sig.hex()}")
    assert short > 0  # the padding path was exercised


@pytest.mark.parametrize("alg", sorted(ALGORITHMS))
def test_sign_then_verify_round_trip_and_tamper(alg: str) -> None:
    a = ALGORITHMS[alg]
    key = generate_private_key(a, 2048 if a.family.startswith("RSA") else a.default_key_bits)
    sign = make_signer(a, key)
    verify = make_verifier(a, key if isinstance(key, bytes) else key.public_key())
    data = b"header.payload"
    sig = sign(data)
    assert verify(data, sig)
    assert not verify(data + b"x", sig)
    assert not verify(data, sig[:-1] + bytes([sig[-1] ^ 1]))
    assert not verify(data, b"")
