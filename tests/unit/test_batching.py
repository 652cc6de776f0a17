"""MicroBatcher: concurrent requests become few backend calls; errors and timeouts reach every caller."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest

from jwks_service.batching import MicroBatcher, RemoteSigning, batch_call, in_thread
from jwks_service.errors import UnavailableError
from jwks_service.requestid import REQUEST_ID


class Backend:
    """A fake `sign_batch`: signs by reversing, records every call; can be held or made to fail."""

    def __init__(self) -> None:
        self.calls: list[list[bytes]] = []
        self.hold = threading.Event()
        self.hold.set()
        self.fail: Exception | None = None
        self.short = False

    def __call__(self, inputs: Sequence[bytes]) -> list[bytes]:
        self.calls.append(list(inputs))
        self.hold.wait(10)
        if self.fail is not None:
            raise self.fail
        out = [data[::-1] for data in inputs]
        return out[:-1] if self.short else out


def test_a_burst_is_shared_between_the_slots_and_answers_in_order() -> None:
    backend, batcher = Backend(), MicroBatcher(max_in_flight=2)

    async def burst() -> list[bytes]:
        return await asyncio.gather(*(batcher.sign("k", in_thread(backend), b"%03d" % i) for i in range(64)))

    assert asyncio.run(burst()) == [(b"%03d" % i)[::-1] for i in range(64)]
    assert [len(call) for call in backend.calls] == [32, 32]
    assert (batcher.batches, batcher.signed) == (2, 64)


def test_a_lone_request_goes_at_once_and_small_bursts_are_not_split() -> None:
    backend, batcher = Backend(), MicroBatcher(max_in_flight=2, min_split=8)

    async def run() -> None:
        assert await batcher.sign("k", in_thread(backend), b"ab") == b"ba"
        await asyncio.gather(*(batcher.sign("k", in_thread(backend), bytes([i])) for i in range(5)))

    asyncio.run(run())
    assert [len(call) for call in backend.calls] == [1, 5]


def test_max_batch_bounds_every_call_and_the_rest_waits_for_a_slot() -> None:
    backend, batcher = Backend(), MicroBatcher(max_batch=10, max_in_flight=1)

    async def burst() -> None:
        await asyncio.gather(*(batcher.sign("k", in_thread(backend), bytes([i])) for i in range(25)))

    asyncio.run(burst())
    assert [len(call) for call in backend.calls] == [10, 10, 5]


def test_keys_are_batched_separately() -> None:
    backend, batcher = Backend(), MicroBatcher()

    async def burst() -> None:
        await asyncio.gather(*(batcher.sign(kid, in_thread(backend), kid.encode()) for kid in ("a", "b") * 3))

    asyncio.run(burst())
    assert sorted(call for call in backend.calls) == [[b"a"] * 3, [b"b"] * 3]


def test_a_failed_call_fails_its_requests_with_503_and_the_next_call_works() -> None:
    backend, batcher = Backend(), MicroBatcher()
    backend.fail = RuntimeError("boom")

    async def run() -> None:
        results = await asyncio.gather(
            *(batcher.sign("k", in_thread(backend), b"x") for _ in range(3)), return_exceptions=True
        )
        assert all(isinstance(r, UnavailableError) and "key k cannot sign right now" in r.description for r in results)
        backend.fail = None
        assert await batcher.sign("k", in_thread(backend), b"xy") == b"yx"

    asyncio.run(run())
    assert batcher.batches == 1  # failed calls are not counted


def test_a_wrong_number_of_signatures_fails_the_batch() -> None:
    backend, batcher = Backend(), MicroBatcher()
    backend.short = True

    async def run() -> None:
        with pytest.raises(UnavailableError, match="returned 1 signatures for 2 inputs"):
            await asyncio.gather(
                batcher.sign("k", in_thread(backend), b"a"), batcher.sign("k", in_thread(backend), b"b")
            )

    asyncio.run(run())


def test_requests_in_flight_and_queued_time_out_with_503() -> None:
    backend, batcher = Backend(), MicroBatcher(max_in_flight=1, timeout=0.2)
    backend.hold.clear()  # Vault hangs

    async def run() -> tuple[bytes | BaseException, ...]:
        first = asyncio.ensure_future(batcher.sign("k", in_thread(backend), b"in flight"))
        await asyncio.sleep(0.05)
        queued = batcher.sign("k", in_thread(backend), b"queued")
        try:
            return await asyncio.gather(first, queued, return_exceptions=True)
        finally:
            backend.hold.set()  # let the worker thread go, or the loop waits for it on the way out

    started = time.monotonic()
    results = asyncio.run(run())
    took = time.monotonic() - started
    assert all(isinstance(r, UnavailableError) and r.description == "signing with key k timed out" for r in results)
    assert took < 2
    assert backend.calls == [[b"in flight"]]  # the queued request never reached the hung backend


def test_a_cancelled_request_is_not_sent() -> None:
    backend, batcher = Backend(), MicroBatcher(max_in_flight=1)
    backend.hold.clear()

    async def run() -> None:
        first = asyncio.ensure_future(batcher.sign("k", in_thread(backend), b"first"))
        await asyncio.sleep(0.05)
        gone = asyncio.ensure_future(batcher.sign("k", in_thread(backend), b"gone"))
        kept = asyncio.ensure_future(batcher.sign("k", in_thread(backend), b"kept"))
        await asyncio.sleep(0.01)
        gone.cancel()
        backend.hold.set()
        assert await first == b"tsrif"
        assert await kept == b"tpek"

    asyncio.run(run())
    assert backend.calls == [[b"first"], [b"kept"]]


def test_the_batcher_outlives_its_event_loop() -> None:
    """Test clients run each request on a loop of their own; the batcher (and its timeouts) go along."""
    backend, batcher = Backend(), MicroBatcher(timeout=0.2)
    for _ in range(3):
        assert asyncio.run(batcher.sign("k", in_thread(backend), b"ab")) == b"ba"
    backend.hold.clear()

    async def late() -> None:
        try:
            with pytest.raises(UnavailableError, match="timed out"):
                await batcher.sign("k", in_thread(backend), b"late")
        finally:
            backend.hold.set()

    asyncio.run(late())


class TwinBackend:
    """A backend with `sign_batch` and its coroutine twin `sign_batch_async`, as VaultBackend has."""

    def __init__(self) -> None:
        self.threads: list[str] = []

    def sign_batch(self, key: str, inputs: Sequence[bytes]) -> list[bytes]:
        self.threads.append(threading.current_thread().name)
        return [key.encode() + data for data in inputs]

    async def sign_batch_async(self, key: str, inputs: Sequence[bytes]) -> list[bytes]:
        await asyncio.sleep(0)
        self.threads.append("loop:" + threading.current_thread().name)
        return [key.encode() + data for data in inputs]


def test_batch_call_awaits_an_async_backend_on_the_loop_and_runs_others_in_a_thread() -> None:
    batcher = MicroBatcher()

    async def burst(fn: Any) -> list[bytes]:
        return await asyncio.gather(*(batcher.sign("k", fn, b"%d" % i) for i in range(20)))

    backend = TwinBackend()
    assert asyncio.run(burst(batch_call(backend, "k:"))) == [b"k:%d" % i for i in range(20)]
    assert backend.threads and all(t == "loop:" + threading.main_thread().name for t in backend.threads)

    class BlockingOnly:
        sign_batch = TwinBackend.sign_batch

        def __init__(self) -> None:
            self.threads: list[str] = []

    blocking = BlockingOnly()
    assert asyncio.run(burst(batch_call(blocking, "k:"))) == [b"k:%d" % i for i in range(20)]
    assert blocking.threads and threading.main_thread().name not in blocking.threads  # worker threads
    assert batch_call(object(), "k:") is None  # local keys sign one at a time


class _Key(str):
    """A stand-in key record: the kid is all RemoteSigning reads, and TwinBackend signs with the string."""

    @property
    def kid(self) -> str:
        return str(self)


def test_remote_signing_chooses_once_per_key_between_in_process_the_batcher_and_a_thread() -> None:
    key: Any = _Key("k:")

    def sign(data: bytes) -> bytes:
        signed.append(threading.current_thread().name)
        return b"one:" + data

    async def burst(sign_async: Any) -> list[bytes]:
        return await asyncio.gather(*(sign_async(b"%d" % i) for i in range(20)))

    # A backend that signs one input at a time in process (local keys): no path off the loop.
    batching = RemoteSigning(max_batch=256)
    assert batching.for_key(object(), key, sign) is None

    # A remote backend, batching on: every token goes through the one batcher, in few calls.
    backend = TwinBackend()
    signed: list[str] = []
    assert asyncio.run(burst(batching.for_key(backend, key, sign))) == [b"k:%d" % i for i in range(20)]
    assert batching.batcher is not None and batching.batcher.signed == 20 and batching.batcher.batches < 20
    assert not signed  # the key's own one-at-a-time signer is not used

    # Batching off (vault.max_batch = 1): no batcher; each token is its own call, in a worker thread.
    single = RemoteSigning(max_batch=1)
    assert single.batcher is None
    assert asyncio.run(burst(single.for_key(backend, key, sign))) == [b"one:%d" % i for i in range(20)]
    assert len(signed) == 20 and threading.main_thread().name not in signed


def test_a_batch_runs_in_no_request_s_context() -> None:
    """A batch signs for several requests: its work (and its log lines) carries none of their ids."""
    seen: list[str] = []

    def backend(inputs: Sequence[bytes]) -> list[bytes]:
        seen.append(REQUEST_ID.get())
        return [data[::-1] for data in inputs]

    batcher = MicroBatcher(max_in_flight=1)

    async def request(i: int) -> bytes:
        REQUEST_ID.set(f"r{i}")  # each task has its context, as each ASGI request does
        return await batcher.sign("k", in_thread(backend), bytes([i]))

    async def burst() -> list[bytes]:
        return await asyncio.gather(*(request(i) for i in range(20)))

    assert asyncio.run(burst()) == [bytes([i]) for i in range(20)]
    assert seen and set(seen) == {""}
