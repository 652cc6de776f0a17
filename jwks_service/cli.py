"""The `jwks-service` command: serve, and administer the same store the server uses."""

from __future__ import annotations

import argparse
import getpass
import itertools
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__, audit
from . import backup as backups
from .backends import KeyBackend
from .backends.local import LocalBackend
from .backup_checks import check_config, check_keys, check_target
from .backup_merge import restore
from .clients import check_grace
from .clock import SystemClock, rfc3339
from .config import (
    Settings,
    format_duration,
    load_settings,
    parse_duration,
    policy_warnings,
    split_listen,
    sqlite_path,
)
from .errors import ConfigError, ConflictError, InvalidRequestError, JwksServiceError, NotFoundError
from .kek import LoadedKek
from .lifecycle import next_rotation_at
from .model import Client, Keyset, KeyState
from .runtime import Runtime, build_runtime, open_kek, open_store, open_vault, open_vault_auth, sealed_under_another_kek
from .service import KeyService


def _ts(value: float | None) -> str:
    return rfc3339(value) or "-"


def _human(seconds: float) -> str:
    """A duration for people: its two largest units, e.g. 12d 3h, 5h, 20m 5s, 0s."""
    s = int(abs(seconds))
    units = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))
    for (unit, size), (small, small_size) in itertools.pairwise(units):
        if s >= size:
            rest = (s % size) // small_size
            return f"{s // size}{unit}" + (f" {rest}{small}" if rest else "")
    return f"{s}s"


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


def _print_table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _actor() -> str:
    """Who a CLI action is audited as: the OS user (API.md §8)."""
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):  # no LOGNAME/USER and no password database entry
        return "cli:unknown"


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(args.config)


def _runtime(args: argparse.Namespace) -> Runtime:
    rt = build_runtime(_settings(args))
    if rt.kek.generated:
        print(_generated_kek(rt.kek), file=sys.stderr)
    return rt


def _generated_kek(kek: LoadedKek) -> str:
    if kek.wrapped_by:
        return (
            f"Generated a new key-encryption key, wrapped by {kek.wrapped_by}, in {kek.path} (mode 0600). Back up"
            " both: without that file and that Transit key the stored private keys cannot be read."
        )
    return (
        f"Generated a new key-encryption key in {kek.path} (mode 0600). Back it up: without it the"
        " stored private keys cannot be read."
    )


# On SIGTERM, requests in flight get this long to finish; open /keys/events streams are then cut
# (their clients reconnect elsewhere with Last-Event-ID).
GRACEFUL_SHUTDOWN_SECONDS = 3


def _http_protocol() -> Any:
    """uvicorn's httptools protocol with one write per response (http/corked.py), when httptools is
    installed (it is a dependency); else uvicorn's own choice."""
    try:
        from .http.corked import CorkedHttpToolsProtocol
    except ImportError:
        return "auto"
    return CorkedHttpToolsProtocol


def _sighup(signum: int, frame: object) -> None:
    # `systemctl reload` sends SIGHUP, whose default action ends the process. Nothing needs it:
    # keys, clients and revocations are re-read from the store as they change.
    logging.getLogger("jwks_service").warning(
        "SIGHUP: nothing to reload (keys, clients and revocations follow the store by themselves; a changed"
        " configuration needs a restart); still serving"
    )


