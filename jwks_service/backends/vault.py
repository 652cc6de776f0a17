"""Vault / OpenBao Transit keys: created inside Vault, used there, never exported.

A keyset ``K`` is one Transit key ``f"{key_prefix}{K}"``; each of our key versions is one version of
that Transit key. Every signature pins ``key_version``, so a version made out of band (someone ran
``rotate``, or ``auto_rotate_period`` is set in Vault) never signs before the service has published
it; `latest_version` lets the service notice such a version and `adopt` turns it into a key record.

The record's ``sealed_private`` holds only a pointer, ``vault-transit:v1:<transit key>:<version>``:
not secret, and useless without a Vault token allowed to sign with that key.

Errors of hvac and requests become service errors here, exactly once:

- Vault unreachable, timing out, sealed, rate limiting or failing → `UnavailableError` (503, Retry-After);
- permission denied or a bad token → `VaultPermissionError`, naming the path and capability the
  token's policy lacks (see ``deploy/vault-policy.hcl``);
- Vault refusing the key or version (missing key, trimmed version, wrong type) → `KeyValidationError`.

The hvac client is built by the caller (address, token, a short timeout: hvac's default is 30 s) and
must use hvac's default JSON adapter. Everything but batched signing goes through that adapter (sign
and HMAC requests to the Transit endpoints directly: hvac's ``create_key`` knows no ``hmac`` keys
and its ``generate_hmac`` no ``batch_input``). Batched signing, the service's hot path, goes through
`TransitHTTP`: keep-alive ``http.client`` connections posting JSON built on a prepared prefix, with
the hvac client's address, token, namespace, timeout and TLS settings, Vault's error answers raised
as the very hvac exceptions hvac raises, so `vault_call` maps them alike. For a batch of 32 ES256
inputs, hvac with requests took 29 µs of client CPU per token, this path 10 µs.
ECDSA and RSA inputs are hashed here and sent ``prehashed``: 32-64 bytes per token instead of the
whole signing input, less for Vault to parse (Ed25519 cannot be prehashed).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import http.client
import json
import logging
import os
import secrets
import socket
import ssl
import threading
import urllib.parse
import weakref
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
import hvac
import hvac.exceptions
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from ..algorithms import ALGORITHMS, Algorithm, TransitKeySpec, transit_key_spec
from ..crypto import (
    KeyMismatchError,
    PublicKey,
    SignFn,
    VerifyFn,
    check_key,
    make_verifier,
    public_jwk_from_public_key,
    public_key_from_jwk,
)
from ..errors import ConfigError, JwksServiceError, KeyValidationError, UnavailableError
from ..model import KeyVersion, NewKey

log = logging.getLogger(__name__)

T = TypeVar("T")

REFERENCE_PREFIX = b"vault-transit:v1:"
RETRY_AFTER_UNAVAILABLE = 5  # seconds: Vault down, sealed or slow
RETRY_AFTER_PERMISSION = 30  # seconds: a policy fix needs a human
_HASHES = {"sha256": "sha2-256", "sha384": "sha2-384", "sha512": "sha2-512"}
# Transit answers 500 (not 400) for some refusals that are about the key, not about Vault's health.
_KEY_PROBLEMS = ("key version", "requested version", "no such key", "key not found")


class VaultPermissionError(UnavailableError):
    """Vault refused the token: the service cannot sign until its policy (or token) is fixed."""

    def __init__(self, description: str, retry_after: int = RETRY_AFTER_PERMISSION) -> None:
        super().__init__(description, retry_after)


@dataclass(frozen=True, slots=True)
class TransitRef:
    """What a Vault-backed key record points at: a Transit key and one of its versions."""

    key_name: str
    version: int

    def encode(self) -> bytes:
        return REFERENCE_PREFIX + f"{self.key_name}:{self.version}".encode()


def parse_reference(key: KeyVersion) -> TransitRef:
    """The Transit key and version a record points at; KeyValidationError when it has none."""
    blob = key.sealed_private
    if blob is None:
        raise KeyValidationError(f"key {key.kid} holds no Vault reference (retired or revoked)")
    if not blob.startswith(REFERENCE_PREFIX):
        raise KeyValidationError(f"key {key.kid}: not a Vault Transit reference")
    name, sep, version = blob[len(REFERENCE_PREFIX) :].decode("utf-8", "replace").rpartition(":")
    if not sep or not name or not version.isdigit() or int(version) < 1:
        raise KeyValidationError(f"key {key.kid}: malformed Vault Transit reference")
    return TransitRef(name, int(version))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _transit_error(exc: hvac.exceptions.VaultError) -> str:
    errors = getattr(exc, "errors", None)
    if errors:
        return "; ".join(" ".join(str(e).split()) for e in errors)
    return type(exc).__name__


def vault_error(
    client: hvac.Client, where: str, capability: str, exc: Exception, *, missing: str = ""
) -> JwksServiceError | None:
    """The service error for a failed Vault request on `where` (a path without /v1/); None for an
    exception that is not about Vault (a bug: let it through).

    The only place that maps hvac's, requests' and the sockets' exceptions (see the module's
    docstring); `missing` is added to the message when Vault has no such path.
    """
    down = RETRY_AFTER_UNAVAILABLE
    # requests' exceptions are OSErrors too: they come first.
    if isinstance(exc, requests.exceptions.Timeout | TimeoutError):
        return UnavailableError(f"Vault at {client.url} did not answer {where} in time", retry_after=down)
    if isinstance(exc, requests.exceptions.RequestException | OSError | http.client.HTTPException):
        return UnavailableError(f"Vault at {client.url} is unreachable ({type(exc).__name__})", retry_after=down)
    if isinstance(exc, hvac.exceptions.Forbidden):
        return VaultPermissionError(
            f"Vault permission denied on {where}: the token's policy must allow {capability!r} on that path "
            "(see deploy/vault-policy.hcl)"
        )
    if isinstance(exc, hvac.exceptions.Unauthorized):
        return VaultPermissionError(f"Vault refused the token on {where}: it is missing, invalid or expired")
    if isinstance(exc, hvac.exceptions.InvalidPath):
        return KeyValidationError(f"Vault has no {where}{missing}")
    if isinstance(exc, hvac.exceptions.InvalidRequest | hvac.exceptions.UnsupportedOperation):
        return KeyValidationError(f"Vault refused {where}: {_transit_error(exc)}")
    if isinstance(exc, hvac.exceptions.InternalServerError):
        detail = _transit_error(exc)
        if any(p in detail for p in _KEY_PROBLEMS):
            return KeyValidationError(f"Vault refused {where}: {detail}")
        return UnavailableError(f"Vault failed on {where}: {detail}", retry_after=down)
    if isinstance(exc, hvac.exceptions.VaultDown):
        return UnavailableError(f"Vault at {client.url} is sealed or unavailable", retry_after=down)
    if isinstance(exc, hvac.exceptions.VaultError):  # 412, 429, 501, 502 and anything unexpected
        return UnavailableError(f"Vault failed on {where}: {_transit_error(exc)}", retry_after=down)
    return None


def vault_call(client: hvac.Client, where: str, capability: str, call: Callable[[], T], *, missing: str = "") -> T:
    """Run one Vault request on `where`; turn its failure into a service error (see `vault_error`)."""
    try:
        return call()
    except Exception as exc:
        error = vault_error(client, where, capability, exc, missing=missing)
        if error is None:
            raise
        raise error from None


async def vault_acall(
    client: hvac.Client, where: str, capability: str, call: Callable[[], Awaitable[T]], *, missing: str = ""
) -> T:
    """`vault_call` for a request made on the event loop."""
    try:
        return await call()
    except Exception as exc:
        error = vault_error(client, where, capability, exc, missing=missing)
        if error is None:
            raise
        raise error from None


_MAX_RESPONSE = 16 << 20  # bytes: a Transit answer is a few KiB per hundred signatures


def _close_all(connections: list[Any]) -> None:
    while connections:
        connections.pop().close()


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def _ready(loop: asyncio.AbstractEventLoop, sock: socket.socket, write: bool) -> None:
    """Wait until `sock` can be written (or read)."""
    future: asyncio.Future[None] = loop.create_future()
    fd = sock.fileno()
    if write:
        loop.add_writer(fd, _wake, future)
    else:
        loop.add_reader(fd, _wake, future)
    try:
        await future
    finally:
        if write:
            loop.remove_writer(fd)
        else:
            loop.remove_reader(fd)


async def _send(loop: asyncio.AbstractEventLoop, sock: socket.socket, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[sock.send(view) :]
        except (BlockingIOError, ssl.SSLWantWriteError):
            await _ready(loop, sock, write=True)
        except ssl.SSLWantReadError:
            await _ready(loop, sock, write=False)


async def _recv(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> bytes:
    while True:
        try:
            return sock.recv(65536)
        except (BlockingIOError, ssl.SSLWantReadError):
            await _ready(loop, sock, write=False)
        except ssl.SSLWantWriteError:
            await _ready(loop, sock, write=True)


class _Reader:
    """An HTTP/1.1 response read from a non-blocking socket: the status line, headers and body."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
        self._loop, self._sock = loop, sock
        self._buf = bytearray()
        self.received = False  # any byte of the answer yet

    async def _more(self) -> None:
        chunk = await _recv(self._loop, self._sock)
        if not chunk:
            raise http.client.RemoteDisconnected("Vault closed the connection")
        self.received = True
        self._buf += chunk
        if len(self._buf) > _MAX_RESPONSE:
            raise http.client.HTTPException("Vault's answer is too long")

    async def _until(self, marker: bytes) -> bytes:
        while (end := self._buf.find(marker)) < 0:
            await self._more()
        out = bytes(self._buf[:end])
        del self._buf[: end + len(marker)]
        return out

    async def _exactly(self, n: int) -> bytes:
        while len(self._buf) < n:
            await self._more()
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    async def response(self) -> tuple[int, str, bytes, bool]:
        """(status, content type, body, whether the connection can be used again)."""
        while True:
            head = (await self._until(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            version, _, rest = head[0].partition(" ")
            code = rest[:3]
            if not version.startswith("HTTP/1.") or not code.isdigit():
                raise http.client.BadStatusLine(head[0])
            if not 100 <= int(code) < 200:
                break
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
        if "chunked" in headers.get("transfer-encoding", "").lower():
            parts = []
            while size := int((await self._until(b"\r\n")).partition(b";")[0], 16):
                parts.append(await self._exactly(size))
                await self._exactly(2)
            while await self._until(b"\r\n"):  # trailers, up to an empty line
                pass
            body = b"".join(parts)
        elif (length := headers.get("content-length")) is not None:
            body = await self._exactly(int(length))
        else:  # to the end of the connection
            with contextlib.suppress(http.client.RemoteDisconnected):
                while True:
                    await self._more()
            body, keep = bytes(self._buf), False
        return int(code), headers.get("content-type", ""), body, keep and not self._buf


class TransitHTTP:
    """POST prepared JSON to Vault over pooled keep-alive connections: the signing hot path.

    Address, token (read at every request: VaultAuth renews and replaces it), namespace, timeout and
    TLS settings are the hvac client's; proxies and CA bundles from the environment are resolved as
    requests resolves them. `usable` is False when the client cannot be served this way (another
    adapter, a proxy): the caller then posts through hvac.

    `apost` runs on the event loop with non-blocking sockets (no thread hand-off: with a worker
    thread per call, the GIL hand-over cost as much client CPU as the rest of a token); `post`
    blocks (http.client). The whole request, connecting included, is bounded by the hvac client's
    timeout. A request that fails on a reused connection (Vault closed it while idle) is sent once
    more on a new one; callers only send requests that change nothing in Vault (sign, hmac). Errors
    are raised as hvac's exceptions (from the status), TimeoutError, OSError or
    http.client.HTTPException, for `vault_error`.
    """

    MAX_IDLE = 8  # connections kept open between requests, per kind

    def __init__(self, client: hvac.Client) -> None:
        self._client = client
        self._idle: list[http.client.HTTPConnection] = []
        self._idle_sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._finalizer = weakref.finalize(self, TransitHTTP._close_pools, self._idle, self._idle_sockets)
        self.usable = False
        adapter = client.adapter
        url = urllib.parse.urlsplit(str(getattr(adapter, "base_uri", "")))
        options = getattr(adapter, "_kwargs", None)
        if not isinstance(adapter, hvac.adapters.JSONAdapter) or not isinstance(options, dict):
            return
        if url.scheme not in ("http", "https") or not url.hostname or options.get("proxies"):
            return
        session = getattr(adapter, "session", None)
        env: dict[str, Any] = {}
        if isinstance(session, requests.Session):
            if session.proxies or (session.trust_env and requests.utils.get_environ_proxies(url.geturl())):
                return
            verify, cert = options.get("verify"), options.get("cert")
            env = session.merge_environment_settings(url.geturl(), {}, False, verify, cert)
        timeout = options.get("timeout")
        if isinstance(timeout, tuple):  # requests' (connect, read)
            timeout = sum(t for t in timeout if t is not None) if any(t is not None for t in timeout) else None
        self._timeout: float | None = float(timeout) if isinstance(timeout, int | float) else None
        self._host = url.hostname
        self._port = url.port or (443 if url.scheme == "https" else 80)
        self._host_header = url.netloc.rpartition("@")[2]
        self._base = url.path.rstrip("/")
        self._context: ssl.SSLContext | None = None
        if url.scheme == "https":
            verify, cert = env.get("verify", options.get("verify", True)), env.get("cert", options.get("cert"))
            self._context = self._tls(verify, cert)
        self.usable = True

    @staticmethod
    def _tls(verify: Any, cert: Any) -> ssl.SSLContext:
        """An SSL context as requests would verify: certifi's bundle, a CA file or directory, or none."""
        if verify is False:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        elif isinstance(verify, str) and verify:
            if os.path.isdir(verify):
                context = ssl.create_default_context(capath=verify)
            else:
                context = ssl.create_default_context(cafile=verify)
        else:
            context = ssl.create_default_context(cafile=requests.utils.DEFAULT_CA_BUNDLE_PATH)
        if isinstance(cert, str) and cert:
            context.load_cert_chain(cert)
        elif isinstance(cert, tuple) and cert and cert[0]:
            context.load_cert_chain(cert[0], cert[1] if len(cert) > 1 else None)
        return context

    @staticmethod
    def _close_pools(idle: list[http.client.HTTPConnection], sockets: list[socket.socket]) -> None:
        _close_all(idle)
        _close_all(sockets)

    def close(self) -> None:
        with self._lock:
            self._close_pools(self._idle, self._idle_sockets)

    def _headers(self) -> dict[str, str]:
        adapter = self._client.adapter
        headers = {"Content-Type": "application/json"}
        if adapter.token:
            headers["X-Vault-Token"] = adapter.token
        if adapter.namespace:
            headers["X-Vault-Namespace"] = adapter.namespace
        if adapter.request_header:
            headers["X-Vault-Request"] = "true"
        return headers

    def _answer(self, status: int, content_type: str, raw: bytes, target: str) -> Any:
        """Vault's JSON answer; for an error status, the exception hvac raises for it."""
        if status == 200:
            return json.loads(raw)
        if status < 400:
            return None
        text = raw.decode("utf-8", "replace")
        parsed: Any = None
        errors = None
        if content_type == "application/json":
            try:
                parsed = json.loads(raw)
            except ValueError:
                pass
            else:
                errors = parsed.get("errors") if isinstance(parsed, dict) else None
        raise hvac.exceptions.VaultError.from_status(
            status,
            text if errors is None else None,
            errors=errors,
            method="post",
            url=f"{self._client.adapter.base_uri}{target[len(self._base) :]}",
            text=text,
            json=parsed,
        )

    # ----- blocking ---------------------------------------------------------------------------

    def _connection(self) -> tuple[http.client.HTTPConnection, bool]:
        with self._lock:
            if self._idle:
                return self._idle.pop(), True
        if self._context is not None:
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                self._host, self._port, timeout=self._timeout, context=self._context
            )
        else:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
        return conn, False

    def post(self, path: str, body: bytes) -> Any:
        """POST `body` (JSON) to /v1/`path`; Vault's JSON answer, or hvac's exception for its status."""
        headers = self._headers()
        target = f"{self._base}/v1/{path}"
        for attempt in (1, 2):
            conn, reused = self._connection()
            try:
                conn.request("POST", target, body, headers)
                resp = conn.getresponse()
                raw = resp.read()
            except TimeoutError:
                conn.close()
                raise
            except (OSError, http.client.HTTPException):
                conn.close()
                if reused and attempt == 1:
                    continue
                raise
            if resp.will_close:
                conn.close()
            else:
                with self._lock:
                    keep = len(self._idle) < self.MAX_IDLE
                    if keep:
                        self._idle.append(conn)
                if not keep:
                    conn.close()
            break
        return self._answer(resp.status, resp.getheader("Content-Type") or "", raw, target)

    # ----- on the event loop ------------------------------------------------------------------

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> socket.socket:
        infos = await loop.getaddrinfo(self._host, self._port, type=socket.SOCK_STREAM)
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await loop.sock_connect(sock, address)
            if self._context is None:
                return sock
            tls = self._context.wrap_socket(sock, server_hostname=self._host, do_handshake_on_connect=False)
        except BaseException:
            sock.close()
            raise
        try:
            while True:
                try:
                    tls.do_handshake()
                    return tls
                except ssl.SSLWantReadError:
                    await _ready(loop, tls, write=False)
                except ssl.SSLWantWriteError:
                    await _ready(loop, tls, write=True)
        except BaseException:
            tls.close()
            raise

    async def apost(self, path: str, body: bytes) -> Any:
        """`post` on the event loop: it never blocks; the hvac client's timeout bounds the request."""
        target = f"{self._base}/v1/{path}"
        lines = [f"POST {target} HTTP/1.1", f"Host: {self._host_header}", f"Content-Length: {len(body)}"]
        for name, value in self._headers().items():
            if any(c in value for c in "\r\n\0"):
                raise http.client.HTTPException(f"invalid characters in the {name} header")
            lines.append(f"{name}: {value}")
        request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self._timeout):
            for attempt in (1, 2):
                with self._lock:
                    sock = self._idle_sockets.pop() if self._idle_sockets else None
                reused = sock is not None
                reader = None
                try:
                    if sock is None:
                        sock = await self._connect(loop)
                    await _send(loop, sock, request)
                    reader = _Reader(loop, sock)
                    status, content_type, raw, keep = await reader.response()
                except (OSError, http.client.HTTPException) as exc:
                    if sock is not None:
                        sock.close()
                    if (
                        reused
                        and attempt == 1
                        and not isinstance(exc, TimeoutError)
                        and not (reader and reader.received)
                    ):
                        continue
                    raise
                except BaseException:  # cancelled, timed out: the connection is in an unknown state
                    if sock is not None:
                        sock.close()
                    raise
                with self._lock:
                    keep = keep and len(self._idle_sockets) < self.MAX_IDLE
                    if keep:
                        self._idle_sockets.append(sock)
                if not keep:
                    sock.close()
                break
        return self._answer(status, content_type, raw, target)


