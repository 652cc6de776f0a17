"""`Verifier` (threads) and `AsyncVerifier` (asyncio): the I/O around the pure cache and rules.

Both share `_Core`: its flows (`flows`) say which request comes next and what each answer, event or
failure means: discovery, a key set refresh, the key for a kid, introspection. The two subclasses
only drive them (`flows.run` / `flows.arun`) and wait: a lock and daemon threads, or an asyncio
lock and tasks. Nothing here blocks an event loop: `AsyncVerifier` uses httpx's async client
throughout.

Every answer is read while it streams, under a bound (`bounded`): a huge JWK set, metadata document or
introspection answer costs at most 1 MiB, never the whole body. Endpoints learnt from an ``https://``
issuer's metadata must be ``https://`` too (a downgrade is refused unless the caller passes that URL
itself or ``allow_http=True``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Coroutine, Generator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from ..claims import ACCESS_TOKEN_CLAIMS
from ..jws import MAX_TOKEN_BYTES, VerificationKey
from .bounded import aevent_lines, aread_bounded, event_lines, read_bounded
from .cache import CacheSettings, KeyCache, Refresh
from .errors import (
    KeysUnavailableError,
    SDKError,
    UnknownKeyError,
)
from .flows import Answer, Backoff, Command, Request, arun, http_client, retry_after, run, scheme
from .identity import DEFAULT_VERIFIER_NAME, verifier_header
from .introspection import Introspections
from .introspection import failed as introspection_failed
from .keys import ASYMMETRIC_ALGORITHMS, KeySetError, load_key_set
from .rules import ACCESS_TOKEN_TYPES, Rules, Split
from .sse import SSEParser, SSEvent

HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
EVENTS_READ_TIMEOUT = 50.0  # the server sends a heartbeat every 15 s; three missed ones mean a dead stream
EVENTS_BACKOFF_MIN = 0.5
EVENTS_BACKOFF_MAX = 30.0


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
        reject_tainted: bool = False,
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
        name: str = DEFAULT_VERIFIER_NAME,
    ) -> None:
        if not issuer:
            raise ValueError("issuer is required")
        self.verifier_id = verifier_header(name)  # sent as JWKS-Verifier: the issuer counts who holds its keys
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
        self.cache.reject_tainted = reject_tainted  # tainted kids come from events: use with events=True
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
        self.introspections = Introspections(introspection_cache)
        self.introspection_endpoint = introspection_uri
        self.allow_http = allow_http
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
        given = scheme(value)
        if given not in ("https", "http"):
            raise KeysUnavailableError(f"the issuer's metadata has an unusable {field}")
        if given == "http" and scheme(self.issuer) == "https" and not self.allow_http:
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

    def _events_opened(self, response: httpx.Response, backoff: Backoff) -> bool:
        """Whether the stream answered (200); otherwise wait at least its Retry-After."""
        if response.status_code != 200:
            backoff.refused(retry_after(response))
            return False
        self.stats.events_connects += 1
        return True

    def _events_line(self, parser: SSEParser, line: str) -> str | None:
        """One line of the stream: "fetch" (refresh the set now), "ready" (refresh, then count the
        stream as live: `_events_live`), or None."""
        event = parser.feed(line)
        if event is None:
            return None
        action = self._event(event)
        return "ready" if event.event == "ready" else action

    def _events_live(self, backoff: Backoff) -> None:
        self.cache.set_subscribed(True)
        backoff.reset()

    def events_url(self) -> str:
        return self.events_uri or self.issuer.rstrip("/") + "/keys/events"

    def _introspection_url(self) -> str:
        return self.introspection_endpoint or self.issuer.rstrip("/") + "/oauth/introspect"

    # ----- flows (`flows`): what to request next, and what the answers mean --------------------

    def _jwks_uri_flow(self) -> Generator[Request, Answer, str]:
        if self._needs_metadata():
            for url in self._metadata_urls():
                answer = yield Request("GET", url, "the issuer's metadata", {"Accept": "application/json"})
                if self._metadata_answer(*answer):
                    break
            else:
                raise self._no_metadata()
        assert self.jwks_uri is not None
        return self.jwks_uri

    def _refresh_flow(self) -> Generator[Request, Answer, None]:
        """One conditional fetch of the key set (the driver holds its lock)."""
        now = self.clock()
        self.cache.attempt(now)
        self.stats.jwks_requests += 1
        try:
            uri = yield from self._jwks_uri_flow()
            response, body = yield Request("GET", uri, "the JWK set", self._jwks_request_headers())
        except (httpx.HTTPError, SDKError) as exc:
            self._failed(now, exc)
            return
        self._apply(self.clock(), response, body)

    def _key_flow(self, split: Split, now: float) -> Generator[Command, None, VerificationKey]:
        """The key for the token's kid, refreshing the set first (or beside) when the cache says so,
        and once more for an unknown kid when a refetch is allowed."""
        cache = self.cache
        decision = cache.decide(now)
        if decision is Refresh.BLOCKING:
            yield Command.REFRESH
            now = self.clock()  # the set is judged as the refresh left it
        elif decision is Refresh.BACKGROUND:
            yield Command.REFRESH_BEHIND
        # Otherwise the set is judged at the instant the decision was made: a set that was usable
        # then stays usable for this token, even if it expires while a background refresh starts.
        if not cache.usable(now):
            raise self._unavailable()
        verdict = cache.lookup(split.kid, now)
        if verdict.key is not None:
            return verdict.key
        if verdict.refetch:
            self.stats.unknown_kid_refetches += 1
            yield Command.REFRESH
            verdict = cache.lookup(split.kid, self.clock())
            if verdict.key is not None:
                return verdict.key
        raise UnknownKeyError(f"no key {split.kid!r} in the key set of {self.issuer}")

    def _introspect_flow(self, token: str | bytes, digest: bytes) -> Generator[Request, Answer, dict[str, Any]]:
        """RFC 7662 for an HS* token (not in the cache: `Introspections.cached`)."""
        assert self.introspection is not None
        text = token.decode("ascii") if isinstance(token, bytes) else token
        try:
            if self._introspection_needs_metadata():
                yield from self._jwks_uri_flow()
            request = Request(
                "POST",
                self._introspection_url(),
                "the introspection answer",
                data={"token": text},
                auth=self.introspection,
            )
            response, raw = yield request
        except (httpx.HTTPError, SDKError) as exc:
            raise introspection_failed(exc) from None
        self.stats.introspections += 1
        return self.introspections.answer(digest, response, raw, self.rules, self.clock())

    # ----- JWKS responses --------------------------------------------------------------------

    def _jwks_request_headers(self) -> dict[str, str]:
        headers = {"Accept": "application/jwk-set+json, application/json", "JWKS-Verifier": self.verifier_id}
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
            cache.failed(now, f"JWKS answered HTTP {response.status_code}", retry_after(response))
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
        elif event.event == "tainted":
            self.cache.taint(kid, self.clock())
        elif event.event == "retired":
            self.cache.drop(kid)
        elif event.event in ("created", "rotated"):
            if data.get("alg") in self.key_algorithms and kid not in self.cache.keys:
                return "fetch"
        return None


class Verifier(_Core):
    """Verifies access tokens of one issuer, for threaded code. Thread-safe.

    >>> verifier = Verifier(issuer="https://auth.example.com", audience="api")
    >>> claims = verifier.verify(token)  # raises an InvalidTokenError subclass on any failure
    """

    http: httpx.Client

    def _open(self, http: httpx.Client | httpx.AsyncClient | None) -> None:
        self.http = http_client(http, httpx.Client, "Verifier", timeout=self.timeout, follow_redirects=False)
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

    def verify(self, token: str | bytes) -> dict[str, Any]:
        """The token's claims, or an InvalidTokenError subclass (KeysUnavailableError: no keys)."""
        split = self.rules.split(token)
        if split.alg in self.hmac_algorithms:
            return self._introspect(token)
        now = self.clock()
        cache = self.cache
        key = cache.keys.get(split.kid)
        if key is None or now >= cache.refresh_at:
            key = run(self._key_flow(split, now), self._do)
        return self.rules.finish(split, key, now)

    def _do(self, step: Request | Command) -> Answer | None:
        """One step of a flow: a request, its body read under the document bound while it streams
        (every status: a response read to its end lets the connection be reused), or a command."""
        if step is Command.REFRESH:
            self.refresh()
        elif step is Command.REFRESH_BEHIND:
            self._refresh_in_background()
        else:
            assert isinstance(step, Request)
            with self.http.stream(step.method, step.url, **step.options()) as response:
                return response, read_bounded(response, step.what)
        return None

    def refresh(self) -> None:
        """Fetch the key set now (conditionally); one fetch at a time, later callers share it."""
        if self.static:
            return
        generation = self.cache.generation
        with self._lock:
            if self.cache.generation == generation:  # else another thread fetched while we waited
                run(self._refresh_flow(), self._do)

    def _refresh_in_background(self) -> None:
        running = self._background
        if running is not None and running.is_alive():
            return
        thread = threading.Thread(target=self.refresh, name="jwks-refresh", daemon=True)
        self._background = thread
        thread.start()

    def _events_loop(self) -> None:
        parser = SSEParser()
        backoff = Backoff(EVENTS_BACKOFF_MIN, EVENTS_BACKOFF_MAX)
        timeout = httpx.Timeout(self.timeout, read=EVENTS_READ_TIMEOUT)
        while not self._stop.is_set():
            headers = self._events_headers(parser)
            try:
                with self.http.stream("GET", self.events_url(), headers=headers, timeout=timeout) as response:
                    self._events_response = response
                    lines = event_lines(response) if self._events_opened(response, backoff) else iter(())
                    for line in lines:
                        if self._stop.is_set():
                            return
                        action = self._events_line(parser, line)
                        if action is not None:
                            self.refresh()
                        if action == "ready":
                            self._events_live(backoff)
            except (httpx.HTTPError, OSError, ValueError):
                pass  # reconnect below
            finally:
                self._events_response = None
                self.cache.set_subscribed(False)
            self._stop.wait(backoff.wait())

    def _introspect(self, token: str | bytes) -> dict[str, Any]:
        digest, cached = self.introspections.cached(token, self.clock())
        return cached if cached is not None else run(self._introspect_flow(token, digest), self._do)


