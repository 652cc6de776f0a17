"""Wiring: settings -> store, backends, KEK, services. Used by the server and the CLI alike."""

from __future__ import annotations

from dataclasses import dataclass

from .backends import KeyBackend
from .backends.local import LocalBackend
from .clients import ClientRegistry
from .clock import Clock, SystemClock
from .config import Settings, sqlite_path
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


def build_runtime(settings: Settings, clock: Clock | None = None, *, start: bool = True) -> Runtime:
    """Open the store and backends; with `start`, create missing keys and load them."""
    clock = clock or SystemClock()
    kek = load_kek(settings.kek_file, create=settings.embedded)
    store = open_store(settings)
    try:
        backends: dict[str, KeyBackend] = {"local": LocalBackend(kek.derive("local-keys"))}
        keys = KeyService(settings, store, backends, clock)
        clients = ClientRegistry(store, kek.derive("client-secret-pepper"), clock, settings.keysets)
        if start:
            keys.start()
    except BaseException:
        store.close()
        raise
    return Runtime(settings, store, keys, clients, kek, clock)
