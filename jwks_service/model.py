"""Plain records shared by the core, the stores and the edges. Frozen: changes make new records."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any


def canonical_json(value: Any) -> bytes:
    """The one canonical JSON form (a backup's tag, an audit event's hash): sorted members, no
    whitespace, ASCII only, no NaN or infinity (ValueError)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


class KeyState(StrEnum):
    NEXT = "next"
    CURRENT = "current"
    PREVIOUS = "previous"
    RETIRED = "retired"
    REVOKED = "revoked"


PUBLISHED_STATES = frozenset({KeyState.NEXT, KeyState.CURRENT, KeyState.PREVIOUS})


@dataclass(frozen=True, slots=True)
class KeysetPolicy:
    """A keyset's configured rules (config.py validates them): algorithm, backend and the lifecycle's durations."""

    name: str
    alg: str
    backend: str = "local"
    rotation_period: int = 90 * 86400
    prepublish: int = 3600
    token_ttl: int = 900
    leeway: int = 30
    verify_window: int = 0  # derived: token_ttl + leeway + jwks.max_age, possibly lengthened
    key_bits: int = 0
    # Adoption-gated promotion (API.md §6): the share of the window's JWKS fetchers that must hold
    # `next` before a scheduled rotation promotes it (0: no gate), and how long a rotation may wait.
    adoption_gate: float = 0.95
    adoption_max_wait: int = 7 * 86400


@dataclass(frozen=True, slots=True)
class KeyVersion:
    kid: str
    keyset: str
    alg: str
    state: KeyState
    created_at: float  # also the moment it was published (as next)
    public_jwk: dict[str, Any] | None = None  # None for HMAC keys, which are never published
    sealed_private: bytes | None = None  # backend-specific, encrypted; None once destroyed
    activated_at: float | None = None  # became current
    deactivated_at: float | None = None  # stopped signing (became previous / revoked)
    retire_at: float | None = None  # previous keys: end of their verification window
    retired_at: float | None = None
    revoked_at: float | None = None
    revoke_reason: str = ""
    tainted_at: float | None = None  # marked suspect: never signs again, still verifies (API.md §6)

    @property
    def tainted(self) -> bool:
        return self.tainted_at is not None

    @property
    def verifies(self) -> bool:
        return self.state in PUBLISHED_STATES

    def with_(self, **changes: Any) -> KeyVersion:
        return replace(self, **changes)


@dataclass(frozen=True, slots=True)
class NewKey:
    """Material a backend generated, not yet placed in the lifecycle."""

    kid: str
    public_jwk: dict[str, Any] | None
    sealed_private: bytes | None


@dataclass(frozen=True, slots=True)
class Keyset:
    """A keyset as stored: its policy-relevant identity, its versions and a revision for compare-and-set."""

    name: str
    alg: str
    backend: str
    revision: int
    keys: tuple[KeyVersion, ...] = ()
    # Backends whose versions live elsewhere (Vault Transit), where a version made cannot be taken back:
    # the highest version number the service has made or claimed for this keyset (a newer one was made
    # outside the service), and, while one replica makes versions, when it claimed that (the others wait).
    claimed_version: int = 0
    claimed_at: float | None = None

    def by_state(self, state: KeyState) -> list[KeyVersion]:
        return [k for k in self.keys if k.state == state]

    @property
    def current(self) -> KeyVersion | None:
        found = self.by_state(KeyState.CURRENT)
        return found[0] if found else None

    @property
    def next(self) -> KeyVersion | None:
        found = self.by_state(KeyState.NEXT)
        return found[0] if found else None

    def find(self, kid: str) -> KeyVersion | None:
        for k in self.keys:
            if k.kid == kid:
                return k
        return None


@dataclass(frozen=True, slots=True)
class SecretHash:
    digest: bytes  # HMAC-SHA256(pepper, secret)
    created_at: float
    expires_at: float | None = None  # set when a newer secret replaced it (grace period)


@dataclass(frozen=True, slots=True)
class Client:
    client_id: str
    name: str
    scopes: tuple[str, ...]
    audiences: tuple[str, ...]
    keyset: str
    token_ttl: int
    created_at: float
    secrets: tuple[SecretHash, ...] = field(default_factory=tuple)
    # How it authenticates (RFC 7591 token_endpoint_auth_method): with a secret ("client_secret_basic",
    # which takes client_secret_post too), or "private_key_jwt" with no secret, by assertions signed
    # with one of the keys of its `jwks` (a JWK set, inline) or published at its `jwks_uri`.
    auth_method: str = "client_secret_basic"
    jwks: Mapping[str, Any] | None = None
    jwks_uri: str | None = None
    # The store's compare-and-set counter: 0 for a client not stored yet, +1 on every write. Not part
    # of a client's value (two reads of the same client compare equal whatever their revision).
    revision: int = field(default=0, compare=False)

    def public_dict(self) -> dict[str, Any]:
        return {
            "client_id": self.client_id,
            "name": self.name,
            "scopes": list(self.scopes),
            "audiences": list(self.audiences),
            "keyset": self.keyset,
            "token_ttl": self.token_ttl,
            "created_at": self.created_at,
            "token_endpoint_auth_method": self.auth_method,
            **({"jwks": self.jwks} if self.jwks is not None else {}),
            **({"jwks_uri": self.jwks_uri} if self.jwks_uri is not None else {}),
        }


@dataclass(frozen=True, slots=True)
class AuditEvent:
    at: float
    actor: str
    action: str
    target: str
    outcome: str = "ok"
    reason: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    id: int = 0
    # The SHA-256 (hex) of the previous event's canonical JSON, set by the store as it appends the
    # event; "" for the first event of a store, and for events written before the chain existed.
    prev: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "prev": self.prev,
            "at": self.at,
            "actor": self.actor,
            "action": self.action,
            "target": self.target,
            "outcome": self.outcome,
            "reason": self.reason,
            "details": self.details,
        }


def event_hash(event: AuditEvent) -> str:
    """What the next event's `prev` holds: the SHA-256 (hex) of this event's canonical JSON, id and
    prev included."""
    return hashlib.sha256(canonical_json(event.as_dict())).hexdigest()


@dataclass(frozen=True, slots=True)
class AuditChain:
    """Where a store's audit chain starts and ends, kept by the store beside the events.

    `first_id` is the oldest event the chain covers and `first_prev` the `prev` it must carry (the
    hash of the newest pruned event, "" at the very start); events with a smaller id predate the
    chain. `last_id` and `last_hash` are the newest event appended and its hash, so removing the
    newest events is seen too. All zero / "" while the store has appended no chained event."""

    first_id: int = 0
    first_prev: str = ""
    last_id: int = 0
    last_hash: str = ""
