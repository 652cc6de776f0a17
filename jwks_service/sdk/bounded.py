"""Reading HTTP bodies under a size bound while they stream, so that an issuer (or whatever answers
in its place) cannot make the SDK download or hold more than the bound.

A ``Content-Length`` over the bound is refused before any of the body is read; otherwise the body is
read chunk by chunk (decoded here, with zlib bounded by the limit, so a compressed body counts at its
real size and a compression bomb never expands past the bound) and reading stops at the
first chunk that passes the bound. The caller opens the response with ``client.stream(...)``; leaving
that block closes the connection without reading the rest.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator, Iterator

import httpx

from .errors import SDKError
from .sse import SSELines

# Sent with every SDK request whose body goes through read_bounded: the codings _Decoder reads.
ACCEPT_ENCODING = {"Accept-Encoding": "gzip, deflate"}
MAX_DOCUMENT_BYTES = 1 << 20  # metadata, JWK sets, introspection and token answers are a few KiB


class BodyTooLargeError(SDKError):
    """A response body over the bound; each caller maps it to its own error."""


def _declared(response: httpx.Response, limit: int, what: str) -> None:
    value = response.headers.get("content-length", "")
    if value.isdigit() and int(value) > limit:
        raise BodyTooLargeError(f"{what} is larger than {limit} bytes (Content-Length {value})")


def _too_large(limit: int, what: str) -> BodyTooLargeError:
    return BodyTooLargeError(f"{what} is larger than {limit} bytes")


class _Decoder:
    """Decodes the raw body chunk by chunk, never producing more than the bound allows.

    httpx decodes each network chunk whole, so a small gzip chunk could expand to many megabytes
    before a size check saw it (a compression bomb). Here zlib's `max_length` stops the expansion
    at the bound. gzip and deflate are what HTTP servers send for JSON; any other content coding is
    refused (the SDK's own clients ask for gzip, deflate or identity only).
    """

    def __init__(self, response: httpx.Response, limit: int, what: str) -> None:
        coding = response.headers.get("content-encoding", "identity").strip().lower()
        self.limit, self.what, self.size, self.chunks = limit, what, 0, list[bytes]()
        self.zlib: zlib._Decompress | None
        if coding in ("", "identity"):
            self.zlib = None
        elif coding in ("gzip", "x-gzip"):
            self.zlib = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif coding == "deflate":
            self.zlib = zlib.decompressobj()
        else:
            raise BodyTooLargeError(f"{what} came with content coding {coding!r}, which the SDK does not read")

    def feed(self, raw: bytes) -> None:
        if self.zlib is None:
            self._add(raw)
            return
        try:
            self._add(self.zlib.decompress(raw, self.limit - self.size + 1))
        except zlib.error:
            raise BodyTooLargeError(f"{self.what} is not valid compressed data") from None
        if self.zlib.unconsumed_tail:  # more output was waiting than the bound leaves room for
            raise _too_large(self.limit, self.what)

    def _add(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.limit:
            raise _too_large(self.limit, self.what)
        self.chunks.append(data)

    def body(self) -> bytes:
        if self.zlib is not None:
            self._add(self.zlib.flush())
        return b"".join(self.chunks)


def _read_already(response: httpx.Response, limit: int, what: str) -> bytes | None:
    """The body of a response whose stream was read before it got here (an in-memory transport
    builds responses from bytes): only its size is left to check."""
    if not response.is_stream_consumed:
        return None
    if len(response.content) > limit:
        raise _too_large(limit, what)
    return response.content


def read_bounded(response: httpx.Response, what: str, limit: int = MAX_DOCUMENT_BYTES) -> bytes:
    _declared(response, limit, what)
    if (body := _read_already(response, limit, what)) is not None:
        return body
    decoder = _Decoder(response, limit, what)
    for raw in response.iter_raw():
        decoder.feed(raw)
    return decoder.body()


async def aread_bounded(response: httpx.Response, what: str, limit: int = MAX_DOCUMENT_BYTES) -> bytes:
    _declared(response, limit, what)
    if (body := _read_already(response, limit, what)) is not None:
        return body
    decoder = _Decoder(response, limit, what)
    async for raw in response.aiter_raw():
        decoder.feed(raw)
    return decoder.body()


# ----- event streams: read line by line, each line bounded ---------------------------------------


def _uncompressed(response: httpx.Response) -> None:
    """The event stream is asked for with Accept-Encoding: identity; a compressed one is refused (the
    loop reconnects with backoff): httpx would inflate each chunk whole before a line bound saw it."""
    coding = response.headers.get("content-encoding", "identity").strip().lower()
    if coding not in ("", "identity"):
        raise ValueError(f"the event stream came with content coding {coding!r}; identity was asked for")


def event_lines(response: httpx.Response) -> Iterator[str]:
    """The lines of an event stream, each bounded (`SSELines`); httpx's iter_lines is not."""
    _uncompressed(response)
    lines = SSELines()
    for text in response.iter_text():
        yield from lines.feed(text)


async def aevent_lines(response: httpx.Response) -> AsyncIterator[str]:
    _uncompressed(response)
    lines = SSELines()
    async for text in response.aiter_text():
        for line in lines.feed(text):
            yield line
