"""The audit log you can prove (API.md §8): every event carries `prev`, the SHA-256 of the previous
event's canonical JSON, and `jwks-service audit verify` exits 1 naming the first event that was
edited, removed or moved in the store, on SQLite and on Redis; concurrent writers keep one chain."""

from __future__ import annotations

import itertools
import json
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from jwks_service.cli import main
from jwks_service.config import load_settings
from jwks_service.model import AuditEvent, event_hash
from jwks_service.runtime import open_store
from jwks_service.stores import Store

# The service's Redis namespace is fixed ({jwks}), so these tests take database 11 of the server.
REDIS_DB = 11


@dataclass
class Deployment:
    config: str
    url: str

    def store(self) -> Store:
        return open_store(load_settings(self.config))

    def append(self, *targets: str, at: float = 1000.0) -> None:
        store = self.store()
        try:
            store.append_audit(
                [AuditEvent(at=at + i, actor="test", action="test", target=t) for i, t in enumerate(targets)]
            )
        finally:
            store.close()

    def events(self) -> list[AuditEvent]:
        store = self.store()
        try:
            return store.list_audit_after(0, 10_000)
        finally:
            store.close()

    # -- what someone with write access to the store could do, behind the service's back ---------

    def raw_rows(self) -> dict[int, dict[str, object]]:
        """Every stored event as the store holds it, by id."""
        if self.url.startswith("sqlite:"):
            with sqlite3.connect(self.url.removeprefix("sqlite:///")) as db:
                return {int(i): json.loads(d) for i, d in db.execute("SELECT id, data FROM audit")}
        with redis.Redis.from_url(self.url) as r:
            return {int(score): json.loads(m) for m, score in r.zrange("{jwks}:audit", 0, -1, withscores=True)}

    def raw_put(self, event_id: int, data: dict[str, object], *, legacy: bool = False) -> None:
        """Store `data` as the event numbered `event_id` (replacing what is there)."""
        if self.url.startswith("sqlite:"):
            with sqlite3.connect(self.url.removeprefix("sqlite:///")) as db:
                db.execute("DELETE FROM audit WHERE id = ?", (event_id,))
                body = {k: v for k, v in data.items() if k != "id"}
                db.execute(
                    "INSERT INTO audit (id, at, data) VALUES (?, ?, ?)", (event_id, data["at"], json.dumps(body))
                )
            return
        with redis.Redis.from_url(self.url) as r:
            r.zremrangebyscore("{jwks}:audit", event_id, event_id)
            r.zadd("{jwks}:audit", {json.dumps({**data, "id": event_id}): event_id})
            r.zadd("{jwks}:audit_at", {str(event_id): float(str(data["at"]))})
            if legacy:
                r.set("{jwks}:audit_seq", max(event_id, int(r.get("{jwks}:audit_seq") or 0)))

    def raw_delete(self, event_id: int) -> None:
        if self.url.startswith("sqlite:"):
            with sqlite3.connect(self.url.removeprefix("sqlite:///")) as db:
                db.execute("DELETE FROM audit WHERE id = ?", (event_id,))
            return
        with redis.Redis.from_url(self.url) as r:
            r.zremrangebyscore("{jwks}:audit", event_id, event_id)
            r.zrem("{jwks}:audit_at", str(event_id))


def wipe_redis(url: str) -> None:
    with redis.Redis.from_url(url) as r:
        keys = list(r.scan_iter(match="{jwks}:*", count=1000))
        if keys:
            r.delete(*keys)


@pytest.fixture(params=["sqlite", "redis"])
def deployment(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Deployment]:
    monkeypatch.chdir(tmp_path)
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/jwks.db"
    else:
        url = str(request.getfixturevalue("redis_url")).rsplit("/", 1)[0] + f"/{REDIS_DB}"
        wipe_redis(url)
    config = tmp_path / "jwks.toml"
    config.write_text(f'[store]\nurl = "{url}"\n[secrets]\nkek_file = "{tmp_path}/kek"\n')
    yield Deployment(str(config), url)
    if request.param == "redis":
        wipe_redis(url)


def verify(capsys: pytest.CaptureFixture[str], d: Deployment) -> tuple[int, str, str]:
    code = main(["audit", "verify", "--config", d.config])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_clean_log_verifies(deployment: Deployment, capsys: pytest.CaptureFixture[str]) -> None:
    deployment.append("a", "b")
    deployment.append("c")
    deployment.append("d", "e", "f")
    events = deployment.events()
    assert [e.id for e in events] == [1, 2, 3, 4, 5, 6]
    assert events[0].prev == "" and all(e.prev == event_hash(p) for p, e in itertools.pairwise(events))
    code, out, err = verify(capsys, deployment)
    assert (code, err) == (0, "")
    assert "audit log verified: 6 events, the chain starting at id 1" in out


