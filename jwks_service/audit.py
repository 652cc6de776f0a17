"""Audit events: who did what to which key or client, when, why, and how it ended.

Events are stored by the store in the same transaction as the change they describe, and also
written as one JSON line each to the ``jwks_service.audit`` logger for log shippers.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from .model import AuditEvent

if TYPE_CHECKING:
    from .stores import Store

logger = logging.getLogger("jwks_service.audit")


def event(
    now: float,
    actor: str,
    action: str,
    target: str,
    *,
    outcome: str = "ok",
    reason: str = "",
    **details: Any,
) -> AuditEvent:
    return AuditEvent(
        at=now, actor=actor, action=action, target=target, outcome=outcome, reason=reason, details=details
    )


def log_events(events: Iterable[AuditEvent]) -> None:
    for e in events:
        payload = e.as_dict()
        payload.pop("id")
        logger.info(json.dumps({"audit": payload}, sort_keys=True))


def record(store: Store, events: Sequence[AuditEvent]) -> None:
    """Events that go with no other write: into the store's audit log, then to the log stream."""
    store.append_audit(events)
    log_events(events)


def prune(store: Store, before: float, now: float, actor: str, limit: int, *, until_done: bool = False) -> int:
    """Delete events older than `before`, `limit` at a time (bounded work per store call): one batch,
    or batches until none is left with `until_done`. When any went, that is itself audited
    (audit.prune), so the log says who emptied it up to when."""
    deleted = 0
    while True:
        batch = store.prune_audit(before, limit)
        deleted += batch
        if not until_done or batch < limit:
            break
    if deleted:
        record(store, [event(now, actor, "audit.prune", "audit", before=before, deleted=deleted)])
    return deleted


class AuditLog:
    """One store's audit log, as the edges see it: record events that go with no other write, and list
    them. Blocking store calls: the HTTP layer makes them in a worker thread."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def record(self, events: Sequence[AuditEvent]) -> None:
        record(self._store, events)

    def list(self, since: float | None = None, limit: int = 100) -> list[AuditEvent]:
        """Newest first; `since` in seconds since the epoch."""
        return self._store.list_audit(since, limit)
