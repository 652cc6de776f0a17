"""Wiring: settings -> store, backends, KEK, services. Used by the server and the CLI alike."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from . import audit, audit_sinks
from .addresses import sqlite_path
from .backends import KeyBackend
from .backends.local import LocalBackend
from .client_keys import ClientKeys
from .clients import ClientRegistry
from .clock import Clock, SystemClock
from .config import Settings
from .errors import ConfigError, JwksServiceError, KeyValidationError, NotFoundError, UnavailableError
from .fetchers import AdoptionReader, AdoptionRecorder
from .kek import LoadedKek, load_kek, load_wrapped_kek
from .model import Keyset
from .service import KeyService
from .stores import Store
from .stores.sqlite import SQLiteStore

if TYPE_CHECKING:
    from .stores.redis_credentials import RedisCredentials
    from .vault_auth import VaultAuth

log = logging.getLogger("jwks_service")

# Audit retention: each replica prunes once an hour, at most AUDIT_PRUNE_BATCH events a call, and
# again a minute later while a call found a full batch (a backlog, e.g. after retention was shortened).
AUDIT_PRUNE_EVERY = 3600.0
AUDIT_PRUNE_BACKLOG = 60.0
AUDIT_PRUNE_BATCH = 1000


@dataclass
class Runtime:
    settings: Settings
    store: Store
    keys: KeyService
    clients: ClientRegistry
    kek: LoadedKek
    clock: Clock
    vault: VaultAuth | None = None  # the Vault login (and its renewal thread) when anything uses Vault
    audit_prune_due: float = float("-inf")  # when this process prunes the audit log next
    audit_log: audit.AuditLog = field(init=False)
    adoption: AdoptionReader = field(init=False)  # who holds which key (API.md §6), from the store's records
    fetches: AdoptionRecorder = field(init=False)  # this process's JWKS fetches, until flushed to the store

    def __post_init__(self) -> None:
        self.audit_log = audit.AuditLog(self.store)
        self.adoption = AdoptionReader(self.store, self.settings, self.clock, lambda: self.keys.snapshot.keysets)
        self.fetches = AdoptionRecorder(self.settings.adoption)
        self.keys.rotation.adoption_source = self.adoption  # the promotion gate reads it (API.md §6)

    def prune_audit(self) -> int:
        """Delete audit events older than audit.retention when due (see AUDIT_PRUNE_EVERY): blocking
        store I/O, for the scheduler's worker thread, never the event loop. Never raises for a store
        failure (logged, tried again a minute later)."""
        now = self.clock.now()
        if now < self.audit_prune_due:
            return 0
        try:
            deleted = audit.prune(self.store, now - self.settings.audit_retention, now, "scheduler", AUDIT_PRUNE_BATCH)
        except JwksServiceError as exc:
            log.warning("pruning the audit log failed: %s", exc.description)
            self.audit_prune_due = now + AUDIT_PRUNE_BACKLOG
            return 0
        self.audit_prune_due = now + (AUDIT_PRUNE_BACKLOG if deleted >= AUDIT_PRUNE_BATCH else AUDIT_PRUNE_EVERY)
        return deleted

    def close(self) -> None:
        self.store.close()  # first: its Redis credentials may give their lease back through the Vault login
        if self.vault is not None:
            self.vault.close()


def open_store(settings: Settings, vault: VaultAuth | None = None) -> Store:
    """The configured store, with the [audit] sinks listening to the events it appends. Redis
    credentials from Vault ([store] vault_kv, vault_creds) are read with `vault`, the runtime's login,
    or with a login of the store's own when none is given (closed with the store)."""
    store: Store
    if settings.embedded:
        store = SQLiteStore(sqlite_path(settings.store_url))
    else:
        from .stores.redis import RedisStore  # only deployments with replicas need redis-py loaded

        url, credentials = redis_credentials(settings, vault)
        try:
            store = RedisStore(url, settings.redis, credential_provider=credentials)
        except BaseException:
            if credentials is not None:
                credentials.close()
            raise
    for sink in audit_sinks.sinks(settings.audit_file, settings.audit_syslog):
        store.audit_tap.listen(sink.write)
    return store


