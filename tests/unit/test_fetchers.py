"""The adoption recorder (bounds, the per-source cap, putting back a failed flush) and reader (the store's
records against the served keysets, the read cache, unknown keysets, the gate)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import anyio
import pytest
from support import make_settings

from jwks_service.adoption import Adoption, Fetch
from jwks_service.clock import ManualClock
from jwks_service.configparts import AdoptionSettings
from jwks_service.errors import NotFoundError, StoreError
from jwks_service.fetchers import AdoptionRecorder
from jwks_service.model import Keyset, KeyState
from jwks_service.runtime import Runtime
from jwks_service.stores.sqlite import SQLiteStore

KIDS = ("k1", "k2")


def recorder(max_fetchers: int = 10, max_per_source: int = 3, window: int = 3600) -> AdoptionRecorder:
    return AdoptionRecorder(AdoptionSettings(window=window, max_fetchers=max_fetchers, max_per_source=max_per_source))


def test_a_fetcher_is_buffered_once_with_its_newest_revision() -> None:
    r = recorder()
    r.note("orders/1", "10.0.0.1", '"a"', ("k1",), 1.0)
    r.note("orders/1", "10.0.0.1", '"b"', KIDS, 2.0)
    r.note("billing/2", "10.0.0.2", '"b"', KIDS, 3.0)
    fetches, revisions = r.take()
    assert sorted(fetches, key=lambda f: f.fetcher) == [Fetch("billing/2", '"b"', 3.0), Fetch("orders/1", '"b"', 2.0)]
    assert revisions == {'"b"': KIDS}  # only revisions the flush names
    assert r.take() == ([], {})


def test_a_full_buffer_drops_new_names_and_counts_them() -> None:
    r = recorder(max_fetchers=3, max_per_source=100)
    for i in range(5):
        r.note(f"f{i}", "10.0.0.1", '"a"', KIDS, float(i))
    r.note("f0", "10.0.0.1", '"b"', KIDS, 9.0)  # a name already buffered is still updated
    assert r.pending == 3
    assert r.dropped == {"buffer_full": 2, "per_source": 0}
    fetches, _ = r.take()
    assert {f.fetcher: f.revision for f in fetches} == {"f0": '"b"', "f1": '"a"', "f2": '"a"'}


def test_one_source_names_at_most_max_per_source_fetchers_per_window() -> None:
    r = recorder(max_fetchers=100, max_per_source=3, window=100)
    for i in range(6):
        r.note(f"stranger/{i}", "203.0.113.9", '"a"', KIDS, 1.0)
    r.note("stranger/0", "203.0.113.9", '"a"', KIDS, 2.0)  # one it named already: fine
    r.note("orders/1", "10.0.0.1", '"a"', KIDS, 2.0)  # others are not crowded out
    assert r.dropped["per_source"] == 3
    assert {f.fetcher for f in r.take()[0]} == {"stranger/0", "stranger/1", "stranger/2", "orders/1"}
    r.note("stranger/5", "203.0.113.9", '"a"', KIDS, 50.0)  # still the same window
    assert r.dropped["per_source"] == 4
    r.note("stranger/5", "203.0.113.9", '"a"', KIDS, 101.0)  # a new window: the table starts again
    assert r.dropped["per_source"] == 4 and r.pending == 1


def test_the_per_source_table_is_bounded() -> None:
    r = recorder(max_fetchers=4, max_per_source=2, window=10**6)
    for i in range(40):
        r.note(f"f{i}", f"10.0.0.{i}", '"a"', KIDS, float(i))
        r.take()
    assert sum(len(names) for names in r._sources.values()) <= 2 * 4
    assert r.dropped == {"buffer_full": 0, "per_source": 0}


def test_a_failed_flush_puts_its_notes_back_under_newer_ones_and_within_the_bound() -> None:
    r = recorder(max_fetchers=3, max_per_source=100)
    r.note("a", "s", '"old"', KIDS, 1.0)
    r.note("b", "s", '"old"', KIDS, 1.0)
    taken, _ = r.take()
    r.note("a", "s", '"new"', KIDS, 2.0)  # noted while the flush was under way
    r.note("c", "s", '"new"', KIDS, 2.0)
    r.note("d", "s", '"new"', KIDS, 2.0)
    r.put_back(taken)
    fetches, revisions = r.take()
    assert {f.fetcher: f.revision for f in fetches} == {"a": '"new"', "c": '"new"', "d": '"new"'}
    assert r.dropped["buffer_full"] == 1  # b did not fit any more
    assert revisions == {'"new"': KIDS}


class FailingStore(SQLiteStore):
    fail = True

    def record_fetches(self, *args: object, **kwargs: object) -> None:
        if self.fail:
            raise StoreError("store down")
        super().record_fetches(*args, **kwargs)  # type: ignore[arg-type]


def test_flush_writes_to_the_store_and_keeps_the_notes_when_it_fails() -> None:
    store = FailingStore(":memory:")
    r = recorder()
    r.note("orders/1", "10.0.0.1", '"a"', KIDS, 100.0)

    with pytest.raises(StoreError):
        anyio.run(r.flush, store, 100.0)
    assert r.pending == 1
    store.fail = False
    anyio.run(r.flush, store, 101.0)
    assert r.pending == 0
    assert store.list_fetches(0.0) == [Fetch("orders/1", '"a"', 100.0)]
    assert store.list_revisions() == {'"a"': list(KIDS)}
    store.close()


@pytest.fixture
def served(runtime_factory: Callable[..., Runtime], clock: ManualClock) -> Runtime:
    return runtime_factory()


def test_the_reader_counts_who_holds_each_published_kid(served: Runtime, clock: ManualClock) -> None:
    keyset = served.keys.snapshot.keysets["default"]
    current = keyset.current
    nxt = keyset.next
    assert current is not None and nxt is not None
    now = clock.now()
    served.store.record_fetches(
        [Fetch("orders/1", '"both"', now - 10), Fetch("old/1", '"cur"', now - 20), Fetch("lost/1", '"gone"', now - 5)],
        {'"both"': [current.kid, nxt.kid], '"cur"': [current.kid]},
        now=now,
        window=served.settings.adoption.window,
        max_fetchers=100,
    )
    adopted = served.adoption.adoption("default")
    assert adopted.fetchers == 3
    assert {k.kid: (k.state, k.holding) for k in adopted.keys} == {
        current.kid: (KeyState.CURRENT.value, 2),
        nxt.kid: (KeyState.NEXT.value, 1),
    }
    assert adopted.share(nxt.kid) == pytest.approx(1 / 3)
    assert [f.fetcher for f in adopted.laggards] == ["old/1", "lost/1"]  # oldest fetch first
    assert served.adoption.peek("default") == adopted  # no I/O: what was read last

    gate = served.adoption.gate("default")
    assert gate.fetchers == 3 and gate.share == pytest.approx(1 / 3)
    assert gate.due_at is not None


def test_the_reader_reuses_a_read_for_a_second(served: Runtime, clock: ManualClock) -> None:
    assert served.adoption.adoption("default").fetchers == 0
    now = clock.now()
    served.store.record_fetches([Fetch("orders/1", '"x"', now)], {}, now=now, window=3600, max_fetchers=10)
    assert served.adoption.adoption("default").fetchers == 0  # cached
    served.adoption.reload()
    assert served.adoption.adoption("default").fetchers == 1


def test_fetchers_outside_the_window_do_not_count(served: Runtime, clock: ManualClock) -> None:
    now = clock.now()
    window = served.settings.adoption.window
    served.store.record_fetches([Fetch("orders/1", '"x"', now)], {}, now=now, window=window, max_fetchers=10)
    clock.advance(window + 1)
    served.adoption.reload()
    assert served.adoption.adoption("default").fetchers == 0


def test_an_unknown_keyset_is_not_found(served: Runtime) -> None:
    with pytest.raises(NotFoundError):
        served.adoption.adoption("nope")
    with pytest.raises(NotFoundError):
        served.adoption.gate("nope")
    assert served.adoption.peek("nope") is None


def test_settings_reach_the_recorder(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, adoption={"window": "1h", "max_fetchers": 5, "max_per_source": 2})
    assert settings.adoption == AdoptionSettings(window=3600, max_fetchers=5, max_per_source=2)


class BrokenReads(SQLiteStore):
    reads = 0

    def list_fetches(self, since: float) -> list[Fetch]:
        self.reads += 1
        raise StoreError("store down")


def test_status_reads_survive_a_store_outage_and_do_not_wait_for_it_again_at_once(
    runtime_factory: Callable[..., Runtime],
) -> None:
    served = runtime_factory()
    reader = served.adoption
    reader.reload()
    assert reader.adoptions()["default"].fetchers == 0  # a first read
    broken = BrokenReads(":memory:")
    reader.store = broken
    reader._records = replace(reader._records, read_at=0.0) if reader._records else None  # stale now
    assert reader.adoptions()["default"].fetchers == 0  # the last read, while the store is down
    with pytest.raises(StoreError):
        reader.adoption("default")
    assert broken.reads == 1  # the second caller did not wait for the store again within a second
    broken.close()


class HangingReads(SQLiteStore):
    """A store that hangs on a read of the adoption records until released (a silent Redis)."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.entered = threading.Event()
        self.release = threading.Event()

    def list_fetches(self, since: float) -> list[Fetch]:
        self.entered.set()
        self.release.wait(10)
        raise StoreError("store timed out")


