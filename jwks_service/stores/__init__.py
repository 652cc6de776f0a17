"""Stores: where keysets, clients, token revocations and the audit log persist.

Every implementation passes the same conformance suite (tests/contract/test_store_conformance.py).
Keyset and client writes are compare-and-set on the record's revision: a writer that read revision N
may write only while it is still N, so a transition planned by several replicas lands exactly once
and two updates of one client never overwrite each other.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

from ..model import AuditEvent, Client, Keyset

# The largest row count a store is asked for: SQLite and Redis count in signed 64-bit integers.
MAX_LIMIT = 2**63 - 1


def clamp_limit(limit: int) -> int:
    """A `limit` argument as every store can take it: 0 to MAX_LIMIT ("at most this many" either way)."""
    return min(max(0, limit), MAX_LIMIT)


class Store(Protocol):
    def revision(self) -> int:
        """A counter that grows with every write of any kind; cheap, for change polling."""
        ...

    def get_keyset(self, name: str) -> Keyset | None: ...

    def list_keysets(self) -> list[Keyset]: ...

    def save_keyset(self, keyset: Keyset, expected_revision: int, audit: Sequence[AuditEvent] = ()) -> Keyset:
        """Write `keyset` (its keys replace the stored ones) if the stored revision is still
        `expected_revision` (0: the keyset must not exist yet), with its audit events, atomically.
        Returns it with the new revision; RevisionConflictError when another writer came first."""
        ...

    def get_client(self, client_id: str) -> Client | None: ...

    def list_clients(self) -> list[Client]: ...

    def save_client(self, client: Client, expected_revision: int, audit: Sequence[AuditEvent] = ()) -> Client:
        """Write `client` if the stored record's revision is still `expected_revision` (0: the client
        must not exist, so a client deleted meanwhile is never written back), with its audit events,
        atomically. Returns it with the new revision; RevisionConflictError when another writer came first."""
        ...

    def put_client(self, client: Client, audit: Sequence[AuditEvent] = ()) -> None:
        """Write `client` whatever is stored (a restored backup); its revision still moves on, so a
        compare-and-set writer that read the record before loses."""
        ...

    def delete_client(self, client_id: str, audit: Sequence[AuditEvent] = ()) -> bool: ...

    def revoke_token(self, jti: str, expires_at: float) -> None:
        """Record a revoked access token (RFC 7009) until `expires_at`: the service passes the moment
        after which no replica could accept the token any more (its exp plus leeway and a margin)."""
        ...

    def revoked_tokens(self, now: float) -> dict[str, float]:
        """Every revoked jti that has not expired yet, with its expiry."""
        ...

    def record_auth_failure(self, keys: Sequence[str], now: float) -> None:
        """Count one failed client authentication under each key (e.g. client id + address, address).
        Failures are short-lived counters: they do not bump `revision`."""
        ...

    def auth_failures(self, keys: Sequence[str], since: float) -> dict[str, tuple[int, float]]:
        """For each key with failures after `since`: (how many, when the oldest of them happened)."""
        ...

    def is_empty(self) -> bool:
        """No keysets, clients, revoked tokens or audit events (a backup may be imported)."""
        ...

    def append_audit(self, events: Sequence[AuditEvent]) -> None: ...

    def list_audit(self, since: float | None = None, limit: int = 100) -> list[AuditEvent]:
        """Newest first, at most `limit` of them (any int: see clamp_limit)."""
        ...

    def prune_audit(self, before: float, limit: int = 1000) -> int:
        """Delete at most `limit` audit events with `at` before `before`, oldest first; how many went.
        Bounded work per call (call again while it returns `limit`). Housekeeping: no `revision` bump."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class ChangeFeed(Protocol):
    """A store that can push change notifications (Redis pub/sub); others are polled."""

    def subscribe(self, on_change: Callable[[int], None]) -> Callable[[], None]:
        """Call `on_change(revision)` from another thread on every change; returns `stop`."""
        ...
