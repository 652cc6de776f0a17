"""Local keys: generated with `cryptography`, sealed with AES-256-GCM under the KEK, signed in process."""

from __future__ import annotations

import os
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..algorithms import ALGORITHMS, Algorithm
from ..crypto import (
    KeyMismatchError,
    PrivateKey,
    SignFn,
    VerifyFn,
    generate_private_key,
    make_signer,
    make_verifier,
    public_key_from_jwk,
)
from ..crypto import public_jwk as make_public_jwk
from ..errors import KeyValidationError
from ..model import KeyVersion, NewKey

_SEAL_VERSION = b"\x01"


class LocalBackend:
    name = "local"

    def __init__(self, kek: bytes) -> None:
        if len(kek) != 32:
            raise ValueError("the KEK must be 32 bytes")
        self._aead = AESGCM(kek)

    # Sealing binds the ciphertext to its keyset, kid and alg (AAD), so a blob copied onto
    # another key record does not decrypt.
    def _aad(self, keyset: str, kid: str, alg: str) -> bytes:
        return f"jwks-service/v1|{keyset}|{kid}|{alg}".encode()

    def seal(self, keyset: str, kid: str, alg: str, plaintext: bytes) -> bytes:
        nonce = os.urandom(12)
        return _SEAL_VERSION + nonce + self._aead.encrypt(nonce, plaintext, self._aad(keyset, kid, alg))

    def unseal(self, keyset: str, kid: str, alg: str, blob: bytes) -> bytes:
        if len(blob) < 29 or blob[:1] != _SEAL_VERSION:
            raise KeyValidationError(f"key {kid}: sealed material is malformed")
        try:
            return self._aead.decrypt(blob[1:13], blob[13:], self._aad(keyset, kid, alg))
        except InvalidTag:
            raise KeyValidationError(f"key {kid}: cannot decrypt its private key (wrong KEK?)") from None

    def generate(self, keyset: str, alg: Algorithm, key_bits: int) -> NewKey:
        private = generate_private_key(alg, key_bits)
        if isinstance(private, bytes):
            # HMAC kids are random, never derived from the secret (a thumbprint would leak a hash of it).
            kid = secrets.token_urlsafe(16)
            return NewKey(kid, None, self.seal(keyset, kid, alg.name, private))
        jwk, kid = make_public_jwk(alg, private)
        jwk.update({"kid": kid, "alg": alg.name, "use": "sig"})
        der = private.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return NewKey(kid, jwk, self.seal(keyset, kid, alg.name, der))

    def _private(self, key: KeyVersion) -> PrivateKey | bytes:
        if key.sealed_private is None:
            raise KeyValidationError(f"key {key.kid} holds no private material (retired or revoked)")
        raw = self.unseal(key.keyset, key.kid, key.alg, key.sealed_private)
        if ALGORITHMS[key.alg].symmetric:
            return raw
        loaded = serialization.load_der_private_key(raw, password=None)
        return loaded  # type: ignore[return-value]  # checked by make_signer's check_key

    def signer(self, key: KeyVersion) -> SignFn:
        try:
            return make_signer(ALGORITHMS[key.alg], self._private(key))
        except (KeyMismatchError, ValueError) as exc:
            raise KeyValidationError(f"key {key.kid}: {exc}") from None

    def verifier(self, key: KeyVersion) -> VerifyFn:
        alg = ALGORITHMS[key.alg]
        try:
            if alg.symmetric:
                return make_verifier(alg, self._private(key))  # type: ignore[arg-type]
            if key.public_jwk is None:
                raise KeyValidationError(f"key {key.kid} has no public key")
            return make_verifier(alg, public_key_from_jwk(key.alg, key.public_jwk))
        except KeyMismatchError as exc:
            raise KeyValidationError(f"key {key.kid}: {exc}") from None
