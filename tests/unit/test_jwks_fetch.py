"""jwks_fetch.HttpJwksFetcher against a loopback HTTP server: the bounds a client's jwks_uri is fetched
under (size, time, no redirects, no compression) and what a 200, a 304 and an error mean."""

from __future__ import annotations

import gzip
import http.server
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from jwks_service.jwks_fetch import HttpJwksFetcher, JwksFetchError

Handler = Callable[[http.server.BaseHTTPRequestHandler], None]


@pytest.fixture
def serve() -> Iterator[Callable[[Handler], str]]:
    servers: list[http.server.ThreadingHTTPServer] = []

    def start(handle: Handler) -> str:
        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                handle(self)

            def log_message(self, *args: Any) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        server.daemon_threads = True
        servers.append(server)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{server.server_address[1]}/jwks.json"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def reply(status: int, body: bytes = b"", **headers: str) -> Handler:
    def handle(h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_response(status)
        for name, value in {"Content-Length": str(len(body)), **headers}.items():
            h.send_header(name.replace("_", "-"), value)
        h.end_headers()
        h.wfile.write(body)

    return handle


def test_a_key_set_its_etag_and_a_304(serve: Callable[[Handler], str]) -> None:
    seen: list[str | None] = []

    def handle(h: http.server.BaseHTTPRequestHandler) -> None:
        seen.append(h.headers.get("If-None-Match"))
        assert h.headers.get("Accept-Encoding") == "identity"
        if h.headers.get("If-None-Match") == '"v1"':
            reply(304, ETag='"v1"', Cache_Control="max-age=60")(h)
        else:
            reply(200, b'{"keys": []}', ETag='"v1"', Cache_Control="max-age=60")(h)

    url = serve(handle)
    fetch = HttpJwksFetcher()
    first = fetch(url, None)
    assert (first.status, first.body, first.etag, first.cache_control) == (200, b'{"keys": []}', '"v1"', "max-age=60")
    again = fetch(url, '"v1"')
    assert (again.status, again.body, again.etag) == (304, b"", '"v1"')
    assert seen == [None, '"v1"']


@pytest.mark.parametrize(
    ("handler", "said"),
    [
        (reply(500, b"oops"), "answered 500"),
        (reply(302, Location="http://169.254.169.254/latest/meta-data"), "answered 302"),  # never followed
        (reply(200, b"x" * 70_000), "larger than"),  # Content-Length over the bound
        (reply(200, gzip.compress(b'{"keys": []}'), Content_Encoding="gzip"), "content coding"),
    ],
)
def test_refused_answers(serve: Callable[[Handler], str], handler: Handler, said: str) -> None:
    with pytest.raises(JwksFetchError, match=said):
        HttpJwksFetcher()(serve(handler), None)


def test_a_body_without_length_is_cut_at_the_bound(serve: Callable[[Handler], str]) -> None:
    def endless(h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Connection", "close")
        h.end_headers()
        try:
            for _ in range(1000):
                h.wfile.write(b"x" * 8192)
        except OSError:
            pass  # the fetcher hung up

    with pytest.raises(JwksFetchError, match="larger than 65536 bytes"):
        HttpJwksFetcher()(serve(endless), None)


def test_a_dripping_server_cannot_hold_the_fetch(serve: Callable[[Handler], str]) -> None:
    def drip(h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Connection", "close")
        h.end_headers()
        try:
            for _ in range(100):
                h.wfile.write(b" ")
                h.wfile.flush()
                time.sleep(0.1)
        except OSError:
            pass

    started = time.monotonic()
    with pytest.raises(JwksFetchError, match="longer than"):
        HttpJwksFetcher(timeout=0.5)(serve(drip), None)
    assert time.monotonic() - started < 2


def test_unreachable() -> None:
    with pytest.raises(JwksFetchError, match="unreachable"):
        HttpJwksFetcher(timeout=1)("http://127.0.0.1:9/jwks.json", None)
