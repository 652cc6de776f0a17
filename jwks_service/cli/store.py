"""`jwks-service check-config`, `kek ...`, `backup ...` and `audit prune|verify`: the configuration, the KEK
and the store as a whole, without starting the service (operations.py does the work)."""

from __future__ import annotations

import argparse
import os
import time

from .. import backup as backups
from .. import operations, tls
from ..clock import rfc3339
from ..config import Settings, format_duration, policy_warnings
from ..errors import ConfigError, ConflictError
from ..issuer import issuer_mismatch
from ..lifecycle import next_rotation_at
from .common import actor, human, print_table, progress, settings_of, stderr


def cmd_check_config(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    cert = tls.check(settings.tls_cert, settings.tls_key) if settings.tls else None  # as `serve` checks it
    source = settings.config_file or "embedded defaults"
    if settings.from_environment:  # what the environment set, by variable name (never a value)
        source += ", with " + ", ".join(settings.from_environment) + " from the environment"
    print(f"configuration: {source}")
    # Every check serve makes before it serves (API.md §8), creating nothing; a refusal exits non-zero.
    stored = operations.check_deployment(settings, lambda line: print(f"  {line}"), lambda w: stderr(f"warning: {w}"))
    print("configuration OK: serve would start")
    print(
        f"issuer {settings.issuer}, listen {settings.listen}, store {settings.store_display},"
        f" jwks.max_age {format_duration(settings.jwks_max_age)}"
        f", stale-if-error {format_duration(settings.stale_if_error)}"
    )
    if mismatch := issuer_mismatch(settings):
        stderr(f"warning: {mismatch}")
    windows = ("rotation_period", "prepublish", "token_ttl", "leeway", "verify_window")
    print_table(
        [
            [p.name, p.alg, p.backend, *(format_duration(getattr(p, w)) for w in windows)]
            for p in settings.keysets.values()
        ],
        ["KEYSET", "ALG", "BACKEND", "ROTATION", "PREPUBLISH", "TOKEN_TTL", "LEEWAY", "VERIFY_WINDOW"],
    )
    now = time.time()
    for name, policy in settings.keysets.items():
        ks = stored.get(name)
        at = next_rotation_at(policy, ks) if ks is not None else None
        if at is None:
            print(f"{name}: next rotation: (no keys yet)")
        elif at <= now:
            print(f"{name}: next rotation: {rfc3339(at)} (due now: the running service rotates it)")
        else:
            print(f"{name}: next rotation: {rfc3339(at)} (in {human(at - now)})")
    print(f"client secrets: due for rotation {format_duration(settings.client_secret_max_age)} after they were issued")
    _listeners(settings, cert, now)
    for warning in policy_warnings(settings):
        stderr(f"warning: {warning}")
    return 0


def _listeners(settings: Settings, cert: tls.Certificate | None, now: float) -> None:
    """HTTPS and where the admin API is served."""
    if cert is not None:
        print(f"TLS: {cert.summary}, key {cert.key_file}; re-read on SIGHUP")
        if cert.not_after <= now:
            stderr(f"warning: http.tls_cert: the certificate in {cert.cert_file} has expired")
    else:
        print("TLS: off (plain HTTP; set [http] tls_cert and tls_key, or terminate TLS in a proxy)")
    if settings.admin_listen:
        print(f"admin API and /metrics: only on {settings.admin_listen} (the public listener answers 404)")
    else:
        print("admin API and /metrics: on the public listener ([http] admin_listen moves them)")


def cmd_kek_rewrap(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    if not settings.kek_transit_key:
        raise ConfigError(
            'secrets.kek: rewrap is for envelope mode (kek = "vault-transit:<key>"); this KEK file is not wrapped'
        )
    from ..kek import rewrap_kek
    from ..kek_transit import TransitWrapper
    from ..runtime import open_vault_auth

    auth = open_vault_auth(settings)
    try:
        wrapper = TransitWrapper(auth.client, settings.vault.transit_mount, settings.kek_transit_key)
        old, new = rewrap_kek(settings.kek_file, wrapper)
    finally:
        auth.close()
    print(
        f"{settings.kek_file} is already wrapped by the latest version (v{new}) of {wrapper.description}"
        if old == new
        else f"rewrapped {settings.kek_file}: v{old} -> v{new} of {wrapper.description}. Copy the file to every"
        f" replica; then min_decryption_version may be raised to {new}."
    )
    return 0


def cmd_kek_wrap(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    if settings.kek_transit_key:
        raise ConfigError(f"secrets.kek: the KEK is already wrapped by Vault Transit key {settings.kek_transit_key}")
    if not settings.vault.addr:
        raise ConfigError("vault.addr: wrapping the KEK needs Vault; set [vault] addr (or VAULT_ADDR) and a login")
    from ..kek import wrap_plain_kek
    from ..kek_transit import TransitWrapper
    from ..vault_auth import VaultAuth

    auth = VaultAuth(settings.vault, needed_by="`jwks-service kek wrap` needs Vault")
    try:
        auth.login(strict=True)
        wrapper = TransitWrapper(auth.client, settings.vault.transit_mount, args.transit_key)
        wrap_plain_kek(settings.kek_file, args.out, wrapper)
    finally:
        auth.close()
    print(
        f"wrote {args.out} (mode 0600): the KEK of {settings.kek_file}, wrapped by {wrapper.description}. Now set\n"
        f'  [secrets]\n  kek = "vault-transit:{args.transit_key}"\n  kek_file = "{args.out}"\n'
        f"start the service, check it serves its keys, give every replica the new file, and only then delete"
        f" {settings.kek_file} (it holds the KEK in plaintext)."
    )
    return 0


def cmd_backup_export(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    if not args.force and os.path.lexists(args.file):
        raise ConflictError(f"{args.file} exists; use --force to overwrite it")
    data = operations.export_backup(settings, time.time(), stderr, progress)
    backups.write_file(args.file, data, force=args.force)
    stderr(f"wrote {args.file} ({len(data)} bytes, mode 0600), with an integrity tag keyed by the KEK")
    # What a restore needs besides the file: the KEK (and the Transit key that wraps it).
    if settings.kek_transit_key:
        needs = (
            f"Private keys in it are sealed under the KEK, which {settings.kek_file} holds wrapped by Vault Transit key"
            f" {settings.kek_transit_key}, and client secrets are keyed by it: a restore needs that same file and"
            " that Transit key. Keep a copy of the file, separately from the backup."
        )
    else:
        needs = (
            f"Private keys in it are sealed under the KEK ({settings.kek_file}) and client secrets are keyed by it:"
            " a restore needs that same KEK file. Keep a copy of it, separately from the backup."
        )
    stderr(needs)
    return 0


def cmd_backup_import(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    # Everything is checked before the store is even opened: the tag, the records, the keys.
    backup = operations.check_backup(settings, backups.read_file(args.file), stderr)
    counts = operations.import_backup(
        settings, backup, force=args.force, source=str(args.file), actor=actor(), say=stderr, progress=progress
    )
    print(f"imported {backups.summary(counts)} from {args.file}")
    return 0


def cmd_audit_prune(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    deleted, before = operations.prune_audit(settings, time.time(), actor())
    print(
        f"pruned {deleted} audit event{'' if deleted == 1 else 's'} older than {rfc3339(before)}"
        f" (audit.retention {format_duration(settings.audit_retention)})"
    )
    return 0


def cmd_audit_verify(args: argparse.Namespace) -> int:
    """Exit 0 when every stored event fits the chain, 1 naming the first that does not."""
    verdict = operations.verify_audit(settings_of(args))
    if verdict.before_chain:
        print(
            f"{verdict.before_chain} older event{'' if verdict.before_chain == 1 else 's'} predate the chain"
            " (written before events were chained) and are not covered"
        )
    if not verdict.ok:
        stderr(f"audit log: event {verdict.bad_id} is {verdict.problem} (after {verdict.checked} events checked)")
        return 1
    if not verdict.starts_at:
        print("audit log: no chained events yet")
    else:
        print(f"audit log verified: {verdict.checked} events, the chain starting at id {verdict.starts_at}")
    return 0
