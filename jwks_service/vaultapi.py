"""Talking to Vault / OpenBao over HTTP: one client, one error mapping, one exchange for both drivers.

Every Vault request of the service (Transit signing and key management, the KEK's wrapping, token
login and renewal) is a `VaultRequest` sent by a `VaultClient`, on httpcore connection pools
(httpx's HTTP/1.1 core; h11 frames the messages) kept alive between requests: a blocking one
(`VaultClient.call`, for worker threads) and one per event loop (`VaultClient.acall`, the batched
signing hot path: no thread hand-off, which cost as much client CPU as the rest of a token).

What to send, how to read the answer and when to send again is decided in one place without I/O,
`Exchange`; the two drivers only move its requests and answers. Errors become service errors
there, exactly once:

- Vault unreachable, timing out, sealed, rate limiting or failing → `UnavailableError` (503, Retry-After);
- permission denied or a bad token → `VaultPermissionError`, naming the path and capability the
  token's policy lacks (see ``deploy/vault-policy.hcl``);
- Vault refusing the key or version (missing key, trimmed version, wrong type) → `KeyValidationError`.

A replayable request (one that changes nothing in Vault: sign, hmac, verify, reads) that fails
because a kept-alive connection was closed under it is sent once more, on a new connection. A
redirect (a standby node naming the active one) is followed.

TLS: Vault's certificate is verified against certifi's bundle, or the CA a `VaultAuth` finds in
VAULT_CACERT / VAULT_CAPATH (with VAULT_CLIENT_CERT / VAULT_CLIENT_KEY), as Vault's CLI reads them.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import threading
import urllib.parse
import urllib.request
import weakref
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import certifi
import httpcore
import orjson

from .errors import JwksServiceError, KeyValidationError, UnavailableError

RETRY_AFTER_UNAVAILABLE = 5  # seconds: Vault down, sealed or slow
RETRY_AFTER_PERMISSION = 30  # seconds: a policy fix needs a human
# Transit answers 500 (not 400) for some refusals that are about the key, not about Vault's health.
_KEY_PROBLEMS = ("key version", "requested version", "no such key", "key not found")
# What fails when no answer came: refused, reset, TLS, proxy, timed out.
_TRANSPORT = (
    httpcore.TimeoutException,
    httpcore.NetworkError,
    httpcore.ProtocolError,
    httpcore.ProxyError,
    httpcore.UnsupportedProtocol,
)
# A kept-alive connection Vault closed between two requests fails like this before any answer.
_STALE = (httpcore.RemoteProtocolError, httpcore.ReadError, httpcore.WriteError)
# Connections: the batcher keeps a few busy per key, worker threads (the naive path) more.
POOL: dict[str, Any] = {"max_connections": 100, "max_keepalive_connections": 32, "keepalive_expiry": 60.0}


class VaultPermissionError(UnavailableError):
    """Vault refused the token: the service cannot sign until its policy (or token) is fixed."""

    def __init__(self, description: str, retry_after: int = RETRY_AFTER_PERMISSION) -> None:
        super().__init__(description, retry_after)


@dataclass(frozen=True, slots=True)
class VaultRequest:
    """One request to Vault's HTTP API, and how its answer is read."""

    method: str  # GET or POST
    path: str  # under /v1/, e.g. transit/sign/jwks-default: also how errors name it
    capability: str  # what the token's policy must allow on `path` ("read", "update", "create")
    body: bytes | None = None  # JSON
    missing: str = ""  # added to the message when Vault has no such path
    absent_ok: bool = False  # 404 answers None (a read of something that may not exist)
    refused_ok: bool = False  # 400 answers None (a verification Vault refuses: retired version)
    replayable: bool = False  # changes nothing in Vault: may be sent again on a new connection
    anonymous: bool = False  # sent without the token (a login)

    @classmethod
    def get(cls, path: str, capability: str = "read", **options: Any) -> VaultRequest:
        return cls("GET", path, capability, **options)

    @classmethod
    def post(cls, path: str, capability: str, data: Any = None, **options: Any) -> VaultRequest:
        """POST `data` as JSON (bytes are sent as they are: JSON prepared by the caller)."""
        body = data if isinstance(data, bytes) or data is None else orjson.dumps(data)
        return cls("POST", path, capability, body, **options)


def _detail(status: int, content_type: str, body: bytes) -> str:
    """Vault's own words for an error answer: its ``errors`` list, else the start of the text."""
    if content_type.startswith("application/json"):
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            parsed = None
        errors = parsed.get("errors") if isinstance(parsed, dict) else None
        if isinstance(errors, list) and errors:
            return "; ".join(" ".join(str(e).split()) for e in errors)
    text = " ".join(body[:200].decode("utf-8", "replace").split())
    return text or f"HTTP {status}"


