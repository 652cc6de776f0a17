"""CorkedTransport: the writes of one loop iteration reach the socket as one write."""

from __future__ import annotations

import asyncio
from typing import Any

from jwks_service.http.corked import CorkedTransport


class RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 1234)}.get(name, default)


def test_writes_of_one_iteration_are_coalesced() -> None:
    async def scenario() -> list[bytes]:
        raw = RecordingTransport()
        corked = CorkedTransport(raw, asyncio.get_running_loop())
        corked.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        corked.write(memoryview(b"ok"))
        corked.write(b"")
        assert raw.writes == []  # nothing yet: flushed at the end of this iteration
        await asyncio.sleep(0)
        corked.writelines([b"a", b"b"])
        await asyncio.sleep(0)
        return raw.writes

    assert asyncio.run(scenario()) == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", b"ab"]


def test_close_flushes_abort_drops_and_the_rest_passes_through() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        raw = RecordingTransport()
        corked = CorkedTransport(raw, loop)
        corked.write(b"last words")
        corked.close()
        assert raw.writes == [b"last words"] and raw.closed
        await asyncio.sleep(0)
        assert raw.writes == [b"last words"]  # the scheduled flush finds nothing left
        other = RecordingTransport()
        corked = CorkedTransport(other, loop)
        corked.write(b"never sent")
        corked.abort()
        await asyncio.sleep(0)
        assert other.writes == [] and other.aborted and corked.is_closing()
        assert corked.get_extra_info("peername") == ("127.0.0.1", 1234)

    asyncio.run(scenario())


def test_nothing_is_written_to_a_closing_transport() -> None:
    async def scenario() -> list[bytes]:
        raw = RecordingTransport()
        corked = CorkedTransport(raw, asyncio.get_running_loop())
        corked.write(b"late")
        raw.closed = True  # the peer went away before the flush
        await asyncio.sleep(0)
        return raw.writes

    assert asyncio.run(scenario()) == []
