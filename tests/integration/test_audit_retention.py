"""audit.retention (API.md §8): the audit log is pruned by every replica's scheduler, in bounded
batches, off the event loop, and on demand by `jwks-service audit prune`."""

from __future__ import annotations

from collections.abc import Callable

from starlette.testclient import TestClient
from support import ISSUER, wait_until

from jwks_service.clock import ManualClock
from jwks_service.http import create_app
from jwks_service.model import AuditEvent
from jwks_service.runtime import AUDIT_PRUNE_BACKLOG, AUDIT_PRUNE_BATCH, AUDIT_PRUNE_EVERY, Runtime

DAY = 86400.0


def old_and_new(rt: Runtime, old: int, age_days: float = 401) -> None:
    """A log of `old` events `age_days` old, then one 399 days old. A prune deletes the oldest events
    by id and stops at the first one it keeps, so the log is emptied first (the start's events are
    from now, and would hold back the old ones appended after them)."""
    rt.store.prune_audit(float("inf"), 10**6)
    now = rt.clock.now()
    rt.store.append_audit(
        [AuditEvent(at=now - age_days * DAY - i, actor="x", action="test.old", target=f"o{i}") for i in range(old)]
        + [AuditEvent(at=now - 399 * DAY, actor="x", action="test.kept", target="k")]
    )


def actions(rt: Runtime) -> list[str]:
    return [e.action for e in rt.store.list_audit(limit=10_000)]


def test_the_scheduler_prunes_past_retention_hourly_in_bounded_batches(runtime: Runtime, clock: ManualClock) -> None:
    assert runtime.settings.audit_retention == 400 * DAY  # the default
    old_and_new(runtime, AUDIT_PRUNE_BATCH + 5)
    assert runtime.prune_audit() == AUDIT_PRUNE_BATCH  # bounded: one batch a call
    assert runtime.prune_audit() == 0  # a backlog: not again at once...
    clock.advance(AUDIT_PRUNE_BACKLOG)
    assert runtime.prune_audit() == 5  # ...but a minute later
    assert "test.old" not in actions(runtime) and "test.kept" in actions(runtime)
    pruned = [e for e in runtime.store.list_audit() if e.action == "audit.prune"]
    assert [e.details["deleted"] for e in pruned] == [5, AUDIT_PRUNE_BATCH]  # newest first
    assert pruned[0].actor == "scheduler"

    old_and_new(runtime, 3)
    clock.advance(AUDIT_PRUNE_EVERY - 1)
    assert runtime.prune_audit() == 0  # nothing is due within the hour
    clock.advance(1)
    assert runtime.prune_audit() == 3


def test_retention_is_configurable(runtime_factory: Callable[..., Runtime]) -> None:
    rt = runtime_factory(audit={"retention": "30d"})
    old_and_new(rt, 2, age_days=31)
    assert rt.prune_audit() == 3  # the 399-day-old event is past 30d too
    assert "test.kept" not in actions(rt) and "test.old" not in actions(rt)


def test_the_running_server_prunes_in_its_background_loop(runtime: Runtime) -> None:
    old_and_new(runtime, 3)
    with TestClient(create_app(runtime=runtime, background=True), base_url=ISSUER) as http:
        wait_until(lambda: "test.old" not in actions(runtime), timeout=10)
        assert http.get("/healthz").status_code == 200
    assert "test.kept" in actions(runtime) and "audit.prune" in actions(runtime)
    assert runtime.audit_log.verify().ok  # the chain holds from the first event kept
