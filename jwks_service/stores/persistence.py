"""Whether the Redis a store reaches keeps its data across a restart (API.md §7).

A Redis with neither an append-only file nor RDB snapshots loses everything when it restarts: every
client, every key of a local keyset (sealed in the store) and every token revocation. The service
keeps running on what it holds in memory, so nothing fails at once; `check-config` and `/readyz`
warn instead (`store_warnings`).

Where the answer comes from, in order:

1. `CONFIG GET appendonly` and `CONFIG GET save`: the configuration itself.
2. `INFO persistence`, when CONFIG is renamed away or refused by an ACL (managed Redis services
   usually do one of the two): `aof_enabled`, and for RDB what the snapshots show. INFO cannot show
   the `save` schedule, only its effect: writes not yet in a snapshot (`rdb_changes_since_last_save`)
   since longer than RDB_MAX_AGE (`rdb_last_save_time`; at start Redis counts the data as saved) mean
   that no schedule saves them.
3. Neither answered: persistence unknown.

`classify_config` and `classify_info` decide without I/O; `probe` asks a redis-py client.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from redis.exceptions import RedisError, ResponseError

from ..errors import StoreError
from .redis import RedisStore

# Redis's default `save` schedule ("3600 1 300 100 60 10000") snapshots one change within an hour;
# unsaved changes twice that old mean that no schedule is saving them.
RDB_MAX_AGE = 7200.0

Source = Literal["config", "info", "unknown"]

NO_PERSISTENCE = "Redis has no persistence (neither AOF nor RDB)"
UNKNOWN = "Redis persistence unknown (CONFIG and INFO refused)"


@dataclass(frozen=True)
class Persistence:
    """What the store's Redis keeps on disk. `aof` / `rdb`: None when it could not be told."""

    aof: bool | None
    rdb: bool | None
    source: Source
    detail: str = ""  # for the operator (log, check-config): what was read, never a secret

    @property
    def durable(self) -> bool | None:
        """True: some persistence; False: none; None: unknown."""
        if self.aof or self.rdb:
            return True
        if self.aof is None or self.rdb is None:
            return None
        return False

    @property
    def warning(self) -> str | None:
        """The public wording of the problem (safe for /readyz), or None when the data persists."""
        durable = self.durable
        if durable is None:
            return UNKNOWN
        return None if durable else NO_PERSISTENCE

    def describe(self) -> str:
        """One line for check-config: what persists, and where that was read."""
        parts = [f"AOF {_word(self.aof)}", f"RDB {_word(self.rdb)}"]
        where = {
            "config": "from CONFIG GET",
            "info": "from INFO persistence: CONFIG refused",
            "unknown": "CONFIG and INFO refused",
        }
        text = ", ".join(parts) + f" ({where[self.source]})"
        return text + (f"; {self.detail}" if self.detail else "")


def _word(flag: bool | None) -> str:
    return "unknown" if flag is None else ("on" if flag else "off")


def classify_config(appendonly: str, save: str) -> Persistence:
    """From `CONFIG GET appendonly` ("yes"/"no") and `CONFIG GET save` ("" or "<seconds> <changes> ...")."""
    return Persistence(aof=appendonly.strip().lower() == "yes", rdb=bool(save.strip()), source="config")


def classify_info(info: Mapping[str, Any], now: float, rdb_max_age: float = RDB_MAX_AGE) -> Persistence:
    """From `INFO persistence` (redis-py's parsed mapping) at `now` (seconds since the epoch)."""
    aof = str(info.get("aof_enabled", "0")) == "1"
    try:
        changes = int(info.get("rdb_changes_since_last_save", 0))
        last_save = float(info.get("rdb_last_save_time", now))
    except (TypeError, ValueError):
        return Persistence(aof=aof, rdb=None, source="info", detail="INFO persistence has no usable RDB fields")
    age = max(0.0, now - last_save)
    if changes and age > rdb_max_age:
        detail = f"{changes} changes not in an RDB snapshot for {age / 60:.0f} min"
        return Persistence(aof=aof, rdb=False, source="info", detail=detail)
    # Nothing unsaved, or unsaved for less than a schedule may take: snapshots are assumed to work.
    return Persistence(aof=aof, rdb=True, source="info", detail=f"{changes} changes since the last RDB snapshot")


def _config_value(reply: Any, name: str) -> str | None:
    if isinstance(reply, Mapping) and name in reply:
        return str(reply[name])
    return None


def probe(client: Any, now: float, rdb_max_age: float = RDB_MAX_AGE) -> Persistence:
    """Ask `client` (a redis-py client) what its server persists. Connection errors and timeouts are
    the caller's (redis-py's exceptions, as every other call raises them): only the refusals that say
    "not for you" (an unknown, renamed or forbidden command: ResponseError, NoPermissionError) move on
    to the next source."""
    try:
        appendonly = _config_value(client.config_get("appendonly"), "appendonly")
        save = _config_value(client.config_get("save"), "save")
    except ResponseError:
        appendonly = save = None
    if appendonly is not None and save is not None:
        return classify_config(appendonly, save)
    try:
        info = client.info("persistence")
    except ResponseError:
        return Persistence(aof=None, rdb=None, source="unknown")
    return classify_info(info, now, rdb_max_age)


def of_store(store: RedisStore, now: float, rdb_max_age: float = RDB_MAX_AGE) -> Persistence:
    """`probe` on the client the store itself uses (its address, credentials, TLS, Sentinel master);
    StoreError when the server cannot be reached."""
    try:
        return probe(store._r, now, rdb_max_age)
    except RedisError as exc:
        raise StoreError(f"Redis at {store.where}: persistence not read ({type(exc).__name__})") from None
