"""http/protocol.ServiceProtocol answers a plain JWKS request as soon as its head is parsed, and
everything else as uvicorn does and the app through its middleware chain.
Each answer is the one the app gives through uvicorn and through the whole chain."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from typing import Any

import pytest
from starlette.testclient import TestClient
from uvicorn.config import Config
from uvicorn.server import ServerState

from jwks_service.http import protocol as protocol_module
from jwks_service.http.app import create_app
from jwks_service.http.corked import CorkedTransport
from jwks_service.http.front import ServiceApp
from jwks_service.http.protocol import ServiceProtocol
from jwks_service.http.wellknown import JwksEndpoint
from jwks_service.runtime import Runtime

JWKS = "/.well-known/jwks.json"
VARYING = {b"date", b"server", b"x-request-id"}


class RecordingTransport(asyncio.Transport):
    def __init__(self, port: int = 8000, peer: str = "127.0.0.5") -> None:
        super().__init__()
        self.peer = peer
        self.written = b""
        self.closed = False
        self.reading = True
        self.port = port

    def write(self, data: Any) -> None:
        self.written += bytes(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": (self.peer, 4321), "sockname": ("127.0.0.1", self.port)}.get(name, default)


def _responses(data: bytes, heads: frozenset[int] = frozenset()) -> list[tuple[int, dict[bytes, bytes], bytes]]:
    """Each HTTP/1.1 response in `data`: status, headers (lower-case names), body (by Content-Length;
    none for the answers to HEAD requests, whose places are `heads`)."""
    out: list[tuple[int, dict[bytes, bytes], bytes]] = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        status_line, *lines = head.split(b"\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get(b"content-length", b"0"))
        if len(out) in heads or status_line.split()[1] in (b"304", b"204"):
            length = 0
        out.append((int(status_line.split()[1]), headers, rest[:length]))
        data = rest[length:]
    return out


class Connection:
    """One client connection to `ServiceProtocol` serving `app`, on a transport that records writes."""

    def __init__(self, app: Any, port: int = 8000, peer: str = "127.0.0.5", proxies: str | None = None) -> None:
        config = Config(
            app=app,
            http=ServiceProtocol,
            lifespan="off",
            log_config=None,
            proxy_headers=proxies is not None,
            forwarded_allow_ips=proxies,
        )
        config.load()
        state = ServerState()
        state.default_headers = [(b"date", b"Mon, 30 Nov 2026 00:00:00 GMT"), (b"server", b"uvicorn")]
        self.protocol = ServiceProtocol(config=config, server_state=state, app_state={})
        self.raw = RecordingTransport(port, peer)
        self.protocol.connection_made(self.raw)
        self.state = state

    async def send(self, data: bytes) -> list[tuple[int, dict[bytes, bytes], bytes]]:
        """What the server has answered once `data` is handled (the app's tasks given time to run)."""
        self.protocol.data_received(data)
        for _ in range(50):
            await asyncio.sleep(0)
        return _responses(self.raw.written)

    @property
    def tasks(self) -> int:
        return len(self.protocol.tasks)


def _get(path: str = JWKS, *extra: str, method: str = "GET", version: str = "1.1") -> bytes:
    lines = [f"{method} {path} HTTP/{version}", "Host: 127.0.0.1", *extra, "", ""]
    return "\r\n".join(lines).encode()


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.fixture
def app(runtime: Runtime) -> ServiceApp:
    return create_app(runtime=runtime, background=False)


def test_a_plain_jwks_request_is_answered_at_once_as_the_app_answers_it(app: ServiceApp) -> None:
    """No asyncio task for the JWKS; the answer is that of the same request through uvicorn and the
    app (a query string takes that way), and of the whole middleware chain (TestClient)."""

    async def scenario() -> tuple[list[Any], list[Any], int]:
        fast = Connection(app)
        answered = await fast.send(_get())
        tasks_after_fast = fast.tasks + len(fast.protocol.pipeline)
        slow = Connection(app)
        through_app = await slow.send(_get(JWKS + "?x=1"))
        return answered, through_app, tasks_after_fast

    answered, through_app, tasks = _run(scenario())
    assert tasks == 0
    [(status, headers, body)] = answered
    [(app_status, app_headers, app_body)] = through_app
    assert (status, body) == (app_status, app_body) == (200, app.state.runtime.keys.snapshot.jwks.body)
    assert {k: v for k, v in headers.items() if k not in VARYING} == {
        k: v for k, v in app_headers.items() if k not in VARYING
    }
    assert headers[b"date"] == b"Mon, 30 Nov 2026 00:00:00 GMT" and headers[b"server"] == b"uvicorn"
    assert re.fullmatch(rb"[0-9a-f]{12}-[0-9a-f]+", headers[b"x-request-id"])
    with TestClient(app, base_url="http://127.0.0.1:8000") as client:
        chain = client.get(JWKS)
    assert chain.content == body
    assert {k.encode(): v.encode() for k, v in chain.headers.items() if k.encode() not in VARYING} == {
        k: v for k, v in headers.items() if k not in VARYING
    }


def test_etag_head_request_ids_keep_alive_and_pipelining(app: ServiceApp) -> None:
    etag = app.state.runtime.keys.snapshot.jwks.etag

    async def scenario() -> Connection:
        conn = Connection(app)
        # Four requests in one read: a 304, a HEAD, a caller's request id, an HTTP/1.0 request.
        await conn.send(
            _get(JWKS, f"If-None-Match: {etag}")
            + _get(method="HEAD")
            + _get(JWKS, "X-Request-ID: trace-42")
            + _get(JWKS, "X-Request-ID: bad id", version="1.0")
        )
        return conn

    conn = _run(scenario())
    [not_modified, head, traced, closing] = _responses(conn.raw.written, heads=frozenset({1}))
    assert not_modified[0] == 304 and not_modified[2] == b"" and not_modified[1][b"etag"] == etag.encode()
    assert b"content-length" not in not_modified[1]
    assert head[0] == 200 and head[2] == b"" and int(head[1][b"content-length"]) > 0
    assert traced[1][b"x-request-id"] == b"trace-42"
    assert closing[1][b"connection"] == b"close" and closing[1][b"x-request-id"] != b"bad id"
    assert conn.raw.closed and conn.state.total_requests == 4
    counts = app.state.metrics.jwks_requests.counts
    assert counts == {("304",): 1, ("200",): 3}


def test_a_jwks_request_behind_another_in_progress_waits_its_turn(app: ServiceApp) -> None:
    """A token request (answered by the app, in a task) then a JWKS request in the same read: the JWKS
    goes through uvicorn's pipeline and is answered second."""

    async def scenario() -> list[Any]:
        conn = Connection(app)
        body = b"grant_type=client_credentials"
        token = (
            b"POST /oauth/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        return await conn.send(token + _get())

    [first, second] = _run(scenario())
    assert first[0] == 401  # no client credentials
    assert second[0] == 200 and second[2].startswith(b'{"keys":')


@pytest.mark.parametrize(
    ("change", "port"),
    [
        ("access log", 8000),  # the access log sees every request
        ("admin port", 8001),  # the JWKS is not served on the admin listener (404 from AdminSplit)
    ],
)
def test_requests_the_app_must_see_go_through_it(
    runtime_factory: Callable[..., Runtime], change: str, port: int
) -> None:
    extra: dict[str, Any] = (
        {"log": {"access": True}} if change == "access log" else {"http": {"admin_listen": "127.0.0.1:8001"}}
    )
    app = create_app(runtime=runtime_factory(**extra), background=False)

    async def scenario() -> tuple[int, list[Any]]:
        conn = Connection(app, port=port)
        conn.protocol.data_received(_get())
        started = conn.tasks  # the request went to the app, in a task
        for _ in range(50):
            await asyncio.sleep(0)
        return started, _responses(conn.raw.written)

    started, [(status, _, _)] = _run(scenario())
    assert started == 1
    assert status == (200 if change == "access log" else 404)


def test_a_client_that_reads_nothing_meets_uvicorns_flow_control(
    app: ServiceApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past MAX_PENDING_BYTES of answers not yet on the socket, requests go through uvicorn, which
    answers one at a time and stops reading meanwhile: 200 requests in one read are not 200 answers
    held in memory at once."""
    size = len(app.state.runtime.keys.snapshot.jwks.body)
    monkeypatch.setattr(protocol_module, "MAX_PENDING_BYTES", 3 * size)

    async def scenario() -> tuple[int, int, bool]:
        conn = Connection(app)
        conn.protocol.data_received(_get() * 200)
        transport = conn.protocol.transport
        assert isinstance(transport, CorkedTransport)
        return transport.pending, len(conn.protocol.pipeline), conn.protocol.flow.read_paused

    pending, queued, paused = _run(scenario())
    assert pending < 6 * size  # the answers held: four at once, then uvicorn's own
    assert queued > 150 and paused


def test_a_failure_while_answering_goes_through_the_app(
    app: ServiceApp, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """At the protocol, the request is handed to uvicorn and the app, whose server-error handler logs
    the failure and answers 500 with the request's id."""

    def broken(*args: object) -> None:
        raise RuntimeError("broken")

    assert app.front_jwks is not None
    monkeypatch.setattr(JwksEndpoint, "respond", broken)

    async def scenario() -> list[Any]:
        conn = Connection(app)
        return await conn.send(_get(JWKS, "X-Request-ID: oops-1"))

    with caplog.at_level(logging.ERROR, logger="jwks_service"):
        [(status, headers, body)] = _run(scenario())
    assert status == 500 and headers[b"x-request-id"] == b"oops-1"
    assert b'"error":"server_error"' in body.replace(b" ", b"")
    messages = [r.getMessage() for r in caplog.records]
    assert any("answered through the app" in m for m in messages)
    assert any(m.startswith("unexpected error on GET /.well-known/jwks.json") for m in messages)


def test_fetchers_are_noted_on_the_fast_way(app: ServiceApp) -> None:
    async def scenario() -> None:
        conn = Connection(app)
        await conn.send(_get(JWKS, "JWKS-Verifier: billing-api/1"))

    _run(scenario())
    fetches = app.state.runtime.fetches
    assert fetches.pending == 1
    notes, _ = fetches.take()
    assert "billing-api/1" in repr(notes)


@pytest.mark.parametrize(
    ("peer", "forwarded", "source"),
    [
        ("10.0.0.2", "203.0.113.9", "203.0.113.9"),  # a trusted proxy: the address it names
        ("10.0.0.2", "203.0.113.9, 10.0.0.3", "203.0.113.9"),  # through two trusted proxies
        ("192.0.2.7", "203.0.113.9", "192.0.2.7"),  # anyone else: the peer itself
        ("10.0.0.2", None, "10.0.0.2"),  # a trusted proxy that names nobody
    ],
)
def test_behind_trusted_proxies_the_fetcher_is_the_client_uvicorn_would_give_the_app(
    app: ServiceApp, peer: str, forwarded: str | None, source: str
) -> None:
    """With `[http] trusted_proxies` (uvicorn's ProxyHeadersMiddleware in front of the app) the JWKS is
    still answered at the protocol, and the fetcher is named by the address that middleware gives the
    app through the usual way (a query string takes it)."""
    extra = (f"X-Forwarded-For: {forwarded}",) if forwarded else ()

    async def scenario(path: str) -> tuple[int, list[str]]:
        conn = Connection(app, peer=peer, proxies="10.0.0.0/8")
        conn.protocol.data_received(_get(path, *extra))
        started = conn.tasks
        for _ in range(50):
            await asyncio.sleep(0)
        notes, _ = app.state.runtime.fetches.take()
        return started, [n.fetcher for n in notes]

    fast_tasks, fast = _run(scenario(JWKS))
    app_tasks, through_app = _run(scenario(JWKS + "?x=1"))
    assert (fast_tasks, app_tasks) == (0, 1)
    assert fast == through_app == [source]


_POST_WAITING_FOR_ITS_BODY = (
    b"POST /oauth/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
    b"Content-Length: 29\r\n\r\n"
)


def test_the_keep_alive_timer_of_an_answer_given_here_does_not_cut_the_next_request(app: ServiceApp) -> None:
    """A JWKS answered here, then in the same read a request the app answers (a POST whose body is
    still to come, an event stream): no keep-alive timer runs while that one is in progress, as with
    uvicorn alone. Before, the timer armed by the JWKS answer closed the connection under it."""

    async def scenario(second: bytes) -> tuple[bool, bool]:
        conn = Connection(app)
        conn.protocol.timeout_keep_alive = 0.05
        conn.protocol.data_received(_get() + second)
        for _ in range(20):
            await asyncio.sleep(0)
        armed = conn.protocol.timeout_keep_alive_task is not None
        await asyncio.sleep(0.2)  # past the keep-alive timeout
        closed = conn.raw.closed
        conn.protocol.connection_lost(None)
        await asyncio.sleep(0.05)
        return armed, closed

    assert _run(scenario(_POST_WAITING_FOR_ITS_BODY)) == (False, False)
    assert _run(scenario(_get("/keys/events", "Accept: text/event-stream"))) == (False, False)


@pytest.mark.parametrize(
    "request_with_a_body",
    [
        b"GET /.well-known/jwks.json HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"GET /.well-known/jwks.json HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"GET /.well-known/jwks.json HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
        b"GET /.well-known/jwks.json HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ],
)
def test_a_request_with_a_body_is_answered_once_as_uvicorn_answers_it(
    app: ServiceApp, request_with_a_body: bytes
) -> None:
    """A body (even a malformed one, which uvicorn answers 400 once the parser reaches it) is left to
    uvicorn: one answer per request, the one it gives. Before, a malformed chunked body got 200 then 400."""

    async def scenario(data: bytes) -> list[int]:
        conn = Connection(app)
        conn.protocol.data_received(data)
        for _ in range(50):
            await asyncio.sleep(0)
        return [status for status, _, _ in _responses(conn.raw.written)]

    through_uvicorn = request_with_a_body.replace(b"jwks.json ", b"jwks.json?x=1 ")
    assert _run(scenario(request_with_a_body)) == _run(scenario(through_uvicorn))