def test_public_reads_do_not_queue_behind_a_read_of_a_hanging_store(runtime_factory: Callable[..., Runtime]) -> None:
    # /keys/status calls adoptions() in a worker thread for every request: while one of them waits for a
    # silent store, the others answer from the last read instead of each holding a thread behind it.
    served = runtime_factory()
    reader = served.adoption
    reader.reload()
    hanging = HangingReads(":memory:")
    reader.store = hanging
    reader._records = replace(reader._records, read_at=0.0) if reader._records else None  # stale now
    first = threading.Thread(target=reader.adoptions)
    first.start()
    try:
        assert hanging.entered.wait(5)
        answers: list[int] = []
        second = threading.Thread(target=lambda: answers.append(reader.adoptions()["default"].fetchers))
        second.start()
        second.join(3)  # the hanging read lasts 10 s
        assert answers == [0], "a second caller waited for the first one's read of a hanging store"
    finally:
        hanging.release.set()
        first.join(5)
        hanging.close()


def test_public_reads_share_one_count_of_the_records(served: Runtime, clock: ManualClock) -> None:
    # /keys/status is public and counts every fetcher of the window (up to max_fetchers) per keyset:
    # callers within a second of one another share one count of the same records.
    reader = served.adoption
    now = clock.now()
    served.store.record_fetches(
        [Fetch(f"f{i}", '"x"', now) for i in range(50)], {}, now=now, window=3600, max_fetchers=100
    )
    reader.reload()
    counted: list[str] = []
    compute = reader._compute

    def counting(keyset: Keyset, records: object, at: float) -> Adoption:
        counted.append(keyset.name)
        return compute(keyset, records, at)  # type: ignore[arg-type]

    reader._compute = counting  # type: ignore[method-assign]
    first = reader.adoptions()
    for _ in range(20):
        assert reader.adoptions() == first
    assert counted == ["default"], "every caller counted the records again"
    reader.reload()  # new records: counted again
    assert reader.adoptions()["default"].fetchers == 50
    assert counted == ["default", "default"]
