"""The Lua scripts of RedisStore (stores/redis.py), which names their keys: every write of state is one
script, so its check, change, audit events, revision bump and publish are one atomic unit.

Every key a script touches carries the store's one hash tag, so on a Redis Cluster each script runs
on the one node that owns the tag's slot.
"""

# Shared head of every write script.
#   KEYS: 1 op, 2 revision, 3 audit, 4 audit_at, 5 audit_seq, 6 audit_last, 7 audit_first,
#         8.. the script's own keys
#   ARGV: 1 channel, 2 op ttl, 3 number of audit events N, 4 audit_seq as the writer read it,
#         5 audit_last after the events, 6 audit_first if the chain starts here, then N triples
#         (id, at, JSON with id and prev), then the script's own arguments from index A.
# A replayed op (same op key) returns the first reply without writing again; it only renews the op
# key, a write that moves this connection's replication offset past the first one, so that a WAIT sent
# after the replay (on another connection than the lost reply's) covers the first write too. Replies
# carry a third element when the audit events were written; {2, 0} when the chain's head moved
# (nothing written).
PRELUDE = """
local done = redis.call('GET', KEYS[1])
if done then
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  return {1, tonumber(done), 1}
end
local N = tonumber(ARGV[3])
local A = 7 + 3 * N
if N > 0 and (redis.call('GET', KEYS[5]) or '') ~= ARGV[4] then return {2, 0} end
local function commit(reply)
  for i = 0, N - 1 do
    redis.call('ZADD', KEYS[3], ARGV[7 + 3 * i], ARGV[9 + 3 * i])
    redis.call('ZADD', KEYS[4], ARGV[8 + 3 * i], ARGV[7 + 3 * i])
  end
  if N > 0 then
    redis.call('SET', KEYS[5], ARGV[7 + 3 * (N - 1)])
    redis.call('SET', KEYS[6], ARGV[5])
    redis.call('SET', KEYS[7], ARGV[6], 'NX')
  end
  local revision = redis.call('INCR', KEYS[2])
  redis.call('PUBLISH', ARGV[1], revision)
  redis.call('SET', KEYS[1], reply, 'EX', ARGV[2])
  return {1, reply, 1}
end
"""

# KEYS 8 keyset hash, 9 keysets set; ARGV A expected revision, A+1 name, A+2 data JSON.
# Replies {1, new keyset revision} or {0, stored revision} (compare-and-set lost: nothing written).
SAVE_KEYSET = (
    PRELUDE
    + """
local stored = tonumber(redis.call('HGET', KEYS[8], 'revision') or '0')
if stored ~= tonumber(ARGV[A]) then return {0, stored} end
redis.call('HSET', KEYS[8], 'revision', stored + 1, 'data', ARGV[A + 2])
redis.call('SADD', KEYS[9], ARGV[A + 1])
return commit(stored + 1)
"""
)

# KEYS 8 client key, 9 clients set, 10 client index; ARGV A client id, A+1 the client's JSON without its closing brace,
# A+2 expected revision ('' for a write whatever is stored). The revision is read from the stored JSON
# (records from before revisions count as 1) and written back into it, one more: the rest of the JSON is
# stored as sent, never re-encoded here (cjson would round its floats). Replies {1, new revision} or
# {0, stored revision} (compare-and-set lost: nothing written).
SAVE_CLIENT = (
    PRELUDE
    + """
local stored = 0
local current = redis.call('GET', KEYS[8])
if current then stored = tonumber(cjson.decode(current)['revision'] or 1) end
if ARGV[A + 2] ~= '' and stored ~= tonumber(ARGV[A + 2]) then return {0, stored} end
redis.call('SET', KEYS[8], ARGV[A + 1] .. ',"revision":' .. string.format('%d', stored + 1) .. '}')
redis.call('SADD', KEYS[9], ARGV[A])
redis.call('ZADD', KEYS[10], 0, ARGV[A])
return commit(stored + 1)
"""
)

# KEYS 8 client key, 9 clients set, 10 client index; ARGV A client id. Replies {1, 1} deleted, {1, 0} no such client
# (then nothing is written: no audit, no revision).
DELETE_CLIENT = (
    PRELUDE
    + """
if redis.call('DEL', KEYS[8]) == 0 then return {1, 0} end
redis.call('SREM', KEYS[9], ARGV[A])
redis.call('ZREM', KEYS[10], ARGV[A])
return commit(1)
"""
)

# KEYS 1 clients set, 2 client index. A store from before the index (or written by a version before it,
# in a rolling upgrade) has ids in the set that the index lacks, or ids deleted from the set only: when
# their counts differ, the index is made again from the set. Replies how many ids it then holds, or -1
# when it was in step. Housekeeping: no revision bump.
INDEX_CLIENTS = """
if redis.call('SCARD', KEYS[1]) == redis.call('ZCARD', KEYS[2]) then return -1 end
redis.call('DEL', KEYS[2])
local ids = redis.call('SMEMBERS', KEYS[1])
for i = 1, #ids, 500 do
  local args = {}
  for j = i, math.min(i + 499, #ids) do
    args[#args + 1] = 0
    args[#args + 1] = ids[j]
  end
  redis.call('ZADD', KEYS[2], unpack(args))
end
return #ids
"""

# KEYS 8 revoked zset; ARGV A expiry, A+1 jti. GT: an earlier expiry never shortens a revocation.
REVOKE_TOKEN = (
    PRELUDE
    + """
redis.call('ZADD', KEYS[8], 'GT', ARGV[A], ARGV[A + 1])
return commit(1)
"""
)

APPEND_AUDIT = PRELUDE + "\nreturn commit(1)\n"

# KEYS 1 audit, 2 audit_at; ARGV 1 since, 2 limit, 3 before id ('' for none). Newest (highest id) first.
# Lua numbers are doubles, printed with 14 digits: a large limit would reach Redis as "4.6e+18", which
# it refuses; so only the few events found are counted here.
LIST_AUDIT_SINCE = """
local limit = tonumber(ARGV[2])
if limit <= 0 then return {} end
local before = math.huge
if ARGV[3] ~= '' then before = tonumber(ARGV[3]) end
local ids = redis.call('ZRANGEBYSCORE', KEYS[2], ARGV[1], '+inf')
local nums = {}
for _, v in ipairs(ids) do
  local n = tonumber(v)
  if n < before then nums[#nums + 1] = n end
end
table.sort(nums, function(a, b) return a > b end)
local out = {}
for i = 1, math.min(limit, #nums) do
  out[i] = redis.call('ZRANGEBYSCORE', KEYS[1], nums[i], nums[i])[1]
end
return out
"""

# KEYS 1 audit, 2 audit_at, 3 audit_first; ARGV 1 the newest pruned id, 2 audit_first after it,
# 3.. the pruned ids. The writer chose the run (stores.prunable) and hashed its newest event; a run
# pruned twice at once is deleted once, and audit_first only moves forward. Housekeeping: no
# revision bump and no publish. Replies how many events went.
PRUNE_AUDIT = """
local n = redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
for i = 3, #ARGV do redis.call('ZREM', KEYS[2], ARGV[i]) end
local first = redis.call('GET', KEYS[3])
if first and tonumber(string.match(first, '^(%d+):')) <= tonumber(ARGV[1]) then
  redis.call('SET', KEYS[3], ARGV[2])
end
return n
"""
