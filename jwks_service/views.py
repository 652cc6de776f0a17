"""What the admin API and the CLI show of the records: one dict per kind, with the field names and
formats of API.md §3 and the OpenAPI document (http/openapi_schemas.py): times in RFC 3339, durations as
`format_duration` writes them. The HTTP layer sends these dicts as they are; the CLI prints them with
`--json`, and lays them out as text without.

Pure: records, settings and `now` in, JSON-ready dicts out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .assertions import PRIVATE_KEY_JWT
from .clock import rfc3339
from .config import format_duration
from .lifecycle import next_rotation_at
from .model import AuditEvent, Client, Keyset, KeysetPolicy, SecretHash


def _works(secret: SecretHash, now: float) -> bool:
    return secret.expires_at is None or secret.expires_at > now


def client_view(client: Client, now: float, secret_max_age: int) -> dict[str, Any]:
    """A client without its secrets: when its newest secret was issued, when that one is due for
    rotation (`secret_max_age` after), whether it is overdue, and how many secrets still work."""
    view = {
        **client.public_dict(),
        "created_at": rfc3339(client.created_at),
        "token_ttl": format_duration(client.token_ttl),
    }
    if client.auth_method == PRIVATE_KEY_JWT:  # no secret: nothing to rotate
        return view
    newest = max((s.created_at for s in client.secrets), default=client.created_at)
    due = newest + secret_max_age
    return {
        **view,
        "secret_created_at": rfc3339(newest),
        "secret_due_at": rfc3339(due),
        "secret_overdue": now >= due,
        "valid_secrets": sum(_works(s, now) for s in client.secrets),
    }


def created_client_view(client: Client, secret: str, now: float, secret_max_age: int) -> dict[str, Any]:
    """A client just registered, with its secret: the only time the secret is shown (a private_key_jwt
    client has none)."""
    view = client_view(client, now, secret_max_age)
    return {**view, "client_secret": secret} if secret else view


def updated_client_view(client: Client, changes: Mapping[str, Any], now: float, secret_max_age: int) -> dict[str, Any]:
    """A client after an update, and the names of the fields that changed (none: it was already so)."""
    return {**client_view(client, now, secret_max_age), "changed": sorted(changes)}


def client_secrets_view(client: Client, now: float) -> list[dict[str, Any]]:
    """Each of a client's secrets (never the secret nor its digest): when it was issued, when it
    stops working (None: never), whether it works now."""
    return [
        {"created_at": rfc3339(s.created_at), "expires_at": rfc3339(s.expires_at), "valid": _works(s, now)}
        for s in client.secrets
    ]


def secret_rotation_view(client: Client, secret: str, previous_expire_at: float) -> dict[str, Any]:
    """A client's new secret, and when the ones it replaced stop working."""
    return {
        "client_id": client.client_id,
        "client_secret": secret,
        "previous_secrets_expire_at": rfc3339(previous_expire_at),
    }


def key_action_view(
    keyset: Keyset,
    action: str,
    kid: str,
    summary: Mapping[str, Any],
    laggards: tuple[str, list[dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    """An emergency action on a key (`action`: "revoked" or "tainted"): that key, and the keyset's
    current and next keys after it (`summary` as KeyService.summary gives it). `laggards`, as
    KeyService.laggards_if_promoting gave them before the action: listed when the action promoted
    that keyset's next key and some fetchers did not hold it (API.md §6); never an empty list, so an
    idempotent retry, which promotes nothing, answers as the first call did."""
    view = {"keyset": keyset.name, action: kid, "current": summary["current"], "next": summary["next"]}
    if laggards is not None and laggards[0] == keyset.name and laggards[1]:
        view["laggards"] = laggards[1]
    return view


def keyset_view(policy: KeysetPolicy, keyset: Keyset | None) -> dict[str, Any]:
    """A configured keyset: its policy, when it rotates next, and its keys (None: not created yet)."""
    return {
        "name": policy.name,
        "alg": policy.alg,
        "backend": policy.backend,
        "revision": keyset.revision if keyset else 0,
        "policy": {
            "rotation_period": format_duration(policy.rotation_period),
            "prepublish": format_duration(policy.prepublish),
            "token_ttl": format_duration(policy.token_ttl),
            "leeway": format_duration(policy.leeway),
            "verify_window": format_duration(policy.verify_window),
        },
        "next_rotation_at": rfc3339(next_rotation_at(policy, keyset)) if keyset else None,
        "keys": [
            {
                "kid": k.kid,
                "state": k.state.value,
                "created_at": rfc3339(k.created_at),
                "activated_at": rfc3339(k.activated_at),
                "retire_at": rfc3339(k.retire_at),
                "retired_at": rfc3339(k.retired_at),
                "revoked_at": rfc3339(k.revoked_at),
                "tainted_at": rfc3339(k.tainted_at),
            }
            for k in (keyset.keys if keyset else ())
        ],
    }


def keysets_view(policies: Mapping[str, KeysetPolicy], keysets: Mapping[str, Keyset]) -> list[dict[str, Any]]:
    """Every configured keyset, in the configuration's order."""
    return [keyset_view(policy, keysets.get(name)) for name, policy in policies.items()]


def audit_event_view(event: AuditEvent) -> dict[str, Any]:
    return {**event.as_dict(), "at": rfc3339(event.at)}
