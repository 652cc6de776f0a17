"""Leaving a load balancer's rotation before stopping (`jwks-service serve --drain`).

On SIGTERM uvicorn closes its listening socket and its idle keep-alive connections at once. A
proxy that has not noticed yet still sends requests there: a new connection is refused (the proxy
can retry that safely), but a request it writes on a pooled connection that uvicorn closes at that
moment gets no answer, and a proxy may replay that only for requests that are safe to replay.

With a drain period the first SIGTERM only marks the process as draining: `/healthz` and `/readyz`
answer 503 while every request is still served as usual, so the proxy's health check takes the
replica out of rotation. When the period is over, uvicorn's graceful shutdown starts (stop
accepting, let the requests in flight finish). A second SIGTERM, or SIGINT (Ctrl+C), stops at once.
"""

from __future__ import annotations

import logging
import signal
import time
from types import FrameType

import uvicorn

log = logging.getLogger("jwks_service")


class Drain:
    """Whether this process is leaving rotation (shared by the server and the health endpoints)."""

    def __init__(self) -> None:
        self.since: float | None = None

    @property
    def active(self) -> bool:
        return self.since is not None

    def start(self) -> None:
        if self.since is None:
            self.since = time.monotonic()


class DrainingServer(uvicorn.Server):
    """uvicorn's server with a drain period before the graceful shutdown on SIGTERM."""

    def __init__(self, config: uvicorn.Config, drain: Drain, seconds: float) -> None:
        super().__init__(config)
        self.drain = drain
        self.drain_seconds = seconds
        self.drain_until: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig == signal.SIGTERM and self.drain_seconds > 0 and self.drain_until is None and not self.should_exit:
            self.drain.start()
            self.drain_until = time.monotonic() + self.drain_seconds
            log.info("SIGTERM: /healthz answers 503 for %gs, then the server stops", self.drain_seconds)
            return
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if self.drain_until is not None and time.monotonic() >= self.drain_until and not self.should_exit:
            log.info("drain period over: stopping")
            super().handle_exit(signal.SIGTERM, None)
        return await super().on_tick(counter)
