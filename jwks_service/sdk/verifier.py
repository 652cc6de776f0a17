"""`Verifier` (threads) and `AsyncVerifier` (asyncio): the I/O around the pure cache and rules.

Both share `_Core`: what a JWKS response, an event or an introspection answer means. They differ
only in how they wait: a lock and daemon threads, or an asyncio lock and tasks. Nothing here blocks
an event loop: `AsyncVerifier` uses httpx's async client throughout.

Every answer is read while it streams, under a bound (`bounded`): a huge JWK set, metadata document or
introspection answer costs at most 1 MiB, never the whole body. Endpoints learnt from an ``https://``
issuer's metadata must be ``https://`` too (a downgrade is refused unless the caller passes that URL
itself or ``allow_http=True``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import random
import threading
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from ..claims import ACCESS_TOKEN_CLAIMS
from ..jws import MAX_TOKEN_BYTES, VerificationKey
from .bounded import ACCEPT_ENCODING, aread_bounded, read_bounded
from .cache import CacheSettings, KeyCache, Refresh
from .errors import (
    InactiveTokenError,
    IntrospectionUnavailableError,
    KeysUnavailableError,
    SDKError,
    UnknownKeyError,
)
from .keys import ASYMMETRIC_ALGORITHMS, KeySetError, load_key_set
from .rules import ACCESS_TOKEN_TYPES, Rules, Split
from .sse import SSELines, SSEParser, SSEvent

HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
EVENTS_READ_TIMEOUT = 50.0  # the server sends a heartbeat every 15 s; three missed ones mean a dead stream
EVENTS_BACKOFF_MIN = 0.5
EVENTS_BACKOFF_MAX = 30.0
INTROSPECTION_CACHE_ENTRIES = 10_000


@dataclass
class Stats:
    """Counters, for tests, logs and dashboards."""

    jwks_requests: int = 0
    jwks_downloads: int = 0  # 200 answers
    jwks_not_modified: int = 0  # 304 answers
    jwks_failures: int = 0
    unknown_kid_refetches: int = 0
    events_received: int = 0
    events_connects: int = 0
    introspections: int = 0


def _audiences(audience: str | Collection[str] | None) -> frozenset[str] | None:
    if audience is None:
        return None
    if isinstance(audience, str):
        return frozenset({audience})
    return frozenset(audience)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    return float(value) if value.isdigit() else None


def _scheme(url: Any) -> str:
    try:
        return urlsplit(url).scheme if isinstance(url, str) else ""
    except ValueError:
        return ""


def _introspection_failed(exc: Exception) -> IntrospectionUnavailableError:
    reason = exc.description if isinstance(exc, SDKError) else type(exc).__name__
    return IntrospectionUnavailableError(f"introspection failed: {reason}")


def _uncompressed(response: httpx.Response) -> None:
    """The event stream is asked for with Accept-Encoding: identity; a compressed one is refused (the
    loop reconnects with backoff): httpx would inflate each chunk whole before a line bound saw it."""
    coding = response.headers.get("content-encoding", "identity").strip().lower()
    if coding not in ("", "identity"):
        raise ValueError(f"the event stream came with content coding {coding!r}; identity was asked for")


def _lines(response: httpx.Response) -> Iterator[str]:
    """The lines of an event stream, each bounded (`SSELines`); httpx's iter_lines is not."""
    _uncompressed(response)
    lines = SSELines()
    for text in response.iter_text():
        yield from lines.feed(text)


async def _alines(response: httpx.Response) -> AsyncIterator[str]:
    _uncompressed(response)
    lines = SSELines()
    async for text in response.aiter_text():
        for line in lines.feed(text):
            yield line


# The metadata members the SDK follows, and the option that names each one explicitly.
_EXPLICIT_OPTION = {"jwks_uri": "jwks_uri", "introspection_endpoint": "introspection_uri"}