def status_error(url: str, request: VaultRequest, status: int, detail: str) -> JwksServiceError:
    """The service error for Vault's error answer `status` to `request`."""
    where, down = request.path, RETRY_AFTER_UNAVAILABLE
    if status == 403:
        return VaultPermissionError(
            f"Vault permission denied on {where}: the token's policy must allow {request.capability!r} on that path "
            "(see deploy/vault-policy.hcl)"
        )
    if status == 401:
        return VaultPermissionError(f"Vault refused the token on {where}: it is missing, invalid or expired")
    if status == 404:
        return KeyValidationError(f"Vault has no {where}{request.missing}")
    if status in (400, 405):
        return KeyValidationError(f"Vault refused {where}: {detail}")
    if status == 500 and any(p in detail for p in _KEY_PROBLEMS):
        return KeyValidationError(f"Vault refused {where}: {detail}")
    if status == 503:
        return UnavailableError(f"Vault at {url} is sealed or unavailable", retry_after=down)
    return UnavailableError(f"Vault failed on {where}: {detail}", retry_after=down)  # 412, 429, 5xx, others


def _root_cause(exc: BaseException) -> BaseException:
    seen = {id(exc)}
    while (inner := exc.__cause__ or exc.__context__) is not None and id(inner) not in seen:
        seen.add(id(inner))
        exc = inner
    return exc


def transport_error(url: str, request: VaultRequest, exc: Exception) -> UnavailableError:
    """The service error for a request that got no answer (refused, reset, TLS, timed out)."""
    down = RETRY_AFTER_UNAVAILABLE
    if isinstance(exc, httpcore.TimeoutException):
        return UnavailableError(f"Vault at {url} did not answer {request.path} in time", retry_after=down)
    reason = type(_root_cause(exc)).__name__
    return UnavailableError(f"Vault at {url} is unreachable ({reason})", retry_after=down)


class Exchange:
    """One `VaultRequest`, from its first attempt to its answer, without I/O.

    A driver asks `next_request` for what to send (None: done), and hands back the answer
    (`receive`) or the failure to get one (`fail`); both raise the service error when the exchange
    ends in one. `result` is Vault's JSON answer (None for an empty one, or an allowed 404 / 400).
    A redirect (a standby node naming the active one) is followed, at most `MAX_REDIRECTS` times.
    """

    MAX_REDIRECTS = 3

    def __init__(self, client: VaultClient, request: VaultRequest) -> None:
        self._client, self.request = client, request
        self._url = f"{client.url}/v1/{request.path}"
        self._attempts = self._redirects = 0
        self._done = False
        self.result: Any = None

    def next_request(self) -> httpcore.Request | None:
        if self._done:
            return None
        self._attempts += 1
        return self._client.build(self.request, self._url)

    def receive(self, response: httpcore.Response) -> None:
        status, body, request = response.status, response.content, self.request
        if status in (301, 302, 303, 307, 308) and self._redirects < self.MAX_REDIRECTS:
            location = _header(response, b"location")
            if location:
                self._redirects += 1
                self._url = urllib.parse.urljoin(self._url, location)
                return
        self._done = True
        if 200 <= status < 300:
            if status != 200 or not body:
                return
            try:
                self.result = orjson.loads(body)
            except orjson.JSONDecodeError:
                raise UnavailableError(
                    f"Vault answered {request.path} with something other than JSON", RETRY_AFTER_UNAVAILABLE
                ) from None
            return
        if (status == 404 and request.absent_ok) or (status == 400 and request.refused_ok):
            return
        detail = _detail(status, _header(response, b"content-type"), body)
        raise status_error(self._client.url, request, status, detail)

    def fail(self, exc: Exception) -> None:
        if self.request.replayable and self._attempts == 1 and isinstance(exc, _STALE):
            return  # a connection Vault closed while idle: once more, on a new one
        self._done = True
        raise transport_error(self._client.url, self.request, exc) from None


def _read(response: httpcore.Response) -> httpcore.Response:
    """The whole answer read, its connection back in the pool."""
    try:
        response.read()
    finally:
        response.close()
    return response


async def _aread(response: httpcore.Response) -> httpcore.Response:
    try:
        await response.aread()
    finally:
        await response.aclose()
    return response


def _header(response: httpcore.Response, name: bytes) -> str:
    for key, value in response.headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return ""


def tls_context(ca: str = "", client_cert: str = "", client_key: str = "") -> ssl.SSLContext:
    """How to verify Vault's certificate: a CA file or directory, or certifi's bundle; with a client
    certificate when one is given."""
    if ca and os.path.isdir(ca):
        context = ssl.create_default_context(capath=ca)
    else:
        context = ssl.create_default_context(cafile=ca or certifi.where())
    if client_cert:
        context.load_cert_chain(client_cert, client_key or None)
    return context


def _host(url: str) -> bytes:
    return urllib.parse.urlsplit(url).netloc.rpartition("@")[2].encode("idna")


def _proxy(url: str) -> httpcore.Proxy | None:
    """The proxy the environment names for `url` (HTTP_PROXY, HTTPS_PROXY, NO_PROXY), if any."""
    parts = urllib.parse.urlsplit(url)
    proxies = urllib.request.getproxies_environment()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass(parts.netloc):
        return None
    return httpcore.Proxy(proxy if "://" in proxy else f"http://{proxy}")


