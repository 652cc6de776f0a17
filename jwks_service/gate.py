"""Blocking calls made on behalf of callers not authenticated yet (client authentication, an admin
bearer token): bounded, so that a hung store or Vault makes strangers fail fast instead of piling up."""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field
from typing import TypeVar

import anyio

from .errors import UnavailableError

T = TypeVar("T")

# Store and Vault calls made for a caller not yet authenticated (client authentication, an admin
# bearer token) run in worker threads, at most STRANGER_CALLS at once. Each waits at most
# STRANGER_WAIT_SECONDS for its turn, and at most STRANGER_PENDING calls may run or wait (in total,
# and STRANGER_PENDING_PER_ADDRESS per source address); beyond that a call is refused at once (503).
# So a hung store makes strangers fail fast instead of piling up, and they never hold more than a few
# of the worker threads that refreshes and admin calls need. Concurrent requests that need the same
# read (one client's record, one pair's counters) share one call.
STRANGER_CALLS = 8
STRANGER_WAIT_SECONDS = 1.0
STRANGER_PENDING = 256
STRANGER_PENDING_PER_ADDRESS = 32


class BusyError(UnavailableError):
    """Too many calls for unauthenticated callers are already waiting on the store or Vault."""


@dataclass(eq=False)
class StrangerGate:
    """Runs blocking calls made on behalf of unauthenticated callers in worker threads, bounded as
    STRANGER_CALLS says; BusyError when a call cannot run soon."""

    calls: int = STRANGER_CALLS
    _: KW_ONLY
    wait: float = STRANGER_WAIT_SECONDS
    pending: int = STRANGER_PENDING
    per_address: int = STRANGER_PENDING_PER_ADDRESS
    refused: int = field(default=0, init=False)
    # One registry may serve several event loops (tests, CLI): hence the lock, and a limiter per loop.
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _pending: int = field(default=0, init=False, repr=False)
    _by_address: dict[str, int] = field(default_factory=dict, init=False, repr=False)
    _limiters: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, anyio.CapacityLimiter] = field(
        default_factory=weakref.WeakKeyDictionary, init=False, repr=False
    )

    def _busy(self) -> BusyError:
        self.refused += 1
        return BusyError("the server is busy with other unauthenticated requests; try again", retry_after=1)

    async def run(self, address: str, call: Callable[..., T], *args: object) -> T:
        with self._lock:
            mine = self._by_address.get(address, 0)
            if self._pending >= self.pending or mine >= self.per_address:
                raise self._busy()
            self._pending += 1
            self._by_address[address] = mine + 1
        try:
            loop = asyncio.get_running_loop()
            limiter = self._limiters.get(loop)
            if limiter is None:
                limiter = self._limiters[loop] = anyio.CapacityLimiter(self.calls)
            acquired = False
            with anyio.move_on_after(self.wait):
                await limiter.acquire()
                acquired = True
            if not acquired:
                raise self._busy()
            try:
                return await anyio.to_thread.run_sync(call, *args)
            finally:
                limiter.release()
        finally:
            with self._lock:
                self._pending -= 1
                left = self._by_address[address] - 1
                if left:
                    self._by_address[address] = left
                else:
                    del self._by_address[address]
