"""The SDK's 1 MiB bound on what it downloads holds while the body streams, against a real local
HTTP server (the standard library's, on loopback) that serves far more than that.

The server counts what it manages to write before the client hangs up; the client counts the
bytes its transport hands to httpx. Small socket buffers on both sides keep what the kernel holds
in flight to a few hundred KiB, so the server's count says how much the client really pulled.
Without the bound, the verifier read all 64 MiB.
"""

from __future__ import annotations

import asyncio
import gzip
import http.server
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from jwks_service.sdk import (
    AsyncTokenClient,
    AsyncVerifier,
    IntrospectionUnavailableError,
    KeysUnavailableError,
    TokenClient,
    TokenRequestError,
    Verifier,
)
from jwks_service.sdk.bounded import MAX_DOCUMENT_BYTES

TOTAL = 64 << 20  # what the server offers
CHUNK = 64 << 10
BUFFER = 64 << 10  # SO_SNDBUF / SO_RCVBUF on each side
SLACK = 1 << 20  # socket buffers, one read of the client, one chunk of the server: well under this
TOKEN = "eyJhbGciOiJFUzI1NiIsImtpZCI6ImsiLCJ0eXAiOiJhdCtqd3QifQ.e30.c2ln"
HS256_TOKEN = "eyJhbGciOiJIUzI1NiIsImtpZCI6ImgxIiwidHlwIjoiYXQrand0In0.e30.c2ln"


