"""`/keys/events` slots are bounded per source address as well as in total (issue 11, defect 3).

A real uvicorn server in this process; the test connects from two loopback addresses (127.0.0.1 and
127.0.0.2, both on Linux's loopback network) so the per-address limit is seen as a stranger would.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn
from support import free_port, make_settings, wait_until

from jwks_service.http import create_app

pytestmark = pytest.mark.slow

OTHER_ADDRESS = "127.0.0.2"


@contextmanager
def serving(tmp_path: Path, **extra: object) -> Iterator[tuple[str, object]]:
    app = create_app(make_settings(tmp_path, **extra), events_heartbeat=0.2)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: httpx.get(f"{base}/healthz", timeout=1).status_code == 200, timeout=10)
        yield base, app.state.events
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def client_from(address: str) -> httpx.Client:
    return httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=5)


def open_stream(stack: ExitStack, client: httpx.Client, url: str) -> httpx.Response:
    """Open a stream and read its first bytes (the server has granted the slot by then). The byte
    iterator stays referenced by the stack: dropping it would close the connection."""
    response = stack.enter_context(client.stream("GET", url))
    if response.status_code == 200:
        chunks = response.iter_raw()
        next(chunks)
        stack.callback(chunks.close)
    else:
        response.read()
    return response


def test_one_address_cannot_take_every_event_stream(tmp_path: Path) -> None:
    with serving(tmp_path) as (base, hub), ExitStack() as stack:
        url = f"{base}/keys/events"
        mine = stack.enter_context(client_from("127.0.0.1"))
        streams = []
        for _ in range(16):
            s = ExitStack()
            stack.enter_context(s)
            response = open_stream(s, mine, url)
            assert response.status_code == 200
            streams.append(s)

        over = open_stream(stack, mine, url)
        assert over.status_code == 429, over.status_code
        assert over.json()["error"] == "slow_down"
        assert "error_description" in over.json()
        assert 1 <= int(over.headers["retry-after"]) <= 60

        other = stack.enter_context(client_from(OTHER_ADDRESS))
        assert open_stream(stack, other, url).status_code == 200, "another address still gets a stream"

        streams[0].close()  # one stream ends: its slot comes back
        deadline = time.monotonic() + 5

        def freed() -> bool:
            with ExitStack() as probe:
                return open_stream(probe, mine, url).status_code == 200

        while not freed():
            assert time.monotonic() < deadline, "closing a stream did not free its slot"
            time.sleep(0.05)
        assert hub.subscribers <= 17  # type: ignore[attr-defined]


def test_the_limits_are_configurable(tmp_path: Path) -> None:
    with (
        serving(tmp_path, events={"max_streams": 3, "max_streams_per_source": 2}) as (base, _),
        ExitStack() as stack,
    ):
        url = f"{base}/keys/events"
        mine = stack.enter_context(client_from("127.0.0.1"))
        other = stack.enter_context(client_from(OTHER_ADDRESS))
        assert [open_stream(stack, mine, url).status_code for _ in range(3)] == [200, 200, 429]
        assert open_stream(stack, other, url).status_code == 200
        total = open_stream(stack, other, url)  # 3 open in all: the replica's own limit
        assert total.status_code == 429 and total.headers["retry-after"]


def test_a_stream_whose_client_left_before_the_first_byte_frees_its_slot(tmp_path: Path) -> None:
    """Connect, send the request, hang up at once: no slot may stay taken."""
    import socket

    with serving(tmp_path, events={"max_streams_per_source": 2}) as (base, hub):
        port = int(base.rsplit(":", 1)[1])
        for _ in range(20):
            with socket.create_connection(("127.0.0.1", port)) as sock:
                sock.sendall(b"GET /keys/events HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_until(lambda: hub.subscribers == 0, timeout=5)  # type: ignore[attr-defined]
        with ExitStack() as stack, client_from("127.0.0.1") as mine:
            assert open_stream(stack, mine, f"{base}/keys/events").status_code == 200


def test_stream_limits_come_from_the_file_or_the_environment(tmp_path: Path) -> None:
    from jwks_service.config import build_settings, load_settings
    from jwks_service.errors import ConfigError

    defaults = load_settings(environ={})
    assert (defaults.events_max_streams, defaults.events_max_streams_per_source) == (1000, 16)
    env = {"JWKS_EVENTS__MAX_STREAMS": "50", "JWKS_EVENTS__MAX_STREAMS_PER_SOURCE": "4"}
    settings = load_settings(environ=env)
    assert (settings.events_max_streams, settings.events_max_streams_per_source) == (50, 4)
    for bad in (
        {"max_streams": 0},
        {"max_streams_per_source": "many"},
        {"max_streams": 10, "max_streams_per_source": 11},
    ):
        with pytest.raises(ConfigError, match=r"events\.max_streams"):
            build_settings({"events": bad})


def test_per_source_limits_count_an_ipv6_host_by_its_64() -> None:
    from starlette.requests import Request

    from jwks_service.http.limits import source_of

    def source(host: str) -> str:
        return source_of(Request({"type": "http", "client": (host, 1234), "headers": []}))

    assert source("2001:db8:1:2::1") == source("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert source("2001:db8:1:3::1") != source("2001:db8:1:2::1")
    assert source("::ffff:192.0.2.7") == source("192.0.2.7") == "192.0.2.7"
    assert source("testclient") == "testclient"