@dataclass(frozen=True, slots=True)
class _Operation:
    """One pinned Transit signing operation: the endpoint, the request prepared as JSON, the decoding."""

    path: str  # e.g. sign/jwks-default (under the mount)
    fields: dict[str, Any]  # the request's fixed fields, for hvac
    batch: bytes  # the JSON request up to its batch_input's items: {...,"batch_input":[
    digest: Callable[[bytes], bytes] | None  # prehashed: the input is this hash of the data
    result: str  # "signature" (sign) or "hmac"
    prefix: str  # vault:v<version>:
    urlsafe: bool  # ECDSA with marshaling_algorithm=jws: base64url without padding

    def encode(self, data: bytes) -> bytes:
        return base64.b64encode(self.digest(data) if self.digest is not None else data)

    def batch_body(self, inputs: Sequence[bytes]) -> bytes:
        items = b'"},{"input":"'.join(map(self.encode, inputs))  # base64 needs no JSON escaping
        return b"".join((self.batch, b'{"input":"', items, b'"}]}'))

    def decode(self, value: Any) -> bytes:
        if not isinstance(value, str) or not value.startswith(self.prefix):
            raise KeyValidationError(f"{self.path}: Transit answered with another key version than {self.prefix!r}")
        body = value[len(self.prefix) :]
        try:
            if self.urlsafe:
                return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            return base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise KeyValidationError(f"{self.path}: Transit returned a malformed signature") from None


