"""Talking to Vault / OpenBao over HTTP: one client, one error mapping, one exchange for both drivers.

Every Vault request of the service (Transit signing and key management, the KEK's wrapping, token
login and renewal) is a `VaultRequest` sent by a `VaultClient`, over connections kept alive between
requests: blocking with httpx (`VaultClient.call`, worker threads and the CLI), and on the event
loop with aiohttp, one session per loop (`VaultClient.acall`: the batched signing hot path, with no
thread hand-off, which cost as much client CPU as the rest of a token). aiohttp there because it is
the fastest maintained asyncio client here: ~260 us of client CPU per request against ~600 us for
httpcore and ~830 us for httpx's AsyncClient (a GET of sys/health on the 2-CPU test machine).

What to send, how to read the answer and when to send again is decided in one place without I/O,
`Exchange`, which knows no HTTP library; the two drivers only move its requests and answers.
Errors become service errors there, exactly once:

- Vault unreachable, timing out, sealed, rate limiting or failing → `UnavailableError` (503, Retry-After);
- permission denied or a bad token → `VaultPermissionError`, naming the path and capability the
  token's policy lacks (see ``deploy/vault-policy.hcl``);
- Vault refusing the key or version (missing key, trimmed version, wrong type) → `KeyValidationError`.

A replayable request (one that changes nothing in Vault: sign, hmac, verify, reads) that fails
because a kept-alive connection was closed under it is sent once more, on a new connection. A
redirect (a standby node naming the active one) is followed.

TLS: Vault's certificate is verified against certifi's bundle, or `[vault] ca_file`, or the CA in
VAULT_CACERT / VAULT_CAPATH (with VAULT_CLIENT_CERT / VAULT_CLIENT_KEY), as Vault's CLI reads them;
both drivers use the one `ssl.SSLContext`. A namespace (`[vault] namespace`, else VAULT_NAMESPACE)
is sent as X-Vault-Namespace on every request of both.
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

import aiohttp
import certifi
import httpx
import orjson

from .errors import ConfigError, JwksServiceError, KeyValidationError, UnavailableError

RETRY_AFTER_UNAVAILABLE = 5  # seconds: Vault down, sealed or slow
RETRY_AFTER_PERMISSION = 30  # seconds: a policy fix needs a human
# Transit answers 500 (not 400) for some refusals that are about the key, not about Vault's health.
_KEY_PROBLEMS = ("key version", "requested version", "no such key", "key not found")
_REDIRECTS = (307, 308)  # what Vault answers (a standby node); they keep the method and body
# Connections: the batcher keeps a few busy per key, worker threads (the naive path) more.
MAX_CONNECTIONS, MAX_IDLE, IDLE_SECONDS = 100, 32, 60.0


# Messages that start so name only what the operator configured (a mount path), never an address or
# Vault's own text: /readyz may show them to anyone.
PUBLIC_CAUSE = "vault: "
_UNMOUNTED = "no handler for route"  # what Vault says to a path under no mount


class VaultMountError(KeyValidationError):
    """The secrets engine a request needs is not mounted where the configuration says."""


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
    engine: tuple[str, str] = ("", "")  # (kind, mount) of the secrets engine, e.g. ("transit", "transit")

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
    if status == 404 and _UNMOUNTED in detail and request.engine[0]:
        kind, mount = request.engine
        return VaultMountError(
            f"{PUBLIC_CAUSE}{kind} engine not mounted at {mount}/ (enable it: bao secrets enable -path={mount} {kind})"
        )
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


def transport_error(url: str, request: VaultRequest, exc: Exception, *, timed_out: bool) -> UnavailableError:
    """The service error for a request that got no answer (refused, reset, TLS, timed out)."""
    down = RETRY_AFTER_UNAVAILABLE
    if timed_out:
        return UnavailableError(f"Vault at {url} did not answer {request.path} in time", retry_after=down)
    reason = type(_root_cause(exc)).__name__
    return UnavailableError(f"Vault at {url} is unreachable ({reason})", retry_after=down)


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One attempt at a request, as a driver sends it."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes | None


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

    def next_request(self) -> Outgoing | None:
        if self._done:
            return None
        self._attempts += 1
        return Outgoing(self.request.method, self._url, self._client.headers(self.request), self.request.body)

    def receive(self, status: int, body: bytes, content_type: str = "", location: str = "") -> None:
        request = self.request
        if status in _REDIRECTS and location and self._redirects < self.MAX_REDIRECTS:
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
        detail = _detail(status, content_type, body)
        absent = status == 404 and request.absent_ok and _UNMOUNTED not in detail  # no key, not no engine
        if absent or (status == 400 and request.refused_ok):
            return
        raise status_error(self._client.url, request, status, detail)

    def fail(self, exc: Exception, *, timed_out: bool = False, stale: bool = False) -> None:
        """No answer came. `stale`: the connection was one kept alive, closed under the request
        before any answer (then a replayable request is sent once more, on a new one)."""
        if stale and self.request.replayable and self._attempts == 1:
            return
        self._done = True
        raise transport_error(self._client.url, self.request, exc, timed_out=timed_out) from None


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


class VaultClient:
    """Vault's address, the token (an attribute: VaultAuth replaces it, requests in flight keep the
    old one) and the connections. `timeout` bounds each attempt (connecting, sending, the answer).
    Proxies named by the environment (HTTP_PROXY, HTTPS_PROXY, NO_PROXY) are used.
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
        self.token = token
        self.namespace = namespace
        self._timeout = timeout
        if verify is True:
            self._tls = tls_context()
        elif verify is False:
            self._tls = ssl.create_default_context()
            self._tls.check_hostname, self._tls.verify_mode = False, ssl.CERT_NONE
        else:
            self._tls = verify
        limits = httpx.Limits(
            max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_IDLE, keepalive_expiry=IDLE_SECONDS
        )
        self._proxy = _proxy(self.url)  # httpx finds it itself
        self._sync = httpx.Client(timeout=timeout, verify=self._tls, limits=limits, follow_redirects=False)
        self._finalizer = weakref.finalize(self, self._sync.close)  # a client dropped unclosed
        self._sessions: dict[asyncio.AbstractEventLoop, aiohttp.ClientSession] = {}
        self._keepers: dict[asyncio.AbstractEventLoop, AsyncIterator[None]] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_environment(
        cls, url: str, *, timeout: float, environ: Mapping[str, str], ca_file: str = "", namespace: str = ""
    ) -> VaultClient:
        """A client with `ca_file` and `namespace` (`[vault]` settings), else what Vault's own CLI
        reads: VAULT_CACERT (or VAULT_CAPATH), VAULT_CLIENT_CERT / VAULT_CLIENT_KEY, VAULT_NAMESPACE.
        ConfigError when the CA or client certificate cannot be loaded."""
        from_env = environ.get("VAULT_CACERT") or environ.get("VAULT_CAPATH") or ""
        ca = ca_file or from_env
        cert, key = environ.get("VAULT_CLIENT_CERT", ""), environ.get("VAULT_CLIENT_KEY", "")
        try:
            verify = tls_context(ca, cert, key) if ca or cert else True
        except (OSError, ssl.SSLError) as exc:
            name = "vault.ca_file" if ca_file else "VAULT_CACERT / VAULT_CLIENT_CERT"
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ConfigError(f"{name}: cannot load {ca or cert}: {reason}") from None
        namespace = namespace or environ.get("VAULT_NAMESPACE", "").strip().strip("/")
        return cls(url, timeout=timeout, verify=verify, namespace=namespace)

    def headers(self, request: VaultRequest) -> dict[str, str]:
        """Vault's headers for `request`, with the current token."""
        headers = {"X-Vault-Request": "true"}
        if self.token and not request.anonymous:
            headers["X-Vault-Token"] = self.token
        if self.namespace:
            headers["X-Vault-Namespace"] = self.namespace
        if request.body is not None:
            headers["Content-Type"] = "application/json"
        return headers

    # ----- the drivers ------------------------------------------------------------------------

    def call(self, request: VaultRequest) -> Any:
        """Send `request` and wait for the answer (blocking: worker threads, the CLI)."""
        exchange = Exchange(self, request)
        while (out := exchange.next_request()) is not None:
            try:
                answer = self._sync.request(out.method, out.url, headers=out.headers, content=out.body)
            except httpx.RequestError as exc:
                exchange.fail(exc, timed_out=isinstance(exc, httpx.TimeoutException), stale=_stale(exc))
            else:
                exchange.receive(answer.status_code, answer.content, *_meta(answer.headers))
        return exchange.result

    async def acall(self, request: VaultRequest) -> Any:
        """`call` on the event loop, which it never blocks."""
        exchange, session = Exchange(self, request), await self._session()
        while (out := exchange.next_request()) is not None:
            try:
                async with session.request(
                    out.method, out.url, headers=out.headers, data=out.body, proxy=self._proxy
                ) as answer:
                    body = await answer.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                exchange.fail(exc, timed_out=isinstance(exc, TimeoutError), stale=_stale(exc))
            else:
                exchange.receive(answer.status, body, *_meta(answer.headers))
        return exchange.result

    # ----- connections on the event loop ------------------------------------------------------

    async def _session(self) -> aiohttp.ClientSession:
        """This loop's session. Its connections are the loop's: the session is closed when the loop
        shuts down (an async generator the loop closes in ``shutdown_asyncgens``, as asyncio.run,
        anyio and uvicorn do), so no connection outlives its loop."""
        loop = asyncio.get_running_loop()
        session = self._sessions.get(loop)
        if session is not None:
            return session
        connector = aiohttp.TCPConnector(ssl=self._tls, limit=MAX_CONNECTIONS, keepalive_timeout=IDLE_SECONDS)
        session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self._timeout),
            trust_env=False,  # with it, aiohttp reads ~/.netrc in a worker thread at every request
            auto_decompress=False,
            skip_auto_headers=("Accept-Encoding",),
        )
        keeper = self._keep(loop, session)
        with self._lock:
            self._sessions[loop] = session
            self._keepers[loop] = keeper  # the loop holds its async generators weakly
        await anext(keeper)
        return session

    async def _keep(self, loop: asyncio.AbstractEventLoop, session: aiohttp.ClientSession) -> AsyncIterator[None]:
        try:
            yield
        finally:
            with self._lock:
                self._sessions.pop(loop, None)
                self._keepers.pop(loop, None)
            await session.close()

    def close(self) -> None:
        """Close the blocking connections; each loop's session closes with its loop."""
        self._finalizer()


def _proxy(url: str) -> str | None:
    """The proxy the environment names for `url` (HTTP_PROXY, HTTPS_PROXY, NO_PROXY), if any."""
    parts = urllib.parse.urlsplit(url)
    proxies = urllib.request.getproxies_environment()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass(parts.netloc):
        return None
    return proxy if "://" in proxy else f"http://{proxy}"


def _meta(headers: Mapping[str, str]) -> tuple[str, str]:
    """What the Exchange reads of an answer's headers (httpx's and aiohttp's ignore case)."""
    return headers.get("content-type") or "", headers.get("location") or ""


def _stale(exc: Exception) -> bool:
    """Whether a kept-alive connection was found closed: reset, or closed before any answer."""
    if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError):
        return True
    connecting = isinstance(exc, aiohttp.ClientConnectorError)
    return not connecting and isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError)
