"""Wiring: settings -> store, backends, KEK, services. Used by the server and the CLI alike."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .backends import KeyBackend
from .backends.local import LocalBackend
from .clients import ClientRegistry
from .clock import Clock, SystemClock
from .config import Settings, sqlite_path
from .errors import ConfigError
from .kek import LoadedKek, load_kek
from .service import KeyService
from .stores import Store
from .stores.sqlite import SQLiteStore


@dataclass
class Runtime:
    settings: Settings
    store: Store
    keys: KeyService
    clients: ClientRegistry
    kek: LoadedKek
    clock: Clock

    def close(self) -> None:
        self.store.close()


def open_store(settings: Settings) -> Store:
    if settings.embedded:
        return SQLiteStore(sqlite_path(settings.store_url))
    from .stores.redis import RedisStore  # only deployments with replicas need redis-py loaded

    return RedisStore(settings.store_url)


VAULT_TIMEOUT_SECONDS = 5  # hvac's default is 30 s; a token request should fail fast with 503 instead


def open_vault(settings: Settings) -> KeyBackend:
    """The Transit backend, authenticated with vault.token_file or VAULT_TOKEN."""
    import hvac

    from .backends.vault import VaultBackend

    token = os.environ.get("VAULT_TOKEN", "")
    if settings.vault.token_file:
        try:
            token = Path(settings.vault.token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"vault.token_file: cannot read {settings.vault.token_file}: {exc.strerror}") from None
    if not token:
        raise ConfigError("vault.token_file: a keyset uses backend = vault; give a token file or set VAULT_TOKEN")
    client = hvac.Client(url=settings.vault.addr, token=token, timeout=VAULT_TIMEOUT_SECONDS)  # type: ignore[no-untyped-call]
    return VaultBackend(client, mount=settings.vault.transit_mount)


def build_runtime(settings: Settings, clock: Clock | None = None, *, start: bool = True) -> Runtime:
    """Open the store and backends; with `start`, create missing keys and load them."""
    clock = clock or SystemClock()
    kek = load_kek(settings.kek_file, create=settings.embedded)
    store = open_store(settings)
    try:
        backends: dict[str, KeyBackend] = {"local": LocalBackend(kek.derive("local-keys"))}
        if any(p.backend == "vault" for p in settings.keysets.values()):
            backends["vault"] = open_vault(settings)
        keys = KeyService(settings, store, backends, clock)
        clients = ClientRegistry(store, kek.derive("client-secret-pepper"), clock, settings.keysets)
        if start:
            keys.start()
    except BaseException:
        store.close()
        raise
    return Runtime(settings, store, keys, clients, kek, clock)
