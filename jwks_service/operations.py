"""What the command line does besides serving, on the store and KEK the server uses: check them against
the configuration, export and import a backup, prune the audit log, issue a token to try things out.

Each function opens what it needs (runtime.py) and closes it again, and creates nothing that is not
there: neither a store nor a KEK. What there is to tell goes to the `say` and `progress` callbacks
(headings and the lines under them), which the CLI prints.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path

from . import audit
from . import backup as backups
from .backends import KeyBackend
from .backends.local import LocalBackend
from .backup_checks import check_config, check_keys, check_target
from .backup_merge import restore
from .clock import SystemClock
from .config import Settings, sqlite_path
from .errors import ConfigError, InvalidRequestError, JwksServiceError, NotFoundError
from .model import Keyset
from .runtime import (
    AUDIT_PRUNE_BATCH,
    Runtime,
    build_runtime,
    open_kek,
    open_store,
    open_vault,
    open_vault_auth,
    sealed_under_another_kek,
)
from .service import KeyService

Say = Callable[[str], None]


def store_exists(settings: Settings) -> bool:
    """Whether the store is there to read; opening a SQLite store that is not creates it."""
    if settings.store_url.startswith("sqlite:"):
        return sqlite_path(settings.store_url).exists()
    return True  # a store server: opening it creates nothing


def _require_store(settings: Settings, nothing_to: str) -> None:
    if not store_exists(settings):
        path = sqlite_path(settings.store_url)
        raise NotFoundError(f"no store at {path}: nothing to {nothing_to} (check store.url)")


def stored_keysets(settings: Settings, warn: Say) -> dict[str, Keyset] | None:
    """The stored keysets, checked against the configuration as a start checks them (ConfigError);
    {} without creating a store that does not exist yet; None (after a warning) when the store
    cannot be read."""
    if not store_exists(settings):
        return {}
    try:
        store = open_store(settings)
    except JwksServiceError as exc:
        warn(f"cannot read the store: {exc.description}")
        return None
    try:
        # The same check a start makes; it reads the store and the settings only (no backends needed).
        KeyService(settings, store, {}, SystemClock()).check_store_against_config()
        stored = {ks.name: ks for ks in store.list_keysets()}
        _check_kek(settings, [ks for ks in stored.values() if ks.name in settings.keysets], warn)
        return stored
    except ConfigError:
        raise
    except JwksServiceError as exc:
        warn(f"cannot read the store: {exc.description}")
        return None
    finally:
        store.close()


def _check_kek(settings: Settings, keysets: list[Keyset], warn: Say) -> None:
    """The check a start makes: the KEK unseals the live local keys (ConfigError when none of a
    keyset's does, a warning when some do not). A wrapped KEK needs Vault: not checked here."""
    if settings.kek_transit_key or not any(ks.backend == "local" and ks.keys for ks in keysets):
        return
    if not Path(settings.kek_file).exists():
        if any(k.verifies and k.sealed_private for ks in keysets if ks.backend == "local" for k in ks.keys):
            raise ConfigError(
                f"secrets.kek_file: {settings.kek_file} does not exist, but the store holds keys sealed under a KEK:"
                " put that KEK file back there"
            )
        return
    kek = open_kek(settings, create=False)
    for name, why in sealed_under_another_kek(keysets, LocalBackend(kek.derive("local-keys")), kek).items():
        warn(f"keyset {name}: {why}")


def prune_audit(settings: Settings, now: float, actor: str) -> tuple[int, float]:
    """Delete the audit events older than audit.retention, all of them now (in batches): how many
    went, and the time before which they did."""
    _require_store(settings, "prune")
    before = now - settings.audit_retention
    store = open_store(settings)
    try:
        return audit.prune(store, before, now, actor, AUDIT_PRUNE_BATCH, until_done=True), before
    finally:
        store.close()


def verify_audit(settings: Settings) -> audit.Verdict:
    """Check the stored audit chain (audit.verify): read-only, the sinks are not opened."""
    _require_store(settings, "verify")
    store = open_store(replace(settings, audit_file="", audit_syslog=False))
    try:
        return audit.AuditLog(store).verify()
    finally:
        store.close()


def export_backup(settings: Settings, now: float, say: Say, progress: Say) -> bytes:
    """The store as a backup file's bytes, tagged under the KEK."""
    _require_store(settings, "export")
    kek = open_kek(settings, create=False)  # keys the backup's integrity tag
    store = open_store(settings)
    try:
        say(f"exporting {settings.store_display}:")
        backup = backups.collect(store, settings.issuer, now, progress)
    finally:
        store.close()
    return backups.encode(backups.to_document(backup), kek.derive(backups.MAC_PURPOSE))


def check_backup(settings: Settings, data: bytes, say: Say) -> backups.Backup:
    """Everything an import checks before the store is even opened: the file's tag under the KEK,
    its records against the configuration, and that the KEK or Vault holds every live key."""
    document = backups.load(data)
    if not Path(settings.kek_file).exists():
        raise InvalidRequestError(
            f"secrets.kek_file: {settings.kek_file} does not exist; copy the KEK file the backup was made under"
            " there (mode 0600). Import refused, nothing written"
        )
    vault = open_vault_auth(settings) if settings.uses_vault else None
    try:
        kek = open_kek(settings, vault, create=False)
        backups.verify(document, kek.derive(backups.MAC_PURPOSE))
        backup = backups.parse(document)
        check_config(backup, settings)
        for line in backups.describe(backup):
            say(line)
        say(f"the backup's integrity tag verifies under the KEK {settings.kek_file}")
        if backup.issuer != settings.issuer:
            say(
                f"warning: the backup is of issuer {backup.issuer} but this configuration's issuer is"
                f" {settings.issuer}: tokens issued before will not verify here"
            )
        backends: dict[str, KeyBackend] = {"local": LocalBackend(kek.derive("local-keys"))}
        if vault is not None and any(ks.backend == "vault" for ks in backup.keysets):
            backends["vault"] = open_vault(settings, vault)
        checked = check_keys(backup, backends)
    finally:
        if vault is not None:
            vault.close()
    if "local" in checked:
        say(f"the KEK {settings.kek_file} unseals all {checked['local']} live keys of the backup")
    if "vault" in checked:
        say(f"Vault Transit holds all {checked['vault']} live keys of the backup")
    return backup


def import_backup(
    settings: Settings, backup: backups.Backup, *, force: bool, source: str, actor: str, say: Say, progress: Say
) -> Mapping[str, int]:
    """Write a checked backup into the store (merged into it with `force`): how much was written."""
    # start=False: a start would create keys in an empty store before the import lands.
    rt = build_runtime(settings, start=False)
    try:
        check_target(rt.store, backup, force=force)
        say(f"importing into {settings.store_display}:")
        return restore(backup, rt.store, rt.clock.now(), settings.keysets, source, progress, actor=actor)
    finally:
        rt.close()


def issue_token(rt: Runtime, client_id: str, actor: str) -> str:
    """A token for one client, with all its scopes, for its first audience; audited before it is
    returned (the jti, never the token)."""
    client = rt.clients.read(client_id)
    issued = rt.keys.issue(client, " ".join(client.scopes), client.audiences[0])
    event = audit.event(
        rt.clock.now(),
        actor,
        "token.issue",
        client.client_id,
        kid=issued.kid,
        jti=issued.claims["jti"],
        scope=issued.scope,
        audience=client.audiences[0],
        expires_in=issued.expires_in,
    )
    rt.audit_log.record([event])
    return issued.token
