"""The optional capabilities of key backends (backends/__init__.py): VaultBackend has every one of them
with today's method names, LocalBackend none, so the service treats local keys as in-process ones."""

from __future__ import annotations

import pytest

from jwks_service.backends import (
    AdoptsVersions,
    RemoteVersions,
    RetiresRemotely,
    SignsBatches,
    SignsBatchesAsync,
    VerifiesRemotely,
)
from jwks_service.backends.local import LocalBackend
from jwks_service.backends.vault import VaultBackend

CAPABILITIES = [VerifiesRemotely, SignsBatches, SignsBatchesAsync, RemoteVersions, AdoptsVersions, RetiresRemotely]


@pytest.mark.parametrize("capability", CAPABILITIES, ids=lambda c: c.__name__)
def test_the_vault_backend_has_it_and_the_local_backend_not(capability: type) -> None:
    assert issubclass(VaultBackend, capability)
    assert not issubclass(LocalBackend, capability)


def test_a_backend_without_a_method_lacks_its_capability() -> None:
    class HalfRemote:
        def latest_version(self, keyset: str) -> int:
            return 0

    assert not isinstance(HalfRemote(), RemoteVersions)  # version_of is missing
