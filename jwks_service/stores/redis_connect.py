"""The redis-py client of a store URL (API.md §7): the one place that knows the URL forms.

    redis://[USER:PASSWORD@]HOST:PORT/DB          one server
    rediss://[USER:PASSWORD@]HOST:PORT/DB         one server over TLS: the certificate is verified
                                                  against [store] ca_file (or the system CAs) and
                                                  must name HOST
    unix://[USER:PASSWORD@]/PATH?db=DB            one server on a Unix socket
    redis+sentinel://[USER:PASSWORD@]HOST:PORT[,HOST:PORT...]/SERVICE[/DB]
                                                  the master Sentinel names for SERVICE, asked again
                                                  after a failover; the URL's password is the
                                                  Sentinels' and, unless a credential provider gives
                                                  one, the master's
    redis+cluster://[USER:PASSWORD@]HOST:PORT[,HOST:PORT...]
                                                  a Redis Cluster from its seed nodes (database 0)

Every kind gets the same timeouts and retry policy, and the credential provider (password file,
Vault) when one is given: for Sentinel it authenticates the master's connections, not the
Sentinels'. Errors here are ConfigError (a URL that cannot work) or StoreError (a cluster that
cannot be reached while it is being mapped), never a password.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import redis
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.connection import parse_url
from redis.credentials import CredentialProvider
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError
from redis.retry import Retry
from redis.sentinel import Sentinel

from ..addresses import redact_url
from ..configparts import RedisSettings
from ..errors import ConfigError, StoreError

# Either client answers the commands RedisStore sends; all its keys share one hash tag, so on a
# cluster every multi-key command, pipeline and script stays on one node.
Client = redis.Redis | RedisCluster

SINGLE_SCHEMES = ("redis", "rediss", "unix")


@dataclass(frozen=True, slots=True)
class StoreURL:
    """A parsed redis+sentinel:// or redis+cluster:// URL."""

    scheme: str
    hosts: tuple[tuple[str, int], ...]
    username: str | None
    password: str | None
    service: str  # Sentinel only
    db: int

    @property
    def where(self) -> str:
        """For messages: the hosts and, for Sentinel, the service; never the password."""
        hosts = ",".join(f"{h}:{p}" for h, p in self.hosts)
        if self.scheme == "redis+sentinel":
            return f"sentinel {hosts} service {self.service}"
        return f"cluster {hosts}"


def url_password(url: str) -> str | None:
    """The password a URL carries (to keep it out of messages), or None."""
    netloc = urlsplit(url).netloc
    if "@" not in netloc:
        return None
    _, colon, password = netloc.rpartition("@")[0].partition(":")
    return unquote(password) if colon and password else None


def parse_multi(url: str) -> StoreURL:
    """A redis+sentinel:// or redis+cluster:// URL, or ConfigError naming what is wrong (no password)."""
    parts = urlsplit(url)
    scheme = parts.scheme
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    hosts: list[tuple[str, int]] = []
    for item in hostlist.split(","):
        host, _, port = item.rpartition(":")
        host = host.strip("[]")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"store.url {redact_url(url)}: {item!r} is not HOST:PORT")
        hosts.append((host, int(port)))
    username = unquote(userinfo.partition(":")[0]) or None
    segments = [s for s in parts.path.split("/") if s]
    service = ""
    if scheme == "redis+sentinel":
        if not segments or len(segments) > 2:
            raise ConfigError(f"store.url {redact_url(url)}: redis+sentinel:// needs /SERVICE or /SERVICE/DB")
        service = unquote(segments[0])
        db_text = segments[1] if len(segments) == 2 else "0"
    else:
        if len(segments) > 1:
            raise ConfigError(f"store.url {redact_url(url)}: redis+cluster:// takes no path but database 0")
        db_text = segments[0] if segments else "0"
    if not db_text.isdigit() or (scheme == "redis+cluster" and int(db_text) != 0):
        raise ConfigError(f"store.url {redact_url(url)}: database {db_text!r} (a cluster has only database 0)")
    return StoreURL(scheme, tuple(hosts), username, url_password(url), service, int(db_text))


def retry_policy() -> Retry:
    """A few quick retries ride over a restart, a failover or a dropped pooled connection; writes
    stay exactly-once through the scripts' op keys. Timeouts are not retried (redis-py nests the
    connect retries inside the command's), so a silent server fails after about one socket_timeout,
    and a refused connection within a second."""
    return Retry(ExponentialWithJitterBackoff(cap=0.25, base=0.05), retries=2, supported_errors=(RedisConnectionError,))


