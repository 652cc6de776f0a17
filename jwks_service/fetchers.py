"""Adoption telemetry (API.md §6): record which JWKS revision each fetcher holds, and read it back.

`AdoptionRecorder.note` is called by the JWKS endpoint for every 200 and every matching 304: O(1), no
I/O. It buffers one entry per fetcher (the newest revision it was seen to hold) in a dict of at most
`[adoption] max_fetchers` entries, and lets one source address name at most `max_per_source` fetchers
in a window (a stranger inventing names cannot crowd the others out); what does not fit is counted,
not recorded. `flush_loop` hands the buffer to the store about once a second, in a worker thread; a
flush that fails puts its entries back (newer notes win, the bound holds) and is logged once.

`AdoptionReader` answers `adoption(name)` and `gate(name)` from the store's records (read at most once a
second) and the served keysets; `peek(name)` answers from what was read last, with no I/O, for the
event loop (metrics). Both classes are per process; the records they share live in the store.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

import anyio

from . import adoption as rules
from .adoption import Adoption, Fetch, Gate
from .clock import Clock
from .config import Settings
from .configparts import AdoptionSettings
from .errors import JwksServiceError, NotFoundError
from .lifecycle import next_rotation_at
from .model import Keyset
from .repeats import RepeatedFailure
from .stores import Store

log = logging.getLogger("jwks_service")

FLUSH_SECONDS = 1.0  # how often a process hands its notes to the store
READ_SECONDS = 1.0  # how long the reader reuses the records it read
REFRESH_SECONDS = 10.0  # how often the flush loop also reads the records, for peek() (metrics)
SHUTDOWN_FLUSH_SECONDS = 5.0  # the last flush, on shutdown, gives up after this
MAX_KNOWN_REVISIONS = 64  # JWKS revisions whose kids a recorder remembers (one is current)
DROP_REASONS = ("buffer_full", "per_source")


class AdoptionRecorder:
    """The notes of one process since its last flush. Called on the event loop only (`note`, `take`,
    `put_back`); the store write runs in a worker thread between `take` and `put_back`."""

    def __init__(self, settings: AdoptionSettings) -> None:
        self.settings = settings
        self._buffer: dict[str, tuple[str, float]] = {}  # fetcher -> (revision, last fetch)
        self._kids: dict[str, tuple[str, ...]] = {}  # revision (ETag) -> kids
        self._sources: dict[str, set[str]] = {}  # source address -> fetcher names seen this window
        self._source_names = 0  # names in _sources, all sources together
        self._sources_since = float("-inf")
        self.dropped = dict.fromkeys(DROP_REASONS, 0)

    def note(self, fetcher: str, source: str, etag: str, kids: tuple[str, ...], now: float) -> None:
        """`fetcher` (from `source`) holds the JWKS revision `etag`, made of `kids`, as of `now`."""
        buffer = self._buffer
        if fetcher not in buffer:
            if not self._admit(fetcher, source, now):
                return
            if len(buffer) >= self.settings.max_fetchers:
                self.dropped["buffer_full"] += 1
                return
        buffer[fetcher] = (etag, now)
        if etag not in self._kids:
            if len(self._kids) >= MAX_KNOWN_REVISIONS:
                self._kids.clear()
            self._kids[etag] = kids

    def _admit(self, fetcher: str, source: str, now: float) -> bool:
        """Whether `source` may name `fetcher` in this window (a name it named already always may)."""
        if now - self._sources_since >= self.settings.window or self._source_names >= 2 * self.settings.max_fetchers:
            # A new window, or a table that has grown to its bound: every source starts again.
            self._sources.clear()
            self._source_names = 0
            self._sources_since = now
        names = self._sources.get(source)
        if names is None:
            names = self._sources[source] = set()
        elif fetcher in names:
            return True
        if len(names) >= self.settings.max_per_source:
            self.dropped["per_source"] += 1
            return False
        names.add(fetcher)
        self._source_names += 1
        return True

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def take(self) -> tuple[list[Fetch], dict[str, tuple[str, ...]]]:
        """The notes so far, and the kids of the revisions they name; the buffer starts empty again."""
        buffer, self._buffer = self._buffer, {}
        fetches = [Fetch(name, etag, at) for name, (etag, at) in buffer.items()]
        revisions = {etag: self._kids[etag] for etag in {f.revision for f in fetches} if etag in self._kids}
        return fetches, revisions

    def put_back(self, fetches: Sequence[Fetch]) -> None:
        """Notes a failed flush took: back into the buffer, unless a newer note of the fetcher is there,
        while the bound allows (what does not fit is counted as dropped)."""
        buffer = self._buffer
        for f in fetches:
            held = buffer.get(f.fetcher)
            if held is not None:
                if held[1] < f.last_fetch:
                    buffer[f.fetcher] = (f.revision, f.last_fetch)
            elif len(buffer) < self.settings.max_fetchers:
                buffer[f.fetcher] = (f.revision, f.last_fetch)
            else:
                self.dropped["buffer_full"] += 1

    async def flush(self, store: Store, now: float) -> None:
        """Hand the notes to the store in a worker thread; on failure put them back and raise."""
        fetches, revisions = self.take()
        if not fetches:
            return
        settings = self.settings
        try:
            await anyio.to_thread.run_sync(
                lambda: store.record_fetches(fetches, revisions, now, settings.window, settings.max_fetchers)
            )
        except BaseException:
            self.put_back(fetches)
            raise


async def flush_loop(recorder: AdoptionRecorder, reader: AdoptionReader, store: Store, clock: Clock) -> None:
    """Flush every FLUSH_SECONDS and read the records every REFRESH_SECONDS (for `peek`), until
    cancelled; then flush once more (shutdown), shielded from the cancellation."""
    failures = RepeatedFailure(log, "recording JWKS fetches")
    read_failures = RepeatedFailure(log, "reading JWKS adoption")
    read_due = 0.0
    try:
        while True:
            await anyio.sleep(FLUSH_SECONDS)
            await _attempt(failures, lambda: recorder.flush(store, clock.now()))
            if time.monotonic() >= read_due:
                read_due = time.monotonic() + REFRESH_SECONDS
                await _attempt(read_failures, lambda: anyio.to_thread.run_sync(reader.reload))
    finally:
        with anyio.CancelScope(shield=True, deadline=anyio.current_time() + SHUTDOWN_FLUSH_SECONDS):
            await _attempt(failures, lambda: recorder.flush(store, clock.now()))


async def _attempt(failures: RepeatedFailure, work: Callable[[], Awaitable[object]]) -> None:
    """Run `work`, its failures logged through `failures` (the first, then counts, then recovery)."""
    try:
        await work()
    except JwksServiceError as exc:
        failures.failed(exc.description, time.monotonic())
    except Exception as exc:
        if not failures.failures:
            log.exception("%s failed", failures.what)
        failures.failed(f"unexpected {type(exc).__name__}: {exc}", time.monotonic())
    else:
        failures.succeeded(time.monotonic())


@dataclass(frozen=True, slots=True)
class _Records:
    read_at: float  # monotonic
    now: float  # the clock's time of the read
    fetches: tuple[Fetch, ...]
    revisions: Mapping[str, frozenset[str]]


class AdoptionReader:
    """Adoption of the served keysets, from the store's records (read at most once every READ_SECONDS).
    `adoption` and `gate` do blocking store I/O (worker threads, the CLI); `peek` never does."""

    def __init__(
        self, store: Store, settings: Settings, clock: Clock, keysets: Callable[[], Mapping[str, Keyset]]
    ) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock
        self._keysets = keysets
        self._lock = threading.Lock()
        self._reload_lock = threading.Lock()
        self._records: _Records | None = None
        self._failed: tuple[float, JwksServiceError] | None = None  # the last failed read, and when
        # The last count for everyone (adoptions): of which records and keysets, at what time, and what.
        self._counted: tuple[_Records, Mapping[str, Keyset], float, dict[str, Adoption]] | None = None

    def _keyset(self, name: str) -> Keyset:
        keyset = self._keysets().get(name)
        if keyset is None or name not in self.settings.keysets:
            raise NotFoundError(f"no keyset named {name!r}")
        return keyset

    def reload(self) -> None:
        """Read the records from the store now (blocking)."""
        window = self.settings.adoption.window
        now = self.clock.now()
        fetches = self.store.list_fetches(now - window)
        revisions = rules.kids_of(self.store.list_revisions())
        with self._lock:
            self._records = _Records(time.monotonic(), now, tuple(fetches), revisions)

    def _fresh(self) -> _Records:
        """The records, read again when older than READ_SECONDS (by one caller while the others wait)."""
        with self._reload_lock:
            return self._fresh_locked()

    def _fresh_locked(self) -> _Records:
        """`_fresh`, with `_reload_lock` held."""
        with self._lock:
            records = self._records
        if records is None or time.monotonic() - records.read_at >= READ_SECONDS:
            failed = self._failed
            if failed is not None and time.monotonic() - failed[0] < READ_SECONDS:
                raise failed[1]  # the store failed just now: do not wait for it again yet
            try:
                self.reload()
            except JwksServiceError as exc:
                self._failed = (time.monotonic(), exc)
                raise
            self._failed = None
            with self._lock:
                records = self._records
        assert records is not None
        return records

    def adoptions(self) -> dict[str, Adoption]:
        """Every served keyset's adoption (blocking); from the records read last when the store cannot
        be read or another caller is reading it (nothing before a first read): for /keys/status, which must
        answer while the store is down or silent, without a worker thread per caller queued behind a read."""
        records: _Records | None = None
        if self._reload_lock.acquire(blocking=False):
            try:
                records = self._fresh_locked()
            except JwksServiceError:
                pass
            finally:
                self._reload_lock.release()
        if records is None:  # the store failed, or another caller is reading it: do not queue behind it
            with self._lock:
                records = self._records
        if records is None:
            return {}
        now = self.clock.now()
        keysets = self._keysets()
        # A public caller's count costs O(fetchers) per keyset: callers within READ_SECONDS share one.
        counted = self._counted
        if (
            counted is not None
            and counted[0] is records
            and counted[1] is keysets
            and 0 <= now - counted[2] < READ_SECONDS
        ):
            return dict(counted[3])
        result = {name: self._compute(ks, records, now) for name, ks in keysets.items()}
        self._counted = (records, keysets, now, result)
        return dict(result)

    def _compute(self, keyset: Keyset, records: _Records, now: float) -> Adoption:
        return rules.adoption(keyset, records.fetches, records.revisions, now=now, window=self.settings.adoption.window)

    def adoption(self, name: str) -> Adoption:
        """Keyset `name`'s adoption now (NotFoundError for an unknown keyset; StoreError when the store
        cannot be read)."""
        keyset = self._keyset(name)
        return self._compute(keyset, self._fresh(), self.clock.now())

    def gate(self, name: str) -> Gate:
        """Whether a scheduled rotation of keyset `name` may promote `next` now (API.md §6)."""
        keyset = self._keyset(name)
        policy = self.settings.keysets[name]
        now = self.clock.now()
        adopted = self._compute(keyset, self._fresh(), now)
        return rules.gate(policy, keyset, adopted, due_at=next_rotation_at(policy, keyset), now=now)

    def peek(self, name: str) -> Adoption | None:
        """Keyset `name`'s adoption from the records read last, with no I/O; None before any read or for
        an unknown keyset."""
        with self._lock:
            records = self._records
        keyset = self._keysets().get(name)
        if records is None or keyset is None:
            return None
        return self._compute(keyset, records, self.clock.now())
