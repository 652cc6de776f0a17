"""The shared store for several replicas: Redis (one server, Sentinel's master, or a Redis Cluster; the
client comes from stores.redis_connect, the Lua scripts from stores.redis_scripts).

Key layout: every key starts with one hash tag, ``{<namespace>}:``, so all of them live in one
Cluster slot and every multi-key command or script is legal there:

    {jwks}:revision            string  global revision: INCR on every write (not on auth failures)
    {jwks}:keysets             set     keyset names
    {jwks}:keyset:<name>       hash    revision (for compare-and-set), data (JSON: name, alg, backend,
                                       revision, keys as codec.key_to_dict, claimed_version, claimed_at)
    {jwks}:clients             set     client ids
    {jwks}:client:<id>         string  JSON (codec.client_to_dict and the client's revision, for compare-and-set)
    {jwks}:client_index        zset    client ids, score 0: in id order for paging (made from `clients` when
                                       their counts differ: a store from before it)
    {jwks}:revoked             zset    jti -> expiry (ZADD GT: a later revocation never shortens one)
    {jwks}:audit               zset    id -> JSON of the event with its id (member), score = id
    {jwks}:audit_at            zset    id -> at, for ``list_audit(since=...)``
    {jwks}:audit_seq           string  the id of the newest event appended (pruned ids are never reused)
    {jwks}:audit_last          string  "<id>:<sha256 hex>": the newest event appended and its hash
    {jwks}:audit_first         string  "<id>:<prev>": the oldest event the chain covers and the prev it must
                                       carry (moved on by a prune)
    {jwks}:fail:<key>          zset    unique member -> time of a failed client authentication (EXPIRE 300 s)
    {jwks}:failing             zset    <key> -> time of its newest failure (ZADD GT), trimmed to 300 s and
                                       EXPIREd with the fail:<key> it indexes: which keys have failures
    {jwks}:jti:<client>:<jti>  string  a private_key_jwt assertion's jti, SET NX PX until it expires
    {jwks}:op:<uuid>           string  the reply of a write script, kept 60 s (EX) so that a write
                                       retried after a lost reply is applied once
    channel {jwks}:changes             PUBLISH of the new global revision after every write

Every write of state (keysets, clients, revocations, audit) is one Lua script: the check (the
keyset's or client's revision for compare-and-set), the change, its audit events, the INCR of the global
revision and the PUBLISH run as one atomic unit. There is no lock anywhere. On a cluster, PUBLISH
reaches the subscribers of every node. With store.revocation_acks = N, a revocation (of a token, or a
key revocation through confirm_revocation) is confirmed only after WAIT N says N replicas hold it.

The audit chain is compare-and-set too: the writer reads the chain's head, numbers and links its
events after it (stores.chain; Lua in Redis has no SHA-256), and the script appends them only while
audit_seq is what the writer read; else nothing is written and the writer tries again. So two
replicas appending at once never give two events the same `prev`.

Every redis-py error becomes a StoreError here, once, naming the server but never the password.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import replace
from typing import Any, cast

import redis
from redis.cluster import RedisCluster
from redis.credentials import CredentialProvider
from redis.exceptions import AuthenticationError, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.sentinel import MasterNotFoundError

from ..configparts import RedisSettings
from ..errors import ConfigError, RevisionConflictError, StoreError
from ..model import AuditChain, AuditEvent, Client, Keyset, event_hash
from . import AuditTap, chain, clamp_limit, prunable
from .codec import audit_from_dict, client_from_dict, client_to_dict, key_from_dict, key_to_dict
from .redis_adoption import AdoptionRecords  # the adoption keys: {jwks}:fetchers*, {jwks}:revisions*
from .redis_connect import Client as RedisClient
from .redis_connect import close, connect, url_password
from .redis_credentials import NO_CREDENTIALS, RedisCredentials, redact
from .redis_scripts import (
    APPEND_AUDIT,
    DELETE_CLIENT,
    INDEX_CLIENTS,
    LIST_AUDIT_SINCE,
    PRUNE_AUDIT,
    REVOKE_TOKEN,
    SAVE_CLIENT,
    SAVE_KEYSET,
)

log = logging.getLogger(__name__)

# Failure counters older than this are trimmed as new ones are written, and each counter key
# expires this long after its last failure (the longest throttling window is a minute).
AUTH_FAILURE_RETENTION = 300
# Revocations are trimmed this long after their expiry, by the `now` of a reader: more than any
# clock skew between replicas, so a replica whose clock is behind still sees what it must refuse.
REVOKED_TRIM_MARGIN = 300.0
FAILING_TRIM_MARGIN = 300.0  # the index of failing keys is trimmed this much later than the counters
# How long the reply of a write is kept for a client retry of the same call (after a lost reply).
OP_TTL = 60
# Reconnection backoff of the change subscription.
SUBSCRIBE_BACKOFF_MIN = 0.1
SUBSCRIBE_BACKOFF_MAX = 2.0

# A writer whose audit events lost the race for the chain's head this many times in a row gives up.
AUDIT_ATTEMPTS = 100


def _num(value: float) -> str:
    """A float as Redis parses it back to the same double."""
    return repr(float(value))


class RedisStore(AdoptionRecords):
    """`url` with `settings` ([store] ca_file, revocation_acks) and `credential_provider` (a password
    file, Vault) makes the client (stores.redis_connect); or `client` and `where` give one made already."""

    def __init__(
        self,
        url: str = "",
        settings: RedisSettings | None = None,
        *,
        socket_timeout: float = 2.0,
        namespace: str = "jwks",
        credential_provider: CredentialProvider | None = None,
        client: RedisClient | None = None,
        where: str = "",
    ) -> None:
        if not namespace or any(c in namespace for c in "{}") or any(c.isspace() for c in namespace):
            raise ConfigError(f"Redis namespace {namespace!r}: must be non-empty, without braces or spaces")
        settings = settings or RedisSettings()
        if client is None:
            client, where = connect(
                url, settings, socket_timeout=socket_timeout, credential_provider=credential_provider
            )
        self._r: RedisClient = client
        # Redis refusing the password has the source re-read (stores.redis_credentials.CredentialRetry).
        self._credentials = (
            credential_provider.install(client) if isinstance(credential_provider, RedisCredentials) else NO_CREDENTIALS
        )
        self.where = where or "redis"
        self._password = url_password(url)
        self.revocation_acks = settings.revocation_acks
        # How long a revocation's WAIT waits for them: half a read timeout, so it answers before the socket gives up.
        self._wait_ms = max(100, int(socket_timeout * 500))
        self.namespace = namespace
        p = f"{{{namespace}}}:"
        self._prefix = p
        self._k_revision = p + "revision"
        self._k_keysets = p + "keysets"
        self._k_clients = p + "clients"
        self._k_client_index = p + "client_index"
        self._k_revoked = p + "revoked"
        self._k_audit = p + "audit"
        self._k_audit_at = p + "audit_at"
        self._k_audit_seq = p + "audit_seq"
        self._k_audit_last = p + "audit_last"
        self._k_audit_first = p + "audit_first"
        self._k_failing = p + "failing"
        # KEYS 2 to 7 of every write script (see redis_scripts.PRELUDE)
        self._k_head = tuple(p + k for k in ("revision", "audit", "audit_at", "audit_seq", "audit_last", "audit_first"))
        self.audit_tap = AuditTap()
        self.channel = p + "changes"
        self._save_keyset = self._r.register_script(SAVE_KEYSET)
        self._save_client = self._r.register_script(SAVE_CLIENT)
        self._delete_client = self._r.register_script(DELETE_CLIENT)
        self._index_clients = self._r.register_script(INDEX_CLIENTS)
        self._revoke_token = self._r.register_script(REVOKE_TOKEN)
        self._append_audit = self._r.register_script(APPEND_AUDIT)
        self._list_audit_since = self._r.register_script(LIST_AUDIT_SINCE)
        self._prune_audit = self._r.register_script(PRUNE_AUDIT)
        self._subscriptions: list[Callable[[], None]] = []
        self._sub_lock = threading.Lock()

    # -- errors ---------------------------------------------------------------------------------

    def _describe(self, exc: BaseException) -> str:
        if isinstance(exc, MasterNotFoundError):  # its own text lists every Sentinel client's settings
            return "no Sentinel named a master for the service (none reachable, or a failover under way)"
        return redact(str(exc) or type(exc).__name__, self._password, *self._credentials.secrets())

    @contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        try:
            yield
        except AuthenticationError as exc:
            raise StoreError(f"Redis at {self.where} refused the credentials ({what}): {self._describe(exc)}") from None
        except (RedisConnectionError, RedisTimeoutError) as exc:
            raise StoreError(f"Redis at {self.where} unreachable ({what}): {self._describe(exc)}") from None
        except RedisError as exc:
            raise StoreError(f"Redis at {self.where}: {what} failed: {self._describe(exc)}") from None

    # -- keys -----------------------------------------------------------------------------------

    def _keyset_key(self, name: str) -> str:
        return f"{self._prefix}keyset:{name}"

    def _client_key(self, client_id: str) -> str:
        return f"{self._prefix}client:{client_id}"

    def _fail_key(self, key: str) -> str:
        return f"{self._prefix}fail:{key}"

    def _write(
        self, script: Any, keys: Sequence[str], args: Sequence[object], audit: Sequence[AuditEvent], acks: int = 0
    ) -> Any:
        """Run a write script with the shared head: op key, revision, audit chain and channel. Tries
        again (with a new op key: nothing was written) while the chain's head moves under it. With
        `acks`, a write is confirmed only once that many replicas hold it (see _run)."""
        for _ in range(AUDIT_ATTEMPTS):
            seq, stored = self._chain_after_head(audit)
            audit_args: list[object] = []
            for e in stored:
                audit_args += [e.id, _num(e.at), json.dumps(e.as_dict(), separators=(",", ":"))]
            last = f"{stored[-1].id}:{event_hash(stored[-1])}" if stored else ""
            first = f"{stored[0].id}:{stored[0].prev}" if stored else ""
            op = f"{self._prefix}op:{uuid.uuid4().hex}"
            reply = self._run(
                script,
                [op, *self._k_head, *keys],
                [self.channel, OP_TTL, len(stored), seq, last, first, *audit_args, *args],
                acks,
            )
            if reply[0] == 2:
                continue
            if len(reply) > 2:
                self.audit_tap.publish(stored)
            return reply[:2]
        raise StoreError(f"Redis at {self.where}: the audit log kept moving under {AUDIT_ATTEMPTS} attempts to append")

    def _run(self, script: Any, keys: list[str], args: list[object], acks: int) -> Any:
        """The script's reply; with `acks`, confirmed by WAIT on the same connection (see _wait)."""
        if not acks:
            return script(keys=keys, args=args)
        pipe = self._master().pipeline(transaction=False)
        script(keys=keys, args=args, client=pipe)
        (reply,), acked = self._wait(pipe, acks)
        if reply[0] == 1:  # written (a lost compare-and-set or a moved audit head wrote nothing)
            self._check_acks(acked, acks)
        return reply

    def _master(self) -> redis.Redis:
        """A client of the master that owns the store's hash tag (on a cluster, that one node's)."""
        if isinstance(self._r, RedisCluster):
            node = self._r.get_node_from_key(self._k_revision)  # type: ignore[no-untyped-call]
            return cast(redis.Redis, node.redis_connection)
        return self._r

    def _wait(self, pipe: Any, acks: int) -> tuple[list[Any], int]:
        """Run `pipe` (writes) and a WAIT after them down one connection: WAIT counts the replicas that
        hold that connection's writes, and so every write the master ran before them. The writes'
        replies, and how many replicas acknowledged."""
        pipe.execute_command("WAIT", acks, self._wait_ms)
        *replies, acked = pipe.execute()
        return replies, int(acked)

    def _check_acks(self, acked: int, acks: int) -> None:
        """A write fewer replicas acknowledge in time is a StoreError: a 503, never a false success."""
        if acked < acks:
            raise StoreError(
                f"Redis at {self.where}: {acked} of the {acks} replicas store.revocation_acks asks for acknowledged"
                f" the revocation within {self._wait_ms} ms; it is not confirmed"
            )

    def _chain_after_head(self, audit: Sequence[AuditEvent]) -> tuple[str, list[AuditEvent]]:
        """The chain's head as read now (audit_seq, "" when none) and `audit` linked after it."""
        if not audit:
            return "", []
        seq, last = self._r.mget([self._k_audit_seq, self._k_audit_last])
        last_id = int(seq or 0)
        if last:
            last_hash = str(last).partition(":")[2]
        else:  # a store from before the chain: link to its newest event, if it still has it
            newest = self._r.zrangebyscore(self._k_audit, last_id, last_id)
            last_hash = event_hash(audit_from_dict(json.loads(str(newest[0])))) if newest else ""
        return str(seq or ""), chain(audit, last_id, last_hash)

    # -- Store ----------------------------------------------------------------------------------

    def revision(self) -> int:
        with self._guard("read the revision"):
            value = self._r.get(self._k_revision)
        return int(value or 0)

    @staticmethod
    def _keyset(data: str) -> Keyset:
        d = json.loads(data)
        keys = sorted((key_from_dict(k) for k in d["keys"]), key=lambda k: (k.created_at, k.kid))
        return Keyset(
            d["name"],
            d["alg"],
            d["backend"],
            int(d["revision"]),
            tuple(keys),
            int(d.get("claimed_version", 0)),
            d.get("claimed_at"),
        )

    def get_keyset(self, name: str) -> Keyset | None:
        with self._guard("read a keyset"):
            data = self._r.hget(self._keyset_key(name), "data")
        return self._keyset(str(data)) if data is not None else None

    def list_keysets(self) -> list[Keyset]:
        with self._guard("list keysets"):
            names = sorted(str(n) for n in self._r.smembers(self._k_keysets))
            pipe = self._r.pipeline(transaction=True)
            for name in names:
                pipe.hget(self._keyset_key(name), "data")
            rows = pipe.execute() if names else []
        return [self._keyset(str(d)) for d in rows if d is not None]

    def save_keyset(self, keyset: Keyset, expected_revision: int, audit: Sequence[AuditEvent] = ()) -> Keyset:
        new_revision = expected_revision + 1
        data = {
            "name": keyset.name,
            "alg": keyset.alg,
            "backend": keyset.backend,
            "revision": new_revision,
            "keys": [key_to_dict(k) for k in keyset.keys],
            "claimed_version": keyset.claimed_version,
            "claimed_at": keyset.claimed_at,
        }
        with self._guard("save a keyset"):
            ok, value = self._write(
                self._save_keyset,
                [self._keyset_key(keyset.name), self._k_keysets],
                [expected_revision, keyset.name, json.dumps(data, separators=(",", ":"))],
                audit,
            )
        if not ok:
            raise RevisionConflictError(
                f"keyset {keyset.name} is at revision {value}, not {expected_revision}: another writer came first"
            )
        return replace(keyset, revision=int(value))

    def get_client(self, client_id: str) -> Client | None:
        with self._guard("read a client"):
            data = self._r.get(self._client_key(client_id))
        return client_from_dict(json.loads(str(data))) if data is not None else None

    def list_clients(self) -> list[Client]:
        with self._guard("list clients"):
            ids = sorted(str(i) for i in self._r.smembers(self._k_clients))
            rows = self._r.mget([self._client_key(i) for i in ids]) if ids else []
        clients = [client_from_dict(json.loads(str(d))) for d in rows if d is not None]
        return sorted(clients, key=lambda c: c.created_at)  # stable: ties stay in client_id order

    def list_clients_after(self, after: str, limit: int) -> list[Client]:
        """Ids from the index (ZRANGEBYLEX), then their records (MGET): a client deleted in between is
        left out, and the next ids are read in its place."""
        limit = clamp_limit(limit)
        found: list[Client] = []
        with self._guard("list clients"):
            if not after:
                self._index_clients(keys=[self._k_clients, self._k_client_index])
            while len(found) < limit:
                want = limit - len(found)
                low = "(" + after if after else "-"
                ids = [str(i) for i in self._r.zrangebylex(self._k_client_index, low, "+", start=0, num=want)]
                if not ids:
                    break
                rows = self._r.mget([self._client_key(i) for i in ids])
                found += [client_from_dict(json.loads(str(d))) for d in rows if d is not None]
                after = ids[-1]
                if len(ids) < want:
                    break
        return found

    def save_client(self, client: Client, expected_revision: int, audit: Sequence[AuditEvent] = ()) -> Client:
        return self._write_client(client, expected_revision, audit)

    def put_client(self, client: Client, audit: Sequence[AuditEvent] = ()) -> None:
        self._write_client(client, None, audit)

    def _write_client(self, client: Client, expected: int | None, audit: Sequence[AuditEvent]) -> Client:
        payload = json.dumps(client_to_dict(client), separators=(",", ":"))
        with self._guard("write a client"):
            ok, value = self._write(
                self._save_client,
                [self._client_key(client.client_id), self._k_clients, self._k_client_index],
                [client.client_id, payload[:-1], "" if expected is None else expected],
                audit,
            )
        if not ok:
            raise RevisionConflictError(
                f"client {client.client_id} is at revision {value}, not {expected}: another writer came first"
            )
        return replace(client, revision=int(value))

    def delete_client(self, client_id: str, audit: Sequence[AuditEvent] = ()) -> bool:
        with self._guard("delete a client"):
            _, deleted = self._write(
                self._delete_client,
                [self._client_key(client_id), self._k_clients, self._k_client_index],
                [client_id],
                audit,
            )
        return bool(deleted)

    def revoke_token(self, jti: str, expires_at: float) -> None:
        with self._guard("revoke a token"):
            self._write(self._revoke_token, [self._k_revoked], [_num(expires_at), jti], (), self.revocation_acks)

    def confirm_revocation(self) -> None:
        """With store.revocation_acks: one write (an op key) and WAIT, so the replicas that acknowledge
        hold every write before it too (a key revocation saved by any connection)."""
        if not self.revocation_acks:
            return
        with self._guard("confirm a revocation"):
            pipe = self._master().pipeline(transaction=False)
            pipe.set(f"{self._prefix}op:{uuid.uuid4().hex}", "0", ex=OP_TTL)
            _, acked = self._wait(pipe, self.revocation_acks)
        self._check_acks(acked, self.revocation_acks)

    def revoked_tokens(self, now: float) -> dict[str, float]:
        with self._guard("read revoked tokens"):
            pipe = self._r.pipeline(transaction=True)
            pipe.zremrangebyscore(self._k_revoked, "-inf", "(" + _num(now - REVOKED_TRIM_MARGIN))
            pipe.zrangebyscore(self._k_revoked, "(" + _num(now), "+inf", withscores=True)
            _, rows = pipe.execute()
        return {str(jti): float(exp) for jti, exp in rows}

    def record_auth_failure(self, keys: Sequence[str], now: float) -> None:
        if not keys:
            return
        with self._guard("record an authentication failure"):
            pipe = self._r.pipeline(transaction=True)
            for k in keys:
                fk = self._fail_key(k)
                pipe.zadd(fk, {f"{_num(now)}:{uuid.uuid4().hex}": now})
                pipe.zremrangebyscore(fk, "-inf", "(" + _num(now - AUTH_FAILURE_RETENTION))
                pipe.expire(fk, AUTH_FAILURE_RETENTION)
            pipe.zadd(self._k_failing, {k: now for k in keys}, gt=True)
            # Trimmed with a margin, as the revocations are: every replica trims the one shared index by
            # its own clock, and one running ahead must not drop what the others recorded just now.
            trim = now - AUTH_FAILURE_RETENTION - FAILING_TRIM_MARGIN
            pipe.zremrangebyscore(self._k_failing, "-inf", "(" + _num(trim))
            pipe.expire(self._k_failing, int(AUTH_FAILURE_RETENTION + FAILING_TRIM_MARGIN))
            pipe.execute()

    def failing_keys(self, since: float, limit: int) -> set[str] | None:
        with self._guard("read the keys with authentication failures"):
            keys = self._r.zrangebyscore(
                self._k_failing, "(" + _num(since), "+inf", start=0, num=clamp_limit(limit + 1)
            )
        return {str(k) for k in keys} if len(keys) <= limit else None

    def auth_failures(self, keys: Sequence[str], since: float) -> dict[str, tuple[int, float]]:
        if not keys:
            return {}
        low = "(" + _num(since)
        with self._guard("read authentication failures"):
            pipe = self._r.pipeline(transaction=True)
            for k in keys:
                fk = self._fail_key(k)
                pipe.zcount(fk, low, "+inf")
                pipe.zrangebyscore(fk, low, "+inf", start=0, num=1, withscores=True)
            replies = pipe.execute()
        found: dict[str, tuple[int, float]] = {}
        for i, k in enumerate(keys):
            count, oldest = replies[2 * i], replies[2 * i + 1]
            if count:
                found[k] = (int(count), float(oldest[0][1]))
        return found

    def remember_jti(self, client_id: str, jti: str, expires_at: float, now: float) -> bool:
        ttl_ms = max(1, int((expires_at - now) * 1000) + 1)
        with self._guard("remember an assertion's jti"):
            return bool(self._r.set(f"{self._prefix}jti:{client_id}:{jti}", "1", nx=True, px=ttl_ms))

    def is_empty(self) -> bool:
        with self._guard("check for data"):
            n = self._r.exists(self._k_keysets, self._k_clients, self._k_revoked, self._k_audit)
        return int(n) == 0

    def append_audit(self, events: Sequence[AuditEvent]) -> None:
        with self._guard("append audit events"):
            self._write(self._append_audit, [], [], events)

    def list_audit(
        self, since: float | None = None, limit: int = 100, before_id: int | None = None
    ) -> list[AuditEvent]:
        limit = clamp_limit(limit)
        if limit == 0:
            return []
        with self._guard("read the audit log"):
            if since is None:
                top = "+inf" if before_id is None else f"({before_id}"
                rows = self._r.zrevrangebyscore(self._k_audit, top, "-inf", start=0, num=limit)
            else:
                rows = self._list_audit_since(
                    keys=[self._k_audit, self._k_audit_at],
                    args=[_num(since), str(limit), "" if before_id is None else str(before_id)],
                )
        return [audit_from_dict(json.loads(str(r))) for r in rows]

    def list_audit_after(self, after_id: int, limit: int = 1000) -> list[AuditEvent]:
        limit = clamp_limit(limit)
        if limit == 0:
            return []
        with self._guard("read the audit log"):
            rows = self._r.zrangebyscore(self._k_audit, f"({after_id}", "+inf", start=0, num=limit)
        return [audit_from_dict(json.loads(str(r))) for r in rows]

    def audit_chain(self) -> AuditChain:
        with self._guard("read the audit chain"):
            first, last = self._r.mget([self._k_audit_first, self._k_audit_last])
        first_id, _, first_prev = str(first or "0:").partition(":")
        last_id, _, last_hash = str(last or "0:").partition(":")
        return AuditChain(int(first_id), first_prev, int(last_id), last_hash)

    def prune_audit(self, before: float, limit: int = 1000) -> int:
        limit = clamp_limit(limit)
        if limit == 0:
            return 0
        with self._guard("prune the audit log"):
            oldest = self._r.zrangebyscore(self._k_audit, "-inf", "+inf", start=0, num=limit)
            run = prunable([audit_from_dict(json.loads(str(r))) for r in oldest], before)
            if not run:
                return 0
            newest = run[-1]
            deleted = self._prune_audit(
                keys=[self._k_audit, self._k_audit_at, self._k_audit_first],
                args=[newest.id, f"{newest.id + 1}:{event_hash(newest)}", *(e.id for e in run)],
            )
        return int(deleted)

    # -- change propagation ---------------------------------------------------------------------

    def subscribe(self, on_change: Callable[[int], None]) -> Callable[[], None]:
        """Call `on_change(revision)` from a daemon thread for every change any writer publishes.

        Also called with the current revision each time the subscription is (re)established, so
        changes made while Redis was unreachable are not missed. Reconnects with a bounded backoff
        (0.1 s doubling to 2 s). Returns a function that stops the thread."""
        stop = threading.Event()
        thread = threading.Thread(
            target=self._listen, args=(on_change, stop), name=f"redis-changes-{self.namespace}", daemon=True
        )

        def cancel() -> None:
            stop.set()
            if thread is not threading.current_thread():
                thread.join(timeout=5)
            with self._sub_lock:
                if cancel in self._subscriptions:
                    self._subscriptions.remove(cancel)

        with self._sub_lock:
            self._subscriptions.append(cancel)
        thread.start()
        return cancel

    @staticmethod
    def _notify(on_change: Callable[[int], None], revision: int) -> None:
        try:
            on_change(revision)
        except Exception:
            log.exception("change callback failed for revision %d", revision)

    def _listen(self, on_change: Callable[[int], None], stop: threading.Event) -> None:
        delay = SUBSCRIBE_BACKOFF_MIN
        failing = False
        while not stop.is_set():
            pubsub = self._r.pubsub()  # type: ignore[no-untyped-call]
            try:
                pubsub.subscribe(self.channel)
                while not stop.is_set():
                    msg = pubsub.get_message(timeout=0.25)
                    if msg is None:
                        continue
                    if msg["type"] == "subscribe":
                        # First subscription, or redis-py re-subscribed after a reconnect: catch up.
                        if failing:
                            log.info("change subscription to Redis at %s resumed", self.where)
                        delay, failing = SUBSCRIBE_BACKOFF_MIN, False
                        with self._guard("read the revision"):
                            current = int(self._r.get(self._k_revision) or 0)
                        self._notify(on_change, current)
                    elif msg["type"] == "message":
                        self._notify(on_change, int(msg["data"]))
            except (RedisError, StoreError, ValueError) as exc:
                if not failing:
                    log.warning("change subscription to Redis at %s lost: %s", self.where, self._describe(exc))
                failing = True
                stop.wait(delay)
                delay = min(delay * 2, SUBSCRIBE_BACKOFF_MAX)
            finally:
                with suppress(RedisError):
                    pubsub.close()

    def close(self) -> None:
        with self._sub_lock:
            cancels = list(self._subscriptions)
        for cancel in cancels:
            cancel()
        close(self._r)
        self._credentials.close()
