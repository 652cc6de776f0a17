"""Audit events: who did what to which key or client, when, why, and how it ended.

Events are stored by the store in the same transaction as the change they describe, and also
written to the ``jwks_service.audit`` logger for log shippers (a JSON text in a text line, or, with
`[log] format = "json"`, the event's fields as the line's keys: logs.Fields), and to the configured
sinks (audit_sinks, through the store's audit tap). An event made while handling a request names it
in `details.request_id` (requestid), which the event's hash covers like any other detail.

Each stored event carries `prev`, the SHA-256 of the previous event's canonical JSON
(model.event_hash), and the store keeps where the chain starts and ends (model.AuditChain).
`verify` walks the events oldest first and names the first one that does not fit.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from .errors import InvalidRequestError
from .logs import Fields
from .model import AuditChain, AuditEvent, event_hash
from .requestid import REQUEST_ID

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
    if request_id := REQUEST_ID.get():
        details["request_id"] = request_id
    return AuditEvent(
        at=now, actor=actor, action=action, target=target, outcome=outcome, reason=reason, details=details
    )


class _AuditText:
    """The text format's line: made only when one is written."""

    __slots__ = ("payload",)

    def __init__(self, payload: dict[str, Any]) -> None:
        self.payload = payload

    def __str__(self) -> str:
        return json.dumps({"audit": self.payload}, sort_keys=True)


def log_events(events: Iterable[AuditEvent]) -> None:
    for e in events:
        payload = e.as_dict()
        del payload["id"], payload["prev"]  # the store's, set as it appends (the sinks carry both)
        logger.info(Fields(f"audit {e.action}", {"audit": True, **payload}, _AuditText(payload)))


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


# How many events `verify` reads from the store per call.
VERIFY_PAGE = 1000


@dataclass(frozen=True, slots=True)
class Verdict:
    """What `verify` found. `bad_id` is the first event that does not fit (None when all do):
    edited, out of place, or missing (then the id it should have had)."""

    checked: int = 0  # events the chain covers, checked
    before_chain: int = 0  # older events, from before the chain began (not covered)
    starts_at: int = 0  # the first id the chain covers (0: no chained event yet)
    bad_id: int | None = None
    problem: str = ""

    @property
    def ok(self) -> bool:
        return self.bad_id is None


def _follows(pred: tuple[int, str], e: AuditEvent) -> bool:
    return e.id == pred[0] + 1 and e.prev == pred[1]


def verify(events: Iterable[AuditEvent], chain: AuditChain) -> Verdict:
    """Check `events` (oldest first, by id) against the chain's ends, in one pass.

    Each event must have the next id and, as `prev`, the hash of the one before (the first: the
    chain's anchor). When an event's `prev` is wrong, the next link tells which side changed: if the
    event itself is followed correctly, it is intact and the one before it was edited (or replaced);
    otherwise it is. A gap in the ids is a removed event; at the end, the chain's recorded head
    catches a removed or edited newest event."""
    if not chain.first_id:
        old = sum(1 for _ in events)
        return Verdict(before_chain=old)
    pred = (chain.first_id - 1, chain.first_prev)
    suspect: AuditEvent | None = None  # its `prev` did not match: it, or the one before it, changed
    before = suspect_pred_id = checked = 0
    for e in events:
        if e.id < chain.first_id and not checked:
            before += 1
            continue
        checked += 1
        if suspect is not None:
            bad = suspect_pred_id if _follows((suspect.id, event_hash(suspect)), e) else suspect.id
            return _bad(checked, before, chain, bad, "edited, or replaced")
        if _follows(pred, e):
            pred = (e.id, event_hash(e))
            continue
        if e.id > pred[0] + 1:
            return _bad(checked, before, chain, pred[0] + 1, "missing (removed from the store)")
        if e.id <= pred[0]:
            return _bad(checked, before, chain, e.id, "out of order")
        suspect, suspect_pred_id = e, pred[0]
    last = (suspect.id, event_hash(suspect)) if suspect is not None else pred
    if suspect is not None:
        bad = suspect_pred_id if last == (chain.last_id, chain.last_hash) else suspect.id
        return _bad(checked, before, chain, bad, "edited, or replaced")
    if last[0] < chain.last_id:
        return _bad(checked, before, chain, last[0] + 1, "missing (the newest events were removed)")
    if last[0] > chain.last_id:
        return _bad(checked, before, chain, chain.last_id + 1, "not appended by the store (inserted)")
    if last[1] != chain.last_hash:
        return _bad(checked, before, chain, last[0], "edited, or replaced")
    return Verdict(checked, before, chain.first_id)


def _bad(checked: int, before: int, chain: AuditChain, bad_id: int, problem: str) -> Verdict:
    # An event before the anchor is the anchor's predecessor: the first event kept is the bad one.
    return Verdict(checked, before, chain.first_id, max(bad_id, chain.first_id), problem)


def events_oldest_first(store: Store, page: int = VERIFY_PAGE) -> Iterator[AuditEvent]:
    """Every stored event, oldest first, read `page` at a time."""
    after = 0
    while True:
        batch = store.list_audit_after(after, page)
        yield from batch
        if len(batch) < page:
            return
        after = batch[-1].id


def _appended_by(last_id: int, event: AuditEvent) -> bool:
    return event.id <= last_id


def parse_cursor(cursor: str | None) -> int | None:
    """An /admin/audit cursor (the `next_cursor` of the page before) as the id to list below."""
    if cursor is None:
        return None
    if not cursor.isascii() or not cursor.isdigit() or len(cursor) > 18:
        raise InvalidRequestError("cursor must be a next_cursor this service returned")
    return int(cursor)


class AuditLog:
    """One store's audit log, as the edges see it: record events that go with no other write, and list
    them. Blocking store calls: the HTTP layer makes them in a worker thread."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def record(self, events: Sequence[AuditEvent]) -> None:
        record(self._store, events)

    def page(self, since: float | None, limit: int, cursor: str | None) -> tuple[Sequence[AuditEvent], str | None]:
        """One page, newest first, and the cursor of the next (older) one: None when this is the last."""
        events = self._store.list_audit(since, limit + 1, parse_cursor(cursor))
        more = len(events) > limit
        events = events[:limit]
        return events, str(events[-1].id) if more else None

    def verify(self) -> Verdict:
        """Check the whole stored chain (blocking; reads it all, a page at a time). The chain's ends
        are read first, and events appended after that are left out; a prune that ran meanwhile
        moves the chain's start, and then the check runs once more."""
        verdict = Verdict()
        for _ in range(2):
            chain = self._store.audit_chain()
            events = events_oldest_first(self._store)
            if chain.last_id:
                events = itertools.takewhile(partial(_appended_by, chain.last_id), events)
            verdict = verify(events, chain)
            if verdict.ok or self._store.audit_chain().first_id == chain.first_id:
                break
        return verdict