def uvicorn_proxy_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's X-Forwarded-For handling from `[http] trusted_proxies`: off unless proxies are named.

    uvicorn's own default believes the header from 127.0.0.1 (or whatever FORWARDED_ALLOW_IPS says),
    which lets a local client pick its source address and so dodge the failed-login throttle or lock
    someone else out. uvicorn takes addresses and CIDR networks alike.
    """
    if not settings.trusted_proxies:
        return {"proxy_headers": False}
    return {"proxy_headers": True, "forwarded_allow_ips": list(settings.trusted_proxies)}


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    # From the first moment: uvicorn handles SIGINT and SIGTERM only (with --workers, its supervisor
    # takes SIGHUP over and restarts the workers one by one).
    signal.signal(signal.SIGHUP, _sighup)
    settings = _settings(args)
    listen = args.listen or settings.listen
    host, port = split_listen(listen)
    drain_seconds = parse_duration(args.drain, "--drain")
    if drain_seconds and args.workers > 1:
        raise InvalidRequestError("--drain works with one worker per process: run one replica per worker instead")
    rt = build_runtime(settings)  # validates, creates keys, tells the user what happened
    try:
        if rt.kek.generated:
            print(_generated_kek(rt.kek))
        n_clients = len(rt.store.list_clients())
        keysets = ", ".join(f"{n} ({p.alg})" for n, p in settings.keysets.items())
        print(
            f"jwks-service {__version__}: issuer {settings.issuer}, store {settings.store_display}, keysets {keysets}"
        )
        print(f"JWKS:  http://{listen}/.well-known/jwks.json")
        if n_clients == 0:
            print("No clients yet. Create one and get a token:")
            print("  jwks-service clients create demo --scope read --audience api")
            print(f"  curl -s -u CLIENT_ID:CLIENT_SECRET -d grant_type=client_credentials http://{listen}/oauth/token")
    finally:
        rt.close()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if os.environ.get("FORWARDED_ALLOW_IPS"):
        logging.getLogger("jwks_service").warning(
            "FORWARDED_ALLOW_IPS is ignored: name the proxies whose X-Forwarded-For is believed in [http]"
            " trusted_proxies (or JWKS_HTTP__TRUSTED_PROXIES); now: %s",
            ", ".join(settings.trusted_proxies) or "none",
        )
    if args.workers > 1:
        if settings.config_file:
            os.environ["JWKS_CONFIG"] = settings.config_file
        uvicorn.run(
            "jwks_service.http.app:app_from_env",
            factory=True,
            host=host,
            port=port,
            workers=args.workers,
            log_level="info",
            access_log=False,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
            http=_http_protocol(),
            **uvicorn_proxy_options(settings),
        )
    else:
        from .http.app import create_app
        from .http.drain import Drain, DrainingServer

        drain = Drain()
        config = uvicorn.Config(
            create_app(settings, drain=drain),
            host=host,
            port=port,
            log_level="info",
            access_log=False,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
            http=_http_protocol(),
            **uvicorn_proxy_options(settings),
        )
        server = DrainingServer(config, drain, drain_seconds)
        server.run()
        if not server.started:
            return 1  # uvicorn logged why (the address is in use, ...)
    return 0


def _key_rows(rt: Runtime) -> list[dict[str, Any]]:
    rows = []
    for ks in rt.store.list_keysets():
        policy = rt.settings.keysets.get(ks.name)
        rotation = next_rotation_at(policy, ks) if policy else None
        for k in ks.keys:
            rows.append(
                {
                    "keyset": ks.name,
                    "kid": k.kid,
                    "alg": k.alg,
                    "state": k.state.value,
                    "created_at": k.created_at,
                    "activated_at": k.activated_at,
                    "retire_at": k.retire_at,
                    "retired_at": k.retired_at,
                    "revoked_at": k.revoked_at,
                    "next_rotation_at": rotation if k.state == KeyState.CURRENT else None,
                }
            )
    return rows


def cmd_keys_list(args: argparse.Namespace) -> int:
    rt = _runtime(args)
    try:
        rows = _key_rows(rt)
    finally:
        rt.close()
    if args.json:
        print(json.dumps({"keys": rows}, indent=2))
        return 0
    _print_table(
        [
            [
                r["keyset"],
                r["kid"],
                r["alg"],
                r["state"],
                _ts(r["created_at"]),
                _ts(r["activated_at"]),
                _ts(r["retire_at"] or r["next_rotation_at"]),
            ]
            for r in rows
        ],
        ["KEYSET", "KID", "ALG", "STATE", "CREATED", "ACTIVATED", "RETIRES/ROTATES"],
    )
    return 0


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    rt = _runtime(args)
    try:
        result = rt.keys.rotate(args.keyset, force=args.force, reason=args.reason or "", actor=_actor())
    finally:
        rt.close()
    print(
        json.dumps(result)
        if args.json
        else f"rotated {args.keyset}: current {result['current']}, next {result['next']}"
    )
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    rt = _runtime(args)
    try:
        keyset, revoked = rt.keys.revoke(args.kid, reason=args.reason, actor=_actor())
        summary = rt.keys.summary(keyset.name)
        result = {"keyset": keyset.name, "revoked": revoked.kid, "current": summary["current"], "next": summary["next"]}
    finally:
        rt.close()
    if args.json:
        print(json.dumps(result))
    else:
        print(f"revoked {revoked.kid} in {keyset.name}: current {result['current']}, next {result['next']}")
    return 0


def cmd_clients_create(args: argparse.Namespace) -> int:
    ttl = parse_duration(args.ttl, "--ttl") if args.ttl else None
    rt = _runtime(args)
    try:
        client, secret = rt.clients.create(
            args.name, args.scope, args.audience, keyset=args.keyset, token_ttl=ttl, actor=_actor()
        )
    finally:
        rt.close()
    if args.json:
        print(json.dumps({**client.public_dict(), "client_secret": secret}))
    else:
        print(f"client_id:     {client.client_id}")
        print(f"client_secret: {secret}")
        print("The secret is shown only now; store it safely.")
    return 0


def _secret_status(client: Client, now: float, max_age: int) -> dict[str, Any]:
    """Age of the newest secret, when it is due for rotation, and how many secrets still work."""
    valid = [sec for sec in client.secrets if sec.expires_at is None or sec.expires_at > now]
    newest = max((sec.created_at for sec in client.secrets), default=client.created_at)
    due = newest + max_age
    return {
        "secret_age_seconds": int(now - newest),
        "secret_due_at": _ts(due),
        "secret_overdue": now >= due,
        "secrets_valid": len(valid),
    }


def _client_dict(client: Client, now: float, max_age: int) -> dict[str, Any]:
    return {**client.public_dict(), **_secret_status(client, now, max_age)}


def _due_text(status: dict[str, Any]) -> str:
    return f"{status['secret_due_at']}{' OVERDUE' if status['secret_overdue'] else ''}"


def cmd_clients_list(args: argparse.Namespace) -> int:
    rt = _runtime(args)
    try:
        clients = rt.store.list_clients()
        now = rt.clock.now()
    finally:
        rt.close()
    max_age = rt.settings.client_secret_max_age
    listed = [_client_dict(c, now, max_age) for c in clients]
    if args.json:
        print(json.dumps({"clients": listed, "secret_max_age": max_age}, indent=2))
        return 0
    _print_table(
        [
            [
                c["client_id"],
                c["name"],
                " ".join(c["scopes"]),
                " ".join(c["audiences"]),
                c["keyset"],
                format_duration(c["token_ttl"]),
                _ts(c["created_at"]),
                _human(c["secret_age_seconds"]),
                _due_text(c),
                str(c["secrets_valid"]),
            ]
            for c in listed
        ],
        ["CLIENT_ID", "NAME", "SCOPES", "AUDIENCES", "KEYSET", "TTL", "CREATED", "SECRET_AGE", "SECRET_DUE", "SECRETS"],
    )
    overdue = sum(1 for c in listed if c["secret_overdue"])
    if overdue:
        _stderr(
            f"{overdue} client secret{'s are' if overdue > 1 else ' is'} older than clients.secret_max_age"
            f" ({format_duration(max_age)}): jwks-service clients rotate-secret CLIENT_ID"
        )
    return 0


def cmd_clients_show(args: argparse.Namespace) -> int:
    rt = _runtime(args)
    try:
        client = rt.store.get_client(args.client_id)
        now = rt.clock.now()
    finally:
        rt.close()
    if client is None:
        raise NotFoundError(f"no client {args.client_id}")
    shown = {
        **_client_dict(client, now, rt.settings.client_secret_max_age),
        "secrets": [
            {
                "created_at": sec.created_at,
                "expires_at": sec.expires_at,
                "valid": sec.expires_at is None or sec.expires_at > now,
            }
            for sec in client.secrets
        ],
    }
    if args.json:
        print(json.dumps(shown, indent=2))
        return 0
    print(f"client_id:   {client.client_id}")
    print(f"name:        {client.name}")
    print(f"scopes:      {' '.join(client.scopes)}")
    print(f"audiences:   {' '.join(client.audiences)}")
    print(f"keyset:      {client.keyset}")
    print(f"token_ttl:   {format_duration(client.token_ttl)}")
    print(f"created:     {_ts(client.created_at)}")
    print(f"secret age:  {_human(shown['secret_age_seconds'])} (rotation due {_due_text(shown)})")
    print(f"secrets:     {shown['secrets_valid']} valid")
    for sec in shown["secrets"]:
        if sec["expires_at"] is None:
            state = "valid"
        else:
            state = f"{'valid until' if sec['valid'] else 'expired'} {_ts(sec['expires_at'])}"
        print(f"  created {_ts(sec['created_at'])}: {state}")
    return 0


def cmd_clients_rotate_secret(args: argparse.Namespace) -> int:
    try:
        grace = parse_duration(args.grace, "--grace") if args.grace != "0" else 0
    except ConfigError as exc:
        raise InvalidRequestError(exc.description) from None
    check_grace(grace, "--grace")  # before anything is opened or written
    rt = _runtime(args)
    try:
        client, secret = rt.clients.rotate_secret(args.client_id, grace, actor=_actor())
    finally:
        rt.close()
    if args.json:
        print(json.dumps({"client_id": client.client_id, "client_secret": secret, "grace": grace}))
    else:
        print(f"client_secret: {secret}")
        print(f"The previous secret keeps working for {format_duration(grace)}.")
    return 0


def cmd_clients_delete(args: argparse.Namespace) -> int:
    rt = _runtime(args)
    try:
        rt.clients.delete(args.client_id, actor=_actor())
    finally:
        rt.close()
    print(f"deleted client {args.client_id}")
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    rt = _runtime(args)
    try:
        client = rt.store.get_client(args.client_id)
        if client is None:
            raise JwksServiceError(f"no client {args.client_id}")
        issued = rt.keys.issue(client, " ".join(client.scopes), client.audiences[0])
        # Audited before it is printed: no token leaves without its event (the jti, never the token).
        audit.record(
            rt.store,
            [
                audit.event(
                    rt.clock.now(),
                    _actor(),
                    "token.issue",
                    client.client_id,
                    kid=issued.kid,
                    jti=issued.claims["jti"],
                    scope=issued.scope,
                    audience=client.audiences[0],
                    expires_in=issued.expires_in,
                )
            ],
        )
    finally:
        rt.close()
    print(issued.token)
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    settings = _settings(args)
    stored = _stored_keysets(settings)  # also refuses an alg or backend change while keys exist
    source = settings.config_file or "embedded defaults"
    print(f"configuration OK ({source})")
    print(
        f"issuer {settings.issuer}, store {settings.store_display},"
        f" jwks.max_age {format_duration(settings.jwks_max_age)}"
        f", stale-if-error {format_duration(settings.stale_if_error)}"
    )
    rows = [
        [
            p.name,
            p.alg,
            p.backend,
            format_duration(p.rotation_period),
            format_duration(p.prepublish),
            format_duration(p.token_ttl),
            format_duration(p.leeway),
            format_duration(p.verify_window),
        ]
        for p in settings.keysets.values()
    ]
    _print_table(rows, ["KEYSET", "ALG", "BACKEND", "ROTATION", "PREPUBLISH", "TOKEN_TTL", "LEEWAY", "VERIFY_WINDOW"])
    now = time.time()
    for name, policy in settings.keysets.items():
        ks = stored.get(name) if stored is not None else None
        at = next_rotation_at(policy, ks) if ks is not None else None
        if stored is None:
            print(f"{name}: next rotation: (unknown: the store cannot be read)")
        elif at is None:
            print(f"{name}: next rotation: (no keys yet)")
        elif at <= now:
            print(f"{name}: next rotation: {_ts(at)} (due now: the running service rotates it)")
        else:
            print(f"{name}: next rotation: {_ts(at)} (in {_human(at - now)})")
    print(f"client secrets: due for rotation {format_duration(settings.client_secret_max_age)} after they were issued")
    for warning in policy_warnings(settings):
        _stderr(f"warning: {warning}")
    return 0


def _store_exists(settings: Settings) -> bool:
    """Whether the store is there to read; opening a SQLite store that is not creates it."""
    if settings.store_url.startswith("sqlite:"):
        return sqlite_path(settings.store_url).exists()
    return True  # a store server: opening it creates nothing


def _stored_keysets(settings: Settings) -> dict[str, Keyset] | None:
    """The stored keysets, checked against the configuration; {} without creating a store that does
    not exist yet; None (with a warning) when the store cannot be read."""
    if not _store_exists(settings):
        return {}
    try:
        store = open_store(settings)
    except JwksServiceError as exc:
        _stderr(f"warning: cannot read the store: {exc.description}")
        return None
    try:
        # The same check a start makes; it reads the store and the settings only (no backends needed).
        KeyService(settings, store, {}, SystemClock()).check_store_against_config()
        stored = {ks.name: ks for ks in store.list_keysets()}
        _check_kek(settings, [ks for ks in stored.values() if ks.name in settings.keysets])
        return stored
    except ConfigError:
        raise
    except JwksServiceError as exc:
        _stderr(f"warning: cannot read the store: {exc.description}")
        return None
    finally:
        store.close()


def _check_kek(settings: Settings, keysets: list[Keyset]) -> None:
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
        _stderr(f"warning: keyset {name}: {why}")


def _progress(line: str) -> None:
    _stderr(f"  {line}")


def cmd_kek_rewrap(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if not settings.kek_transit_key:
        raise ConfigError(
            'secrets.kek: rewrap is for envelope mode (kek = "vault-transit:<key>"); this KEK file is not wrapped'
        )
    from .backends.vault import TransitWrapper
    from .kek import rewrap_kek
    from .runtime import open_vault_auth

    auth = open_vault_auth(settings)
    try:
        wrapper = TransitWrapper(auth.client, settings.vault.transit_mount, settings.kek_transit_key)
        old, new = rewrap_kek(settings.kek_file, wrapper)
    finally:
        auth.close()
    if old == new:
        print(f"{settings.kek_file} is already wrapped by the latest version (v{new}) of {wrapper.description}")
    else:
        print(
            f"rewrapped {settings.kek_file}: v{old} -> v{new} of {wrapper.description}. Copy the file to every"
            f" replica; then min_decryption_version may be raised to {new}."
        )
    return 0


def cmd_kek_wrap(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if settings.kek_transit_key:
        raise ConfigError(f"secrets.kek: the KEK is already wrapped by Vault Transit key {settings.kek_transit_key}")
    if not settings.vault.addr:
        raise ConfigError("vault.addr: wrapping the KEK needs Vault; set [vault] addr (or VAULT_ADDR) and a login")
    from .backends.vault import TransitWrapper
    from .kek import wrap_plain_kek
    from .vault_auth import VaultAuth

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
    settings = _settings(args)
    if not args.force and os.path.lexists(args.file):
        raise ConflictError(f"{args.file} exists; use --force to overwrite it")
    if not _store_exists(settings):
        path = sqlite_path(settings.store_url)
        raise NotFoundError(f"no store at {path}: nothing to export (check store.url)")
    kek = open_kek(settings, create=False)  # keys the backup's integrity tag
    store = open_store(settings)
    try:
        _stderr(f"exporting {settings.store_display}:")
        backup = backups.collect(store, settings.issuer, time.time(), _progress)
    finally:
        store.close()
    data = backups.encode(backups.to_document(backup), kek.derive(backups.MAC_PURPOSE))
    backups.write_file(args.file, data, force=args.force)
    _stderr(f"wrote {args.file} ({len(data)} bytes, mode 0600), with an integrity tag keyed by the KEK")
    if settings.kek_transit_key:
        _stderr(
            f"Private keys in it are sealed under the KEK, which {settings.kek_file} holds wrapped by Vault Transit key"
            f" {settings.kek_transit_key}, and client secrets are keyed by it: a restore needs that same file and"
            " that Transit key. Keep a copy of the file, separately from the backup."
        )
    else:
        _stderr(
            f"Private keys in it are sealed under the KEK ({settings.kek_file}) and client secrets are keyed by it:"
            " a restore needs that same KEK file. Keep a copy of it, separately from the backup."
        )
    return 0


def cmd_backup_import(args: argparse.Namespace) -> int:
    settings = _settings(args)
    document = backups.load(backups.read_file(args.file))
    if not Path(settings.kek_file).exists():
        raise InvalidRequestError(
            f"secrets.kek_file: {settings.kek_file} does not exist; copy the KEK file the backup was made under"
            " there (mode 0600). Import refused, nothing written"
        )
    # Everything is checked before the store is even opened: the tag, the records, the keys.
    vault = open_vault_auth(settings) if settings.uses_vault else None
    try:
        kek = open_kek(settings, vault, create=False)
        backups.verify(document, kek.derive(backups.MAC_PURPOSE))
        backup = backups.parse(document)
        check_config(backup, settings)
        for line in backups.describe(backup):
            _stderr(line)
        _stderr(f"the backup's integrity tag verifies under the KEK {settings.kek_file}")
        if backup.issuer != settings.issuer:
            _stderr(
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
        _stderr(f"the KEK {settings.kek_file} unseals all {checked['local']} live keys of the backup")
    if "vault" in checked:
        _stderr(f"Vault Transit holds all {checked['vault']} live keys of the backup")
    # start=False: a start would create keys in an empty store before the import lands.
    rt = build_runtime(settings, start=False)
    try:
        check_target(rt.store, backup, force=args.force)
        _stderr(f"importing into {settings.store_display}:")
        counts = restore(backup, rt.store, rt.clock.now(), settings.keysets, str(args.file), _progress, actor=_actor())
    finally:
        rt.close()
    print(f"imported {backups.summary(counts)} from {args.file}")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse, except that a word is an option only when it names one of this parser's options.

    argparse takes any word that starts with '-' for an option, but a kid is a base64url thumbprint
    and one in 64 starts with '-': `keys revoke -330Wr... --reason x` failed with "the following
    arguments are required: kid" in the middle of an emergency. Here a word is an option only when
    it is one of the parser's option strings (exactly, as `--name=value`, or as an unambiguous
    prefix of a `--long` option); anything else is a value, so kids, client ids, names and option
    values may start with '-'. `--` still ends the options (`keys revoke --reason x -- -330Wr...`).
    Subparsers inherit the class (add_subparsers uses type(self)).
    """

    def _parse_optional(self, arg_string: str) -> Any:
        name = arg_string.split("=", 1)[0] if arg_string.startswith("--") else arg_string
        if name in self._option_string_actions:
            return super()._parse_optional(arg_string)
        longs = [o for o in self._option_string_actions if o.startswith("--")]
        if name.startswith("--") and len(name) > 2 and any(o.startswith(name) for o in longs):
            return super()._parse_optional(arg_string)  # an abbreviation, as argparse allows
        return None  # a value, whatever its first character