TAMPERING: dict[str, Callable[[Deployment], None]] = {
    # Someone changes what event 3 says (its prev stays right: only the next link shows it).
    "edit": lambda d: d.raw_put(3, {**d.raw_rows()[3], "reason": "nothing to see"}),
    # Someone removes event 3.
    "delete": lambda d: d.raw_delete(3),
    # Someone swaps events 3 and 4: each keeps the other's place.
    "reorder": lambda d: (lambda rows: (d.raw_put(3, rows[4]), d.raw_put(4, rows[3])))(d.raw_rows()),
}


@pytest.mark.parametrize("tamper", sorted(TAMPERING))
def test_editing_deleting_or_reordering_one_event_fails_naming_it(
    deployment: Deployment, capsys: pytest.CaptureFixture[str], tamper: str
) -> None:
    deployment.append("a", "b", "c", "d", "e", "f")
    assert verify(capsys, deployment)[0] == 0
    TAMPERING[tamper](deployment)
    code, out, err = verify(capsys, deployment)
    assert code == 1, out
    assert "audit log: event 3 is " in err, err
    assert "Traceback" not in err


def test_removing_or_editing_the_newest_or_oldest_event_is_seen(
    deployment: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    deployment.append("a", "b", "c", "d")
    deployment.raw_delete(4)  # the newest: the chain's recorded head names it
    code, _, err = verify(capsys, deployment)
    assert code == 1 and "event 4 is missing" in err
    deployment.raw_put(4, {**deployment.raw_rows()[3], "target": "x"})
    assert verify(capsys, deployment)[0] == 1
    deployment.raw_delete(4)
    deployment.raw_delete(1)  # the oldest: the chain's recorded start names it
    code, _, err = verify(capsys, deployment)
    assert code == 1 and "event 1 is missing" in err


def test_a_prune_keeps_the_chain_verifiable(deployment: Deployment, capsys: pytest.CaptureFixture[str]) -> None:
    deployment.append(*"abcdef", at=1000.0)
    store = deployment.store()
    try:
        assert store.prune_audit(before=1003.0) == 3
        chain = store.audit_chain()
        assert (chain.first_id, chain.last_id) == (4, 6)
    finally:
        store.close()
    code, out, _ = verify(capsys, deployment)
    assert code == 0 and "the chain starting at id 4" in out
    deployment.raw_delete(4)  # the first event kept is anchored too
    code, _, err = verify(capsys, deployment)
    assert code == 1 and "event 4 is missing" in err


def test_events_from_before_the_chain_are_reported_and_the_chain_starts_after_them(
    deployment: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    deployment.store().close()
    for i in (1, 2):  # written by a version without the chain: no prev, no chain record
        deployment.raw_put(i, {"at": 900.0 + i, "actor": "cli", "action": "old", "target": f"o{i}"}, legacy=True)
    deployment.append("a", "b")
    events = deployment.events()
    assert [e.id for e in events] == [1, 2, 3, 4]
    assert events[2].prev == event_hash(events[1])  # linked to the newest event before it
    code, out, _ = verify(capsys, deployment)
    assert code == 0
    assert "2 older events predate the chain" in out and "the chain starting at id 3" in out


def test_concurrent_appends_from_two_processes_keep_one_chain(
    deployment: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    deployment.append("first")  # the store exists before the writers race
    writer = (
        "import sys\n"
        "from jwks_service.config import load_settings\n"
        "from jwks_service.model import AuditEvent\n"
        "from jwks_service.runtime import open_store\n"
        "store = open_store(load_settings(sys.argv[1]))\n"
        "for i in range(40):\n"
        "    event = AuditEvent(at=float(i), actor=sys.argv[2], action='race', target=str(i))\n"
        "    store.append_audit([event] * (1 + i % 2))\n"
        "store.close()\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", writer, deployment.config, name]) for name in ("p1", "p2")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    events = deployment.events()
    assert len(events) == 1 + 2 * 60
    assert len({e.prev for e in events}) == len(events)  # never two events with one prev
    assert {e.actor for e in events} == {"test", "p1", "p2"}
    code, out, _ = verify(capsys, deployment)
    assert code == 0 and f"{len(events)} events" in out
