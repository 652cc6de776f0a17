"""The service's own Redis credentials (API.md §7): where they come from, and how a change reaches the connections.

Three sources, each a redis-py `CredentialProvider`, which redis-py asks at every new connection, in the
thread that connects (a worker thread, never the event loop):

- `PasswordFile` (store.password_file): the file's content, e.g. rendered by Vault Agent.
- `VaultKV` (store.vault_kv, ``<KV v2 data path>#<field>``): one field of the latest version, read with the
  service's own Vault login (the token of vault_auth.VaultAuth, shared with Transit).
- `VaultCreds` (store.vault_creds): the database secrets engine's dynamic credentials, a username and a
  password under a lease. A daemon thread renews the lease at 2/3 of its TTL. When a renewal comes back
  shorter than asked (the lease's max TTL is near: Vault cannot extend it further) or the lease cannot be
  renewed, it reads new credentials: new connections use them at once, idle connections are closed (now,
  and again SETTLE seconds later) so that they reconnect with them, and a connection still busy with the
  old user is closed by Redis when Vault revokes the old lease, then reconnected by redis-py's retry.

The username of the first two is the store URL's (``redis://jwks@host:6379/0``), if any; the URL carries
no password then. On WRONGPASS or NOAUTH (both parsed by redis-py as `AuthenticationError`, whether at
the handshake of a new connection or on a command) `CredentialRetry`, installed as the client's Retry,
re-reads the source once before redis-py reconnects and sends the command again: refusals at the same
moment share one read, and a read less than REFRESH_COOLDOWN old stands.

A source that cannot be read raises `CredentialsUnavailableError`, a redis-py ConnectionError (redis-py
closes the half-open connection, RedisStore reports the store unreachable) whose message names the
setting and path, never a secret. `secrets()` lists the passwords handed out, for RedisStore to redact.
On `close()`, VaultCreds revokes its leases (best effort: with ``update`` on sys/leases/revoke; else
they expire by themselves).
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, cast

from redis.credentials import CredentialProvider
from redis.exceptions import AuthenticationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.retry import Retry

from ..errors import ConfigError, JwksServiceError, KeyValidationError, UnavailableError
from ..files import read
from ..vaultapi import VaultClient, VaultPermissionError, VaultRequest

log = logging.getLogger(__name__)

REFRESH_COOLDOWN = 1.0  # seconds: a read this recent is what a refusal gets, not another read
KEPT_SECRETS = 8  # passwords remembered for redaction (the current one and those before it)
RENEW_FRACTION = 2 / 3  # renew a lease when a third of its TTL is left
SETTLE = 1.0  # seconds after new dynamic credentials: close the idle connections once more
MIN_DELAY = 0.2
MAX_RETRY = 5.0  # Vault unreachable: try again at most this long after


class CredentialsUnavailableError(RedisConnectionError):
    """The source of the Redis credentials could not be read (the message names it, never a secret)."""


def split_user(url: str) -> tuple[str, str]:
    """The store URL without its user part, and the username it named ("" for none). Works for every
    scheme the store takes (redis, rediss, unix, redis+sentinel, redis+cluster)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url, ""
    netloc, slash, tail = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    if not at:
        return url, ""
    return f"{scheme}://{hosts}{slash}{tail}", userinfo.partition(":")[0]


