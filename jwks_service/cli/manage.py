"""`jwks-service keys ...`, `clients ...` and `token`: the admin API's actions, on the same store.

Each command calls the service and prints what `views` makes of its answer: with `--json`, the same
document the admin API sends (API.md §3); without, a table or a few lines for people.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from .. import operations, views
from ..clients import check_grace
from ..clock import parse_rfc3339
from ..config import format_duration, parse_duration
from ..errors import ConfigError, InvalidRequestError
from ..model import Keyset, KeyVersion
from ..runtime import Runtime
from .common import actor, human, print_table, runtime, stderr


def _key_rows(keysets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every key of every keyset, one row each, with its keyset, alg, and (for the current key) when
    the keyset rotates next."""
    return [
        {
            "keyset": ks["name"],
            "alg": ks["alg"],
            **key,
            "next_rotation_at": ks["next_rotation_at"] if key["state"] == "current" else None,
        }
        for ks in keysets
        for key in ks["keys"]
    ]


def cmd_keys_list(args: argparse.Namespace) -> int:
    with runtime(args, read_only=True) as rt:
        rows = _key_rows(views.keysets_view(rt.settings.keysets, rt.keys.snapshot.keysets))
    if args.json:
        print(json.dumps({"keys": rows}, indent=2))
        return 0
    print_table(
        [
            [
                *(r[name] for name in ("keyset", "kid", "alg", "state")),
                *(r[time] or "-" for time in ("created_at", "activated_at")),
                r["retire_at"] or r["next_rotation_at"] or "-",
            ]
            for r in rows
        ],
        ["KEYSET", "KID", "ALG", "STATE", "CREATED", "ACTIVATED", "RETIRES/ROTATES"],
    )
    return 0


def _transition(args: argparse.Namespace, result: dict[str, Any], done: str) -> int:
    """Print a key transition: the admin API's document with --json, else what was `done` and the
    keyset's current and next keys after it."""
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{done}: current {result['current']}, next {result['next']}")
    laggards = result.get("laggards")
    if laggards:  # API.md §6: they had not fetched the key that signs now
        held = f"{len(laggards)} JWKS fetcher(s) did not hold {result['current']}"
        print(f"{held} (they may reject its tokens until they refetch):")
        for lag in laggards:
            print(f"  {lag['fetcher']}  last fetch {lag['last_fetch']}")
    return 0


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    with runtime(args) as rt:
        result = rt.keys.rotate(args.keyset, force=args.force, reason=args.reason or "", actor=actor())
    return _transition(args, result, f"rotated {args.keyset}")


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    return _key_action(args, "revoked", lambda rt: rt.keys.revoke)


def cmd_keys_taint(args: argparse.Namespace) -> int:
    return _key_action(args, "tainted", lambda rt: rt.keys.taint)


def _key_action(
    args: argparse.Namespace,
    done: str,
    action: Callable[[Runtime], Callable[..., tuple[Keyset, KeyVersion]]],
) -> int:
    """An action on one key by kid (revoke, taint), answered as the admin API answers it."""
    with runtime(args) as rt:
        laggards = rt.keys.laggards_if_promoting(args.kid)
        keyset, key = action(rt)(args.kid, reason=args.reason, actor=actor())
        result = views.key_action_view(keyset, done, key.kid, rt.keys.summary(keyset.name), laggards)
    return _transition(args, result, f"{done} {result[done]} in {result['keyset']}")


def _jwks_file(path: str | None) -> Any:
    """The JWK set in `path` (None: none given); the registry checks what it holds."""
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as exc:
        raise InvalidRequestError(f"--jwks {path}: cannot read a JSON JWK set: {exc}") from None


def _duration(value: str, option: str) -> int:
    """A command-line duration: a bad one is the caller's mistake (exit 1), not a refused configuration."""
    try:
        return parse_duration(value, option)
    except ConfigError as exc:
        raise InvalidRequestError(exc.description) from None


def cmd_clients_create(args: argparse.Namespace) -> int:
    ttl = _duration(args.ttl, "--ttl") if args.ttl else None
    jwks = _jwks_file(args.jwks)
    with runtime(args) as rt:
        client, secret = rt.clients.create(
            args.name,
            args.scope,
            args.audience,
            keyset=args.keyset,
            token_ttl=ttl,
            actor=actor(),
            auth_method=args.auth,
            jwks=jwks,
            jwks_uri=args.jwks_uri,
        )
        created = views.created_client_view(client, secret, rt.clock.now(), rt.settings.client_secret_max_age)
    if args.json:
        print(json.dumps(created))
    elif secret:
        print(f"client_id:     {created['client_id']}")
        print(f"client_secret: {created['client_secret']}")
        print("The secret is shown only now; store it safely.")
    else:
        print(f"client_id:     {created['client_id']}")
        print(f"authenticates: private_key_jwt, with the keys {_key_source(created)}")
    return 0


def _key_source(client: dict[str, Any]) -> str:
    if "jwks_uri" in client:
        return f"at {client['jwks_uri']}"
    return f"given inline ({len(client['jwks']['keys'])})"


