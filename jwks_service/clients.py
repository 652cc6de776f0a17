"""OAuth clients: registration, secrets, authentication.

Secrets are 256-bit random values generated here (never chosen by users), so a keyed SHA-256
(HMAC under a server pepper derived from the KEK) is as strong as a slow hash and keeps issuance
fast. Unknown client ids and wrong secrets take the same path: one HMAC, constant-time compares.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import secrets
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import replace
from functools import partial
from typing import Any, TypeVar, cast

import anyio
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac

from . import audit
from .assertions import PRIVATE_KEY_JWT, check_assertion, check_client_keys, claimed_client
from .client_keys import ClientKeys
from .clock import Clock
from .config import format_duration
from .errors import (
    ConflictError,
    InvalidClientError,
    InvalidRequestError,
    JoseError,
    NotFoundError,
    RevisionConflictError,
    StoreError,
    TooManyRequestsError,
    UnavailableError,
)
from .gate import BusyError, StrangerGate
from .model import AuditEvent, Client, KeysetPolicy, SecretHash
from .stores import Store
from .throttle import (
    CLEAN_CACHE_ENTRIES,
    CLEAN_CACHE_SECONDS,
    COUNTERS_RETRY_SECONDS,
    FAILURE_WINDOW,
    MAX_FAILURES_PER_ADDRESS,
    FailingKeys,
    failure_keys,
    throttle,
)

T = TypeVar("T")

log = logging.getLogger("jwks_service")

SECRET_BYTES = 32
CAS_ATTEMPTS = 8  # compare-and-set rounds of one client update before giving up (409)
MAX_SECRETS_PER_CLIENT = 4
# How long replaced secrets may keep working after a rotation: long enough to roll a secret out to
# every instance of a client, short enough that a rotation really retires the old secret.
MAX_SECRET_GRACE = 30 * 86400
# RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
_SCOPE_TOKEN = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]{1,128}$")
_DUMMY_DIGEST = b"\x00" * 32

_MISSING = object()
REMEMBER_PAGE = 500  # client records read at once by remember_all
CACHE_ENTRIES = 100_000  # client records held in memory (the cache, and the last known ones)


def check_grace(grace: object, name: str = "grace") -> int:
    """`grace` in seconds if it is within 0s..30d, else InvalidRequestError naming `name`."""
    seconds = grace if isinstance(grace, int) and not isinstance(grace, bool) else None
    if seconds is None or not 0 <= seconds <= MAX_SECRET_GRACE:
        shown = format_duration(seconds) if seconds is not None and seconds > 0 else repr(grace)
        raise InvalidRequestError(f"{name}: from 0s to {format_duration(MAX_SECRET_GRACE)} (got {shown})")
    return seconds


def generate_secret() -> str:
    """256 bits, URL-safe characters (so Basic credentials need no escaping)."""
    return secrets.token_urlsafe(SECRET_BYTES)


def generate_client_id() -> str:
    # Hex: safe in URLs, Basic credentials and command lines (never starts with '-').
    return secrets.token_hex(10)


def valid_scope_token(scope: str) -> bool:
    return bool(_SCOPE_TOKEN.match(scope))


class ClientRegistry:
    def __init__(
        self,
        store: Store,
        pepper: bytes,
        clock: Clock,
        keysets: Mapping[str, KeysetPolicy],
        keys: ClientKeys | None = None,
    ) -> None:
        self._store = store
        self.client_keys = keys or ClientKeys(clock)
        self._pepper = pepper
        # Keyed once; each digest copies the keyed state (hmac.digest re-keys on every call: 1 us).
        self._keyed = crypto_hmac.HMAC(pepper, hashes.SHA256())
        self._clock = clock
        self._keysets = keysets
        self._cache: dict[str, Client | None] = {}
        # The last records known before the cache was dropped (every store change drops it), served
        # only while the store cannot be read: a store outage right after a key rotation must not
        # turn every client away. Bounded like the cache.
        self._known: dict[str, Client | None] = {}
        self._local_failures: dict[str, list[float]] = {}
        # Every failure this process saw in the window, per key (at most a limit's worth each): a
        # burst of concurrent guesses is judged by them too, whatever the store's counts say yet.
        self._recent_failures: dict[str, list[float]] = {}
        self._clean: dict[tuple[str, str], float] = {}
        # Which throttle keys have failures in the store: refreshed in the background (scheduler).
        self.failing = FailingKeys(store, clock)
        self._counters_retry_at = float("-inf")
        self.gate = StrangerGate()
        self._inflight: dict[tuple[str, ...], asyncio.Future[Any]] = {}

    def digest(self, secret: str) -> bytes:
        mac = self._keyed.copy()
        mac.update(secret.encode("utf-8", "surrogateescape"))
        return mac.finalize()

    def invalidate(self) -> None:
        """Called when the store changed (another process may have edited clients)."""
        if len(self._known) + len(self._cache) > CACHE_ENTRIES:
            self._known = {}
        self._known = {**self._known, **self._cache}
        self._cache = {}

    def read_all(self) -> list[Client]:
        """Every client, as the store holds them now (not the cache). Blocking."""
        return self._store.list_clients()

    def read(self, client_id: str) -> Client:
        """One client as the store holds it now (not the cache); NotFoundError when there is none. Blocking."""
        client = self._store.get_client(client_id)
        if client is None:
            raise NotFoundError(f"no client {client_id}")
        return client

    def remember_all(self, page: int = REMEMBER_PAGE) -> None:
        """Load every client's record as last known (a replica that starts just before a store outage
        then still authenticates its clients). Blocking: call it in a worker thread. Read `page` clients
        at a time (`Store.list_clients_after`): the store (SQLite's lock) is free between pages, so
        requests that need it meanwhile wait for one page at most, not for every client; and rest
        after each page as long as it took, so that decoding 100,000 records does not starve them of
        the GIL for seconds (it then takes twice as long)."""
        known: dict[str, Client | None] = {}
        after = ""
        while len(known) < CACHE_ENTRIES:
            started = time.monotonic()
            clients = self._store.list_clients_after(after, min(page, CACHE_ENTRIES - len(known)))
            if not clients:
                break
            known.update((c.client_id, c) for c in clients)
            after = clients[-1].client_id
            # Decoding holds the GIL: rest as long as the page took, so requests get it at least half the time.
            time.sleep(time.monotonic() - started)
        self._known = {**known, **self._known}  # records an invalidate() kept meanwhile are as recent

    def get(self, client_id: str) -> Client | None:
        # invalidate() swaps in a new dict: a read that raced it (a record read before another
        # process deleted or changed it) lands in the old dict, not in the one served from now on.
        cache = self._cache
        try:
            return cache[client_id]
        except KeyError:
            pass
        if len(client_id) > 256:
            client = None
        else:
            try:
                client = self._store.get_client(client_id)
            except StoreError:
                # The store cannot answer: the record as last read, if there is one. It may predate a
                # change made just before the outage; every other way, the client would be refused.
                known = self._known.get(client_id, _MISSING)
                if known is _MISSING:
                    raise
                assert known is None or isinstance(known, Client)
                return known
        if len(cache) > CACHE_ENTRIES:  # unknown ids must not grow the cache without bound
            cache.clear()
        cache[client_id] = client
        return client

    async def get_async(self, client_id: str) -> Client | None:
        """`get` for the event loop: a cached record at once, else the store read in a worker thread."""
        client = self._cache.get(client_id, _MISSING)
        if client is _MISSING:
            return await anyio.to_thread.run_sync(self.get, client_id)
        assert client is None or isinstance(client, Client)
        return client

    async def authenticate_async(self, client_id: str, secret: str, address: str) -> Client:
        """The client, or InvalidClientError; unknown id and wrong secret cost the same. Repeated
        failures from `address` are throttled: TooManyRequestsError, even for the right secret,
        until the window frees up. No store call runs on the event loop.

        A good client usually needs no store call at all (no key of its pair is among the failing
        ones the background read found, see `throttle.FailingKeys`, or the pair was seen clean within
        CLEAN_CACHE_SECONDS; and its record is cached): then everything happens here, with no thread
        hand-off. Otherwise the store calls run through `gate`, on behalf of a caller not
        authenticated yet: when a call cannot run there soon, the failure counters are kept in this
        process, and a client record that must be read gives 503.
        """
        now = self._clock.now()
        keys = failure_keys(client_id, address)
        checked = self._counters_needed(keys, now)
        if checked:
            await self._throttle(keys, address, now)
        client = self._cache.get(client_id, _MISSING)
        if client is _MISSING:
            client = await self._shared(("client", client_id), address, self.get, client_id)
            if not checked and self._counters_needed(keys, now):
                await self._throttle(keys, address, now)  # failures that came in while this one waited
        assert client is None or isinstance(client, Client)
        try:
            return self._check_secret(client, secret, now)
        except InvalidClientError:
            self._clean.pop(keys, None)
            await self._record_failure_async(keys, now, address)
            raise

    async def authenticate_assertion_async(
        self, assertion: str, client_id: str | None, audiences: Collection[str], address: str
    ) -> Client:
        """A private_key_jwt client by its assertion (RFC 7523 §2.2; `client_id` is the form's, when
        sent), or InvalidClientError. The client is the one the assertion's ``iss`` names; its keys
        (`client_keys`, a jwks_uri fetched through `gate`) verify it by `assertions.check_assertion`, and
        then its ``jti`` must be new to the store (`Store.remember_jti`), so a replay is refused on
        every replica. Failures count in the same throttle as secrets', for the claimed client id."""
        now = self._clock.now()
        try:
            claimed, kid = claimed_client(assertion)
            problem = "" if client_id in (None, claimed) else "client_id differs from the assertion's iss"
        except JoseError as exc:
            claimed, kid, problem = client_id or "", None, exc.description
        keys = failure_keys(claimed, address)
        checked = self._counters_needed(keys, now)
        if checked:
            await self._throttle(keys, address, now)
        try:
            if problem:
                raise InvalidClientError(problem)
            client = self._cache.get(claimed, _MISSING)
            if client is _MISSING:
                client = await self._shared(("client", claimed), address, self.get, claimed)
            assert client is None or isinstance(client, Client)
            if client is None or client.auth_method != PRIVATE_KEY_JWT:
                raise InvalidClientError("client authentication failed")
            run = partial(self._shared, ("jwks", claimed), address)
            signers = await self.client_keys.keys_for(client, kid, run)
            if not checked and self._counters_needed(keys, now):
                await self._throttle(keys, address, now)  # failures that came in while this one waited
            verified = check_assertion(assertion, claimed, signers, audiences, now)
            remember = self._store.remember_jti
            if not await self.gate.run(address, remember, claimed, verified.jti, verified.expires_at, now):
                raise InvalidClientError("the assertion was used before (its jti is not new)")
            return client
        except (InvalidClientError, JoseError) as exc:
            self._clean.pop(keys, None)
            await self._record_failure_async(keys, now, address)
            raise InvalidClientError(f"client assertion refused: {exc.description}") from None

    def _counters_needed(self, keys: tuple[str, str], now: float) -> bool:
        """Whether the failure counters of `keys` must be read: not when the last background read found
        none of them failing (`failing`) and this process counted none on its own, nor when the pair
        was seen clean within CLEAN_CACHE_SECONDS."""
        if self.failing.clear(keys, now) and not any(k in self._local_failures for k in keys):
            return False
        return self._clean.get(keys, 0.0) <= now

    async def _throttle(self, keys: tuple[str, str], address: str, now: float) -> None:
        """TooManyRequestsError when the failure counters (the store's, and this process's) reach a limit."""
        counts: dict[str, tuple[int, float]] = {}
        if now >= self._counters_retry_at:
            read = self._store.auth_failures
            try:
                counts = dict(await self._shared(("counts", *keys), address, read, keys, now - FAILURE_WINDOW))
            except UnavailableError as exc:
                self._counters_failed(exc, now)
        self._admit(keys, self._with_local(counts, keys, now), now)

    async def _shared(self, key: tuple[str, ...], address: str, call: Callable[..., T], *args: object) -> T:
        """`gate.run(address, call, *args)`, made once for concurrent requests that need the same read
        (a burst of one client's requests after its cache entry expired is one store call, not a
        queue that fills the gate)."""
        loop = asyncio.get_running_loop()
        running = self._inflight.get(key)
        if running is not None and running.get_loop() is loop:
            try:
                return cast(T, await asyncio.shield(running))
            except asyncio.CancelledError:
                if running.cancelled():  # the request that made the call went away, not this one
                    raise BusyError("the store read this request waited for was abandoned; try again") from None
                raise
        future: asyncio.Future[Any] = loop.create_future()
        self._inflight[key] = future
        try:
            result = await self.gate.run(address, call, *args)
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # marks it retrieved: no "never retrieved" log when nobody else waited
            raise
        except BaseException:
            future.cancel()
            raise
        finally:
            if self._inflight.get(key) is future:
                del self._inflight[key]
        future.set_result(result)
        return result

    # The counters live in the store so that every replica agrees; while the store cannot be
    # reached, this process counts on its own (a store outage must not stop token issuance, nor
    # switch throttling off).
    def _counters_failed(self, exc: UnavailableError, now: float) -> None:
        log.debug("failure counters unavailable, counting in this process: %s", exc.description)
        if isinstance(exc, StoreError):  # the store failed (not merely a full gate): leave it alone a while
            self._counters_retry_at = now + COUNTERS_RETRY_SECONDS

    def _admit(self, keys: tuple[str, str], failures: dict[str, tuple[int, float]], now: float) -> None:
        """TooManyRequestsError when the counts reach a limit; a pair with no failures is cached clean.
        Each count is at least the failures this process saw in the window (`_recent_failures`): a read
        shared by a burst of concurrent requests answers for all of them, and the store has not yet
        counted the failures of those judged before."""
        recent = self._recent_failures
        for key in keys:
            seen = [t for t in recent.get(key, ()) if t > now - FAILURE_WINDOW]
            if not seen:
                recent.pop(key, None)
                continue
            recent[key] = seen
            count, oldest = failures.get(key, (0, now))
            if len(seen) > count:
                failures[key] = (len(seen), min(oldest, seen[0]))
        retry = throttle(failures, keys, now)
        if retry is not None:
            raise TooManyRequestsError("too many failed client authentications; slow down", retry_after=retry)
        if not failures:
            if len(self._clean) >= CLEAN_CACHE_ENTRIES:
                self._clean.clear()
            self._clean[keys] = now + CLEAN_CACHE_SECONDS

    def _with_local(
        self, counts: dict[str, tuple[int, float]], keys: tuple[str, str], now: float
    ) -> dict[str, tuple[int, float]]:
        """The store's counts plus the failures this process counted while the store was away."""
        local = self._local_failures
        for key in keys:
            recent = [t for t in local.get(key, ()) if t > now - FAILURE_WINDOW]
            if recent:
                local[key] = recent
                stored = counts.get(key, (0, now))
                counts[key] = (stored[0] + len(recent), min(stored[1], recent[0]))
            else:
                local.pop(key, None)
        return counts

    async def _record_failure_async(self, keys: tuple[str, str], now: float, address: str) -> None:
        self.failing.failing(keys)  # failing on this replica at once, before the store has it
        recent = self._recent_failures
        if len(recent) > 100_000:
            recent.clear()
        for key in keys:
            seen = recent.setdefault(key, [])
            seen.append(now)
            if len(seen) > MAX_FAILURES_PER_ADDRESS:  # the largest limit: more would not change a verdict
                del seen[0]
        if now >= self._counters_retry_at:
            started = False

            def record() -> None:
                nonlocal started
                started = True
                try:
                    self._store.record_auth_failure(keys, now)
                finally:
                    self.failing.recorded(keys)

            try:
                await self.gate.run(address, record)
                return
            except UnavailableError as exc:
                self._counters_failed(exc, now)
            finally:
                if not started:  # never written (gate full, or cancelled): nothing for a read to miss
                    self.failing.recorded(keys)
        else:
            self.failing.recorded(keys)
        self._record_locally(keys, now)

    def _record_locally(self, keys: tuple[str, str], now: float) -> None:
        if len(self._local_failures) > 100_000:
            self._local_failures.clear()
        for key in keys:
            self._local_failures.setdefault(key, []).append(now)

    def _check_secret(self, client: Client | None, secret: str, now: float) -> Client:
        presented = self.digest(secret)
        candidates = [s.digest for s in client.secrets if s.expires_at is None or s.expires_at > now] if client else []
        ok = False
        for digest in candidates or [_DUMMY_DIGEST]:
            ok |= hmac.compare_digest(presented, digest)
        if client is None or not candidates or not ok:
            raise InvalidClientError("client authentication failed")
        return client

    def validate(
        self, name: str, scopes: Iterable[str], audiences: Iterable[str], keyset: str, token_ttl: int | None
    ) -> tuple[str, tuple[str, ...], tuple[str, ...], str, int]:
        name = name.strip()
        if not name or len(name) > 200:
            raise InvalidRequestError("name: 1 to 200 characters")
        scope_list = tuple(dict.fromkeys(scopes))
        if not scope_list:
            raise InvalidRequestError("scopes: at least one scope")
        for s in scope_list:
            if not valid_scope_token(s):
                raise InvalidRequestError(f"scopes: {s!r} is not a valid scope token (RFC 6749 §3.3)")
        aud_list = tuple(dict.fromkeys(a.strip() for a in audiences))
        if not aud_list or not all(aud_list) or any(len(a) > 512 for a in aud_list):
            raise InvalidRequestError("audiences: at least one non-empty audience of at most 512 characters")
        policy = self._keysets.get(keyset)
        if policy is None:
            raise InvalidRequestError(f"keyset: unknown keyset {keyset!r} (known: {', '.join(self._keysets)})")
        ttl = policy.token_ttl if token_ttl is None else token_ttl
        if ttl <= 0 or ttl > policy.token_ttl:
            raise InvalidRequestError(f"token_ttl: between 1s and the keyset's token_ttl ({policy.token_ttl}s)")
        return name, scope_list, aud_list, keyset, ttl

    def create(
        self,
        name: str,
        scopes: Iterable[str],
        audiences: Iterable[str],
        *,
        keyset: str = "default",
        token_ttl: int | None = None,
        actor: str = "cli",
        auth_method: str = "client_secret_basic",
        jwks: Mapping[str, Any] | None = None,
        jwks_uri: str | None = None,
    ) -> tuple[Client, str]:
        """Register a client; the secret is returned once and only its digest is stored. A
        private_key_jwt client (with `jwks` or `jwks_uri`) has no secret: "" is returned."""
        name, scope_list, aud_list, keyset, ttl = self.validate(name, scopes, audiences, keyset, token_ttl)
        check_client_keys(auth_method, jwks, jwks_uri, self.client_keys.allow_http)
        keyed = auth_method == PRIVATE_KEY_JWT
        now = self._clock.now()
        secret = "" if keyed else generate_secret()
        client = Client(
            client_id=generate_client_id(),
            name=name,
            scopes=scope_list,
            audiences=aud_list,
            keyset=keyset,
            token_ttl=ttl,
            created_at=now,
            secrets=() if keyed else (SecretHash(self.digest(secret), now),),
            auth_method=auth_method,
            jwks=jwks,
            jwks_uri=jwks_uri,
        )
        details: dict[str, Any] = {"name": name, "scopes": list(scope_list)}
        if keyed:
            details["auth_method"] = auth_method
        events = [audit.event(now, actor, "client.create", client.client_id, **details)]
        client = self._store.save_client(client, 0, events)  # never over an existing client
        audit.log_events(events)
        self._cache.pop(client.client_id, None)
        return client, secret

    def delete(self, client_id: str, *, actor: str = "cli") -> None:
        """A blind delete: what it does depends on nothing it read, so it needs no compare-and-set; an
        update that read the client before is refused by its own compare-and-set (never writes it back)."""
        now = self._clock.now()
        events = [audit.event(now, actor, "client.delete", client_id)]
        if not self._store.delete_client(client_id, events):
            raise NotFoundError(f"no client {client_id}")
        audit.log_events(events)
        self._cache.pop(client_id, None)

    def update(
        self,
        client_id: str,
        *,
        name: str | None = None,
        scopes: Iterable[str] | None = None,
        audiences: Iterable[str] | None = None,
        token_ttl: int | None = None,
        actor: str = "cli",
    ) -> tuple[Client, dict[str, Any]]:
        """Change a client's name, scopes, audiences or token lifetime (what is None stays): the client
        as stored, and what changed ({field: {"from", "to"}}, audited as `client.update`).

        Compare-and-set on the client's revision, as `rotate_secret`. The store's revision moves with
        the write, so every replica drops its cached clients at its next refresh (within 1 s): a scope
        taken away is refused everywhere from then on. Tokens issued before keep their claims until
        they expire."""
        for _ in range(CAS_ATTEMPTS):
            client = self._store.get_client(client_id)
            if client is None:
                raise NotFoundError(f"no client {client_id}")
            new_name, new_scopes, new_audiences, _, new_ttl = self.validate(
                client.name if name is None else name,
                client.scopes if scopes is None else scopes,
                client.audiences if audiences is None else audiences,
                client.keyset,
                client.token_ttl if token_ttl is None else token_ttl,
            )
            updated = replace(client, name=new_name, scopes=new_scopes, audiences=new_audiences, token_ttl=new_ttl)
            changes = {
                field: {"from": _plain(getattr(client, field)), "to": _plain(getattr(updated, field))}
                for field in ("name", "scopes", "audiences", "token_ttl")
                if getattr(client, field) != getattr(updated, field)
            }
            if not changes:
                return client, {}
            events = [audit.event(self._clock.now(), actor, "client.update", client_id, changes=changes)]
            if (stored := self._save(client, updated, events)) is not None:
                return stored, changes
        raise ConflictError(f"client {client_id} kept changing under us; try again")

    def rotate_secret(self, client_id: str, grace: int, *, actor: str = "cli") -> tuple[Client, str]:
        """A new secret; the old ones keep working for `grace` seconds (at most MAX_SECRET_GRACE).

        Compare-and-set on the client's revision: a rotation that lost to another writer (another
        rotation, a deletion) reads the client again and redoes its change, so a secret it returns
        is always stored, and a deleted client stays deleted."""
        grace = check_grace(grace)
        secret = generate_secret()
        for _ in range(CAS_ATTEMPTS):
            client = self._store.get_client(client_id)
            if client is None:
                raise NotFoundError(f"no client {client_id}")
            if client.auth_method == PRIVATE_KEY_JWT:
                raise InvalidRequestError(f"client {client_id} authenticates with private_key_jwt: it has no secret")
            now = self._clock.now()
            kept = [
                s if s.expires_at is not None and s.expires_at <= now + grace else replace(s, expires_at=now + grace)
                for s in client.secrets
                if s.expires_at is None or s.expires_at > now
            ]
            kept = kept[-(MAX_SECRETS_PER_CLIENT - 1) :]
            updated = replace(client, secrets=(*kept, SecretHash(self.digest(secret), now)))
            events = [audit.event(now, actor, "client.rotate_secret", client_id, grace_seconds=grace)]
            if (stored := self._save(client, updated, events)) is not None:
                return stored, secret
        raise ConflictError(f"client {client_id} kept changing under us; try again")

    def _save(self, read: Client, updated: Client, events: list[AuditEvent]) -> Client | None:
        """`updated` stored if the client is still at the revision it was `read` at (None: another
        writer came first; read it again and redo the change), its events logged, the cache dropped."""
        try:
            stored = self._store.save_client(updated, read.revision, events)
        except RevisionConflictError:
            return None
        audit.log_events(events)
        self._cache.pop(read.client_id, None)
        return stored


def _plain(value: object) -> object:
    """A client field as JSON has it (tuples as lists), for the audit log."""
    return list(value) if isinstance(value, tuple) else value
