"""Micro-batching of remote signatures: concurrent sign requests for one key become one call.

Natural batching, no fixed wait: a request starts a batch at once when fewer than
`max_in_flight` batches of its key are running; otherwise it waits, and everything that queued
meanwhile (up to `max_batch`) goes in the next call when one finishes. An idle service signs
with the latency of one call; a busy one pays one Vault round trip per batch, not per token.
The blocking backend call runs in a worker thread, so the event loop never waits on Vault.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import anyio

from .errors import JwksServiceError, UnavailableError

BatchFn = Callable[[Sequence[bytes]], list[bytes]]


@dataclass
class _Queue:
    pending: list[tuple[bytes, asyncio.Future[bytes]]] = field(default_factory=list)
    in_flight: int = 0
    scheduled: bool = False


class MicroBatcher:
    def __init__(self, *, max_batch: int = 256, max_in_flight: int = 4, timeout: float = 10.0) -> None:
        self.max_batch = max_batch
        self.max_in_flight = max_in_flight
        self.timeout = timeout
        self._queues: dict[str, _Queue] = {}
        self._tasks: set[asyncio.Future[None]] = set()
        self.batches = 0  # calls made, for tests and benchmarks
        self.signed = 0

    async def sign(self, kid: str, call: BatchFn, data: bytes) -> bytes:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bytes] = loop.create_future()
        queue = self._queues.setdefault(kid, _Queue())
        queue.pending.append((data, future))
        if not queue.scheduled and queue.in_flight < self.max_in_flight:
            # call_soon: requests that arrive in this same loop iteration join the batch
            queue.scheduled = True
            loop.call_soon(self._start, kid, call)
        try:
            return await asyncio.wait_for(future, self.timeout)
        except TimeoutError:
            raise UnavailableError(f"signing with key {kid} timed out", retry_after=5) from None

    def _start(self, kid: str, call: BatchFn) -> None:
        queue = self._queues[kid]
        queue.scheduled = False
        while queue.pending and queue.in_flight < self.max_in_flight:
            batch, queue.pending = queue.pending[: self.max_batch], queue.pending[self.max_batch :]
            queue.in_flight += 1
            task = asyncio.ensure_future(self._run(kid, call, batch))
            self._tasks.add(task)  # the loop keeps only weak references to tasks
            task.add_done_callback(self._tasks.discard)

    async def _run(self, kid: str, call: BatchFn, batch: list[tuple[bytes, asyncio.Future[bytes]]]) -> None:
        try:
            signatures = await anyio.to_thread.run_sync(call, [data for data, _ in batch])
            if len(signatures) != len(batch):
                raise UnavailableError(f"the backend returned {len(signatures)} signatures for {len(batch)} inputs")
        except Exception as exc:
            error = exc if isinstance(exc, UnavailableError) else _unavailable(kid, exc)
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
        else:
            self.batches += 1
            self.signed += len(batch)
            for (_, future), signature in zip(batch, signatures, strict=True):
                if not future.done():
                    future.set_result(signature)
        finally:
            queue = self._queues[kid]
            queue.in_flight -= 1
            if queue.pending:
                self._start(kid, call)


def _unavailable(kid: str, exc: Exception) -> UnavailableError:
    detail = exc.description if isinstance(exc, JwksServiceError) else type(exc).__name__
    return UnavailableError(f"key {kid} cannot sign right now: {detail}", retry_after=5)