def _secret_columns(client: dict[str, Any], now: float) -> tuple[str, str, str]:
    """SECRET_AGE, SECRET_DUE and SECRETS of `clients list`; a private_key_jwt client has no secret."""
    if "secret_created_at" not in client:
        return "-", "-", "private_key_jwt"
    return _secret_age(client, now), _due_text(client), str(client["valid_secrets"])


def _due_text(client: dict[str, Any]) -> str:
    return f"{client['secret_due_at']}{' OVERDUE' if client['secret_overdue'] else ''}"


def _secret_age(client: dict[str, Any], now: float) -> str:
    return human(now - parse_rfc3339(client["secret_created_at"]))


def cmd_clients_list(args: argparse.Namespace) -> int:
    with runtime(args, read_only=True) as rt:
        now, max_age = rt.clock.now(), rt.settings.client_secret_max_age
        listed = [views.client_view(c, now, max_age) for c in rt.clients.read_all()]
    if args.json:
        print(json.dumps({"clients": listed, "secret_max_age": max_age}, indent=2))
        return 0
    print_table(
        [
            [
                *(c[name] for name in ("client_id", "name")),
                *(" ".join(c[name]) for name in ("scopes", "audiences")),
                *(c[name] for name in ("keyset", "token_ttl", "created_at")),
                *_secret_columns(c, now),
            ]
            for c in listed
        ],
        ["CLIENT_ID", "NAME", "SCOPES", "AUDIENCES", "KEYSET", "TTL", "CREATED", "SECRET_AGE", "SECRET_DUE", "SECRETS"],
    )
    overdue = sum(1 for c in listed if c.get("secret_overdue"))
    if not overdue:
        return 0
    stderr(
        f"{overdue} client secret{'s are' if overdue > 1 else ' is'} older than clients.secret_max_age"
        f" ({format_duration(max_age)}): jwks-service clients rotate-secret CLIENT_ID"
    )
    return 0


def cmd_clients_show(args: argparse.Namespace) -> int:
    with runtime(args, read_only=True) as rt:
        client, now = rt.clients.read(args.client_id), rt.clock.now()
        shown = {
            **views.client_view(client, now, rt.settings.client_secret_max_age),
            "secrets": views.client_secrets_view(client, now),
        }
    if args.json:
        print(json.dumps(shown, indent=2))
        return 0
    for label in ("client_id", "name", "scopes", "audiences", "keyset", "token_ttl"):
        value = shown[label]
        print(f"{label + ':':<12} {' '.join(value) if isinstance(value, list) else value}")
    print(f"created:     {shown['created_at']}")
    if "secret_created_at" not in shown:
        print(f"auth:        private_key_jwt, with the keys {_key_source(shown)}")
        return 0
    print(f"secret age:  {_secret_age(shown, now)} (rotation due {_due_text(shown)})")
    print(f"secrets:     {shown['valid_secrets']} valid")
    for sec in shown["secrets"]:
        if sec["expires_at"] is None:
            state = "valid"
        else:
            state = f"{'valid until' if sec['valid'] else 'expired'} {sec['expires_at']}"
        print(f"  created {sec['created_at']}: {state}")
    return 0


def cmd_clients_update(args: argparse.Namespace) -> int:
    if args.scope is None and args.audience is None and args.ttl is None and args.name is None:
        raise InvalidRequestError("nothing to change: give --scope, --audience, --ttl or --name")
    ttl = _duration(args.ttl, "--ttl") if args.ttl else None
    with runtime(args) as rt:
        client, changes = rt.clients.update(
            args.client_id, name=args.name, scopes=args.scope, audiences=args.audience, token_ttl=ttl, actor=actor()
        )
        updated = views.updated_client_view(client, changes, rt.clock.now(), rt.settings.client_secret_max_age)
    if args.json:
        print(json.dumps(updated))
    elif not changes:
        print(f"client {args.client_id}: nothing changed")
    else:
        for field, change in changes.items():
            print(f"{field}: {_shown(change['from'])} -> {_shown(change['to'])}")
        print(
            "In force on every running replica within 1 s (tokens issued before keep their claims until they expire)."
        )
    return 0


def _shown(value: object) -> str:
    return (
        " ".join(value) if isinstance(value, list) else format_duration(value) if isinstance(value, int) else str(value)
    )


def cmd_clients_rotate_secret(args: argparse.Namespace) -> int:
    grace = _duration(args.grace, "--grace") if args.grace != "0" else 0
    check_grace(grace, "--grace")  # before anything is opened or written
    with runtime(args) as rt:
        client, secret = rt.clients.rotate_secret(args.client_id, grace, actor=actor())
        rotated = views.secret_rotation_view(client, secret, rt.clock.now() + grace)
    if args.json:
        print(json.dumps(rotated))
    else:
        print(f"client_secret: {rotated['client_secret']}")
        print(f"The previous secret keeps working for {format_duration(grace)}.")
    return 0


def cmd_clients_delete(args: argparse.Namespace) -> int:
    with runtime(args) as rt:
        rt.clients.delete(args.client_id, actor=actor())
    print(f"deleted client {args.client_id}")
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    with runtime(args) as rt:
        token = operations.issue_token(rt, args.client_id, actor())
    print(token)
    return 0
