"""The HTTP protocol `serve` runs: uvicorn's httptools protocol with one write per response
(http/corked.py), which answers a plain JWKS request as soon as its head is parsed.

Serving the JWKS does almost nothing (one pre-rendered body), so uvicorn's machinery around each
request was most of its cost: a request-response object, an event and an asyncio task per request,
the ASGI messages, and two regular expressions per response header to validate what the app sent.
Counted with callgrind (the server's instructions per request, wrk with 8 kept-alive connections for
20 s; bench/instructions.sh): 191,000 through uvicorn and the whole app, about 70,000 here.

Only a request that needs nothing else is answered here: `GET` or `HEAD` of exactly
`/.well-known/jwks.json` (no query, no body), on a connection with no other request in progress, when the app
lets it (http/front: not with the access log on; not on the admin listener). Behind
trusted proxies (`[http] trusted_proxies`, which uvicorn applies in its ProxyHeadersMiddleware), the
client is the one that middleware would make of `X-Forwarded-For`, by its own rules. The answer is
the app's (`JwksEndpoint.respond`: ETag and 304, the adoption note, the counter) with
uvicorn's default headers (`date`, `server`), the request id (`X-Request-ID`, as http/access gives
every other request) and uvicorn's keep-alive rule. Anything else, or a failure while answering,
goes through uvicorn and the app as before.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT
from uvicorn.protocols.http.httptools_impl import STATUS_LINE

from ..requestid import from_headers
from .corked import CorkedHttpToolsProtocol, CorkedTransport
from .front import JWKS_PATH, ServiceApp

log = logging.getLogger("jwks_service")

_JWKS_URL = JWKS_PATH.encode("ascii")

# Answers held for one connection before they reach its socket, beyond which its requests go through
# uvicorn, which stops reading from a client that does not read its answers (pipelined requests wait
# one at a time, and an answer waits for the socket to drain): many requests in one read would
# otherwise each add a JWKS to the memory held for that client. uvicorn's own bound on what it
# holds for a connection.
MAX_PENDING_BYTES = HIGH_WATER_LIMIT


class ServiceProtocol(CorkedHttpToolsProtocol):
    _answered = False  # the request whose head was just parsed was answered here

    def on_message_begin(self) -> None:
        self._answered = False
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        if self.url == _JWKS_URL and self._answer_jwks():
            self._answered = True
            return
        # An answer given here armed the keep-alive timer; uvicorn stops it when a request's data
        # arrives (data_received), before parsing: a request after ours in the same read would
        # otherwise be cut off by that timer while the app answers it.
        self._unset_keepalive_if_required()
        super().on_headers_complete()

    def _answer_jwks(self) -> bool:
        app = self.app
        proxies = None
        if isinstance(app, ProxyHeadersMiddleware):
            proxies, app = app, app.app
        if not isinstance(app, ServiceApp) or app.front_jwks is None or self.limit_concurrency is not None:
            return False  # (uvicorn's --limit-concurrency answers 503 itself; `serve` sets none)
        if self.cycle is not None and not self.cycle.response_complete:
            return False  # a request in progress: this one waits in uvicorn's pipeline
        transport = self.transport
        if self.flow.write_paused or (isinstance(transport, CorkedTransport) and transport.pending > MAX_PENDING_BYTES):
            return False  # a client that does not read what it is sent: uvicorn's flow control
        method = self.parser.get_method()
        if (method != b"GET" and method != b"HEAD") or self.parser.should_upgrade():
            return False
        headers = self.headers
        for name, value in headers:
            if name == b"transfer-encoding" or (name == b"content-length" and value != b"0"):
                return False  # a body: answered once the parser has read it whole (it may be malformed)
        server = self.server
        if app.admin_port is not None and server is not None and server[1] == app.admin_port:
            return False
        try:
            client = self.client if proxies is None else _forwarded_client(proxies, self.client, headers)
            status, head, body = app.front_jwks.respond(method == b"GET", headers, client)
        except Exception:
            log.exception("unexpected error on %s %s; answered through the app", method.decode(), JWKS_PATH)
            return False
        keep_alive = self.parser.get_http_version() != "1.0" and self.parser.should_keep_alive()
        lines = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            lines += (name, b": ", value, b"\r\n")
        for name, value in head:
            lines += (name, b": ", value, b"\r\n")
        lines += (b"x-request-id: ", from_headers(headers).encode("ascii"), b"\r\n")
        if not keep_alive:
            lines.append(b"connection: close\r\n")
        lines += (b"\r\n", body)
        transport.write(b"".join(lines))
        if keep_alive:
            self.on_response_complete()  # the count, reading resumed, the keep-alive timer armed
        else:
            self.server_state.total_requests += 1
            transport.close()
        return True

    def on_message_complete(self) -> None:
        if self._answered:
            self._answered = False
            return
        super().on_message_complete()


def _forwarded_client(
    proxies: ProxyHeadersMiddleware, client: tuple[str, int] | None, headers: Sequence[tuple[bytes, bytes]]
) -> tuple[str, int] | None:
    """The client ProxyHeadersMiddleware would give the app: from `X-Forwarded-For` when the peer is
    a trusted proxy and the header names a usable address, else the peer itself."""
    if client is None or client[0] not in proxies.trusted_hosts:
        return client
    forwarded = [value for name, value in headers if name == b"x-forwarded-for"]
    if not forwarded:
        return client
    host, port = proxies.trusted_hosts.get_trusted_client_address(b", ".join(forwarded).decode("latin1"))
    return (host, port) if host else client
