"""Key backends: where private keys live and how bytes get signed.

A backend makes keys and signs bytes; it never builds tokens. Private material stays inside the
backend object (sealed at rest for the local backend, inside Vault for the Vault backend).
"""

from __future__ import annotations

from typing import Protocol

from ..algorithms import Algorithm
from ..crypto import SignFn, VerifyFn
from ..model import KeyVersion, NewKey


class KeyBackend(Protocol):
    name: str

    def generate(self, keyset: str, alg: Algorithm, key_bits: int) -> NewKey:
        """Make a key; return its kid, public JWK (None for HMAC) and sealed private material."""
        ...

    def signer(self, key: KeyVersion) -> SignFn:
        """A signing function for a key that still holds its material; KeyValidationError if it cannot."""
        ...

    def verifier(self, key: KeyVersion) -> VerifyFn:
        """A verifying function: from the published JWK, or the secret for HMAC keys."""
        ...