def cmd_audit_prune(args: argparse.Namespace) -> int:
    from .runtime import AUDIT_PRUNE_BATCH

    settings = _settings(args)
    if not _store_exists(settings):
        raise NotFoundError(f"no store at {sqlite_path(settings.store_url)}: nothing to prune (check store.url)")
    now = time.time()
    before = now - settings.audit_retention
    store = open_store(settings)
    try:
        deleted = audit.prune(store, before, now, _actor(), AUDIT_PRUNE_BATCH, until_done=True)
    finally:
        store.close()
    print(
        f"pruned {deleted} audit event{'' if deleted == 1 else 's'} older than {_ts(before)}"
        f" (audit.retention {format_duration(settings.audit_retention)})"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("--config", default=argparse.SUPPRESS, help="TOML configuration file (or JWKS_CONFIG)")
    parser = _Parser(prog="jwks-service", description=__doc__, parents=[common])
    parser.add_argument("--version", action="version", version=f"jwks-service {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("serve", parents=[common], help="run the HTTP service")
    p.add_argument("--listen", help="HOST:PORT (default: listen from the configuration)")
    p.add_argument("--workers", type=int, default=1, help="uvicorn worker processes (default 1)")
    p.add_argument(
        "--drain",
        default="0s",
        help="on SIGTERM, answer /healthz and /readyz with 503 this long (e.g. 2s) before stopping, so that a"
        " load balancer takes the replica out of rotation first (default 0s: stop at once)",
    )
    p.set_defaults(func=cmd_serve)

    keys = sub.add_parser("keys", help="list, rotate and revoke signing keys").add_subparsers(
        dest="keys_command", required=True, metavar="ACTION"
    )
    p = keys.add_parser("list", parents=[common], help="every key of every keyset")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_keys_list)
    p = keys.add_parser("rotate", parents=[common], help="promote the next key now")
    p.add_argument("keyset")
    p.add_argument("--force", action="store_true", help="rotate even if next is younger than prepublish")
    p.add_argument("--reason", default="")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_keys_rotate)
    p = keys.add_parser("revoke", parents=[common], help="emergency revocation of a key")
    p.add_argument("kid", help="the key's kid (it may start with '-')")
    p.add_argument("--reason", required=True)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_keys_revoke)

    clients = sub.add_parser("clients", help="OAuth clients").add_subparsers(
        dest="clients_command", required=True, metavar="ACTION"
    )
    p = clients.add_parser("create", parents=[common], help="register a client; prints its secret once")
    p.add_argument("name")
    p.add_argument("--scope", action="append", required=True, help="repeat for several scopes")
    p.add_argument("--audience", action="append", required=True, help="repeat for several; the first is default")
    p.add_argument("--keyset", default="default")
    p.add_argument("--ttl", help="token lifetime, e.g. 15m (default: the keyset's token_ttl)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_clients_create)
    p = clients.add_parser("list", parents=[common], help="registered clients")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_clients_list)
    p = clients.add_parser("show", parents=[common], help="one client, with its secrets' ages (never the secrets)")
    p.add_argument("client_id")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_clients_show)
    p = clients.add_parser("rotate-secret", parents=[common], help="new secret; the old one works during --grace")
    p.add_argument("client_id")
    p.add_argument("--grace", default="24h")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_clients_rotate_secret)
    p = clients.add_parser("delete", parents=[common], help="remove a client")
    p.add_argument("client_id")
    p.set_defaults(func=cmd_clients_delete)

    p = sub.add_parser("token", parents=[common], help="print a token for a client, for trying things out")
    p.add_argument("client_id")
    p.set_defaults(func=cmd_token)

    p = sub.add_parser("check-config", parents=[common], help="validate the configuration, print derived windows")
    p.set_defaults(func=cmd_check_config)

    kek = sub.add_parser("kek", help="the key-encryption key").add_subparsers(
        dest="kek_command", required=True, metavar="ACTION"
    )
    p = kek.add_parser(
        "rewrap", parents=[common], help="envelope mode: rewrap the KEK file under the Transit key's latest version"
    )
    p.set_defaults(func=cmd_kek_rewrap)
    p = kek.add_parser(
        "wrap", parents=[common], help="move a plaintext KEK into envelope mode: write it wrapped by Vault Transit"
    )
    p.add_argument("out", metavar="OUT", help="new file for the wrapped KEK")
    p.add_argument("--transit-key", default="jwks-kek", help="the Transit key that wraps it (default jwks-kek)")
    p.set_defaults(func=cmd_kek_wrap)
    backup = sub.add_parser("backup", help="export or import keys, clients and audit in one file").add_subparsers(
        dest="backup_command", required=True, metavar="ACTION"
    )
    p = backup.add_parser("export", parents=[common], help="write the store to FILE (private keys stay sealed)")
    p.add_argument("file")
    p.add_argument("--force", action="store_true", help="overwrite FILE if it exists")
    p.set_defaults(func=cmd_backup_export)
    p = backup.add_parser("import", parents=[common], help="restore FILE into an empty store")
    p.add_argument("file")
    p.add_argument(
        "--force",
        action="store_true",
        help="import into a non-empty store: keysets are merged (revoked and retired keys stay so), clients upserted",
    )
    p.set_defaults(func=cmd_backup_import)
    audit_cmd = sub.add_parser("audit", help="the audit log").add_subparsers(
        dest="audit_command", required=True, metavar="ACTION"
    )
    p = audit_cmd.add_parser(
        "prune", parents=[common], help="delete events older than audit.retention now (serve does it hourly)"
    )
    p.set_defaults(func=cmd_audit_prune)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "config"):
        args.config = None
    try:
        result: int = args.func(args)
        return result
    except ConfigError as exc:
        print("jwks-service: configuration refused:", file=sys.stderr)
        for line in exc.description.splitlines():
            print(f"  {line}", file=sys.stderr)
        return 2
    except JwksServiceError as exc:
        print(f"jwks-service: {exc.error}: {exc.description}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
