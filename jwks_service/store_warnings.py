"""Warnings about the store that do not make the service unready: today, a Redis that keeps nothing on disk.

`StoreWarnings.check()` asks the store (blocking: a worker thread's call) and keeps the answer;
`current` is what /readyz shows, read without I/O. `run()` checks at start and every
CHECK_EVERY seconds while the server runs. Each warning is logged once when it appears (with the
operator's detail) and once when it clears. A check that cannot reach the store keeps the last
answer: an unreachable store is readiness's business, not a warning.
"""

from __future__ import annotations

import logging
import threading

import anyio

from .clock import Clock
from .errors import JwksServiceError
from .stores import Store
from .stores.sqlite import SQLiteStore

log = logging.getLogger("jwks_service")

CHECK_EVERY = 300.0  # seconds between two checks of a running server (a Redis reconfigured live)


class StoreWarnings:
    def __init__(self, store: Store, clock: Clock, *, every: float = CHECK_EVERY) -> None:
        self.store = store
        self.clock = clock
        self.every = every
        self.current: tuple[str, ...] = ()  # public wording, "store: ..."
        self.checks = 0
        self._lock = threading.Lock()

    def read(self) -> tuple[str, ...] | None:
        """The store's warnings now (blocking); None when the store did not answer."""
        if isinstance(self.store, SQLiteStore):  # a file on this host's disk: nothing to warn about
            return ()
        from .stores import persistence  # loads redis-py: only deployments on Redis get here
        from .stores.redis import RedisStore

        if not isinstance(self.store, RedisStore):
            return ()
        try:
            found = persistence.of_store(self.store, self.clock.now())
        except JwksServiceError as exc:
            log.debug("store persistence not checked: %s", exc.description)
            return None
        warning = found.warning
        if warning is not None:
            self._log_once(f"store: {warning}", found.describe())
        return (f"store: {warning}",) if warning is not None else ()

    def check(self) -> tuple[str, ...]:
        """Read and keep the warnings (the last ones when the store did not answer)."""
        found = self.read()
        with self._lock:
            self.checks += 1
            if found is None:
                return self.current
            for cleared in set(self.current) - set(found):
                log.info("warning cleared: %s", cleared)
            self.current = found
            return found

    def _log_once(self, warning: str, detail: str) -> None:
        if warning not in self.current:
            log.warning(
                "%s: %s. A restart of Redis would lose every client, stored key and revocation; turn on"
                " appendonly (or RDB snapshots)",
                warning,
                detail,
            )

    async def run(self) -> None:
        """Check now and every `every` seconds, in a worker thread; until cancelled."""
        while True:
            await anyio.to_thread.run_sync(self.check)
            await anyio.sleep(self.every)
