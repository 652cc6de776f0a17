"""Records to and from JSON-able dicts, shared by every store and the backup file."""

from __future__ import annotations

import base64
from typing import Any

from ..model import AuditEvent, Client, KeyState, KeyVersion, SecretHash


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode()


def _unb64(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text)


def key_to_dict(key: KeyVersion) -> dict[str, Any]:
    return {
        "kid": key.kid,
        "keyset": key.keyset,
        "alg": key.alg,
        "state": key.state.value,
        "created_at": key.created_at,
        "public_jwk": key.public_jwk,
        "sealed_private": _b64(key.sealed_private),
        "activated_at": key.activated_at,
        "deactivated_at": key.deactivated_at,
        "retire_at": key.retire_at,
        "retired_at": key.retired_at,
        "revoked_at": key.revoked_at,
        "revoke_reason": key.revoke_reason,
        "tainted_at": key.tainted_at,
    }


def key_from_dict(d: dict[str, Any]) -> KeyVersion:
    return KeyVersion(
        kid=d["kid"],
        keyset=d["keyset"],
        alg=d["alg"],
        state=KeyState(d["state"]),
        created_at=d["created_at"],
        public_jwk=d.get("public_jwk"),
        sealed_private=_unb64(d.get("sealed_private")),
        activated_at=d.get("activated_at"),
        deactivated_at=d.get("deactivated_at"),
        retire_at=d.get("retire_at"),
        retired_at=d.get("retired_at"),
        revoked_at=d.get("revoked_at"),
        revoke_reason=d.get("revoke_reason", ""),
        tainted_at=d.get("tainted_at"),
    )


def client_to_dict(c: Client) -> dict[str, Any]:
    return {
        **c.public_dict(),
        "secrets": [
            {"digest": _b64(s.digest), "created_at": s.created_at, "expires_at": s.expires_at} for s in c.secrets
        ],
    }


def client_from_dict(d: dict[str, Any]) -> Client:
    """`client_to_dict` leaves the revision out (backups carry none); the stores add it to their own
    records. A stored record from before revisions existed counts as revision 1."""
    return Client(
        client_id=d["client_id"],
        name=d["name"],
        scopes=tuple(d["scopes"]),
        audiences=tuple(d["audiences"]),
        keyset=d["keyset"],
        token_ttl=int(d["token_ttl"]),
        created_at=d["created_at"],
        secrets=tuple(
            SecretHash(_unb64(s["digest"]) or b"", s["created_at"], s.get("expires_at")) for s in d["secrets"]
        ),
        revision=int(d.get("revision", 1)),
        auth_method=d.get("token_endpoint_auth_method", "client_secret_basic"),
        jwks=d.get("jwks"),
        jwks_uri=d.get("jwks_uri"),
    )


def audit_from_dict(d: dict[str, Any]) -> AuditEvent:
    return AuditEvent(
        id=d.get("id", 0),
        at=d["at"],
        actor=d["actor"],
        action=d["action"],
        target=d["target"],
        outcome=d.get("outcome", "ok"),
        reason=d.get("reason", ""),
        details=d.get("details") or {},
        prev=d.get("prev", ""),
    )
