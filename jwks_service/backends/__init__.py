"""Key backends: where private keys live and how bytes get signed.

A backend makes keys and signs bytes; it never builds tokens. Private material stays inside the
backend object (sealed at rest for the local backend, inside Vault for the Vault backend).

Every backend is a `KeyBackend`. A backend that keeps its keys elsewhere (VaultBackend) has some of
the optional capabilities below as well; the service asks with `isinstance`, when it installs a key
or plans a transition, never per token.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol, runtime_checkable

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


@runtime_checkable
class VerifiesRemotely(Protocol):
    """A backend some of whose keys verify by a call elsewhere (Vault HMAC keys): such a check stays
    off the event loop."""

    def verifies_remotely(self, key: KeyVersion) -> bool: ...


@runtime_checkable
class SignsBatches(Protocol):
    """A backend that signs remotely and signs many inputs in one call (the micro-batcher's)."""

    def sign_batch(self, key: KeyVersion, inputs: Sequence[bytes]) -> list[bytes]:
        """One signature per input, in order, with the key's pinned version."""
        ...


@runtime_checkable
class SignsBatchesAsync(Protocol):
    """`SignsBatches` as a coroutine that does not block the event loop."""

    async def sign_batch_async(self, key: KeyVersion, inputs: Sequence[bytes]) -> list[bytes]: ...


@runtime_checkable
class RemoteVersions(Protocol):
    """A backend whose key versions live elsewhere (Vault Transit): a version made there cannot be
    taken back, so the service claims a keyset before it makes one."""

    def latest_version(self, keyset: str) -> int:
        """The newest version the backend holds for the keyset (0: none)."""
        ...

    def version_of(self, key: KeyVersion) -> int | None:
        """The backend's version behind a key record; None if it names none."""
        ...


@runtime_checkable
class AdoptsVersions(Protocol):
    """A backend where versions may be made behind the service's back (a Transit rotate): it turns
    one into a key record."""

    def adopt(self, keyset: str, alg: Algorithm, key_bits: int, version: int) -> NewKey: ...


@runtime_checkable
class RetiresRemotely(Protocol):
    """A backend that holds key material elsewhere and destroys it there when a key is retired."""

    def retire(self, key: KeyVersion, live: Iterable[KeyVersion]) -> int:
        """Destroy what `key` needs and no key of `live` does; how many versions went."""
        ...
