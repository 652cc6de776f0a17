"""Micro-batching of remote signatures: concurrent sign requests for one key become one call.

Natural batching, no fixed wait: a request starts a batch at once when fewer than
`max_in_flight` batches of its key are running; otherwise it waits, and everything that queued
meanwhile (up to `max_batch`) goes in the next call when one finishes. An idle service signs
with the latency of one call; a busy one pays one Vault round trip per batch, not per token.
The event loop never waits on Vault: batches go to a coroutine, chosen once per key by
`batch_call`: the backend's ``sign_batch_async`` (VaultBackend: non-blocking sockets) when it is
`SignsBatchesAsync`, else its blocking ``sign_batch`` (`SignsBatches`) in a worker thread.
Handing each batch to a thread and back cost ~10 µs of client CPU per ES256 token (the GIL changing
hands), as much as the rest of the batched path (bench/vault.py). `RemoteSigning` chooses, once per
key as well, whether a remote key's tokens go through the batcher at all.

What queued is shared evenly among the free slots (parts of at least `min_split`): a burst of
64 requests with two free slots becomes two calls of 32, not one of 64 and an idle slot. Two
batches in flight is the default, so that Vault signs one while this process finishes the other
(with 64 requests in flight, bench/vault.py measured 2 and 3 alike for ES256, 4 worse). Every
request fails with UnavailableError after `timeout` seconds, whether queued or in flight; one
timer per batcher watches the oldest deadline (asyncio.wait_for per request cost ~5 µs a token).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import anyio

from .backends import SignsBatches, SignsBatchesAsync
from .crypto import SignFn
from .errors import JwksServiceError, UnavailableError
from .model import KeyVersion

SyncBatchFn = Callable[[Sequence[bytes]], list[bytes]]
BatchFn = Callable[[Sequence[bytes]], Awaitable[list[bytes]]]
SignAsyncFn = Callable[[bytes], Awaitable[bytes]]  # one signing input -> its signature, off the event loop


def in_thread(call: SyncBatchFn) -> BatchFn:
    """A blocking batch call as a coroutine that runs it in a worker thread."""

    async def run(inputs: Sequence[bytes]) -> list[bytes]:
        return await anyio.to_thread.run_sync(call, inputs)

    return run


def batch_call(backend: object, key: KeyVersion) -> BatchFn | None:
    """How `backend` signs many inputs with `key`: its coroutine ``sign_batch_async`` on the loop,
    else its blocking ``sign_batch`` in a thread; None when it signs one input at a time (local keys)."""
    if isinstance(backend, SignsBatchesAsync):
        return functools.partial(backend.sign_batch_async, key)
    if isinstance(backend, SignsBatches):
        return in_thread(functools.partial(backend.sign_batch, key))
    return None


class RemoteSigning:
    """How a key signs a token on the event loop, chosen once per key when it is installed (not per
    token): a remote key through the micro-batcher or, with batching off (vault.max_batch = 1), one
    call per token through its own signer in a worker thread, as many at once as the thread pool
    allows; None for a key that signs in process."""

    def __init__(self, max_batch: int) -> None:
        self.batcher = MicroBatcher(max_batch=max_batch) if max_batch > 1 else None

    def for_key(self, backend: object, key: KeyVersion, sign: SignFn) -> SignAsyncFn | None:
        batch = batch_call(backend, key)
        if batch is None:
            return None
        if self.batcher is None:
            return _in_thread_one(sign)
        return functools.partial(self.batcher.sign, key.kid, batch)


def _in_thread_one(sign: SignFn) -> SignAsyncFn:
    async def run(data: bytes) -> bytes:
        return await anyio.to_thread.run_sync(sign, data)

    return run


@dataclass
class _Queue:
    pending: list[tuple[bytes, asyncio.Future[bytes]]] = field(default_factory=list)
    in_flight: int = 0
    scheduled: bool = False


class MicroBatcher:
    def __init__(
        self, *, max_batch: int = 256, max_in_flight: int = 2, min_split: int = 8, timeout: float = 10.0
    ) -> None:
        self.max_batch = max_batch
        self.max_in_flight = max_in_flight
        self.min_split = min_split
        self.timeout = timeout
        self._queues: dict[str, _Queue] = {}
        self._tasks: set[asyncio.Future[None]] = set()
        # (deadline, future, kid) in arrival order, hence in deadline order; answered ones are
        # dropped from the front as new requests come in.
        self._deadlines: deque[tuple[float, asyncio.Future[bytes], str]] = deque()
        self._sweeper: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.batches = 0  # calls made, for tests and benchmarks
        self.signed = 0

    async def sign(self, kid: str, call: BatchFn, data: bytes) -> bytes:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._adopt(loop)
        future: asyncio.Future[bytes] = loop.create_future()
        queue = self._queues.get(kid)
        if queue is None:
            queue = self._queues[kid] = _Queue()
        queue.pending.append((data, future))
        if not queue.scheduled and queue.in_flight < self.max_in_flight:
            # call_soon: requests that arrive in this same loop iteration join the batch. In a context
            # of its own: a batch serves many requests, and must not log as the first one's (request id).
            queue.scheduled = True
            loop.call_soon(self._start, kid, call, context=contextvars.Context())
        deadlines = self._deadlines
        while deadlines and deadlines[0][1].done():
            deadlines.popleft()
        deadlines.append((loop.time() + self.timeout, future, kid))
        if self._sweeper is None:
            self._sweeper = loop.call_at(deadlines[0][0], self._sweep)
        return await future

    def _adopt(self, loop: asyncio.AbstractEventLoop) -> None:
        """A new event loop (e.g. a test client's): whatever the previous one left is abandoned."""
        if self._sweeper is not None:
            self._sweeper.cancel()
        self._loop, self._sweeper = loop, None
        self._queues.clear()
        self._deadlines.clear()

    def _sweep(self) -> None:
        self._sweeper = None
        deadlines = self._deadlines
        loop = asyncio.get_running_loop()
        now = loop.time()
        while deadlines and (deadlines[0][0] <= now or deadlines[0][1].done()):
            _, future, kid = deadlines.popleft()
            if not future.done():
                future.set_exception(UnavailableError(f"signing with key {kid} timed out", retry_after=5))
        if deadlines:
            self._sweeper = loop.call_at(deadlines[0][0], self._sweep)

    def _start(self, kid: str, call: BatchFn) -> None:
        queue = self._queues.get(kid)
        if queue is None:
            return
        queue.scheduled = False
        while queue.pending and queue.in_flight < self.max_in_flight:
            free = self.max_in_flight - queue.in_flight
            size = min(self.max_batch, max(-(-len(queue.pending) // free), self.min_split))
            taken, queue.pending = queue.pending[:size], queue.pending[size:]
            batch = [item for item in taken if not item[1].done()]  # timed out or cancelled meanwhile
            if not batch:
                continue
            queue.in_flight += 1
            task = asyncio.ensure_future(self._run(kid, call, batch))
            self._tasks.add(task)  # the loop keeps only weak references to tasks
            task.add_done_callback(self._tasks.discard)

    async def _run(self, kid: str, call: BatchFn, batch: list[tuple[bytes, asyncio.Future[bytes]]]) -> None:
        try:
            signatures = await call([data for data, _ in batch])
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
            queue = self._queues.get(kid)
            if queue is not None:
                queue.in_flight -= 1
                if queue.pending:
                    self._start(kid, call)


def _unavailable(kid: str, exc: Exception) -> UnavailableError:
    detail = exc.description if isinstance(exc, JwksServiceError) else type(exc).__name__
    return UnavailableError(f"key {kid} cannot sign right now: {detail}", retry_after=5)
