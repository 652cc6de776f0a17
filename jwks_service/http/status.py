"""`GET /status`: the status page (API.md §6; rendered by http/status_page.py).

Open to anyone, so what a stranger can make it cost is bounded: the keys come from the snapshot the
process serves (memory), and the adoption records from the store at most once every
`ADOPTION_TTL` seconds for every caller together, one read at a time, off the event loop; a caller
waits at most `ADOPTION_WAIT` seconds for it and otherwise gets the page with what is known.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace

import anyio
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from ..adoption import Adoption, gate
from ..events import KeyEvent, keyset_events
from ..lifecycle import next_rotation_at
from ..plan import keyset_plan
from ..planning import adoption_reader, read_adoption
from ..runtime import Runtime
from .status_assets import CSP
from .status_page import KeysetStatus, render

ADOPTION_TTL = 5.0
ADOPTION_WAIT = 2.0
HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

log = logging.getLogger("jwks_service")


class PublicAdoption:
    """Every keyset's adoption, shared by all callers of the page: at most one read in flight, results
    kept `ADOPTION_TTL` seconds. Without laggards: the page never names a fetcher."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._value: dict[str, Adoption] = {}
        self._read_at = float("-inf")
        self._task: asyncio.Task[None] | None = None

    @property
    def available(self) -> bool:
        return adoption_reader(self.runtime) is not None

    async def get(self) -> dict[str, Adoption]:
        if not self.available or time.monotonic() - self._read_at < ADOPTION_TTL:
            return self._value
        if self._task is None:
            self._task = asyncio.ensure_future(self._refresh())
        with anyio.move_on_after(ADOPTION_WAIT):
            await asyncio.shield(self._task)
        return self._value

    async def _refresh(self) -> None:
        try:
            self._value = await anyio.to_thread.run_sync(self._read)
        finally:
            self._read_at = time.monotonic()
            self._task = None

    def _read(self) -> dict[str, Adoption]:
        out = {}
        for name in self.runtime.settings.keysets:
            adopted, _ = read_adoption(self.runtime, name, with_gate=False)
            if adopted is not None:
                out[name] = replace(adopted, laggards=(), laggard_count=0)
        return out


def statuses(runtime: Runtime, adoption: dict[str, Adoption], now: float) -> list[KeysetStatus]:
    """What the page shows of every configured keyset, in the configuration's order."""
    out = []
    snapshot = runtime.keys.snapshot.keysets
    for name, policy in runtime.settings.keysets.items():
        keyset = snapshot.get(name)
        if keyset is None:
            out.append(KeysetStatus(policy, None, False))
            continue
        adopted = adoption.get(name)
        due = next_rotation_at(policy, keyset)
        shut = None if adopted is None else gate(policy, keyset, adopted, due_at=due, now=now)
        plan = keyset_plan(policy, keyset, now, adopted=adopted, gate=shut)
        waiting = shut.describe() if shut is not None and shut.waiting and due is not None and due <= now else ""
        events: list[KeyEvent] = sorted(keyset_events(keyset), key=KeyEvent.sort_key, reverse=True)
        out.append(KeysetStatus(policy, plan, adopted is not None, waiting, events))
    return out


async def status_page(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    public: PublicAdoption = request.app.state.public_adoption
    adoption = await public.get()
    now = runtime.clock.now()
    body = render(runtime.settings.issuer, statuses(runtime, adoption, now), now)
    return HTMLResponse(body, headers=HEADERS)