class _Core:
    """What the sync and async verifiers share: every option, and what responses, events and
    introspection answers mean. Subclasses open their HTTP client and do the waiting."""

    def __init__(
        self,
        issuer: str,
        audience: str | Collection[str] | None,
        *,
        jwks_uri: str | None = None,
        jwks: Mapping[str, Any] | None = None,
        algorithms: Collection[str] | None = None,
        leeway: float = 30.0,
        events: bool = False,
        events_uri: str | None = None,
        typ: Collection[str] | None = ACCESS_TOKEN_TYPES,
        required_claims: Collection[str] = ACCESS_TOKEN_CLAIMS,
        max_token_bytes: int = MAX_TOKEN_BYTES,
        cache: CacheSettings | None = None,
        timeout: float = 5.0,
        introspection: tuple[str, str] | None = None,
        introspection_uri: str | None = None,
        introspection_cache: float = 5.0,
        allow_http: bool = False,
        http: httpx.Client | httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not issuer:
            raise ValueError("issuer is required")
        allowed = frozenset(algorithms) if algorithms is not None else ASYMMETRIC_ALGORITHMS
        unknown = allowed - ASYMMETRIC_ALGORITHMS - HMAC_ALGORITHMS
        if unknown:
            raise ValueError(f"unsupported algorithms: {', '.join(sorted(unknown))}")
        if allowed & HMAC_ALGORITHMS and introspection is None:
            raise ValueError("HS* tokens are verified by introspection: pass introspection=(client_id, secret)")
        if introspection is not None:
            allowed |= HMAC_ALGORITHMS if algorithms is None else frozenset()
        self.issuer = issuer
        self.key_algorithms = allowed - HMAC_ALGORITHMS
        self.hmac_algorithms = allowed & HMAC_ALGORITHMS
        self.rules = Rules(
            issuer=issuer,
            audiences=_audiences(audience),
            algorithms=allowed,
            leeway=leeway,
            token_types=typ,
            required_claims=required_claims,
            max_token_bytes=max_token_bytes,
        )
        self.cache = KeyCache(cache)
        self.clock = clock
        self.timeout = timeout
        self.jwks_uri = jwks_uri
        self.static = jwks is not None
        if jwks is not None:
            ring = load_key_set(dict(jwks), self.key_algorithms)
            self.cache.pin(clock(), ring.keys, ring.skipped)
        self.events_enabled = events and not self.static
        self.events_uri = events_uri
        self.introspection = introspection
        self.introspection_cache = introspection_cache
        self.introspection_endpoint = introspection_uri
        self.allow_http = allow_http
        self._introspected: OrderedDict[bytes, tuple[float, dict[str, Any]]] = OrderedDict()
        self._seen_events: deque[str] = deque(maxlen=256)
        self.metadata: dict[str, Any] | None = None
        self.stats = Stats()
        self._own_http = http is None
        self._open(http)

    def _open(self, http: httpx.Client | httpx.AsyncClient | None) -> None:
        raise NotImplementedError

    # ----- discovery -------------------------------------------------------------------------

    def _metadata_urls(self) -> list[str]:
        base = self.issuer.rstrip("/")
        return [base + "/.well-known/oauth-authorization-server", base + "/.well-known/openid-configuration"]

    def _accept_metadata(self, document: Any) -> None:
        if not isinstance(document, dict) or document.get("issuer") != self.issuer:
            raise KeysUnavailableError("the issuer's metadata names another issuer")
        jwks_uri = self.jwks_uri
        if jwks_uri is None:
            jwks_uri = self._metadata_endpoint(document, "jwks_uri")
            if jwks_uri is None:
                raise KeysUnavailableError("the issuer's metadata has no jwks_uri")
        endpoint = self.introspection_endpoint
        if endpoint is None and self.introspection is not None:
            endpoint = self._metadata_endpoint(document, "introspection_endpoint")
        self.metadata = document
        self.jwks_uri = jwks_uri
        self.introspection_endpoint = endpoint

    def _metadata_endpoint(self, document: dict[str, Any], field: str) -> str | None:
        """A URL from the metadata: http(s) only, and https only when the issuer is (RFC 8414 §2
        requires TLS; an http URL in an https issuer's metadata is a downgrade, whoever wrote it)."""
        value = document.get(field)
        if value is None:
            return None
        scheme = _scheme(value)
        if scheme not in ("https", "http"):
            raise KeysUnavailableError(f"the issuer's metadata has an unusable {field}")
        if scheme == "http" and _scheme(self.issuer) == "https" and not self.allow_http:
            raise KeysUnavailableError(
                f"the issuer's metadata gives an http:// {field} ({value}) for an https:// issuer: refused as a "
                f"downgrade (pass {_EXPLICIT_OPTION[field]}= yourself, or allow_http=True, to use it)"
            )
        return str(value)

    def _needs_metadata(self) -> bool:
        return self.jwks_uri is None or self._introspection_needs_metadata()

    def _introspection_needs_metadata(self) -> bool:
        return self.introspection is not None and self.introspection_endpoint is None and self.metadata is None

    def _metadata_answer(self, response: httpx.Response, body: bytes) -> bool:
        """Take an RFC 8414 metadata answer; False when this URL has none (try the next)."""
        if response.status_code != 200:
            return False
        try:
            document = json.loads(body)
        except ValueError:
            raise KeysUnavailableError(f"the metadata at {response.url} is not JSON") from None
        self._accept_metadata(document)
        return True

    def _no_metadata(self) -> KeysUnavailableError:
        return KeysUnavailableError(f"no RFC 8414 metadata at {self.issuer}")

    def _events_headers(self, parser: SSEParser) -> dict[str, str]:
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache", "Accept-Encoding": "identity"}
        if parser.last_id:
            headers["Last-Event-ID"] = parser.last_id
        return headers

    def _events_line(self, parser: SSEParser, line: str) -> str | None:
        """One line of the stream: "fetch" (refresh the set now), "ready" (refresh, then count the
        stream as live), or None."""
        event = parser.feed(line)
        if event is None:
            return None
        action = self._event(event)
        return "ready" if event.event == "ready" else action

    def events_url(self) -> str:
        return self.events_uri or self.issuer.rstrip("/") + "/keys/events"

    def _introspection_url(self) -> str:
        return self.introspection_endpoint or self.issuer.rstrip("/") + "/oauth/introspect"

    # ----- JWKS responses --------------------------------------------------------------------

    def _jwks_request_headers(self) -> dict[str, str]:
        headers = {"Accept": "application/jwk-set+json, application/json"}
        if self.cache.etag:
            headers["If-None-Match"] = self.cache.etag
        return headers

    def _apply(self, now: float, response: httpx.Response, body: bytes) -> None:
        cache = self.cache
        cc = response.headers.get("cache-control")
        if response.status_code == 304 and cache.loaded:
            self.stats.jwks_not_modified += 1
            cache.not_modified(now, cc)
            return
        if response.status_code != 200:
            self.stats.jwks_failures += 1
            cache.failed(now, f"JWKS answered HTTP {response.status_code}", _retry_after(response))
            return
        try:
            ring = load_key_set(json.loads(body), self.key_algorithms)
        except (KeySetError, ValueError) as exc:
            self.stats.jwks_failures += 1
            cache.failed(now, f"unusable JWK set: {exc}")
            return
        self.stats.jwks_downloads += 1
        cache.replace(now, ring.keys, ring.skipped, response.headers.get("etag"), cc)

    def _failed(self, now: float, exc: Exception) -> None:
        self.stats.jwks_failures += 1
        self.cache.failed(now, f"JWKS fetch failed: {type(exc).__name__}: {exc}")

    def _unavailable(self) -> KeysUnavailableError:
        reason = self.cache.last_error or "no key set fetched yet"
        retry = max(1, round(self.cache.retry_at - self.clock())) if self.cache.retry_at > 0 else 5
        return KeysUnavailableError(f"no usable key set from {self.issuer}: {reason}", retry_after=min(retry, 60))

    # ----- events ----------------------------------------------------------------------------

    def _event(self, event: SSEvent) -> str | None:
        """Apply one event; returns "fetch" when the key set should be (re)fetched now."""
        if event.id is not None:
            if event.id in self._seen_events:
                return None
            self._seen_events.append(event.id)
        self.stats.events_received += 1
        try:
            data = json.loads(event.data)
        except ValueError:
            return None
        if not isinstance(data, dict):
            return None
        if event.event == "ready":
            return "fetch"
        kid = data.get("kid")
        if not isinstance(kid, str):
            return None
        if event.event == "revoked":
            self.cache.revoke(kid, self.clock())
        elif event.event == "retired":
            self.cache.drop(kid)
        elif event.event in ("created", "rotated"):
            if data.get("alg") in self.key_algorithms and kid not in self.cache.keys:
                return "fetch"
        return None

    # ----- introspection ---------------------------------------------------------------------

    def _introspection_cached(self, token: str | bytes, now: float) -> tuple[bytes, dict[str, Any] | None]:
        digest = hashlib.sha256(token.encode() if isinstance(token, str) else token).digest()
        hit = self._introspected.get(digest)
        if hit is not None and hit[0] > now:
            return digest, hit[1]
        return digest, None

    def _introspection_result(self, digest: bytes, response: httpx.Response, raw: bytes, now: float) -> dict[str, Any]:
        """The claims of an active token; InactiveTokenError for {"active": false}; and for anything
        that is not a verdict (401 after our secret rotated out, 429, 5xx, not JSON, ...)
        IntrospectionUnavailableError: a 503 for the middleware, never a bare error."""
        self.stats.introspections += 1
        status = response.status_code
        if status != 200:
            what = "refused our client credentials" if status in (401, 403) else "answered"
            retry = _retry_after(response)
            raise IntrospectionUnavailableError(
                f"introspection {what} (HTTP {status})", retry_after=5 if retry is None else int(min(60, max(1, retry)))
            )
        try:
            body = json.loads(raw)
        except ValueError:
            raise IntrospectionUnavailableError("introspection answered something other than JSON") from None
        if not isinstance(body, dict) or not isinstance(body.get("active"), bool):
            raise IntrospectionUnavailableError("introspection answered no verdict (RFC 7662: a boolean active)")
        if body["active"] is not True:
            raise InactiveTokenError("the issuer says this token is not active")
        claims = self.rules.check_claims({k: v for k, v in body.items() if k not in ("active", "kid", "keyset")}, now)
        if self.introspection_cache > 0:
            until = min(now + self.introspection_cache, float(claims["exp"]))
            self._introspected[digest] = (until, claims)
            while len(self._introspected) > INTROSPECTION_CACHE_ENTRIES:
                self._introspected.popitem(last=False)
        return claims


class Verifier(_Core):
    """Verifies access tokens of one issuer, for threaded code. Thread-safe.

    >>> verifier = Verifier(issuer="https://auth.example.com", audience="api")
    >>> claims = verifier.verify(token)  # raises an InvalidTokenError subclass on any failure
    """

    http: httpx.Client

    def _open(self, http: httpx.Client | httpx.AsyncClient | None) -> None:
        if isinstance(http, httpx.AsyncClient):
            raise TypeError("Verifier takes an httpx.Client; AsyncVerifier takes an httpx.AsyncClient")
        self.http = http or httpx.Client(timeout=self.timeout, follow_redirects=False)
        self._lock = threading.Lock()
        self._background: threading.Thread | None = None
        self._stop = threading.Event()
        self._events_thread: threading.Thread | None = None
        self._events_response: httpx.Response | None = None
        if self.events_enabled:
            self._events_thread = threading.Thread(target=self._events_loop, name="jwks-events", daemon=True)
            self._events_thread.start()

    def __enter__(self) -> Verifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        response = self._events_response
        if response is not None:
            with contextlib.suppress(Exception):
                response.close()
        if self._events_thread is not None:
            self._events_thread.join(timeout=2)
        if self._own_http:
            self.http.close()

    # ----- verification ----------------------------------------------------------------------

    def verify(self, token: str | bytes) -> dict[str, Any]:
        """The token's claims, or an InvalidTokenError subclass (KeysUnavailableError: no keys)."""
        split = self.rules.split(token)
        if split.alg in self.hmac_algorithms:
            return self._introspect(token)
        now = self.clock()
        cache = self.cache
        key = cache.keys.get(split.kid)
        if key is None or now >= cache.refresh_at:
            key = self._key(split, now)
        return self.rules.finish(split, key, now)

    def _key(self, split: Split, now: float) -> VerificationKey:
        cache = self.cache
        decision = cache.decide(now)
        if decision is Refresh.BLOCKING:
            self.refresh()
        elif decision is Refresh.BACKGROUND:
            self._refresh_in_background()
        if not cache.usable(self.clock()):
            raise self._unavailable()
        verdict = cache.lookup(split.kid, now)
        if verdict.key is not None:
            return verdict.key
        if verdict.refetch:
            self.stats.unknown_kid_refetches += 1
            self.refresh()
            verdict = cache.lookup(split.kid, self.clock())
            if verdict.key is not None:
                return verdict.key
        raise UnknownKeyError(f"no key {split.kid!r} in the key set of {self.issuer}")

    # ----- fetching --------------------------------------------------------------------------

    def refresh(self) -> None:
        """Fetch the key set now (conditionally); one fetch at a time, later callers share it."""
        if self.static:
            return
        generation = self.cache.generation
        with self._lock:
            if self.cache.generation != generation:
                return  # another thread fetched while we waited
            now = self.clock()
            self.cache.attempt(now)
            self.stats.jwks_requests += 1
            try:
                uri = self._resolve_jwks_uri()
                response, body = self._get(uri, self._jwks_request_headers(), "the JWK set")
            except (httpx.HTTPError, SDKError) as exc:
                self._failed(now, exc)
                return
            self._apply(self.clock(), response, body)

    def _get(self, url: str, headers: dict[str, str], what: str) -> tuple[httpx.Response, bytes]:
        """A GET whose body is read under the document bound while it streams (every status: a
        response read to its end lets the connection be reused, for a 304 too)."""
        with self.http.stream("GET", url, headers={**headers, **ACCEPT_ENCODING}) as response:
            body = read_bounded(response, what)
        return response, body

    def _resolve_jwks_uri(self) -> str:
        if self._needs_metadata():
            for url in self._metadata_urls():
                if self._metadata_answer(*self._get(url, {"Accept": "application/json"}, "the issuer's metadata")):
                    break
            else:
                raise self._no_metadata()
        assert self.jwks_uri is not None
        return self.jwks_uri

    def _refresh_in_background(self) -> None:
        running = self._background
        if running is not None and running.is_alive():
            return
        thread = threading.Thread(target=self.refresh, name="jwks-refresh", daemon=True)
        self._background = thread
        thread.start()

    # ----- events ----------------------------------------------------------------------------

    def _events_loop(self) -> None:
        parser = SSEParser()
        backoff = EVENTS_BACKOFF_MIN
        timeout = httpx.Timeout(self.timeout, read=EVENTS_READ_TIMEOUT)
        while not self._stop.is_set():
            headers = self._events_headers(parser)
            try:
                with self.http.stream("GET", self.events_url(), headers=headers, timeout=timeout) as response:
                    self._events_response = response
                    if response.status_code != 200:
                        backoff = max(backoff, _retry_after(response) or EVENTS_BACKOFF_MAX)
                    else:
                        self.stats.events_connects += 1
                        for line in _lines(response):
                            if self._stop.is_set():
                                return
                            action = self._events_line(parser, line)
                            if action is not None:
                                self.refresh()
                            if action == "ready":
                                self.cache.set_subscribed(True)
                                backoff = EVENTS_BACKOFF_MIN
            except (httpx.HTTPError, OSError, ValueError):
                pass  # reconnect below
            finally:
                self._events_response = None
                self.cache.set_subscribed(False)
            self._stop.wait(backoff * (0.5 + random.random() / 2))  # noqa: S311 - jitter, not a secret
            backoff = min(EVENTS_BACKOFF_MAX, backoff * 2)

    # ----- introspection (HMAC keysets) ------------------------------------------------------

    def _introspect(self, token: str | bytes) -> dict[str, Any]:
        assert self.introspection is not None
        now = self.clock()
        digest, cached = self._introspection_cached(token, now)
        if cached is not None:
            return cached
        text = token.decode("ascii") if isinstance(token, bytes) else token
        try:
            if self._introspection_needs_metadata():
                self._resolve_jwks_uri()
            url = self._introspection_url()
            with self.http.stream(
                "POST", url, data={"token": text}, auth=self.introspection, headers=ACCEPT_ENCODING
            ) as response:
                raw = read_bounded(response, "the introspection answer")
        except (httpx.HTTPError, SDKError) as exc:
            raise _introspection_failed(exc) from None
        return self._introspection_result(digest, response, raw, self.clock())


class AsyncVerifier(_Core):
    """`Verifier` for asyncio code: ``claims = await verifier.verify(token)``. Close with ``aclose``."""

    http: httpx.AsyncClient

    def _open(self, http: httpx.Client | httpx.AsyncClient | None) -> None:
        if isinstance(http, httpx.Client):
            raise TypeError("AsyncVerifier takes an httpx.AsyncClient; Verifier takes an httpx.Client")
        self.http = http or httpx.AsyncClient(timeout=self.timeout, follow_redirects=False)
        self._lock: asyncio.Lock | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._events_task: asyncio.Task[None] | None = None
        self._closed = False

    async def __aenter__(self) -> AsyncVerifier:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Start the event subscription (when asked for); `verify` also starts it on first use."""
        if self.events_enabled and self._events_task is None and not self._closed:
            self._events_task = asyncio.get_running_loop().create_task(self._events_loop())

    async def aclose(self) -> None:
        self._closed = True
        tasks = [*self._tasks, *([self._events_task] if self._events_task else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._own_http:
            await self.http.aclose()

    async def verify(self, token: str | bytes) -> dict[str, Any]:
        split = self.rules.split(token)
        if self._events_task is None and self.events_enabled:
            await self.start()
        if split.alg in self.hmac_algorithms:
            return await self._introspect(token)
        now = self.clock()
        cache = self.cache
        key = cache.keys.get(split.kid)
        if key is None or now >= cache.refresh_at:
            key = await self._key(split, now)
        return self.rules.finish(split, key, now)

    async def _key(self, split: Split, now: float) -> VerificationKey:
        cache = self.cache
        decision = cache.decide(now)
        if decision is Refresh.BLOCKING:
            await self.refresh()
        elif decision is Refresh.BACKGROUND:
            self._spawn(self.refresh())
        if not cache.usable(self.clock()):
            raise self._unavailable()
        verdict = cache.lookup(split.kid, now)
        if verdict.key is not None:
            return verdict.key
        if verdict.refetch:
            self.stats.unknown_kid_refetches += 1
            await self.refresh()
            verdict = cache.lookup(split.kid, self.clock())
            if verdict.key is not None:
                return verdict.key
        raise UnknownKeyError(f"no key {split.kid!r} in the key set of {self.issuer}")

    def _spawn(self, coro: Any) -> None:
        if any(not t.done() for t in self._tasks):
            coro.close()
            return
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def refresh(self) -> None:
        if self.static:
            return
        if self._lock is None:
            self._lock = asyncio.Lock()
        generation = self.cache.generation
        async with self._lock:
            if self.cache.generation != generation:
                return
            now = self.clock()
            self.cache.attempt(now)
            self.stats.jwks_requests += 1
            try:
                uri = await self._resolve_jwks_uri()
                response, body = await self._get(uri, self._jwks_request_headers(), "the JWK set")
            except (httpx.HTTPError, SDKError) as exc:
                self._failed(now, exc)
                return
            self._apply(self.clock(), response, body)

    async def _get(self, url: str, headers: dict[str, str], what: str) -> tuple[httpx.Response, bytes]:
        async with self.http.stream("GET", url, headers={**headers, **ACCEPT_ENCODING}) as response:
            body = await aread_bounded(response, what)
        return response, body

    async def _resolve_jwks_uri(self) -> str:
        if self._needs_metadata():
            for url in self._metadata_urls():
                answer = await self._get(url, {"Accept": "application/json"}, "the issuer's metadata")
                if self._metadata_answer(*answer):
                    break
            else:
                raise self._no_metadata()
        assert self.jwks_uri is not None
        return self.jwks_uri

    async def _events_loop(self) -> None:
        parser = SSEParser()
        backoff = EVENTS_BACKOFF_MIN
        timeout = httpx.Timeout(self.timeout, read=EVENTS_READ_TIMEOUT)
        while not self._closed:
            headers = self._events_headers(parser)
            try:
                async with self.http.stream("GET", self.events_url(), headers=headers, timeout=timeout) as response:
                    if response.status_code != 200:
                        backoff = max(backoff, _retry_after(response) or EVENTS_BACKOFF_MAX)
                    else:
                        self.stats.events_connects += 1
                        async for line in _alines(response):
                            action = self._events_line(parser, line)
                            if action is not None:
                                await self.refresh()
                            if action == "ready":
                                self.cache.set_subscribed(True)
                                backoff = EVENTS_BACKOFF_MIN
            except (httpx.HTTPError, OSError, ValueError):
                pass
            finally:
                self.cache.set_subscribed(False)
            await asyncio.sleep(backoff * (0.5 + random.random() / 2))  # noqa: S311 - jitter
            backoff = min(EVENTS_BACKOFF_MAX, backoff * 2)

    async def _introspect(self, token: str | bytes) -> dict[str, Any]:
        assert self.introspection is not None
        now = self.clock()
        digest, cached = self._introspection_cached(token, now)
        if cached is not None:
            return cached
        text = token.decode("ascii") if isinstance(token, bytes) else token
        try:
            if self._introspection_needs_metadata():
                await self._resolve_jwks_uri()
            url = self._introspection_url()
            async with self.http.stream(
                "POST", url, data={"token": text}, auth=self.introspection, headers=ACCEPT_ENCODING
            ) as response:
                raw = await aread_bounded(response, "the introspection answer")
        except (httpx.HTTPError, SDKError) as exc:
            raise _introspection_failed(exc) from None
        return self._introspection_result(digest, response, raw, self.clock())