def redis_credentials(settings: Settings, vault: VaultAuth | None) -> tuple[str, RedisCredentials | None]:
    """The store URL to connect to and where its credentials come from ([store] password_file, vault_kv,
    vault_creds; None: the URL's own). With a source, the URL keeps its username (if any) but no password."""
    from .stores import redis_credentials as rc

    redis = settings.redis
    if not redis.credential_source:
        return settings.store_url, None
    url, username = rc.split_user(settings.store_url)
    if redis.password_file:
        return url, rc.PasswordFile(redis.password_file, username)
    closers = []
    if vault is None:
        vault = open_vault_auth(settings)
        vault.start()
        closers.append(vault.close)
    if redis.vault_kv:
        path, field_name = redis.kv_path_field
        return url, rc.VaultKV(vault.client, path, field_name, username, on_close=closers)
    return url, rc.VaultCreds(vault.client, redis.vault_creds, on_close=closers)


def vault_users(settings: Settings) -> str:
    """Who needs Vault, for messages."""
    users = [f"keysets.{p.name} uses backend = vault" for p in settings.keysets.values() if p.backend == "vault"]
    if settings.kek_transit_key:
        users.insert(0, f"secrets.kek wraps the KEK with Vault Transit key {settings.kek_transit_key}")
    if settings.redis.vault_kv:
        users.append(f"store.vault_kv reads the Redis password from Vault KV {settings.redis.vault_kv}")
    if settings.redis.vault_creds:
        users.append(f"store.vault_creds reads the Redis credentials from Vault {settings.redis.vault_creds}")
    return ", ".join(users)


def open_vault_auth(settings: Settings) -> VaultAuth:
    """Log in to Vault (token or AppRole, see vault_auth). A wrapped KEK cannot wait for Vault: then an
    unreachable Vault is an error; Vault-backed keysets alone start degraded and recover."""
    from .vault_auth import VaultAuth

    auth = VaultAuth(settings.vault, needed_by=vault_users(settings))
    try:
        auth.login(strict=bool(settings.kek_transit_key))
    except UnavailableError as exc:
        raise UnavailableError(
            f"secrets.kek: cannot log in to Vault to unwrap the KEK: {exc.description}. Without it no stored key"
            " can be read; start again once Vault answers",
            retry_after=exc.retry_after,
        ) from None
    return auth


def open_vault(settings: Settings, auth: VaultAuth) -> KeyBackend:
    """The Transit backend, on the runtime's authenticated client."""
    from .backends.vault import VaultBackend

    return VaultBackend(auth.client, mount=settings.vault.transit_mount)


def open_kek(settings: Settings, auth: VaultAuth | None = None, *, create: bool) -> LoadedKek:
    """The KEK: read from secrets.kek_file, or unwrapped by Vault Transit (envelope mode, logging in
    with `auth`, or with a login of its own when none is given)."""
    key_name = settings.kek_transit_key
    if not key_name:
        return load_kek(settings.kek_file, create=create)
    from .kek_transit import TransitWrapper

    own = auth is None
    if auth is None:
        auth = open_vault_auth(settings)
    try:
        wrapper = TransitWrapper(auth.client, settings.vault.transit_mount, key_name)
        return load_wrapped_kek(settings.kek_file, wrapper, create=create)
    finally:
        if own:
            auth.close()


