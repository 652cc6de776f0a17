"""The `jwks-service` command: serve, and administer the same store the server uses."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from .. import __version__
from ..assertions import AUTH_METHODS as AUTH_CHOICES
from ..errors import ConfigError, JwksServiceError
from .adoption import cmd_keys_adoption
from .manage import (
    cmd_clients_create,
    cmd_clients_delete,
    cmd_clients_list,
    cmd_clients_rotate_secret,
    cmd_clients_show,
    cmd_clients_update,
    cmd_keys_list,
    cmd_keys_revoke,
    cmd_keys_rotate,
    cmd_keys_taint,
    cmd_token,
)
from .plan import cmd_keys_plan
from .serve import GRACEFUL_SHUTDOWN_SECONDS, cmd_serve, uvicorn_proxy_options
from .store import (
    cmd_audit_prune,
    cmd_audit_verify,
    cmd_backup_export,
    cmd_backup_import,
    cmd_check_config,
    cmd_kek_rewrap,
    cmd_kek_wrap,
)

__all__ = ["GRACEFUL_SHUTDOWN_SECONDS", "build_parser", "cmd_serve", "main", "uvicorn_proxy_options"]


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


def _actions(sub: Any, name: str, help: str) -> Any:
    """A command with actions of its own (`keys rotate`, `backup import`, ...)."""
    return sub.add_parser(name, help=help).add_subparsers(dest=f"{name}_command", required=True, metavar="ACTION")


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("--config", default=argparse.SUPPRESS, help="TOML configuration file (or JWKS_CONFIG)")
    parser = _Parser(prog="jwks-service", description=__doc__, parents=[common])
    parser.add_argument("--version", action="version", version=f"jwks-service {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(group: Any, name: str, func: Callable[[argparse.Namespace], int], help: str) -> Any:
        """A (sub)command that reads the configuration (--config) and runs `func`."""
        parser = group.add_parser(name, parents=[common], help=help)
        parser.set_defaults(func=func)
        return parser

    p = command(sub, "serve", cmd_serve, "run the HTTP service")
    p.add_argument("--listen", help="HOST:PORT (default: listen from the configuration)")
    p.add_argument("--workers", type=int, default=1, help="uvicorn worker processes (default 1)")
    p.add_argument(
        "--drain",
        default="0s",
        help="on SIGTERM, answer /healthz and /readyz with 503 this long (e.g. 2s) before stopping, so that a"
        " load balancer takes the replica out of rotation first (default 0s: stop at once)",
    )

    keys = _actions(sub, "keys", "list, plan, rotate, taint and revoke signing keys")
    p = command(keys, "list", cmd_keys_list, "every key of every keyset")
    p.add_argument("--json", action="store_true")
    p = command(keys, "plan", cmd_keys_plan, "each key's times, the next rotations, the gate, a forced rotation's cost")
    p.add_argument("keyset", nargs="?", help="one keyset (default: every keyset)")
    p.add_argument("--json", action="store_true")
    p = command(keys, "rotate", cmd_keys_rotate, "promote the next key now")
    p.add_argument("keyset")
    p.add_argument("--force", action="store_true", help="rotate even if next is younger than prepublish")
    p.add_argument("--reason", default="")
    p.add_argument("--json", action="store_true")
    p = command(keys, "revoke", cmd_keys_revoke, "emergency revocation of a key")
    p.add_argument("kid", help="the key's kid (it may start with '-')")
    p.add_argument("--reason", required=True)
    p.add_argument("--json", action="store_true")
    p = command(keys, "taint", cmd_keys_taint, "mark a key as suspect: it stops signing, keeps verifying")
    p.add_argument("kid", help="the key's kid (it may start with '-')")
    p.add_argument("--reason", required=True)
    p.add_argument("--json", action="store_true")
    p = command(keys, "adoption", cmd_keys_adoption, "who holds which key: JWKS fetchers per kid, and laggards")
    p.add_argument("keyset", nargs="?", help="one keyset (default: every keyset)")
    p.add_argument("--json", action="store_true")

    clients = _actions(sub, "clients", "OAuth clients")
    p = command(clients, "create", cmd_clients_create, "register a client; prints its secret once")
    p.add_argument("name")
    p.add_argument("--scope", action="append", required=True, help="repeat for several scopes")
    p.add_argument("--audience", action="append", required=True, help="repeat for several; the first is default")
    p.add_argument("--keyset", default="default")
    p.add_argument("--ttl", help="token lifetime, e.g. 15m (default: the keyset's token_ttl)")
    p.add_argument(
        "--auth",
        choices=AUTH_CHOICES,
        default="client_secret_basic",
        help="client_secret_basic (a secret, printed once) or private_key_jwt (no secret: assertions signed by "
        "the client's keys, given with --jwks or --jwks-uri)",
    )
    keys = p.add_mutually_exclusive_group()
    keys.add_argument("--jwks", metavar="FILE", help="private_key_jwt: the client's public keys, a JWK set file")
    keys.add_argument("--jwks-uri", metavar="URL", help="private_key_jwt: where the client publishes its JWK set")
    p.add_argument("--json", action="store_true")
    p = command(clients, "list", cmd_clients_list, "registered clients")
    p.add_argument("--json", action="store_true")
    p = command(clients, "show", cmd_clients_show, "one client, with its secrets' ages (never the secrets)")
    p.add_argument("client_id")
    p.add_argument("--json", action="store_true")
    p = command(clients, "update", cmd_clients_update, "change a client's scopes, audiences, ttl or name")
    p.add_argument("client_id")
    p.add_argument("--scope", action="append", help="the new scopes (repeat for several); replaces them all")
    p.add_argument("--audience", action="append", help="the new audiences (repeat); the first is default")
    p.add_argument("--ttl", help="token lifetime, e.g. 15m (at most the keyset's token_ttl)")
    p.add_argument("--name")
    p.add_argument("--json", action="store_true")
    p = command(clients, "rotate-secret", cmd_clients_rotate_secret, "new secret; the old one works during --grace")
    p.add_argument("client_id")
    p.add_argument("--grace", default="24h")
    p.add_argument("--json", action="store_true")
    p = command(clients, "delete", cmd_clients_delete, "remove a client")
    p.add_argument("client_id")

    p = command(sub, "token", cmd_token, "print a token for a client, for trying things out")
    p.add_argument("client_id")

    p = command(sub, "check-config", cmd_check_config, "validate the configuration, print derived windows")

    kek = _actions(sub, "kek", "the key-encryption key")
    p = command(
        kek, "rewrap", cmd_kek_rewrap, "envelope mode: rewrap the KEK file under the Transit key's latest version"
    )
    p = command(kek, "wrap", cmd_kek_wrap, "move a plaintext KEK into envelope mode: write it wrapped by Vault Transit")
    p.add_argument("out", metavar="OUT", help="new file for the wrapped KEK")
    p.add_argument("--transit-key", default="jwks-kek", help="the Transit key that wraps it (default jwks-kek)")
    backup = _actions(sub, "backup", "export or import keys, clients and audit in one file")
    p = command(backup, "export", cmd_backup_export, "write the store to FILE (private keys stay sealed)")
    p.add_argument("file")
    p.add_argument("--force", action="store_true", help="overwrite FILE if it exists")
    p = command(backup, "import", cmd_backup_import, "restore FILE into an empty store")
    p.add_argument("file")
    p.add_argument(
        "--force",
        action="store_true",
        help="import into a non-empty store: keysets are merged (revoked and retired keys stay so), clients upserted",
    )
    audit_cmd = _actions(sub, "audit", "the audit log")
    p = command(
        audit_cmd, "prune", cmd_audit_prune, "delete events older than audit.retention now (serve does it hourly)"
    )
    p = command(
        audit_cmd,
        "verify",
        cmd_audit_verify,
        "check the audit chain: exit 1 naming the first edited, removed or moved event",
    )
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
