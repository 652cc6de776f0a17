"""The keys private_key_jwt clients sign their assertions with (`clients.ClientRegistry` asks here).

- An inline ``jwks`` is loaded once per client record (`jwkset.load_key_set`, asymmetric keys only)
  and kept while the record is the same.
- A ``jwks_uri`` is kept by the rules the verifier SDK keeps the issuer's key set by
  (`keycache.KeyCache`): ``Cache-Control`` max-age clamped, ``ETag`` revalidation, the last good set
  served while refreshing fails (stale-if-error), backoff after failures, and a kid it does not know
  fetched again at most once per cooldown. So a client rotates its keys the way this service rotates
  its own: publish the next key, sign with it, remove the old one; a removed key stops working
  within the set's max-age. The fetch (`jwks_fetch`, bounded in time and size) is blocking and runs
  through the caller's `run` (the registry's StrangerGate, in a worker thread), only ever for the
  URL of a client already known, and only after the URL is checked again against the settings.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from .assertions import ASSERTION_ALGORITHMS, check_jwks_uri
from .clock import Clock
from .errors import InvalidClientError, JwksServiceError
from .jwks_fetch import Fetched, HttpJwksFetcher, JwksFetcher, JwksFetchError
from .jwkset import KeySetError, load_key_set
from .jws import VerificationKey, parse_json_object
from .keycache import CacheSettings, KeyCache, Refresh
from .model import Client

log = logging.getLogger("jwks_service")

KEY_SOURCES = 10_000  # clients whose key sets are held in memory (beyond that the memory starts over)
# The SDK's defaults, but a stale set serves at most 10 minutes while the client's server is down.
CLIENT_CACHE = CacheSettings(stale_if_error=600.0)

Run = Callable[..., Awaitable[Any]]  # runs a blocking call off the event loop: run(call, *args)


class ClientKeys:
    def __init__(self, clock: Clock, fetch: JwksFetcher | None = None, *, allow_http: bool = False) -> None:
        self._clock = clock
        self._fetch = fetch
        self.allow_http = allow_http
        self._inline: dict[tuple[str, int], Mapping[str, VerificationKey]] = {}
        self._remote: dict[tuple[str, str], KeyCache] = {}
        self._lock = threading.Lock()

    def _fetcher(self) -> JwksFetcher:
        with self._lock:
            if self._fetch is None:
                self._fetch = HttpJwksFetcher()
            return self._fetch

    async def keys_for(self, client: Client, kid: str | None, run: Run) -> Mapping[str, VerificationKey]:
        """The keys `client` may sign with now; for a jwks_uri, fetched (through `run`) when the cache
        says so, or when `kid` is unknown and a refetch is allowed. InvalidClientError when there are
        none to be had."""
        if client.jwks_uri is None:
            return self._inline_keys(client)
        cache = self._cache(client.client_id, client.jwks_uri)
        now = self._clock.now()
        refresh = cache.decide(now) is not Refresh.NO
        if not refresh and kid is not None and kid not in cache.keys:
            refresh = cache.lookup(kid, now).refetch
        if refresh:
            await run(self.refresh, client.jwks_uri, cache)
        if not cache.usable(self._clock.now()):
            raise InvalidClientError(f"the client's jwks_uri gave no usable key set ({cache.last_error or 'none yet'})")
        return cache.keys

    def _inline_keys(self, client: Client) -> Mapping[str, VerificationKey]:
        slot = (client.client_id, client.revision)
        keys = self._inline.get(slot)
        if keys is None:
            try:
                keys = load_key_set(client.jwks, ASSERTION_ALGORITHMS).keys
            except KeySetError:
                keys = {}
            if len(self._inline) >= KEY_SOURCES:
                self._inline.clear()
            self._inline[slot] = keys
        return keys

    def _cache(self, client_id: str, uri: str) -> KeyCache:
        slot = (client_id, uri)  # a new jwks_uri starts from nothing
        cache = self._remote.get(slot)
        if cache is None:
            if len(self._remote) >= KEY_SOURCES:
                self._remote.clear()
            cache = self._remote[slot] = KeyCache(CLIENT_CACHE)
        return cache

    def refresh(self, uri: str, cache: KeyCache) -> None:
        """Fetch the key set at `uri` into `cache` (blocking: a worker thread). A failure is the cache's
        to remember (backoff, the last good set kept), never raised."""
        now = self._clock.now()
        cache.attempt(now)
        try:
            check_jwks_uri(uri, self.allow_http)  # the settings may have changed since it was registered
            fetched: Fetched = self._fetcher()(uri, cache.etag)
            if fetched.status == 304:
                cache.not_modified(now, fetched.cache_control)
                return
            ring = load_key_set(parse_json_object(fetched.body, "the key set"), ASSERTION_ALGORITHMS)
        except JwksFetchError as exc:
            self._failed(uri, cache, now, exc.description, exc.retry_after)
            return
        except (JwksServiceError, KeySetError) as exc:
            self._failed(uri, cache, now, str(exc), None)
            return
        cache.replace(now, ring.keys, ring.skipped, fetched.etag, fetched.cache_control)

    @staticmethod
    def _failed(uri: str, cache: KeyCache, now: float, error: str, retry_after: float | None) -> None:
        log.warning("private_key_jwt: cannot refresh the key set at %s: %s", uri, error)
        cache.failed(now, error, retry_after)