class VaultClient:
    """Vault's address, the token (an attribute: VaultAuth replaces it, requests in flight keep the
    old one) and the connection pools. `timeout` bounds each phase of a request (connecting,
    sending, waiting for the answer, waiting for a pooled connection). A proxy named by the
    environment (HTTP_PROXY, HTTPS_PROXY, NO_PROXY) when the client is made is used.
    """

    def __init__(
        self,
        url: str,
        token: str = "",
        *,
        timeout: float = 5.0,
        namespace: str = "",
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self.url = url.rstrip("/")
        self._base, self._host = f"{self.url}/", _host(self.url)
        self.token = token
        self.namespace = namespace
        self._timeout = {"connect": timeout, "read": timeout, "write": timeout, "pool": timeout}
        if verify is True:
            context = tls_context()
        elif verify is False:
            context = ssl.create_default_context()
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        else:
            context = verify
        self._options: dict[str, Any] = {"ssl_context": context, "proxy": _proxy(self.url), **POOL}
        self._sync = httpcore.ConnectionPool(**self._options)
        self._finalizer = weakref.finalize(self, self._sync.close)  # a client dropped unclosed
        self._loops: dict[asyncio.AbstractEventLoop, httpcore.AsyncConnectionPool] = {}
        self._keepers: dict[asyncio.AbstractEventLoop, AsyncIterator[None]] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_environment(cls, url: str, *, timeout: float, environ: Mapping[str, str]) -> VaultClient:
        """A client with the TLS settings Vault's own CLI reads: VAULT_CACERT (or VAULT_CAPATH) and
        VAULT_CLIENT_CERT / VAULT_CLIENT_KEY."""
        ca = environ.get("VAULT_CACERT") or environ.get("VAULT_CAPATH") or ""
        cert, key = environ.get("VAULT_CLIENT_CERT", ""), environ.get("VAULT_CLIENT_KEY", "")
        return cls(url, timeout=timeout, verify=tls_context(ca, cert, key) if ca or cert else True)

    def build(self, request: VaultRequest, url: str) -> httpcore.Request:
        """The HTTP request for `request`, with the current token."""
        # httpcore sends the headers it is given: Host and the body's length are ours to name.
        host = self._host if url.startswith(self._base) else _host(url)  # a redirect: another node
        headers = [(b"Host", host), (b"X-Vault-Request", b"true")]
        if self.token and not request.anonymous:
            headers.append((b"X-Vault-Token", self.token.encode()))
        if self.namespace:
            headers.append((b"X-Vault-Namespace", self.namespace.encode()))
        if request.body is not None:
            headers += [(b"Content-Type", b"application/json"), (b"Content-Length", b"%d" % len(request.body))]
        return httpcore.Request(
            request.method, url, headers=headers, content=request.body, extensions={"timeout": self._timeout}
        )

    # ----- the drivers ------------------------------------------------------------------------

    def call(self, request: VaultRequest) -> Any:
        """Send `request` and wait for the answer (blocking: worker threads, the CLI)."""
        exchange = Exchange(self, request)
        while (outgoing := exchange.next_request()) is not None:
            try:
                exchange.receive(_read(self._sync.handle_request(outgoing)))
            except _TRANSPORT as exc:
                exchange.fail(exc)
        return exchange.result

    async def acall(self, request: VaultRequest) -> Any:
        """`call` on the event loop, which it never blocks."""
        exchange, pool = Exchange(self, request), await self._pool()
        while (outgoing := exchange.next_request()) is not None:
            try:
                exchange.receive(await _aread(await pool.handle_async_request(outgoing)))
            except _TRANSPORT as exc:
                exchange.fail(exc)
        return exchange.result

    # ----- connection pools -------------------------------------------------------------------

    async def _pool(self) -> httpcore.AsyncConnectionPool:
        """This loop's pool. Its connections are the loop's: the pool is closed when the loop shuts
        down (an async generator the loop closes in ``shutdown_asyncgens``, as asyncio.run, anyio and
        uvicorn do), so no connection outlives its loop."""
        loop = asyncio.get_running_loop()
        pool = self._loops.get(loop)
        if pool is not None:
            return pool
        pool = httpcore.AsyncConnectionPool(**self._options)
        keeper = self._keep(loop, pool)
        with self._lock:
            self._loops[loop] = pool
            self._keepers[loop] = keeper  # the loop holds its async generators weakly
        await anext(keeper)
        return pool

    async def _keep(self, loop: asyncio.AbstractEventLoop, pool: httpcore.AsyncConnectionPool) -> AsyncIterator[None]:
        try:
            yield
        finally:
            with self._lock:
                self._loops.pop(loop, None)
                self._keepers.pop(loop, None)
            await pool.aclose()

    def close(self) -> None:
        """Close the blocking pool; each loop's pool closes with its loop."""
        self._finalizer()
