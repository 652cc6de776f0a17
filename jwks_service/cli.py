"""The `jwks-service` command: serve, and administer the same store the server uses."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from . import __version__
from .config import Settings, format_duration, load_settings, parse_duration, split_listen
from .errors import ConfigError, JwksServiceError
from .lifecycle import next_rotation_at
from .model import KeyState
from .runtime import Runtime, build_runtime


def _ts(value: float | None) -> str:
    from .http.wellknown import rfc3339

    return rfc3339(value) or "-"


def _print_table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(args.config)


def _runtime(args: argparse.Namespace) -> Runtime:
    rt = build_runtime(_settings(args))
    if rt.kek.generated:
        print(f"Generated a new key-encryption key in {rt.kek.path} (mode 0600); back it up.", file=sys.stderr)
    return rt


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    settings = _settings(args)
    listen = args.listen or settings.listen
    host, port = split_listen(listen)
    rt = build_runtime(settings)  # validates, creates keys, tells the user what happened
    try:
        if rt.kek.generated:
            print(
                f"Generated a new key-encryption key in {rt.kek.path} (mode 0600). Back it up: without it the"
                " stored private keys cannot be read."
            )
        n_clients = len(rt.store.list_clients())
        keysets = ", ".join(f"{n} ({p.alg})" for n, p in settings.keysets.items())
        print(f"jwks-service {__version__}: issuer {settings.issuer}, store {settings.store_url}, keysets {keysets}")
        print(f"JWKS:  http://{listen}/.well-known/jwks.json")
        if n_clients == 0:
            print("No clients yet. Create one and get a token:")
            print("  jwks-service clients create demo --scope read --audience api")
            print(f"  curl -s -u CLIENT_ID:CLIENT_SECRET -d grant_type=client_credentials http://{listen}/oauth/token")
    finally:
        rt.close()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
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
        )
    else:
        from .http.app import create_app

        uvicorn.run(create_app(settings), host=host, port=port, log_level="info", access_log=False)
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


def _kids(rt: Runtime, name: str) -> dict[str, Any]:
    ks = rt.store.get_keyset(name)
    assert ks is not None
    return {
        "keyset": name,
        "current": ks.current.kid if ks.current else None,
        "previous": [k.kid for k in ks.by_state(KeyState.PREVIOUS)],
        "next": ks.next.kid if ks.next else None,
    }


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    rt = _runtime(args)
    try:
        rt.keys.rotate(args.keyset, force=args.force, reason=args.reason or "", actor="cli")
        result = _kids(rt, args.keyset)
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
        keyset, revoked = rt.keys.revoke(args.kid, reason=args.reason, actor="cli")
        result = {**_kids(rt, keyset.name), "revoked": revoked.kid}
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
            args.name, args.scope, args.audience, keyset=args.keyset, token_ttl=ttl, actor="cli"
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


def cmd_clients_list(args: argparse.Namespace) -> int:
    rt = _runtime(args)
    try:
        clients = rt.store.list_clients()
    finally:
        rt.close()
    if args.json:
        print(json.dumps({"clients": [c.public_dict() for c in clients]}, indent=2))
        return 0
    _print_table(
        [
            [
                c.client_id,
                c.name,
                " ".join(c.scopes),
                " ".join(c.audiences),
                c.keyset,
                format_duration(c.token_ttl),
                _ts(c.created_at),
            ]
            for c in clients
        ],
        ["CLIENT_ID", "NAME", "SCOPES", "AUDIENCES", "KEYSET", "TTL", "CREATED"],
    )
    return 0


def cmd_clients_rotate_secret(args: argparse.Namespace) -> int:
    grace = parse_duration(args.grace, "--grace") if args.grace != "0" else 0
    rt = _runtime(args)
    try:
        client, secret = rt.clients.rotate_secret(args.client_id, grace, actor="cli")
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
        rt.clients.delete(args.client_id, actor="cli")
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
    finally:
        rt.close()
    print(issued.token)
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    settings = _settings(args)
    source = settings.config_file or "embedded defaults"
    print(f"configuration OK ({source})")
    print(
        f"issuer {settings.issuer}, store {settings.store_url}, jwks.max_age {format_duration(settings.jwks_max_age)}"
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
    return 0


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=argparse.SUPPRESS, help="TOML configuration file (or JWKS_CONFIG)")
    parser = argparse.ArgumentParser(prog="jwks-service", description=__doc__, parents=[common])
    parser.add_argument("--version", action="version", version=f"jwks-service {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("serve", parents=[common], help="run the HTTP service")
    p.add_argument("--listen", help="HOST:PORT (default: listen from the configuration)")
    p.add_argument("--workers", type=int, default=1, help="uvicorn worker processes (default 1)")
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
    p.add_argument("kid")
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
