"""Importing a backup into a store (backup.py describes the file; backup_checks.py what is checked first).

Import merges; a revocation is forever, and so is a taint. Into a store that already holds a
keyset, each key takes whichever of the two records is further along the lifecycle (next < current < previous < retired
< revoked; a key only ever moves forward), so a key revoked or retired in the store stays so
whatever the backup says, and one revoked in the backup is revoked here too. Keys of one side only
are kept. If that leaves two current keys, the backup's signs and the other becomes previous (it
verifies for the keyset's verify_window); of two next keys the backup's is kept and the other
(which never signed) is discarded; a keyset left without a current key is repaired by the next
start or scheduler tick (its next key is promoted, or a new key made), as after an emergency
revocation. Revoked tokens are only ever added (a store never shortens a revocation). A client the
store holds is kept as it is there (a secret rotated out, or a scope taken away, does not come back);
clients only in the backup are added. A key tainted on either side is tainted after the import (at the
earlier moment); a tainted key never signs: of two current keys an untainted one is kept, and a
tainted current left alone is replaced by the next start or tick as a tainted current always is.
Audit events the store holds already are not written twice.
Every such decision is printed and recorded in the ``backup.import`` audit event.

Merging a keyset is pure; `restore` writes into the store.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from . import audit as audit_log
from .backup import ALL_EVENTS, Backup, Progress, plural, quiet
from .clock import parse_rfc3339, rfc3339
from .errors import RevisionConflictError
from .lifecycle import RETAIN_RETIRED_SECONDS
from .model import AuditEvent, Keyset, KeysetPolicy, KeyState, KeyVersion
from .stores import Store

# The audit log can be long: it is read in one go but written back in batches of this many events.
AUDIT_BATCH = 1000
# Writes of one keyset that lost a compare-and-set to a running server are merged again this often.
MERGE_ATTEMPTS = 5

# ----- merging a keyset (pure) -----------------------------------------------------------------

# How far along the lifecycle a key is; it only ever moves forward (any state may become revoked).
_RANK = {KeyState.NEXT: 0, KeyState.CURRENT: 1, KeyState.PREVIOUS: 2, KeyState.RETIRED: 3, KeyState.REVOKED: 4}


def _since(key: KeyVersion) -> float | None:
    return {
        KeyState.REVOKED: key.revoked_at,
        KeyState.RETIRED: key.retired_at,
        KeyState.PREVIOUS: key.deactivated_at,
        KeyState.CURRENT: key.activated_at,
        KeyState.NEXT: key.created_at,
    }[key.state]


def _at(key: KeyVersion) -> str:
    when = _since(key)
    if when is None:
        return ""
    return f" {'at' if key.state in (KeyState.REVOKED, KeyState.RETIRED) else 'since'} {rfc3339(when)}"


def _tainted_at(*records: KeyVersion | None) -> float | None:
    """The earliest taint of a key among its records: a taint is never undone."""
    return min((r.tainted_at for r in records if r is not None and r.tainted_at is not None), default=None)


def merge_keyset(
    stored: Keyset | None, incoming: Keyset, now: float, verify_window: int, made_at: float | None = None
) -> tuple[Keyset, list[str]]:
    """The keyset to write for `incoming` (from a backup made at `made_at`) over `stored`, with the
    stored revision (for compare-and-set), and what was decided, for people. See the module
    docstring for the rules."""
    if stored is None:
        return replace(incoming, revision=0), []
    notes: list[str] = []
    mine = {k.kid: k for k in stored.keys}
    merged: dict[str, KeyVersion] = {}
    from_backup: set[str] = set()
    # The store forgets a retired key RETAIN_RETIRED_SECONDS after it retired. A key it does not
    # know may have been retired (or lived and retired) here after a backup older than that: such a
    # key comes in retired, never live again.
    forgetful = made_at is None or made_at + RETAIN_RETIRED_SECONDS <= now
    for key in incoming.keys:
        old = mine.get(key.kid)
        if old is None and forgetful and key.verifies:
            merged[key.kid] = key.with_(state=KeyState.RETIRED, retired_at=now, sealed_private=None)
            notes.append(
                f"key {key.kid} comes in retired (the backup has it {key.state}): this store does not know it, and"
                f" it forgets retired keys {RETAIN_RETIRED_SECONDS // 86400} days after they retire, which is less"
                " than the backup's age, so it may have been retired here"
            )
            continue
        if old is None or _RANK[key.state] > _RANK[old.state]:
            merged[key.kid] = key
            from_backup.add(key.kid)
            if old is not None:
                notes.append(
                    f"key {key.kid} is {key.state} (the backup has it so{_at(key)}; the store had it {old.state})"
                )
        else:
            merged[key.kid] = old
            if old.state != key.state:
                notes.append(
                    f"kept key {old.kid} {old.state} ({old.state} in the store{_at(old)};"
                    f" the backup has it {key.state})"
                )
    for key in stored.keys:
        merged.setdefault(key.kid, key)
    for kid, key in merged.items():
        tainted = _tainted_at(key, mine.get(kid), incoming.find(kid))
        if tainted != key.tainted_at:
            merged[kid] = key.with_(tainted_at=tainted)
            notes.append(f"key {kid} stays tainted (since {rfc3339(tainted)})")

    def preferred(state: KeyState) -> list[str]:
        """Kids in `state`, the one to keep first: the backup's, then the most recent."""
        kids = [kid for kid, k in merged.items() if k.state == state]
        return sorted(
            kids, key=lambda kid: (merged[kid].tainted, kid not in from_backup, -(_since(merged[kid]) or 0.0))
        )

    currents = preferred(KeyState.CURRENT)
    for kid in currents[1:]:
        merged[kid] = merged[kid].with_(state=KeyState.PREVIOUS, deactivated_at=now, retire_at=now + verify_window)
        notes.append(
            f"key {kid} becomes previous (it verifies until {rfc3339(now + verify_window)}): key {currents[0]} is the"
            " current key"
        )
    nexts = preferred(KeyState.NEXT)
    for kid in nexts[1:]:
        merged[kid] = merged[kid].with_(state=KeyState.RETIRED, retired_at=now, sealed_private=None)
        notes.append(f"next key {kid} is discarded (it never signed): key {nexts[0]} is the next key")
    if not currents:
        notes.append(
            f"keyset {incoming.name} has no current key after the import; the next start (or scheduler tick of a"
            " running server) promotes its next key or makes a new one, as after an emergency revocation"
        )
    return replace(incoming, revision=stored.revision, keys=tuple(merged.values())), notes