def connect(
    url: str,
    settings: RedisSettings | None = None,
    *,
    socket_timeout: float = 2.0,
    credential_provider: CredentialProvider | None = None,
) -> tuple[Client, str]:
    """The client for `url` and where it points, for messages (host:port, unix:PATH, the Sentinel
    service or the cluster's seed nodes)."""
    settings = settings or RedisSettings()
    scheme = url.partition(":")[0]
    if settings.ca_file and scheme != "rediss":
        raise ConfigError(f"store.ca_file: TLS needs a rediss:// store.url (got {redact_url(url)})")
    common: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": socket_timeout,
        "retry": retry_policy(),
        "decode_responses": True,
    }
    auth: dict[str, Any] = {"credential_provider": credential_provider} if credential_provider else {}
    if scheme in SINGLE_SCHEMES:
        return _single(url, settings, common, auth)
    if scheme == "redis+sentinel":
        return _sentinel(parse_multi(url), common, auth)
    if scheme == "redis+cluster":
        return _cluster(parse_multi(url), common, auth)
    raise StoreError(
        f"invalid Redis URL {redact_url(url)}: the scheme must be redis, rediss, unix, redis+sentinel or redis+cluster"
    )


def _single(url: str, settings: RedisSettings, common: dict[str, Any], auth: dict[str, Any]) -> tuple[Client, str]:
    try:
        kwargs: dict[str, Any] = parse_url(url)  # type: ignore[no-untyped-call]
    except ValueError as exc:
        raise StoreError(f"invalid Redis URL {redact_url(url)}: {str(exc).replace(url, redact_url(url))}") from None
    if auth:  # the provider's credentials replace the URL's (redis-py refuses both)
        kwargs.pop("username", None)
        kwargs.pop("password", None)
    if url.startswith("rediss:"):
        kwargs.update(ssl_cert_reqs="required", ssl_check_hostname=True)
        if settings.ca_file:
            kwargs["ssl_ca_certs"] = settings.ca_file
    pool = redis.ConnectionPool(**kwargs, **common, **auth, health_check_interval=10)
    client = redis.Redis.from_pool(pool)  # owns the pool: close() closes its connections
    where = (
        f"unix:{kwargs['path']}"
        if "path" in kwargs
        else f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"
    )
    return client, where


def _sentinel(target: StoreURL, common: dict[str, Any], auth: dict[str, Any]) -> tuple[Client, str]:
    login = {k: v for k, v in (("username", target.username), ("password", target.password)) if v}
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        list(target.hosts),
        sentinel_kwargs={
            **login,
            "socket_timeout": common["socket_timeout"],
            "socket_connect_timeout": common["socket_timeout"],
            # A Sentinel that does not answer is skipped for the next one at once: redis-py's default
            # retries (with backoff from 1 s) would hold every master lookup on a dead Sentinel.
            "retry": Retry(NoBackoff(), 0),
        },
        **common,
    )
    client: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
        target.service, db=target.db, health_check_interval=10, **(auth or login)
    )
    return client, target.where


def _cluster(target: StoreURL, common: dict[str, Any], auth: dict[str, Any]) -> tuple[Client, str]:
    login = {k: v for k, v in (("username", target.username), ("password", target.password)) if v}
    try:
        nodes = [ClusterNode(h, p) for h, p in target.hosts]  # type: ignore[no-untyped-call]
        client = RedisCluster(startup_nodes=nodes, **common, **(auth or login))
    except (RedisClusterException, RedisError) as exc:
        text = str(exc) or type(exc).__name__
        if target.password:
            text = text.replace(target.password, "***")
        refused = "WRONGPASS" in text or "username-password" in text or "NOAUTH" in text
        problem = "refused the credentials" if refused else "unreachable"
        raise StoreError(f"Redis at {target.where} {problem} (map the cluster): {text}") from None
    return client, target.where


def close(client: Client) -> None:
    """Close the client's connections, and for Sentinel those to the Sentinels too."""
    pool = getattr(client, "connection_pool", None)
    manager = getattr(pool, "sentinel_manager", None)
    client.close()
    for sentinel in getattr(manager, "sentinels", ()):
        sentinel.close()
