"""Bounded reads of compressed bodies: a compression bomb never expands past the bound in memory."""

from __future__ import annotations

import gzip
import tracemalloc
import zlib

import anyio
import httpx
import pytest

from jwks_service.sdk.bounded import MAX_DOCUMENT_BYTES, BodyTooLargeError, aread_bounded, read_bounded

BOMB = gzip.compress(b"\0" * (64 << 20), compresslevel=9)  # about 64 KiB that inflate to 64 MiB


def _response(body: bytes, coding: str) -> httpx.Response:
    return httpx.Response(200, headers={"Content-Encoding": coding}, stream=httpx.ByteStream(body))


def test_a_gzip_bomb_is_refused_without_inflating_it() -> None:
    assert len(BOMB) < MAX_DOCUMENT_BYTES  # one chunk, under every Content-Length check
    tracemalloc.start()
    try:
        with pytest.raises(BodyTooLargeError, match="larger than"):
            read_bounded(_response(BOMB, "gzip"), "the JWK set")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # httpx alone inflates a chunk whole (64 MiB here) before any size check can see it.
    assert peak < 4 * MAX_DOCUMENT_BYTES, peak


def test_a_gzip_bomb_is_refused_by_the_async_reader_too() -> None:
    with pytest.raises(BodyTooLargeError):
        anyio.run(aread_bounded, _response(BOMB, "gzip"), "the JWK set")


@pytest.mark.parametrize(
    ("coding", "encode"),
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("identity", lambda b: b),
        ("", lambda b: b),
    ],
)
def test_compressed_documents_within_the_bound_are_read(coding: str, encode: object) -> None:
    body = b'{"keys": []}' * 1000
    assert callable(encode)
    assert read_bounded(_response(encode(body), coding), "the JWK set") == body


def test_exactly_the_bound_is_read_and_one_byte_more_is_not() -> None:
    exact = b" " * MAX_DOCUMENT_BYTES
    assert read_bounded(_response(gzip.compress(exact), "gzip"), "x") == exact
    with pytest.raises(BodyTooLargeError):
        read_bounded(_response(gzip.compress(exact + b" "), "gzip"), "x")


@pytest.mark.parametrize("coding", ["br", "zstd", "compress"])
def test_other_content_codings_are_refused(coding: str) -> None:
    with pytest.raises(BodyTooLargeError, match="content coding"):
        read_bounded(_response(b"whatever", coding), "the JWK set")


def test_corrupt_compressed_data_is_refused() -> None:
    with pytest.raises(BodyTooLargeError, match="not valid compressed data"):
        read_bounded(_response(b"not gzip at all", "gzip"), "the JWK set")


def test_a_compressed_event_stream_is_refused_before_it_is_inflated() -> None:
    """The SDK asks for the event stream uncompressed; one that comes gzipped anyway is refused (the
    loop reconnects with backoff) rather than inflated chunk by chunk (found in review)."""
    from jwks_service.sdk.bounded import aevent_lines as _alines
    from jwks_service.sdk.bounded import event_lines as _lines

    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="content coding"):
            list(_lines(_response(BOMB, "gzip")))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * MAX_DOCUMENT_BYTES, peak

    async def read_async() -> None:
        async for _ in _alines(_response(BOMB, "gzip")):
            pass

    with pytest.raises(ValueError, match="content coding"):
        anyio.run(read_async)
    assert list(_lines(_response(b"event: ready\ndata: {}\n\n", "identity"))) == ["event: ready", "data: {}", ""]
