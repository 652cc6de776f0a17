"""`GET /keys/events`: Server-Sent Events, one per key change, with heartbeats and Last-Event-ID resume.

The hub compares the snapshot the process serves with the one it last saw (after every background
refresh, which follows the store's change notifications) and fans the new events out to every open
stream. A stream that falls behind (its queue full) is ended; its client reconnects with
``Last-Event-ID`` and gets what it missed from the keysets themselves (see ``jwks_service.events``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from ..errors import InvalidRequestError, UnavailableError
from ..events import KeyEvent, diff_all, parse_event_id, since
from ..model import Keyset
from ..runtime import Runtime

HEARTBEAT_SECONDS = 15.0  # a comment line this often, so proxies and clients see the stream is alive
MAX_STREAM_SECONDS = 300.0  # then the stream ends and the client resumes with Last-Event-ID (frees replicas)
MAX_SUBSCRIBERS = 1000
QUEUE_BATCHES = 64
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
        max_subscribers: int = MAX_SUBSCRIBERS,
    ) -> None:
        self.runtime = runtime
        self.heartbeat = heartbeat
        self.max_stream = max_stream
        self.max_subscribers = max_subscribers
        self._seen: Mapping[str, Keyset] = runtime.keys.snapshot.keysets
        self._queues: set[asyncio.Queue[list[KeyEvent] | None]] = set()
        self.published = 0

    @property
    def subscribers(self) -> int:
        return len(self._queues)

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

    def subscribe(self) -> asyncio.Queue[list[KeyEvent] | None]:
        if len(self._queues) >= self.max_subscribers:
            raise UnavailableError("too many event subscribers on this replica; try again", retry_after=5)
        self.observe()
        queue: asyncio.Queue[list[KeyEvent] | None] = asyncio.Queue(QUEUE_BATCHES)
        self._queues.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[list[KeyEvent] | None]) -> None:
        self._queues.discard(queue)

    def close(self) -> None:
        for queue in list(self._queues):
            try:
                queue.put_nowait(None)
            except asyncio.QueueFull:
                pass
        self._queues.clear()


async def events(request: Request) -> Response:
    hub: EventHub = request.app.state.events
    runtime: Runtime = request.app.state.runtime
    last_id = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
    resume_from: int | None = None
    if last_id:
        resume_from = parse_event_id(last_id)
        if resume_from is None:
            raise InvalidRequestError("Last-Event-ID is not an event id of this service")
    queue = hub.subscribe()
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

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