class Huge(http.server.BaseHTTPRequestHandler):
    """GET /chunked: 64 MiB chunked; /declared: 64 MiB with its Content-Length; /gzip: 8 KiB of gzip
    that inflates to 8 MiB; /.well-known/...: metadata pointing at /chunked. POST answers chunked."""

    protocol_version = "HTTP/1.1"
    sent: dict[str, int] = {}  # noqa: RUF012 - one server per test module
    done: dict[str, threading.Event] = {}  # noqa: RUF012

    def log_message(self, *args: object) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, BUFFER)

    def do_GET(self) -> None:
        if self.path.startswith("/.well-known/"):
            base = self.server.base  # type: ignore[attr-defined]
            self._small(b'{"issuer":"%s","jwks_uri":"%s/chunked"}' % (base.encode(), base.encode()))
        elif self.path == "/gzip":
            body = gzip.compress(b" " * (8 << 20))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self._count("/gzip", [body], chunked=False)
        else:
            self._huge(self.path)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self._huge("POST " + self.path)

    def _small(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _huge(self, name: str) -> None:
        declared = name.endswith("/declared")
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if declared:
            self.send_header("Content-Length", str(TOTAL))
        else:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        chunks = (b"[" + b" " * (CHUNK - 1) if i == 0 else b" " * CHUNK for i in range(TOTAL // CHUNK))
        self._count(name, chunks, chunked=not declared)

    def _count(self, name: str, chunks: Any, *, chunked: bool) -> None:
        sent = 0
        try:
            for chunk in chunks:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
                sent += len(chunk)
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
        except OSError:
            self.close_connection = True
        finally:
            Huge.sent[name] = sent
            Huge.done.setdefault(name, threading.Event()).set()


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Huge)
    server.daemon_threads = True
    server.base = f"http://127.0.0.1:{server.server_address[1]}"  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.base  # type: ignore[attr-defined]
    server.shutdown()
    server.server_close()


def _sent(name: str) -> int:
    event = Huge.done.setdefault(name, threading.Event())
    assert event.wait(20), f"the server is still writing {name}"
    return Huge.sent[name]


# ----- a transport that counts what it reads from the network ---------------------------------

SOCKET_OPTIONS = [(socket.SOL_SOCKET, socket.SO_RCVBUF, BUFFER)]


class Counted:
    read = 0


class _CountingStream(httpx.SyncByteStream):
    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.inner:
            Counted.read += len(chunk)
            yield chunk

    def close(self) -> None:
        self.inner.close()


class _AsyncCountingStream(httpx.AsyncByteStream):
    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self.inner:
            Counted.read += len(chunk)
            yield chunk

    async def aclose(self) -> None:
        await self.inner.aclose()


class CountingTransport(httpx.HTTPTransport):
    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        response.stream = _CountingStream(response.stream)
        return response


class AsyncCountingTransport(httpx.AsyncHTTPTransport):
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle_async_request(request)
        response.stream = _AsyncCountingStream(response.stream)
        return response


def sync_client() -> httpx.Client:
    Counted.read = 0
    return httpx.Client(transport=CountingTransport(socket_options=SOCKET_OPTIONS), timeout=20)


def async_client() -> httpx.AsyncClient:
    Counted.read = 0
    return httpx.AsyncClient(transport=AsyncCountingTransport(socket_options=SOCKET_OPTIONS), timeout=20)


def _report(what: str, name: str, took: float) -> int:
    sent = _sent(name)
    print(f"\n[sdk body bound] {what}: client read {Counted.read} bytes, server wrote {sent} of {TOTAL}, {took:.2f} s")
    return sent


# ----- the JWK set ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/chunked", "/declared"])
def test_a_huge_jwks_is_refused_while_it_streams(base: str, path: str) -> None:
    start = time.monotonic()
    with sync_client() as http, Verifier(base, "api", jwks_uri=base + path, http=http) as verifier:
        with pytest.raises(KeysUnavailableError, match="larger than"):
            verifier.verify(TOKEN)
        took = time.monotonic() - start
    sent = _report(f"sync {path}", path, took)
    if path == "/declared":
        assert Counted.read == 0  # the Content-Length said enough
    else:
        assert MAX_DOCUMENT_BYTES < Counted.read <= MAX_DOCUMENT_BYTES + 2 * CHUNK
    assert sent < MAX_DOCUMENT_BYTES + SLACK
    assert verifier.stats.jwks_failures == 1


@pytest.mark.parametrize("path", ["/chunked", "/declared"])
def test_a_huge_jwks_is_refused_while_it_streams_async(base: str, path: str) -> None:
    name = "/async" + path

    async def scenario() -> None:
        async with async_client() as http:
            verifier = AsyncVerifier(base, "api", jwks_uri=base + name, http=http)
            with pytest.raises(KeysUnavailableError, match="larger than"):
                await verifier.verify(TOKEN)
            await verifier.aclose()

    start = time.monotonic()
    asyncio.run(scenario())
    sent = _report(f"async {path}", name, time.monotonic() - start)
    if path == "/declared":
        assert Counted.read == 0
    else:
        assert MAX_DOCUMENT_BYTES < Counted.read <= MAX_DOCUMENT_BYTES + 2 * CHUNK
    assert sent < MAX_DOCUMENT_BYTES + SLACK


def test_the_bound_is_on_the_decoded_size(base: str) -> None:
    """8 KiB of gzip that inflates to 8 MiB is over the bound too."""
    with sync_client() as http, Verifier(base, "api", jwks_uri=base + "/gzip", http=http) as verifier:
        with pytest.raises(KeysUnavailableError, match="larger than"):
            verifier.verify(TOKEN)
    assert Counted.read < 64 << 10


# ----- metadata, introspection, tokens: every document the SDK reads ---------------------------


def test_huge_metadata_is_refused_while_it_streams(base: str) -> None:
    """Discovery at an issuer whose metadata URL answers 64 MiB (its path ends in /chunked)."""
    issuer = base + "/meta/chunked"
    with sync_client() as http, Verifier(issuer, "api", http=http) as verifier:
        with pytest.raises(KeysUnavailableError, match="larger than"):
            verifier.verify(TOKEN)
    assert Counted.read <= MAX_DOCUMENT_BYTES + 2 * CHUNK


def test_a_huge_introspection_answer_is_refused_while_it_streams(base: str) -> None:
    uri = base + "/introspect/chunked"
    with (
        sync_client() as http,
        Verifier(base, "api", introspection=("id", "secret"), introspection_uri=uri, http=http) as v,
    ):
        with pytest.raises(IntrospectionUnavailableError, match="larger than"):
            v.verify(HS256_TOKEN)
    assert Counted.read <= MAX_DOCUMENT_BYTES + 2 * CHUNK
    assert _sent("POST /introspect/chunked") < MAX_DOCUMENT_BYTES + SLACK


def test_a_huge_token_answer_is_refused_while_it_streams(base: str) -> None:
    with (
        sync_client() as http,
        TokenClient(None, "id", "secret", token_endpoint=base + "/token/chunked", http=http) as client,
        pytest.raises(TokenRequestError, match="larger than"),
    ):
        client.get()
    assert Counted.read <= MAX_DOCUMENT_BYTES + 2 * CHUNK

    async def scenario() -> None:
        async with async_client() as http:
            client = AsyncTokenClient(None, "id", "secret", token_endpoint=base + "/token/declared", http=http)
            with pytest.raises(TokenRequestError, match="larger than"):
                await client.get()

    asyncio.run(scenario())
    assert Counted.read == 0


# ----- the event stream -----------------------------------------------------------------------


def test_an_event_stream_line_that_never_ends_is_cut_off(base: str) -> None:
    """/keys/events answering 64 MiB without a line break: the events thread drops the stream
    after MAX_LINE_CHARS (then reconnects with backoff) instead of buffering the line."""
    from jwks_service.sdk.sse import MAX_LINE_CHARS

    name = "/events/chunked"
    start = time.monotonic()
    with (
        sync_client() as http,
        Verifier(base, "api", jwks_uri=base + "/jwks", events=True, events_uri=base + name, http=http) as verifier,
    ):
        sent = _sent(name)
        took = time.monotonic() - start
        read = Counted.read
        assert not verifier.cache.subscribed
    print(
        f"\n[sdk body bound] endless event line: client read {read} bytes, server wrote {sent} of {TOTAL}, {took:.2f} s"
    )
    assert MAX_LINE_CHARS < read <= MAX_LINE_CHARS + 2 * CHUNK
    assert sent < MAX_LINE_CHARS + SLACK
