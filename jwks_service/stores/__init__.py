"""Stores: where keysets, clients, token revocations and the audit log persist.

Every implementation passes the same conformance suite (tests/contract/test_store_conformance.py).
Keyset and client writes are compare-and-set on the record's revision: a writer that read revision N
may write only while it is still N, so a transition planned by several replicas lands exactly once
and two updates of one client never overwrite each other.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Protocol, runtime_checkable

from ..adoption import Fetch
from ..model import AuditChain, AuditEvent, Client, Keyset, event_hash

log = logging.getLogger(__name__)

# The largest row count a store is asked for: SQLite and Redis count in signed 64-bit integers.
MAX_LIMIT = 2**63 - 1


def clamp_limit(limit: int) -> int:
    """A `limit` argument as every store can take it: 0 to MAX_LIMIT ("at most this many" either way)."""
    return min(max(0, limit), MAX_LIMIT)


def chain(events: Sequence[AuditEvent], last_id: int, last_hash: str) -> list[AuditEvent]:
    """`events` as a store appends them after the event numbered `last_id` whose hash is
    `last_hash`: numbered on from it, each with the hash of the one before as its `prev`."""
    chained = []
    for e in events:
        last_id += 1
        stored = replace(e, id=last_id, prev=last_hash)
        last_hash = event_hash(stored)
        chained.append(stored)
    return chained


def prunable(oldest: Sequence[AuditEvent], before: float) -> list[AuditEvent]:
    """Of the oldest events (by id), those a prune deletes: the run before the first one at or
    after `before`. Always a prefix, so the chain stays whole from the first event kept."""
    run = []
    for e in oldest:
        if e.at >= before:
            break
        run.append(e)
    return run


AuditListener = Callable[[Sequence[AuditEvent]], None]


class AuditTap:
    """Who hears of audit events once a store has committed them, with their ids and `prev` (the
    audit sinks). Called in the thread that wrote; a listener that raises is logged, never the writer's
    problem: the events are stored."""

    def __init__(self) -> None:
        self._listeners: list[AuditListener] = []

    def listen(self, listener: AuditListener) -> None:
        self._listeners.append(listener)

    def publish(self, events: Sequence[AuditEvent]) -> None:
        for listener in self._listeners if events else ():
            try:
                listener(events)
            except Exception:
                log.exception("an audit listener failed")


class Store(Protocol):
    # Hears of every audit event the store appends, after it is committed.
    audit_tap: AuditTap

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

    def list_clients_after(self, after: str, limit: int) -> list[Client]:
        """At most `limit` clients (any int: see clamp_limit) whose client_id sorts after `after` ("" for
        the first page), in client_id order (by code point, as UTF-8 bytes sort). Paging on with the
        last id returned lists every client that exists throughout exactly once; bounded work per call,
        so a reader of many clients holds nothing between pages."""
        ...

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

    def confirm_revocation(self) -> None:
        """Return once every write made so far (a key revocation just saved, or found saved already)
        is held as durably as the deployment asks (Redis: store.revocation_acks replicas, by WAIT);
        StoreError when it is not. `revoke_token` confirms its own write."""
        ...

    def record_auth_failure(self, keys: Sequence[str], now: float) -> None:
        """Count one failed client authentication under each key (e.g. client id + address, address).
        Failures are short-lived counters: they do not bump `revision`."""
        ...

    def auth_failures(self, keys: Sequence[str], since: float) -> dict[str, tuple[int, float]]:
        """For each key with failures after `since`: (how many, when the oldest of them happened)."""
        ...

    def failing_keys(self, since: float, limit: int) -> set[str] | None:
        """Every key with a failure recorded after `since` (`record_auth_failure`, by any replica), or
        None when there are more than `limit` of them. One bounded read, whatever the store holds."""
        ...

    def remember_jti(self, client_id: str, jti: str, expires_at: float, now: float) -> bool:
        """Remember the `jti` of `client_id`'s assertion (private_key_jwt) until `expires_at`: True the
        first time, False while it is remembered (a replay), atomically, so that of replicas sharing the
        store exactly one accepts an assertion. Entries go once expired (the caller bounds `expires_at`
        to a few minutes ahead of `now`). Short-lived like the failure counters: no `revision` bump."""
        ...

    def record_fetches(
        self,
        fetches: Sequence[Fetch],
        revisions: Mapping[str, Sequence[str]],
        now: float,
        window: int,
        max_fetchers: int,
    ) -> None:
        """Adoption records (API.md §6), one round trip: each fetcher's revision and last fetch, replaced
        only by a later fetch (replicas flush out of order); the kids of each revision (ETag -> kids; the
        newest 256 first recorded are kept); then fetchers whose last fetch is before `now - window` go,
        and beyond `max_fetchers` the oldest. Not state: no `revision` bump, no notification, no audit."""
        ...

    def list_fetches(self, since: float) -> list[Fetch]:
        """Every fetcher whose last fetch is at or after `since`, oldest fetch first."""
        ...

    def list_revisions(self) -> dict[str, list[str]]:
        """The kids of each recorded JWKS revision, by ETag."""
        ...

    def is_empty(self) -> bool:
        """No keysets, clients, revoked tokens or audit events (a backup may be imported)."""
        ...

    def append_audit(self, events: Sequence[AuditEvent]) -> None:
        """Append `events` (as every write with audit events does): each gets the next id and, as its
        `prev`, the hash of the event appended before it, read and written atomically with the append,
        so concurrent writers never give two events one `prev`."""
        ...

    def list_audit(
        self, since: float | None = None, limit: int = 100, before_id: int | None = None
    ) -> list[AuditEvent]:
        """Newest first, at most `limit` of them (any int: see clamp_limit); only `at` >= `since` and
        id < `before_id` when given."""
        ...

    def list_audit_after(self, after_id: int, limit: int = 1000) -> list[AuditEvent]:
        """Oldest first: at most `limit` events with id > `after_id`."""
        ...

    def audit_chain(self) -> AuditChain:
        """Where the audit chain starts (after the last prune) and ends (the newest event appended)."""
        ...

    def prune_audit(self, before: float, limit: int = 1000) -> int:
        """Delete at most `limit` of the oldest audit events (by id) with `at` before `before`, stopping at
        the first one at or after it (see `prunable`); how many went. The chain then starts at the first
        event kept, with the hash of the newest pruned one as its anchor. Bounded work per call (call
        again while it returns `limit`). Housekeeping: no `revision` bump."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class ChangeFeed(Protocol):
    """A store that can push change notifications (Redis pub/sub); others are polled."""

    def subscribe(self, on_change: Callable[[int], None]) -> Callable[[], None]:
        """Call `on_change(revision)` from another thread on every change; returns `stop`."""
        ...
