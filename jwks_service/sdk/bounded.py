"""Reading HTTP bodies under a size bound while they stream, so that an issuer (or whatever answers
in its place) cannot make the SDK download or hold more than the bound.

A ``Content-Length`` over the bound is refused before any of the body is read; otherwise the body is
read chunk by chunk (decoded, so a compressed body counts at its real size) and reading stops at the
first chunk that passes the bound. The caller opens the response with ``client.stream(...)``; leaving
that block closes the connection without reading the rest.
"""

from __future__ import annotations

import httpx

from .errors import SDKError

MAX_DOCUMENT_BYTES = 1 << 20  # metadata, JWK sets, introspection and token answers are a few KiB


class BodyTooLargeError(SDKError):
    """A response body over the bound; each caller maps it to its own error."""


def _declared(response: httpx.Response, limit: int, what: str) -> None:
    value = response.headers.get("content-length", "")
    if value.isdigit() and int(value) > limit:
        raise BodyTooLargeError(f"{what} is larger than {limit} bytes (Content-Length {value})")


def _too_large(limit: int, what: str) -> BodyTooLargeError:
    return BodyTooLargeError(f"{what} is larger than {limit} bytes")


def read_bounded(response: httpx.Response, what: str, limit: int = MAX_DOCUMENT_BYTES) -> bytes:
    _declared(response, limit, what)
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit, what)
        chunks.append(chunk)
    return b"".join(chunks)


async def aread_bounded(response: httpx.Response, what: str, limit: int = MAX_DOCUMENT_BYTES) -> bytes:
    _declared(response, limit, what)
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit, what)
        chunks.append(chunk)
    return b"".join(chunks)