def redact(text: str, *secrets: str | None) -> str:
    """`text` with every one of `secrets` replaced by ***."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


class RedisCredentials(CredentialProvider):
    """The cached credentials of one source; thread-safe. Subclasses read the source (`_read`)."""

    setting = ""  # the [store] setting, for messages

    def __init__(self, where: str, username: str = "", *, on_close: Iterable[Callable[[], None]] = ()) -> None:
        self.where = where  # the file or Vault path, for messages (never a secret)
        self.username = username
        self.reads = 0  # successful reads of the source
        self._current: tuple[str, str] | None = None  # (username, password)
        self._secrets: deque[str] = deque(maxlen=KEPT_SECRETS)
        self._refused_at = float("-inf")  # when a refusal last had the source read
        self._read_lock = threading.Lock()
        self._clients: list[Any] = []  # redis.Redis or RedisCluster
        self._on_close = list(on_close)

    def describe(self) -> str:
        return f"{self.setting} {self.where}"

    def _read(self) -> tuple[str, str]:
        raise NotImplementedError

    # ----- what redis-py calls --------------------------------------------------------------------

    def get_credentials(self) -> tuple[str] | tuple[str, str]:
        current = self._current
        if current is None:
            current = self._load(first=True)
        user, password = current
        return (user, password) if user else (password,)

    def install(self, client: Any) -> RedisCredentials:
        """Make `client` re-read this source when Redis refuses it (its Retry becomes a CredentialRetry),
        and close its idle connections when the credentials are replaced. Returns self."""
        base = client.get_retry()
        if base is not None:
            client.set_retry(CredentialRetry(self, base))
        self._clients.append(client)
        return self

    # ----- reading ------------------------------------------------------------------------------

    def _load(self, *, first: bool = False, force: bool = False) -> tuple[str, str]:
        """Read the source: the first time (unless another thread just did), on a refusal (unless another
        refusal had it read less than REFRESH_COOLDOWN ago: refusals at once share one read), or `force`."""
        with self._read_lock:
            current, now = self._current, time.monotonic()
            if current is not None and not force and (first or now - self._refused_at < REFRESH_COOLDOWN):
                return current
            if not first and not force:
                self._refused_at = now
            fresh = self._read()
            self._current = fresh
            self.reads += 1
            if fresh[1] not in self._secrets:
                self._secrets.append(fresh[1])
            if current is not None:
                self._replaced(changed=fresh != current)
            return fresh

    def _replaced(self, *, changed: bool) -> None:
        log.info(
            "Redis refused the credentials: re-read %s (%s)",
            self.describe(),
            "changed" if changed else "unchanged: the refusal stands until the source changes",
        )

    def refresh(self) -> bool:
        """Read the source again now (Redis refused what it gave): True when the credentials changed.
        Refusals within REFRESH_COOLDOWN of another refusal's read share it. CredentialsUnavailableError
        when the source cannot be read."""
        before = self._current
        return self._load() != before

    def refused(self, error: BaseException) -> None:
        """Redis refused the credentials (CredentialRetry): re-read them. A source that cannot be read is
        logged; the retry then goes on with what it has, and fails as Redis answers."""
        try:
            self.refresh()
        except CredentialsUnavailableError as exc:
            log.warning("Redis refused the credentials (%s) and %s", type(error).__name__, exc)

    def secrets(self) -> tuple[str, ...]:
        """The passwords handed out (the current one and a few before), for redaction."""
        return tuple(self._secrets)

    def close(self) -> None:
        for closer in self._on_close:
            closer()
        self._on_close.clear()

    def _unavailable(self, why: str) -> CredentialsUnavailableError:
        return CredentialsUnavailableError(
            f"{self.setting}: cannot read the Redis credentials from {self.where}: {why}"
        )


class CredentialRetry(Retry):
    """The client's Retry, also on AuthenticationError (WRONGPASS, NOAUTH), which first has the source
    re-read. redis-py copies a Retry for each connection: the copies share the credentials."""

    def __init__(self, credentials: RedisCredentials, base: Retry) -> None:
        errors: tuple[type[Exception], ...] = tuple(base._supported_errors)
        if AuthenticationError not in errors:
            errors += (AuthenticationError,)
        super().__init__(base._backoff, base.get_retries(), errors)
        self.credentials = credentials
        self._base = base

    def __deepcopy__(self, memo: dict[int, Any]) -> CredentialRetry:
        return CredentialRetry(self.credentials, copy.deepcopy(self._base, memo))

    def call_with_retry(
        self,
        do: Callable[[], Any],
        fail: Callable[..., Any],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> Any:
        def failed(error: Exception, *count: int) -> Any:
            if isinstance(error, AuthenticationError):
                self.credentials.refused(error)
            return cast(Any, fail)(error, *count)

        return super().call_with_retry(do, failed, is_retryable, with_failure_count)


class PasswordFile(RedisCredentials):
    setting = "store.password_file"

    def _read(self) -> tuple[str, str]:
        try:
            data = read(self.where, self.setting, ConfigError)
        except ConfigError as exc:
            raise CredentialsUnavailableError(exc.description) from None
        try:
            password = data.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise self._unavailable("not UTF-8 text") from None
        if not password:
            raise self._unavailable("the file is empty")
        return self.username, password


class VaultKV(RedisCredentials):
    """One field of a KV v2 secret: ``GET <mount>/data/<name>`` answers ``{"data": {"data": {...}}}``."""

    setting = "store.vault_kv"

    def __init__(
        self,
        vault: VaultClient,
        path: str,
        field: str,
        username: str = "",
        *,
        on_close: Iterable[Callable[[], None]] = (),
    ) -> None:
        super().__init__(f"{path}#{field}", username, on_close=on_close)
        self._vault, self._path, self._field = vault, path, field

    def _read(self) -> tuple[str, str]:
        mount = self._path.partition("/")[0]
        request = VaultRequest.get(self._path, replayable=True, engine=("kv", mount))
        try:
            answer = self._vault.call(request)
        except JwksServiceError as exc:
            raise self._unavailable(exc.description) from None
        data = ((answer or {}).get("data") or {}).get("data") or {}
        password = data.get(self._field)
        if not isinstance(password, str) or not password:
            raise self._unavailable(f"the latest version has no (non-empty) field {self._field!r}")
        return self.username, password


class VaultCreds(RedisCredentials):
    """Dynamic credentials (``GET database/creds/<role>``), leased, renewed and replaced by a thread."""

    setting = "store.vault_creds"

    def __init__(self, vault: VaultClient, path: str, *, on_close: Iterable[Callable[[], None]] = ()) -> None:
        super().__init__(path, on_close=on_close)
        self._vault = vault
        self.renewals = 0
        self.leases = 0  # leases obtained (the first one and every replacement)
        self._lease_id = ""
        self._asked = 0  # the increment a renewal asks for: the lease's first TTL
        self._expires = float("inf")  # time.monotonic() when the current lease ends
        self._renewable = False
        self._due = float("inf")  # when the thread renews (or replaces) next
        self._settle_at: float | None = None
        self._backoff = 0.0
        self._old_leases: deque[str] = deque(maxlen=KEPT_SECRETS)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _read(self) -> tuple[str, str]:
        try:
            answer = self._vault.call(VaultRequest.get(self.where, engine=("database", self.where.partition("/")[0])))
        except JwksServiceError as exc:
            raise self._unavailable(exc.description) from None
        data = (answer or {}).get("data") or {}
        user, password = data.get("username"), data.get("password")
        if not isinstance(user, str) or not isinstance(password, str) or not user or not password:
            raise self._unavailable("the answer has no username and password")
        ttl = int(answer.get("lease_duration") or 0)
        now = time.monotonic()
        if self._lease_id:
            self._old_leases.append(self._lease_id)
        self._lease_id = str(answer.get("lease_id") or "")
        self._asked = ttl
        self._renewable = bool(answer.get("renewable")) and bool(self._lease_id)
        self._expires = now + ttl if ttl > 0 else float("inf")
        self._due = now + ttl * RENEW_FRACTION if ttl > 0 else float("inf")
        self._backoff = 0.0
        self.leases += 1
        log.info(
            "new Redis credentials from Vault %s: lease valid for %ss, %s",
            self.where,
            ttl or "ever",
            "renewable" if self._renewable else "not renewable",
        )
        self._start()
        self._wake.set()
        return user, password

    def _replaced(self, *, changed: bool) -> None:
        self._disconnect_idle()
        self._settle_at = time.monotonic() + SETTLE

    def _disconnect_idle(self) -> None:
        for client in self._clients:
            pool = getattr(client, "connection_pool", None)
            pools = [pool] if pool is not None else [n.redis_connection.connection_pool for n in client.get_nodes()]
            for each in pools:  # a cluster has one pool per node
                if each is not None:
                    each.disconnect(inuse_connections=False)

    # ----- the lease thread ---------------------------------------------------------------------

    def _start(self) -> None:
        if self._thread is None and not self._stop.is_set():
            self._thread = threading.Thread(target=self._run, name="redis-credentials-lease", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            wake_at = min(self._due, self._settle_at if self._settle_at is not None else float("inf"))
            if self._wake.wait(max(0.0, min(wake_at - now, 3600.0))):
                self._wake.clear()
                continue
            if self._stop.is_set():
                return
            try:
                self._round()
            except Exception:  # never let the thread die: the lease would expire under the service
                log.exception("renewing the Redis credentials' lease failed unexpectedly")
                self._due = time.monotonic() + MAX_RETRY

    def _round(self) -> None:
        now = time.monotonic()
        if self._settle_at is not None and now >= self._settle_at:
            self._settle_at = None
            self._disconnect_idle()  # connections that were busy at the replacement and have been released
        if now < self._due:
            return
        if not self._renewable or not self._renew():
            self._replace()

    def _renew(self) -> bool:
        """Renew the lease; False when it should be replaced now (refused, or capped by its max TTL)."""
        body = {"lease_id": self._lease_id, "increment": self._asked}
        try:
            answer = self._vault.call(VaultRequest.post("sys/leases/renew", "update", body))
        except KeyValidationError as exc:  # 400: the lease is gone (expired, revoked) or not renewable
            log.warning("Vault refused to renew the lease of the Redis credentials (%s): reading new ones", exc)
            return False
        except UnavailableError as exc:
            self._retry_later(f"cannot renew the lease of the Redis credentials: {exc.description}")
            return True
        ttl = int((answer or {}).get("lease_duration") or 0)
        self.renewals += 1
        self._expires = time.monotonic() + ttl
        if ttl < self._asked:
            log.info("the lease of the Redis credentials reaches its max TTL in %ss: reading new ones", ttl)
            return False
        self._due = time.monotonic() + ttl * RENEW_FRACTION
        return True

    def _replace(self) -> None:
        try:
            self._load(force=True)
        except CredentialsUnavailableError as exc:
            self._retry_later(str(exc))

    def _retry_later(self, why: str) -> None:
        """Vault unreachable: back off (1, 2, 4, 5 ... s), but never past a third of what is left."""
        self._backoff = min(MAX_RETRY, max(1.0, self._backoff * 2))
        left = self._expires - time.monotonic()
        delay = self._backoff if left <= 0 else max(MIN_DELAY, min(self._backoff, left / 3))
        log.warning("%s; trying again in %.1fs", why, delay)
        self._due = time.monotonic() + delay

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=2)
        for lease in [*self._old_leases, self._lease_id]:
            if lease:
                self._revoke(lease)
        super().close()

    def _revoke(self, lease: str) -> None:
        try:
            self._vault.call(VaultRequest.post("sys/leases/revoke", "update", {"lease_id": lease}))
        except VaultPermissionError:
            log.debug("no permission to revoke the lease of the Redis credentials: it expires by itself")
        except Exception as exc:  # best effort at shutdown: the lease expires by itself
            log.debug("revoking the lease of the Redis credentials failed (%s): it expires by itself", exc)


Provider = RedisCredentials | None  # RedisStore's credential_provider
NO_CREDENTIALS = RedisCredentials("")  # a store whose URL carries its credentials: nothing to redact or close
