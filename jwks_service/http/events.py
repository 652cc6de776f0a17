"""`GET /keys/events`: Server-Sent Events, one per key change, with heartbeats and Last-Event-ID resume.

The hub compares the snapshot the process serves with the one it last saw (after every background
refresh, which follows the store's change notifications) and fans the new events out to every open
stream. A stream that falls behind (its queue full) is ended; its client reconnects with
``Last-Event-ID`` and gets what it missed from the keysets themselves (see ``jwks_service.events``).

Streams are open to anyone, so what one source can hold is bounded: ``[events] max_streams`` per
replica in total and ``[events] max_streams_per_source`` per source address (the peer, or the
address a trusted proxy names); over either, 429 with ``Retry-After``. A slot is held from the
moment it is granted until the response ends, however it ends.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from ..errors import InvalidRequestError, TooManyRequestsError
from ..events import KeyEvent, diff_all, parse_event_id, since
from ..model import Keyset
from ..runtime import Runtime
from .limits import source_of

HEARTBEAT_SECONDS = 15.0  # a comment line this often, so proxies and clients see the stream is alive
MAX_STREAM_SECONDS = 300.0  # then the stream ends and the client resumes with Last-Event-ID (frees replicas)
QUEUE_BATCHES = 64
RETRY_AFTER_SECONDS = 5  # over a stream limit: when to try again
RETRY_MS = 2000  # SSE `retry:`: how long a browser-style client waits before reconnecting


def format_event(event: KeyEvent) -> bytes:
    return b"id: %s\nevent: %s\ndata: %s\n\n" % (
        event.id.encode(),
        event.type.encode(),
        orjson.dumps(event.as_dict()),
    )


class EventHub:
    def __init__(
        self,
        runtime: Runtime,
        *,
        heartbeat: float = HEARTBEAT_SECONDS,
        max_stream: float = MAX_STREAM_SECONDS,
    ) -> None:
        self.runtime = runtime
        self.heartbeat = heartbeat
        self.max_stream = max_stream
        self.max_subscribers = runtime.settings.events_max_streams
        self.max_per_source = runtime.settings.events_max_streams_per_source
        self._seen: Mapping[str, Keyset] = runtime.keys.snapshot.keysets
        self._queues: set[asyncio.Queue[list[KeyEvent] | None]] = set()  # streams that get new events
        self._slots: dict[asyncio.Queue[list[KeyEvent] | None], str] = {}  # open streams -> source address
        self._per_source: dict[str, int] = {}
        self.published = 0

    @property
    def subscribers(self) -> int:
        return len(self._slots)

    def streams_from(self, source: str) -> int:
        return self._per_source.get(source, 0)

    def observe(self) -> None:
        """Publish what changed since the last call. Runs on the event loop; cheap when nothing did."""
        current = self.runtime.keys.snapshot.keysets
        if current is self._seen:
            return
        events = diff_all(self._seen, current)
        self._seen = current
        if not events:
            return
        self.published += len(events)
        for queue in list(self._queues):
            try:
                queue.put_nowait(events)
            except asyncio.QueueFull:  # a stalled reader: end its stream, it resumes from its last id
                self._queues.discard(queue)
                while not queue.empty():
                    queue.get_nowait()
                queue.put_nowait(None)

    def subscribe(self, source: str) -> asyncio.Queue[list[KeyEvent] | None]:
        """A slot for one stream from `source`, or TooManyRequestsError (429) over either limit."""
        if self._per_source.get(source, 0) >= self.max_per_source:
            raise TooManyRequestsError(
                f"too many open event streams from this address (at most {self.max_per_source}); try again",
                retry_after=RETRY_AFTER_SECONDS,
            )
        if len(self._slots) >= self.max_subscribers:
            raise TooManyRequestsError(
                "too many open event streams on this replica; try again", retry_after=RETRY_AFTER_SECONDS
            )
        self.observe()
        queue: asyncio.Queue[list[KeyEvent] | None] = asyncio.Queue(QUEUE_BATCHES)
        self._queues.add(queue)
        self._slots[queue] = source
        self._per_source[source] = self._per_source.get(source, 0) + 1
        return queue

    def unsubscribe(self, queue: asyncio.Queue[list[KeyEvent] | None]) -> None:
        """Free the stream's slot; safe to call more than once."""
        self._queues.discard(queue)
        source = self._slots.pop(queue, None)
        if source is None:
            return
        left = self._per_source[source] - 1
        if left:
            self._per_source[source] = left
        else:
            del self._per_source[source]

    def close(self) -> None:
        for queue in list(self._queues):
            try:
                queue.put_nowait(None)
            except asyncio.QueueFull:
                pass
        self._queues.clear()


class EventStreamResponse(StreamingResponse):
    """Frees the stream's slot when the response ends, also when its body never started (a client
    that went away before the first byte): the generator's own `finally` would not run then."""

    def __init__(self, content: AsyncIterator[bytes], release: Callable[[], None], headers: dict[str, str]) -> None:
        super().__init__(content, media_type="text/event-stream", headers=headers)
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()


async def events(request: Request) -> Response:
    hub: EventHub = request.app.state.events
    runtime: Runtime = request.app.state.runtime
    last_id = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
    resume_from: int | None = None
    if last_id:
        resume_from = parse_event_id(last_id)
        if resume_from is None:
            raise InvalidRequestError("Last-Event-ID is not an event id of this service")
    queue = hub.subscribe(source_of(request))
    try:
        return _event_stream(hub, runtime, queue, last_id, resume_from)
    except BaseException:
        hub.unsubscribe(queue)
        raise


def _event_stream(
    hub: EventHub,
    runtime: Runtime,
    queue: asyncio.Queue[list[KeyEvent] | None],
    last_id: str | None,
    resume_from: int | None,
) -> Response:
    keysets = list(runtime.keys.snapshot.keysets.values())
    replay = [] if resume_from is None else [e for e in since(keysets, resume_from) if e.id != last_id]
    replayed = {e.id for e in replay}
    now_us = round(runtime.clock.now() * 1_000_000)
    latest = max((e.micros for e in replay), default=0)
    ready = orjson.dumps({"type": "ready", "keysets": {ks.name: ks.revision for ks in keysets}})

    async def stream() -> AsyncIterator[bytes]:
        try:
            yield b"retry: %d\n: key events of %s\n\n" % (RETRY_MS, runtime.settings.issuer.encode())
            for event in replay:
                yield format_event(event)
            # A resume point for a client that arrived without one (nothing to replay yet).
            if resume_from is None:
                yield b"id: %d-ready\nevent: ready\ndata: %s\n\n" % (max(now_us, latest), ready)
            else:
                yield b"event: ready\ndata: %s\n\n" % ready
            deadline = time.monotonic() + hub.max_stream
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                try:
                    batch = await asyncio.wait_for(queue.get(), min(hub.heartbeat, left))
                except TimeoutError:
                    yield b": heartbeat\n\n"
                    continue
                if batch is None:
                    return
                for event in batch:
                    if event.id not in replayed:
                        yield format_event(event)
        finally:
            hub.unsubscribe(queue)

    return EventStreamResponse(
        stream(),
        lambda: hub.unsubscribe(queue),
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