# ----- writing into a store ------------------------------------------------------------------


def restore(
    backup: Backup,
    store: Store,
    now: float,
    policies: Mapping[str, KeysetPolicy],
    source: str = "",
    progress: Progress = quiet,
    actor: str = "cli",
) -> dict[str, int]:
    """Write the backup into `store`: its keysets are merged into stored ones of the same name
    (`merge_keyset`), clients the store lacks, revoked tokens and audit events it does not hold yet
    are added; then one `backup.import` audit event, which lists every merge decision."""
    notes: list[str] = []
    made_at = _timestamp(backup.created_at)
    for ks in backup.keysets:
        for attempt in range(MERGE_ATTEMPTS):
            merged, decided = merge_keyset(store.get_keyset(ks.name), ks, now, policies[ks.name].verify_window, made_at)
            try:
                store.save_keyset(merged, merged.revision)
            except RevisionConflictError:  # a running server changed it meanwhile: merge with that
                if attempt + 1 == MERGE_ATTEMPTS:
                    raise
                continue
            break
        for note in decided:
            progress(note)
        notes.extend(decided)
    progress(f"keysets: {plural(len(backup.keysets), 'keyset')} written")
    clients = 0
    # Deleted clients stay deleted: the store keeps no record of a client once deleted but its audit
    # event (kept for audit.retention).
    held_audit = store.list_audit(limit=ALL_EVENTS) if backup.clients or backup.audit else []
    deleted = {e.target: e.at for e in held_audit if e.action in _DELETED_ACTIONS and e.outcome == "ok"}
    for client in backup.clients:
        if client.client_id in deleted:
            when = rfc3339(deleted[client.client_id])
            note = f"skipped client {client.client_id}: it was deleted in this store at {when}"
            progress(note)
            notes.append(note)
            continue
        if store.get_client(client.client_id) is not None:
            # A secret rotated out or a scope taken away in the store must not come back from a backup.
            note = f"kept client {client.client_id} as the store has it (its secrets and scopes are not rolled back)"
            progress(note)
            notes.append(note)
            continue
        store.put_client(client)
        clients += 1
    progress(f"clients: {plural(clients, 'client')} written")
    live = {jti: exp for jti, exp in backup.revoked_tokens.items() if exp > now}
    for jti, exp in live.items():
        store.revoke_token(jti, exp)  # never shortens a revocation the store holds
    progress(f"revoked tokens: {plural(len(live), 'token')} written")
    # Events the store holds already (a backup of this very store) are not written twice.
    held = {_event_key(e) for e in held_audit}
    events = [e for e in backup.audit if _event_key(e) not in held]
    for start in range(0, len(events), AUDIT_BATCH):
        store.append_audit(events[start : start + AUDIT_BATCH])
    progress(f"audit: {plural(len(events), 'event')} written")
    counts = {**backup.counts(), "clients": clients, "revoked_tokens": len(live), "audit_events": len(events)}
    details: dict[str, Any] = {"issuer": backup.issuer, "created_at": backup.created_at, **counts}
    if notes:
        details["merged"] = notes
    event = AuditEvent(at=now, actor=actor, action="backup.import", target=source, details=details)
    store.append_audit([event])
    audit_log.log_events([event])
    return counts


# Audit actions that delete a client (the CLI's and the admin API's).
_DELETED_ACTIONS = frozenset({"client.delete"})


def _timestamp(text: str) -> float | None:
    """The backup's `created_at` (RFC 3339, authenticated by the tag) as seconds; None if unreadable."""
    try:
        return parse_rfc3339(text)
    except ValueError:
        return None


def _event_key(event: AuditEvent) -> str:
    """An audit event without its id and prev (which every store sets itself, as it chains events)."""
    return json.dumps({**event.as_dict(), "id": 0, "prev": ""}, sort_keys=True, default=str)