def sealed_under_another_kek(keysets: Iterable[Keyset], backend: LocalBackend, kek: LoadedKek) -> dict[str, str]:
    """Check that the KEK unseals the live keys of the local keysets: {keyset: why} for those where
    some do not. Raises ConfigError when a local keyset has live keys and none of them unseals: the
    KEK is not the one they were sealed under, and starting anyway would serve no token and seal new
    keys under the wrong KEK. AES-GCM only (no key parsing): cheap enough for every start."""
    partial: dict[str, str] = {}
    for ks in keysets:
        if ks.backend != "local":
            continue
        live = [k for k in ks.keys if k.verifies and k.sealed_private is not None]
        failed = []
        for key in live:
            try:
                backend.unseal(ks.name, key.kid, key.alg, key.sealed_private or b"")
            except KeyValidationError:
                failed.append(key.kid)
        if not failed:
            continue
        if len(failed) == len(live):
            raise ConfigError(
                f"secrets.kek_file: the KEK in {kek.path} unseals none of the {len(live)} live keys of keyset"
                f" {ks.name}: they were sealed under another KEK; restore the KEK file they were made with"
            )
        why = (
            f"keys {', '.join(failed)} do not unseal with the KEK in {kek.path} (sealed under another KEK);"
            " they cannot sign and must not be promoted: restore the right KEK file or revoke them"
        )
        partial[ks.name] = why
    return partial


def store_exists(settings: Settings) -> bool:
    """Whether the store is there to read; opening a SQLite store that is not creates it."""
    if settings.store_url.startswith("sqlite:"):
        return sqlite_path(settings.store_url).exists()
    return True  # a store server: opening it creates nothing


def build_runtime(
    settings: Settings, clock: Clock | None = None, *, start: bool = True, read_only: bool = False
) -> Runtime:
    """Open the store and backends; with `start`, create missing keys and load them. `read_only`
    (`keys list`, `clients list|show`): create nothing, neither a store nor a KEK nor a key; load
    what the store holds (NotFoundError when there is no store)."""
    if read_only and not store_exists(settings):
        path = sqlite_path(settings.store_url)
        raise NotFoundError(
            f"no store at {path.absolute()} (store.url {settings.store_url}, relative to this directory): nothing"
            " to read. Run this where the server runs, or with its --config; nothing was created"
        )
    clock = clock or SystemClock()
    vault = open_vault_auth(settings) if settings.uses_vault else None
    try:
        kek = open_kek(settings, vault, create=settings.embedded and not read_only)
        store = open_store(settings, vault)
    except BaseException:
        if vault is not None:
            vault.close()
        raise
    try:
        local = LocalBackend(kek.derive("local-keys"))
        backends: dict[str, KeyBackend] = {"local": local}
        if vault is not None:
            vault.start()  # renews the token from now on; Runtime.close() stops it
            if any(p.backend == "vault" for p in settings.keysets.values()):
                backends["vault"] = open_vault(settings, vault)
        keys = KeyService(settings, store, backends, clock)
        clients = ClientRegistry(
            store,
            kek.derive("client-secret-pepper"),
            clock,
            settings.keysets,
            ClientKeys(clock, allow_http=settings.clients_allow_http_jwks_uri),
        )
        if read_only:
            keys.check_store_against_config()  # refused as a start would refuse it
            keys.refresh(force=True)
        elif start:
            # Before start(): a start under the wrong KEK would also seal new keys under it.
            stored = [ks for ks in store.list_keysets() if ks.name in settings.keysets]
            try:
                unsealed = sealed_under_another_kek(stored, local, kek)
            except ConfigError:
                if not kek.generated:
                    raise
                kek.path.unlink(missing_ok=True)  # made just now, and nothing is sealed under it
                raise ConfigError(
                    f"secrets.kek_file: {kek.path} does not exist, but the store holds keys sealed under a KEK:"
                    " put that KEK file back there (no new one was kept)"
                ) from None
            for name, why in unsealed.items():
                log.error("keyset %s: %s", name, why)
            keys.start()
            keys.degraded.update(unsealed)  # not ready, with the reason, until restarted with the right KEK
    except BaseException:
        store.close()
        if vault is not None:
            vault.close()
        raise
    return Runtime(settings, store, keys, clients, kek, clock, vault)