def _digest(name: str) -> Callable[[bytes], bytes]:
    new = getattr(hashlib, name)

    def digest(data: bytes) -> bytes:
        return new(data).digest()  # type: ignore[no-any-return]

    return digest


class VaultBackend:
    """A `KeyBackend` whose keys live in a Vault or OpenBao Transit secrets engine."""

    name = "vault"

    def __init__(self, client: hvac.Client, mount: str = "transit", key_prefix: str = "jwks-") -> None:
        self._client = client
        self._mount = mount.strip("/")
        self._prefix = key_prefix
        self._public: dict[tuple[str, int], PublicKey] = {}
        self._public_lock = threading.Lock()
        self._http = TransitHTTP(client)
        self._operations: dict[tuple[str, str, bytes | None], _Operation] = {}

    # ----- names and Vault calls --------------------------------------------------------------

    def key_name(self, keyset: str) -> str:
        return f"{self._prefix}{keyset}"

    def _vault(self, path: str, capability: str, call: Callable[[], T]) -> T:
        """Run one Vault request; turn its failure into a service error (see `vault_call`)."""
        hint = f" (is the key missing, or the transit engine not mounted at {self._mount}?)"
        return vault_call(self._client, f"{self._mount}/{path}", capability, call, missing=hint)

    def _post(self, path: str, body: dict[str, Any] | None, capability: str = "update") -> dict[str, Any]:
        url = f"/v1/{self._mount}/{path}"
        resp = self._vault(path, capability, lambda: self._client.adapter.post(url, json=body))
        return resp if isinstance(resp, dict) else {}

    def _read_key(self, name: str) -> dict[str, Any] | None:
        """The Transit key's description, or None when it does not exist."""
        url = f"/v1/{self._mount}/keys/{name}"

        def read() -> Any:
            try:
                return self._client.adapter.get(url)
            except hvac.exceptions.InvalidPath:
                return None

        resp = self._vault(f"keys/{name}", "read", read)
        if resp is None:
            return None
        info: dict[str, Any] = resp["data"]
        self._remember_public(name, info)
        return info

    def _key_info(self, name: str) -> dict[str, Any]:
        info = self._read_key(name)
        if info is None:
            raise KeyValidationError(f"Vault has no Transit key {self._mount}/keys/{name}")
        return info

    # ----- public keys ------------------------------------------------------------------------

    def _remember_public(self, name: str, info: dict[str, Any]) -> None:
        key_type = info.get("type")
        for version, entry in (info.get("keys") or {}).items():
            if not isinstance(entry, dict) or (name, int(version)) in self._public:
                continue
            text = entry.get("public_key")
            if not text:
                continue
            try:
                public = self._parse_public(str(key_type), str(text))
            except (ValueError, binascii.Error):
                log.error("Transit key %s v%s: cannot parse its public key", name, version)
                continue
            with self._public_lock:
                self._public.setdefault((name, int(version)), public)

    @staticmethod
    def _parse_public(key_type: str, text: str) -> PublicKey:
        if key_type == "ed25519":
            return ed25519.Ed25519PublicKey.from_public_bytes(base64.b64decode(text, validate=True))
        loaded = serialization.load_pem_public_key(text.encode())
        if not isinstance(loaded, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
            raise ValueError(f"unexpected public key {type(loaded).__name__}")
        return loaded

    def public_key(self, key_name: str, version: int) -> PublicKey:
        """The public key of a Transit key version, read from Vault once per version and cached."""
        cached = self._public.get((key_name, version))
        if cached is not None:
            return cached
        self._key_info(key_name)  # caches every version it lists
        cached = self._public.get((key_name, version))
        if cached is None:
            raise KeyValidationError(
                f"Vault has no public key for {self._mount}/keys/{key_name} version {version} "
                "(not a signing key, trimmed, or below min_decryption_version)"
            )
        return cached

    # ----- KeyBackend -------------------------------------------------------------------------

    def _check_key(self, name: str, alg: Algorithm, spec: TransitKeySpec, info: dict[str, Any]) -> None:
        """Refuse a Transit key we did not make the way we would have (an out-of-band or reused name)."""
        where = f"{self._mount}/keys/{name}"
        if info.get("type") != spec.key_type:
            raise KeyValidationError(f"Transit key {where} is {info.get('type')}, but {alg.name} needs {spec.key_type}")
        if spec.key_size is not None and info.get("key_size") != spec.key_size:
            raise KeyValidationError(
                f"Transit key {where} holds {info.get('key_size')}-byte secrets, not the configured {spec.key_size}"
            )
        if info.get("exportable") or info.get("allow_plaintext_backup"):
            raise KeyValidationError(
                f"Transit key {where} is exportable or allows plaintext backups: its private key could leave Vault"
            )
        if info.get("derived"):
            raise KeyValidationError(f"Transit key {where} uses key derivation, which JWS signing cannot")

    def generate(self, keyset: str, alg: Algorithm, key_bits: int) -> NewKey:
        """Create the Transit key (version 1) or rotate it; the new version becomes the new key."""
        spec = transit_key_spec(alg, key_bits)
        name = self.key_name(keyset)
        info = self._read_key(name)
        if info is None:
            body: dict[str, Any] = {"type": spec.key_type, "exportable": False, "allow_plaintext_backup": False}
            if spec.key_size is not None:
                body["key_size"] = spec.key_size
            created = self._post(f"keys/{name}", body, "create").get("data")
            info = created if isinstance(created, dict) and "latest_version" in created else self._key_info(name)
            self._remember_public(name, info)
            self._check_key(name, alg, spec, info)  # creating over an existing key is a silent no-op
        else:
            self._check_key(name, alg, spec, info)
            rotated = self._post(f"keys/{name}/rotate", None).get("data")
            info = rotated if isinstance(rotated, dict) and "latest_version" in rotated else self._key_info(name)
            self._remember_public(name, info)
        return self._new_key(name, alg, int(info["latest_version"]))

    def adopt(self, keyset: str, alg: Algorithm, key_bits: int, version: int) -> NewKey:
        """A key record for a Transit version made outside the service (rotate, auto_rotate_period)."""
        spec = transit_key_spec(alg, key_bits)
        name = self.key_name(keyset)
        info = self._key_info(name)
        self._check_key(name, alg, spec, info)
        low, high = int(info.get("min_decryption_version") or 1), int(info["latest_version"])
        if not low <= version <= high:
            raise KeyValidationError(f"Transit key {name} has no usable version {version} (usable: {low}..{high})")
        return self._new_key(name, alg, version)

    def _new_key(self, name: str, alg: Algorithm, version: int) -> NewKey:
        ref = TransitRef(name, version).encode()
        if alg.symmetric:
            # HMAC kids are random, never derived from the secret (which Vault keeps anyway).
            return NewKey(secrets.token_urlsafe(16), None, ref)
        public = self.public_key(name, version)
        try:
            check_key(alg, public)
        except KeyMismatchError as exc:
            raise KeyValidationError(f"Transit key {name} v{version}: {exc}") from None
        jwk, kid = public_jwk_from_public_key(public)
        jwk.update({"kid": kid, "alg": alg.name, "use": "sig"})
        return NewKey(kid, jwk, ref)

    def _operation(self, key: KeyVersion) -> _Operation:
        cache_key = (key.kid, key.alg, key.sealed_private)
        op = self._operations.get(cache_key)
        if op is None:
            op = self._make_operation(key)
            if len(self._operations) > 1024:  # records of retired keys linger otherwise
                self._operations.clear()
            self._operations[cache_key] = op
        return op

    @staticmethod
    def _make_operation(key: KeyVersion) -> _Operation:
        ref = parse_reference(key)
        alg = ALGORITHMS.get(key.alg)
        if alg is None:
            raise KeyValidationError(f"key {key.kid}: unsupported algorithm {key.alg!r}")
        prefix = f"vault:v{ref.version}:"
        fields: dict[str, Any] = {"key_version": ref.version}
        digest = None
        if alg.symmetric:
            path, result = f"hmac/{ref.key_name}", "hmac"
            fields["algorithm"] = _HASHES[alg.hash_name]
        else:
            path, result = f"sign/{ref.key_name}", "signature"
            if alg.family in ("RSA", "RSA-PSS", "EC"):
                # Hashed here: Transit signs the digest as it would have signed its own (hash_algorithm).
                digest = _digest(alg.hash_name)
                fields.update(hash_algorithm=_HASHES[alg.hash_name], prehashed=True)
            if alg.family == "RSA":
                fields.update(signature_algorithm="pkcs1v15")
            elif alg.family == "RSA-PSS":
                # RFC 7518 §3.5: the salt is as long as the hash ("auto", Vault's default, makes it as long
                # as possible).
                fields.update(signature_algorithm="pss", salt_length="hash")
            elif alg.family == "EC":
                # jws marshaling: r || s in base64url (RFC 7518 §3.4), not ASN.1 DER.
                fields.update(marshaling_algorithm="jws")
        head = json.dumps(fields, separators=(",", ":")).encode()[:-1]
        return _Operation(
            path,
            fields,
            head + b',"batch_input":[',
            digest,
            result,
            prefix,
            urlsafe=alg.family == "EC",
        )

    def signer(self, key: KeyVersion) -> SignFn:
        """Sign with the record's Transit version (pinned): one Vault request (through hvac) per call."""
        op = self._operation(key)

        def sign(data: bytes) -> bytes:
            resp = self._post(op.path, {**op.fields, "input": op.encode(data).decode("ascii")})
            return op.decode((resp.get("data") or {}).get(op.result))

        return sign

    def sign_batch(self, key: KeyVersion, inputs: Sequence[bytes]) -> list[bytes]:
        """Sign many inputs in ONE Transit request (``batch_input``), pinned to the record's version.

        Signatures come back in input order; any item Vault refused fails the whole batch.
        """
        if not inputs:
            return []
        op = self._operation(key)
        if self._http.usable:
            body = op.batch_body(inputs)
            resp = self._vault(op.path, "update", lambda: self._http.post(f"{self._mount}/{op.path}", body))
        else:
            resp = self._post(op.path, {**op.fields, "batch_input": [{"input": op.encode(d).decode()} for d in inputs]})
        return self._batch_results(op, resp, len(inputs))

    async def sign_batch_async(self, key: KeyVersion, inputs: Sequence[bytes]) -> list[bytes]:
        """`sign_batch` on the event loop, which it never blocks: non-blocking sockets, or (for a client
        TransitHTTP cannot serve) `sign_batch` in a worker thread. The MicroBatcher prefers it."""
        if not self._http.usable:
            return await anyio.to_thread.run_sync(self.sign_batch, key, inputs)
        if not inputs:
            return []
        op = self._operation(key)
        body = op.batch_body(inputs)
        hint = f" (is the key missing, or the transit engine not mounted at {self._mount}?)"
        where = f"{self._mount}/{op.path}"
        resp = await vault_acall(self._client, where, "update", lambda: self._http.apost(where, body), missing=hint)
        return self._batch_results(op, resp, len(inputs))

    def _batch_results(self, op: _Operation, resp: Any, count: int) -> list[bytes]:
        results = ((resp.get("data") if isinstance(resp, dict) else None) or {}).get("batch_results")
        if not isinstance(results, list) or len(results) != count:
            raise KeyValidationError(f"{self._mount}/{op.path}: Transit answered a batch of {count} oddly")
        out: list[bytes] = []
        name, decode = op.result, op.decode
        for i, item in enumerate(results):
            if not isinstance(item, dict) or item.get("error"):
                error = item.get("error") if isinstance(item, dict) else item
                raise KeyValidationError(f"{self._mount}/{op.path}: batch item {i} refused: {error}")
            out.append(decode(item.get(name)))
        return out

    def verifies_remotely(self, key: KeyVersion) -> bool:
        """Whether `verifier(key)` calls Transit (HMAC keys): then it must run off the event loop."""
        alg = ALGORITHMS.get(key.alg)
        return alg is not None and alg.symmetric

    def verifier(self, key: KeyVersion) -> VerifyFn:
        """Asymmetric keys verify locally with the published JWK; HMAC keys ask Transit (the secret stays there):
        a blocking call, bounded by the hvac client's timeout, that the service makes last, after every
        cheap check of the token, and never on the event loop (`verifies_remotely`)."""
        alg = ALGORITHMS.get(key.alg)
        if alg is None:
            raise KeyValidationError(f"key {key.kid}: unsupported algorithm {key.alg!r}")
        if not alg.symmetric:
            if key.public_jwk is None:
                raise KeyValidationError(f"key {key.kid} has no public key")
            try:
                return make_verifier(alg, public_key_from_jwk(key.alg, key.public_jwk))
            except KeyMismatchError as exc:
                raise KeyValidationError(f"key {key.kid}: {exc}") from None
        ref = parse_reference(key)
        path = f"verify/{ref.key_name}"
        url = f"/v1/{self._mount}/{path}"
        prefix, size, algorithm = f"vault:v{ref.version}:", alg.hash_bytes, _HASHES[alg.hash_name]

        def verify_hmac(data: bytes, sig: bytes) -> bool:
            if len(sig) != size:
                return False
            body = {"input": _b64(data), "algorithm": algorithm, "hmac": prefix + _b64(sig)}

            def call() -> Any:
                try:
                    return self._client.adapter.post(url, json=body)
                except hvac.exceptions.InvalidRequest:  # version retired (min_decryption_version) or trimmed
                    return None

            resp = self._vault(path, "update", call)
            return isinstance(resp, dict) and (resp.get("data") or {}).get("valid") is True

        return verify_hmac

    # ----- lifecycle helpers ------------------------------------------------------------------

    def version_of(self, key: KeyVersion) -> int | None:
        """The Transit version a record points at; None once its reference is gone (retired)."""
        try:
            return parse_reference(key).version
        except KeyValidationError:
            return None

    def latest_version(self, keyset: str) -> int:
        """The newest version of the keyset's Transit key (0 when it does not exist), to spot
        versions made out of band."""
        info = self._read_key(self.key_name(keyset))
        return 0 if info is None else int(info["latest_version"])

    def retire(self, key: KeyVersion, live: Iterable[KeyVersion]) -> int:
        """Make retired versions unusable in Vault and destroy them where Transit allows.

        `key` is the record being retired or revoked, as it was before (with its reference); `live`
        are the keyset's records still in next/current/previous. Transit can only cut a key ring
        from below: min_decryption_version and min_encryption_version rise to the oldest live version
        (no older version can then sign, verify or be read) and the key is trimmed to it (older
        versions deleted for good). A retired version newer than a live one stays in Vault until
        every older version is retired too; the service no longer signs with it (its record has no
        reference) nor publishes it. Returns the key ring's min_available_version afterwards.
        """
        try:
            retired: TransitRef | None = parse_reference(key)
        except KeyValidationError:
            retired = None
        live_refs: list[TransitRef] = []
        for k in live:
            try:
                live_refs.append(parse_reference(k))
            except KeyValidationError:
                continue
        name = retired.key_name if retired else (live_refs[0].key_name if live_refs else self.key_name(key.keyset))
        live_versions = [r.version for r in live_refs if r.key_name == name]
        info = self._read_key(name)
        if info is None:
            return 0
        latest = int(info["latest_version"])
        if live_versions:
            floor = min(live_versions)
        elif retired is not None:
            floor = retired.version + 1
        else:
            return int(info.get("min_available_version") or 0)
        floor = min(floor, latest)  # Transit never lets the minimums pass the latest version
        if retired is not None and retired.version >= floor:
            log.warning(
                "Transit key %s v%d stays in Vault until the older live version v%d is retired",
                name,
                retired.version,
                floor,
            )
        min_dec = int(info.get("min_decryption_version") or 0)
        min_enc = int(info.get("min_encryption_version") or 0)
        min_avail = int(info.get("min_available_version") or 0)
        new_dec = max(min_dec, floor)
        new_enc = max(min_enc, new_dec)  # never 0 ("any version") once we manage the ring
        if (new_dec, new_enc) != (min_dec, min_enc):
            self._post(f"keys/{name}/config", {"min_decryption_version": new_dec, "min_encryption_version": new_enc})
            with self._public_lock:
                for cached in [k for k in self._public if k[0] == name and k[1] < new_dec]:
                    del self._public[cached]
        if new_dec > min_avail:
            self._post(f"keys/{name}/trim", {"min_available_version": new_dec})
            min_avail = new_dec
        return min_avail


class TransitWrapper:
    """Envelope encryption with a Transit encryption key: wraps and unwraps a data key (the KEK).

    The wrapping key is made inside Vault (``aes256-gcm96``, never exportable) and never leaves it;
    what the service keeps on disk is only Transit's ciphertext (``vault:v<n>:...``). Errors become
    `ConfigError` (permission, missing or unsuitable key, undecryptable ciphertext: a human must act)
    or `UnavailableError` (Vault unreachable, sealed, failing: try again).
    """

    KEY_TYPE = "aes256-gcm96"

    def __init__(self, client: hvac.Client, mount: str, key_name: str) -> None:
        self._client = client
        self._mount = mount.strip("/")
        self.key_name = key_name
        self.description = f"Vault Transit key {self._mount}/keys/{key_name}"

    def _call(self, path: str, capability: str, call: Callable[[], T]) -> T:
        hint = f" (is the transit engine mounted at {self._mount}?)"
        try:
            return vault_call(self._client, f"{self._mount}/{path}", capability, call, missing=hint)
        except (VaultPermissionError, KeyValidationError) as exc:
            raise ConfigError(exc.description) from None

    def ensure_key(self) -> None:
        """Create the wrapping key when it does not exist; refuse one that cannot wrap."""
        url = f"/v1/{self._mount}/keys/{self.key_name}"

        def read() -> Any:
            try:
                return self._client.adapter.get(url)
            except hvac.exceptions.InvalidPath:
                return None

        try:
            resp = self._call(f"keys/{self.key_name}", "read", read)
        except ConfigError as exc:  # no 'read' on the key: an operator made it; encrypt will tell
            log.info("cannot read %s, assuming it exists: %s", self.description, exc.description)
            return
        if resp is None:
            body = {"type": self.KEY_TYPE, "exportable": False, "allow_plaintext_backup": False}
            self._call(f"keys/{self.key_name}", "create", lambda: self._client.adapter.post(url, json=body))
            log.info("created %s (%s, not exportable) to wrap the KEK", self.description, self.KEY_TYPE)
            return
        info = resp.get("data") or {}
        if not info.get("supports_encryption", True) or info.get("derived"):
            raise ConfigError(
                f"{self.description} is a {info.get('type')}{' derived' if info.get('derived') else ''} key, which "
                f"cannot wrap the KEK; name a {self.KEY_TYPE} key"
            )
        if info.get("exportable") or info.get("allow_plaintext_backup"):
            log.warning("%s is exportable or allows plaintext backups: the KEK is only as safe as it", self.description)

    def wrap(self, data: bytes) -> str:
        url = f"/v1/{self._mount}/encrypt/{self.key_name}"
        body = {"plaintext": _b64(data)}
        resp = self._call(f"encrypt/{self.key_name}", "update", lambda: self._client.adapter.post(url, json=body))
        ciphertext = ((resp or {}).get("data") or {}).get("ciphertext")
        if not isinstance(ciphertext, str) or not ciphertext.startswith("vault:v"):
            raise ConfigError(f"{self._mount}/encrypt/{self.key_name}: Vault answered without a ciphertext")
        return ciphertext

    def rewrap(self, ciphertext: str) -> str:
        """The same plaintext under the key's latest version (Transit never shows it to us)."""
        url = f"/v1/{self._mount}/rewrap/{self.key_name}"
        body = {"ciphertext": ciphertext}
        resp = self._call(f"rewrap/{self.key_name}", "update", lambda: self._client.adapter.post(url, json=body))
        rewrapped = ((resp or {}).get("data") or {}).get("ciphertext")
        if not isinstance(rewrapped, str) or not rewrapped.startswith("vault:v"):
            raise ConfigError(f"{self._mount}/rewrap/{self.key_name}: Vault answered without a ciphertext")
        return rewrapped

    def unwrap(self, ciphertext: str) -> bytes:
        url = f"/v1/{self._mount}/decrypt/{self.key_name}"
        body = {"ciphertext": ciphertext}
        resp = self._call(f"decrypt/{self.key_name}", "update", lambda: self._client.adapter.post(url, json=body))
        plaintext = ((resp or {}).get("data") or {}).get("plaintext")
        try:
            return base64.b64decode(plaintext if isinstance(plaintext, str) else "-", validate=True)
        except (binascii.Error, ValueError):
            raise ConfigError(f"{self._mount}/decrypt/{self.key_name}: Vault answered without a plaintext") from None
