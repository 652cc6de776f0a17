"""The background work of a running server: reload what changed elsewhere, and the scheduler's tick.

`run(runtime, after_refresh)` reloads on change notifications (when the store pushes them,
`stores.ChangeFeed`) and every POLL_SECONDS anyway, then calls `after_refresh` (the HTTP edge
publishes key events there); it runs the scheduler every TICK_SECONDS, and reads which throttle keys
have failures (`throttle.FailingKeys`) every FAILING_REFRESH_SECONDS. They are separate tasks,
each with its blocking calls in a worker thread, so that a hung Vault (the scheduler asks it for new
key versions) never delays the reload of the revocation list, nor a hung store the scheduler. It
runs until cancelled.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import anyio

from .errors import JwksServiceError
from .repeats import RepeatedFailure
from .runtime import Runtime
from .stores import ChangeFeed
from .throttle import FAILING_REFRESH_SECONDS

log = logging.getLogger("jwks_service")

POLL_SECONDS = 0.25  # how often a replica looks for changes made elsewhere (CLI, other replicas)
TICK_SECONDS = 1.0  # how often the scheduler plans transitions


async def run(runtime: Runtime, after_refresh: Callable[[], None]) -> None:
    loop = asyncio.get_running_loop()
    wake = asyncio.Event()
    stop_feed = None

    def on_transition(*_: object) -> None:  # a change this process made (admin API): publish at once
        loop.call_soon_threadsafe(wake.set)

    runtime.keys.listeners.append(on_transition)
    if isinstance(runtime.store, ChangeFeed):

        def on_change(revision: int) -> None:
            loop.call_soon_threadsafe(wake.set)

        stop_feed = runtime.store.subscribe(on_change)
    try:
        async with anyio.create_task_group() as tg:
            # The clients' records for outages load beside the refresh, not before it: with many
            # clients that takes seconds, and a replica must follow store changes from its start.
            tg.start_soon(_run, RepeatedFailure(log, "loading the clients"), runtime.clients.remember_all)
            tg.start_soon(_refresh_loop, runtime, after_refresh, wake)
            tg.start_soon(_tick_loop, runtime)
            tg.start_soon(_failing_loop, runtime)
    finally:
        runtime.keys.listeners.remove(on_transition)
        if stop_feed is not None:
            await anyio.to_thread.run_sync(stop_feed)


def _refresh(runtime: Runtime) -> None:
    if runtime.keys.refresh():
        runtime.clients.invalidate()


def _maintain(runtime: Runtime) -> None:
    runtime.keys.tick()
    runtime.prune_audit()  # audit.retention: once an hour per replica, bounded batches


async def _refresh_loop(runtime: Runtime, after_refresh: Callable[[], None], wake: asyncio.Event) -> None:
    failures = RepeatedFailure(log, "background refresh")  # a store outage: one line, then a count
    while True:
        with anyio.move_on_after(POLL_SECONDS):
            await wake.wait()
        wake.clear()
        await _run(failures, _refresh, runtime)
        after_refresh()


async def _tick_loop(runtime: Runtime) -> None:
    failures = RepeatedFailure(log, "scheduled maintenance")
    while True:
        await anyio.sleep(TICK_SECONDS)
        await _run(failures, _maintain, runtime)


async def _failing_loop(runtime: Runtime) -> None:
    """Which throttle keys have failures in the store (throttle.FailingKeys), read every
    FAILING_REFRESH_SECONDS from the start of one read to the next; while the reads fail, client
    authentication reads the counters per request, as it does without this."""
    failures = RepeatedFailure(log, "reading the failing throttle keys")
    while True:
        started = time.monotonic()
        await _run(failures, runtime.clients.failing.refresh)
        await anyio.sleep(max(0.0, FAILING_REFRESH_SECONDS - (time.monotonic() - started)))


async def _run(failures: RepeatedFailure, call: Callable[..., object], *args: object) -> None:
    """`call` in a worker thread; its failures logged through `failures` (first, counts, recovery)."""
    try:
        await anyio.to_thread.run_sync(call, *args)
    except JwksServiceError as exc:
        failures.failed(exc.description, time.monotonic())
    except Exception as exc:
        if not failures.failures:  # a bug: its traceback once
            log.exception("%s failed", failures.what)
        failures.failed(f"unexpected {type(exc).__name__}: {exc}", time.monotonic())
    else:
        failures.succeeded(time.monotonic())
