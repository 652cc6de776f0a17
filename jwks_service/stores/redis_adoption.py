"""Adoption records in Redis (API.md §6): which JWKS revision each fetcher holds, and the kids of each
revision. A mixin of RedisStore (it uses the store's connection, key prefix and error guard).

Key layout, under the store's hash tag (one Cluster slot, like every other key of the store):

    {jwks}:fetchers        hash  fetcher -> JSON {"revision", "last_fetch"}
    {jwks}:fetchers_at     zset  fetcher -> last_fetch: expiry after the window, and trimming to max_fetchers
    {jwks}:revisions       hash  ETag -> JSON list of the kids that JWKS revision contained
    {jwks}:revisions_at    zset  ETag -> when it was first recorded: the newest MAX_REVISIONS are kept

A flush is one script: every fetcher's record is replaced only by a later fetch (replicas flush out of
order), then the window and the bounds are applied. These records are not state: no revision INCR, no
change notification, no audit event.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

import redis
from redis.cluster import RedisCluster

from ..adoption import Fetch

# Revisions kept (newest first recorded): a fetcher holding an older one holds nothing known.
MAX_REVISIONS = 256

# KEYS 1 fetchers, 2 fetchers_at, 3 revisions, 4 revisions_at
# ARGV 1 oldest last_fetch kept (now - window), 2 max_fetchers, 3 max revisions, 4 now, 5 number of
# fetches F, then F triples (fetcher, last_fetch, JSON record), then pairs (ETag, JSON kids).
# Deletions go in slices: Lua's unpack takes a few thousand values at most.
_RECORD_FETCHES = """
local F = tonumber(ARGV[5])
for i = 0, F - 1 do
  local name, at = ARGV[6 + 3 * i], tonumber(ARGV[7 + 3 * i])
  local old = redis.call('ZSCORE', KEYS[2], name)
  if not old or tonumber(old) < at then
    redis.call('ZADD', KEYS[2], ARGV[7 + 3 * i], name)
    redis.call('HSET', KEYS[1], name, ARGV[8 + 3 * i])
  end
end
for i = 6 + 3 * F, #ARGV, 2 do
  if redis.call('ZADD', KEYS[4], 'NX', ARGV[4], ARGV[i]) == 1 then
    redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1])
  end
end
local function drop(hash, zset, members)
  for s = 1, #members, 1000 do
    local slice = {}
    for j = s, math.min(s + 999, #members) do slice[#slice + 1] = members[j] end
    redis.call('HDEL', hash, unpack(slice))
    redis.call('ZREM', zset, unpack(slice))
  end
end
local function trim(hash, zset, keep)
  local n = redis.call('ZCARD', zset)
  if n > keep then drop(hash, zset, redis.call('ZRANGE', zset, 0, n - keep - 1)) end
end
drop(KEYS[1], KEYS[2], redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[1]))
trim(KEYS[1], KEYS[2], tonumber(ARGV[2]))
trim(KEYS[3], KEYS[4], tonumber(ARGV[3]))
return 1
"""


def _num(value: float) -> str:
    return repr(float(value))


class AdoptionRecords:
    """record_fetches / list_fetches / list_revisions of the Store protocol, for RedisStore."""

    _r: redis.Redis | RedisCluster  # with decode_responses (stores.redis_connect.Client)
    _prefix: str
    _guard: Callable[[str], AbstractContextManager[None]]
    _record_script: Any = None

    def record_fetches(
        self,
        fetches: Sequence[Fetch],
        revisions: Mapping[str, Sequence[str]],
        now: float,
        window: int,
        max_fetchers: int,
    ) -> None:
        p = self._prefix
        args: list[str] = [_num(now - window), str(max(0, max_fetchers)), str(MAX_REVISIONS), _num(now)]
        args.append(str(len(fetches)))
        for f in fetches:
            record = json.dumps({"revision": f.revision, "last_fetch": f.last_fetch})
            args += [f.fetcher, _num(f.last_fetch), record]
        for etag, kids in revisions.items():
            args += [etag, json.dumps(list(kids))]
        with self._guard("record JWKS fetches"):
            if self._record_script is None:
                self._record_script = self._r.register_script(_RECORD_FETCHES)
            keys = [p + "fetchers", p + "fetchers_at", p + "revisions", p + "revisions_at"]
            self._record_script(keys=keys, args=args)

    def list_fetches(self, since: float) -> list[Fetch]:
        with self._guard("read JWKS fetches"):
            rows = self._r.hgetall(self._prefix + "fetchers")
        found = []
        for name, data in rows.items():
            record = json.loads(data)
            at = float(record["last_fetch"])
            if at >= since:
                found.append(Fetch(str(name), str(record["revision"]), at))
        return sorted(found, key=lambda f: (f.last_fetch, f.fetcher))

    def list_revisions(self) -> dict[str, list[str]]:
        with self._guard("read JWKS revisions"):
            rows = self._r.hgetall(self._prefix + "revisions")
        return {str(etag): [str(k) for k in json.loads(kids)] for etag, kids in rows.items()}
