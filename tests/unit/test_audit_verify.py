"""audit.verify, without a store: which event it names for each way a stored chain can be changed."""

from __future__ import annotations

from dataclasses import replace

from jwks_service.audit import Verdict, verify
from jwks_service.model import AuditChain, AuditEvent, event_hash
from jwks_service.stores import chain


def log(n: int, after: tuple[int, str] = (0, "")) -> tuple[list[AuditEvent], AuditChain]:
    events = chain([AuditEvent(at=float(i), actor="x", action="test", target=f"t{i}") for i in range(n)], *after)
    return events, AuditChain(events[0].id, events[0].prev, events[-1].id, event_hash(events[-1]))


def named(events: list[AuditEvent], ends: AuditChain) -> tuple[int | None, str]:
    verdict = verify(events, ends)
    return verdict.bad_id, verdict.problem


def test_an_intact_chain_verifies() -> None:
    events, ends = log(5)
    verdict = verify(events, ends)
    assert verdict.ok and (verdict.checked, verdict.starts_at, verdict.before_chain) == (5, 1, 0)


def test_each_change_names_the_event_changed() -> None:
    events, ends = log(6)
    edited = [*events[:2], replace(events[2], target="other"), *events[3:]]
    assert named(edited, ends) == (3, "edited, or replaced")
    assert named([*events[:2], *events[3:]], ends) == (3, "missing (removed from the store)")
    swapped = [*events[:2], replace(events[3], id=3), replace(events[2], id=4), *events[4:]]
    assert named(swapped, ends)[0] == 3
    assert named([*events[:3], events[2], *events[3:]], ends) == (3, "out of order")  # listed twice
    relinked = [*events[:3], replace(events[3], prev=event_hash(events[1])), *events[4:]]
    assert named(relinked, ends) == (4, "edited, or replaced")  # its own prev was changed


def test_the_recorded_ends_catch_changes_at_either_end() -> None:
    events, ends = log(4)
    assert named(events[:-1], ends) == (4, "missing (the newest events were removed)")
    assert named([*events[:-1], replace(events[-1], target="x")], ends) == (4, "edited, or replaced")
    extra = chain([AuditEvent(at=9.0, actor="x", action="test", target="extra")], 4, event_hash(events[-1]))
    assert named([*events, *extra], ends) == (5, "not appended by the store (inserted)")
    assert named(events[1:], ends) == (1, "missing (removed from the store)")
    assert named([replace(events[0], prev="0" * 64), *events[1:]], ends) == (1, "edited, or replaced")


def test_a_pruned_chain_starts_at_its_anchor() -> None:
    events, ends = log(6)
    kept = events[3:]
    anchored = replace(ends, first_id=4, first_prev=event_hash(events[2]))
    assert verify(kept, anchored).ok and verify(kept, anchored).starts_at == 4
    assert named(kept[1:], anchored) == (4, "missing (removed from the store)")


def test_events_from_before_the_chain_are_counted_not_checked() -> None:
    old = [AuditEvent(at=0.0, actor="x", action="old", target="o", id=i) for i in (1, 2)]
    events, ends = log(3, after=(2, event_hash(old[-1])))
    verdict = verify([*old, *events], ends)
    assert verdict.ok and (verdict.before_chain, verdict.starts_at, verdict.checked) == (2, 3, 3)
    assert verify(old, AuditChain()) == Verdict(before_chain=2)  # no chain yet: nothing to check
