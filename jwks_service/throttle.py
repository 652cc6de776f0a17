"""The brute-force throttle of client authentication (API.md §3): its keys, limits and decision, and
`FailingKeys`, a replica's view of which keys have failures recorded at all.

Failed authentications are counted in the store, so every replica agrees. Reading the counters for
every token would be a store round trip per token; instead each replica reads, at most once a
second and in the background, the set of keys that have any failure within the window
(`Store.failing_keys`). A request whose keys are all absent from a fresh set needs no store read:
nobody failed with them. A key in the set is read from the store as before, as is every key while
the set is stale (the store is away), too large (more than FAILING_KEYS_LIMIT keys failing: an
attack), or not read yet. This replica's own failures join its view at once, before their store
write; so only another replica's failures reach this one late, by at most FAILING_TRUST_SECONDS.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from .clock import Clock
from .stores import Store

# Failed authentications within a minute, per client id and source address, and per source address alone.
FAILURE_WINDOW = 60.0
# A (client id, address) pair the store showed no failures for is not asked about again for this
# long (a store read per token was 11% of issuance CPU). Any failure seen here drops the entry at
# once, and pairs with failures are always read from the store; so another replica's failures
# reach this one up to this late, and only for a pair that this replica saw clean.
CLEAN_CACHE_SECONDS = 0.5
CLEAN_CACHE_ENTRIES = 50_000
MAX_FAILURES_PER_CLIENT_AND_ADDRESS = 10
MAX_FAILURES_PER_ADDRESS = 50
# After the store failed to answer about the counters, count in this process alone for this long
# rather than make every request wait for the store's timeout again.
COUNTERS_RETRY_SECONDS = 1.0

# How often a replica reads the keys with failures (start to start), how long it trusts what it read
# (from the moment the read began: the period and room for a slow read or a busy event loop), and the
# most keys it takes: beyond that, every authentication reads its counters from the store.
FAILING_REFRESH_SECONDS = 1.0
FAILING_TRUST_SECONDS = 1.25
FAILING_KEYS_LIMIT = 10_000
_PENDING = sys.maxsize  # a failure whose store write has not returned yet


def failure_keys(client_id: str, address: str) -> tuple[str, str]:
    return f"client:{client_id[:256]}|{address}", f"addr:{address}"


def throttle(counts: Mapping[str, tuple[int, float]], keys: tuple[str, str], now: float) -> int | None:
    """Seconds to wait when either limit is reached (1-60), else None. Pure: counts come from the store."""
    retry: int | None = None
    for key, limit in zip(keys, (MAX_FAILURES_PER_CLIENT_AND_ADDRESS, MAX_FAILURES_PER_ADDRESS), strict=True):
        count, oldest = counts.get(key, (0, now))
        if count >= limit:
            # The window slides: room frees up when the oldest counted failure leaves it.
            wait = min(60, max(1, int(oldest + FAILURE_WINDOW - now) + 1))
            retry = max(retry or 0, wait)
    return retry


@dataclass(frozen=True)
class _View:
    """What one read of the store found (`failing`; None: not read yet, or too many), when the read
    began (`taken_at`, on the registry's clock; `read` numbers the reads), and this replica's own
    failures that read may have missed (`own`: key -> the number of reads begun when its store write
    returned, or _PENDING). Replaced whole, so a request never pairs one read with another's `own`."""

    failing: frozenset[str] | None = None
    taken_at: float = float("-inf")
    read: int = 0
    own: dict[str, int] = field(default_factory=dict)


class FailingKeys:
    """Which throttle keys may have failures: `clear(keys, now)` says when none of them can. `refresh`
    (blocking: a worker thread, at most every FAILING_REFRESH_SECONDS) reads the store; `failing` and
    `recorded` bracket the store write of this replica's own failure. Thread-safe."""

    def __init__(self, store: Store, clock: Clock, limit: int = FAILING_KEYS_LIMIT) -> None:
        self._store = store
        self._clock = clock
        self.limit = limit
        self._view = _View()
        self._reads = 0  # reads begun
        self._lock = threading.Lock()

    def clear(self, keys: Collection[str], now: float) -> bool:
        """True when a fresh read found none of `keys` failing and this replica recorded no failure
        under them since: their store counters are known to be empty, no need to read them."""
        view = self._view
        failing = view.failing
        if failing is None or not 0.0 <= now - view.taken_at < FAILING_TRUST_SECONDS:
            return False
        own = view.own
        return not any(k in failing or k in own for k in keys)

    def failing(self, keys: Sequence[str]) -> None:
        """This replica is about to record a failure under `keys`: they are failing from now on."""
        with self._lock:
            view = self._view
            if len(view.own) + len(keys) > self.limit:
                # Too many to keep (no read for a while): forget those whose write returned, and trust
                # nothing until a read begun after now, which sees them. Writes under way are kept.
                pending = {k: n for k, n in view.own.items() if n == _PENDING}
                view = self._view = _View(read=self._reads, own=pending)
            for k in keys:
                view.own[k] = _PENDING

    def recorded(self, keys: Sequence[str]) -> None:
        """The store write of a failure under `keys` returned (or failed: then the caller counts it in
        the process): a read begun after this sees it, and then this replica need not remember it."""
        with self._lock:
            own = self._view.own
            for k in keys:
                if k in own:
                    own[k] = self._reads

    def refresh(self) -> None:
        """Read the failing keys from the store (StoreError when it cannot answer: the view then goes
        stale by itself). Blocking."""
        with self._lock:
            self._reads += 1
            read = self._reads
        now = self._clock.now()
        found = self._store.failing_keys(now - FAILURE_WINDOW, self.limit)
        failing = frozenset(found) if found is not None else None
        with self._lock:
            current = self._view
            if read <= current.read:  # a later read was installed already
                return
            # Failures whose write returned before this read began are in what it found (if recent).
            own = {k: n for k, n in current.own.items() if n >= read}
            self._view = _View(failing, now, read, own)

    @property
    def taken_at(self) -> float:
        return self._view.taken_at