class AsyncVerifier(_Core):
    """`Verifier` for asyncio code: ``claims = await verifier.verify(token)``. Close with ``aclose``."""

    http: httpx.AsyncClient

    def _open(self, http: httpx.Client | httpx.AsyncClient | None) -> None:
        self.http = http_client(http, httpx.AsyncClient, "AsyncVerifier", timeout=self.timeout, follow_redirects=False)
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
            key = await arun(self._key_flow(split, now), self._do)
        return self.rules.finish(split, key, now)

    async def _do(self, step: Request | Command) -> Answer | None:
        """`Verifier._do`, awaited; a refresh beside runs as a task."""
        if step is Command.REFRESH:
            await self.refresh()
        elif step is Command.REFRESH_BEHIND:
            self._spawn(self.refresh())
        else:
            assert isinstance(step, Request)
            async with self.http.stream(step.method, step.url, **step.options()) as response:
                return response, await aread_bounded(response, step.what)
        return None

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
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
            if self.cache.generation == generation:
                await arun(self._refresh_flow(), self._do)

    async def _events_loop(self) -> None:
        parser = SSEParser()
        backoff = Backoff(EVENTS_BACKOFF_MIN, EVENTS_BACKOFF_MAX)
        timeout = httpx.Timeout(self.timeout, read=EVENTS_READ_TIMEOUT)
        while not self._closed:
            headers = self._events_headers(parser)
            try:
                async with self.http.stream("GET", self.events_url(), headers=headers, timeout=timeout) as response:
                    if self._events_opened(response, backoff):
                        async for line in aevent_lines(response):
                            action = self._events_line(parser, line)
                            if action is not None:
                                await self.refresh()
                            if action == "ready":
                                self._events_live(backoff)
            except (httpx.HTTPError, OSError, ValueError):
                pass
            finally:
                self.cache.set_subscribed(False)
            await asyncio.sleep(backoff.wait())

    async def _introspect(self, token: str | bytes) -> dict[str, Any]:
        digest, cached = self.introspections.cached(token, self.clock())
        return cached if cached is not None else await arun(self._introspect_flow(token, digest), self._do)
