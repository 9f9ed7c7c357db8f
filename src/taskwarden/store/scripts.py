"""The store's Lua scripts: every multi-key change is one script, so a crash between two writes
cannot tear a watch, and the transition event is written in the same step as the transition.

Each state change keeps these in step: the watch hash, ``state:<state>`` (id -> when it entered
the state), ``counts:<provider>`` (state -> n), ``updated`` (id -> updated at), the history list
and one entry on the ``events`` stream (fields: watch_id, provider, remote_id, from, to, raw,
progress, note, at; ``from`` empty on register). A change to a final state also scores the watch
in ``finished`` by when it may be removed: now + its own ``retention`` field, else the
retention of that state (an argument); a re-arm takes it out again. :data:`REMOVE` is the only
script that deletes a watch, with every entry the others made.
"""

from __future__ import annotations

from taskwarden.lifecycle import FINAL_STATES, State

_FINAL_LUA = "local final = {" + ", ".join(f"['{s}'] = true" for s in sorted(FINAL_STATES)) + "}\n"
_REARMABLE_LUA = f"local rearmable = {{['{State.ERROR}'] = true, ['{State.TIMED_OUT}'] = true}}\n"

# event(stream, maxlen, id, provider, remote_id, from, to, raw, progress, note, at)
_EVENT_LUA = """
local function event(stream, maxlen, id, provider, remote_id, from, to, raw, progress, note, at)
  redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', 'watch_id', id, 'provider', provider,
    'remote_id', remote_id, 'from', from, 'to', to, 'raw', raw or '', 'progress', progress or '',
    'note', note or '', 'at', at)
end
"""

# KEYS: all, providers, updated, events.
# ARGV: now, events maxlen, note, then the prefixes of watch, history, provider, due and counts
#   keys, the state:pending key, then six per registration: id, provider, remote_id, history
#   entry, its hash fields (a JSON array: field, value, ...), its label keys (a JSON array).
# Returns 1 for each watch created, 0 for each that existed (in order). A batch of
# registrations is one call, so that its arguments are few (packing them was most of a
# pipelined registration's cost); each registration is still all-or-nothing.
REGISTER = (
    _EVENT_LUA
    + """
local now, maxlen, note = ARGV[1], ARGV[2], ARGV[3]
local watch, history, by_provider, due, counts, pending =
  ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9]
local out, added = {}, {}
for i = 10, #ARGV, 6 do
  local id, provider, remote_id = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  if redis.call('EXISTS', watch .. id) == 1 then
    out[#out + 1] = 0
  else
    redis.call('HSET', watch .. id, unpack(cjson.decode(ARGV[i + 4])))
    redis.call('LPUSH', history .. id, ARGV[i + 3])
    redis.call('ZADD', KEYS[1], now, id)
    redis.call('ZADD', pending, now, id)
    redis.call('ZADD', by_provider .. provider, now, id)
    redis.call('ZADD', due .. provider, now, id)
    redis.call('ZADD', KEYS[3], now, id)
    for _, key in ipairs(cjson.decode(ARGV[i + 5])) do redis.call('ZADD', key, now, id) end
    event(KEYS[4], maxlen, id, provider, remote_id, '', 'pending', '', '', note, now)
    added[provider] = (added[provider] or 0) + 1
    out[#out + 1] = 1
  end
end
-- once per provider, not per watch: the call is atomic, so no reader sees them apart
for provider, n in pairs(added) do
  redis.call('SADD', KEYS[2], provider)
  redis.call('HINCRBY', counts .. provider, 'pending', n)
end
return out
"""
)

# KEYS: the workers sorted set. ARGV: heartbeat prefix, queues prefix, most nodes to read.
# Returns node, last heartbeat, queues JSON ('' when the node reports none) for each live node,
# the newest first, and drops the nodes whose heartbeat key has expired.
WORKERS = """
local nodes = redis.call('ZREVRANGE', KEYS[1], 0, tonumber(ARGV[3]) - 1)
local out = {}
for _, node in ipairs(nodes) do
  local at = redis.call('GET', ARGV[1] .. node)
  if at then
    out[#out + 1] = node
    out[#out + 1] = at
    out[#out + 1] = redis.call('GET', ARGV[2] .. node) or ''
  else
    redis.call('ZREM', KEYS[1], node)
  end
end
return out
"""

# KEYS: due:<p>, leases, inflight:<p>. ARGV: now, limit, lease_until, watch prefix.
CLAIM = """
local now, limit, lease_until, watch_prefix = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, limit)
local out = {}
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  if redis.call('EXISTS', watch_prefix .. id) == 1 then
    local fence = redis.call('HINCRBY', watch_prefix .. id, 'fence', 1)
    redis.call('ZADD', KEYS[2], lease_until, id)
    redis.call('ZADD', KEYS[3], now, id)
    out[#out + 1] = id
    out[#out + 1] = fence
  end
end
return out
"""

REAP = (
    _FINAL_LUA
    + """
local now, limit, watch_prefix, due_prefix = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local inflight_prefix = ARGV[5]
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, limit)
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  local w = redis.call('HMGET', watch_prefix .. id, 'provider', 'state')
  if w[1] then redis.call('ZREM', inflight_prefix .. w[1], id) end
  if w[1] and not final[w[2]] then
    redis.call('HINCRBY', watch_prefix .. id, 'fence', 1)
    redis.call('ZADD', due_prefix .. w[1], now, id)
  end
end
return #ids
"""
)

# KEYS: watch, history, leases, updated, events, finished.
# ARGV: id, fence, now, state, next_poll_at, lease_until, history entry, history_limit,
#   state_prefix, due_prefix, counts_prefix, events maxlen, raw, progress, note, retention of
#   ``state`` if final ('' otherwise), failing_prefix, failing since ('' when its checks are not
#   failing), inflight_prefix, then field/value pairs.
COMMIT = (
    _FINAL_LUA
    + _EVENT_LUA
    + """
local id, fence, now, state, next_at = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local lease_until, entry, limit = ARGV[6], ARGV[7], tonumber(ARGV[8])
local state_prefix, due_prefix, counts_prefix, maxlen = ARGV[9], ARGV[10], ARGV[11], ARGV[12]
local raw, progress, note, keep = ARGV[13], ARGV[14], ARGV[15], ARGV[16]
local failing_prefix, failing_since, inflight_prefix = ARGV[17], ARGV[18], ARGV[19]
local w = redis.call('HMGET', KEYS[1], 'fence', 'state', 'provider', 'remote_id', 'retention')
if w[1] ~= fence then return 0 end
redis.call('ZREM', inflight_prefix .. w[3], id)
if final[w[2]] then return 0 end
local fields = {'state', state, 'updated_at', now}
for i = 20, #ARGV do fields[#fields + 1] = ARGV[i] end
if failing_since ~= '' then
  redis.call('ZADD', failing_prefix .. w[3], failing_since, id)
else
  redis.call('ZREM', failing_prefix .. w[3], id)
end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('ZADD', KEYS[4], now, id)
if w[2] ~= state then
  redis.call('ZREM', state_prefix .. w[2], id)
  redis.call('ZADD', state_prefix .. state, now, id)
  redis.call('HINCRBY', counts_prefix .. w[3], w[2], -1)
  redis.call('HINCRBY', counts_prefix .. w[3], state, 1)
  event(KEYS[5], maxlen, id, w[3], w[4], w[2], state, raw, progress, note, now)
end
if final[state] then
  if w[5] and w[5] ~= '' then keep = w[5] end
  redis.call('ZADD', KEYS[6], tonumber(now) + tonumber(keep), id)
end
if next_at ~= '' then redis.call('ZADD', due_prefix .. w[3], next_at, id) end
if lease_until ~= '' then
  redis.call('ZADD', KEYS[3], lease_until, id)
else
  redis.call('ZREM', KEYS[3], id)
end
if entry ~= '' then
  redis.call('LPUSH', KEYS[2], entry)
  redis.call('LTRIM', KEYS[2], 0, limit - 1)
end
return 1
"""
)

# KEYS: watch, history, leases, updated, events, finished.
# ARGV: id, now, history entry, history_limit, state_prefix, due_prefix, counts_prefix,
#   events maxlen, note, retention of cancelled, failing_prefix, inflight_prefix. Returns -1:
#   no such watch, 0: it had ended, 1: cancelled.
CANCEL = (
    _FINAL_LUA
    + _EVENT_LUA
    + """
local id, now, entry, limit = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local state_prefix, due_prefix, counts_prefix, maxlen, note = ARGV[5], ARGV[6], ARGV[7], ARGV[8],
  ARGV[9]
local keep, failing_prefix, inflight_prefix = ARGV[10], ARGV[11], ARGV[12]
local w = redis.call('HMGET', KEYS[1], 'state', 'provider', 'remote_id', 'raw_status', 'progress',
  'retention')
if not w[1] then return -1 end
if final[w[1]] then return 0 end
redis.call('HINCRBY', KEYS[1], 'fence', 1)
redis.call('HSET', KEYS[1], 'state', 'cancelled', 'updated_at', now, 'finished_at', now,
  'next_poll_at', '')
redis.call('ZREM', state_prefix .. w[1], id)
redis.call('ZADD', state_prefix .. 'cancelled', now, id)
redis.call('HINCRBY', counts_prefix .. w[2], w[1], -1)
redis.call('HINCRBY', counts_prefix .. w[2], 'cancelled', 1)
redis.call('ZADD', KEYS[4], now, id)
redis.call('ZREM', due_prefix .. w[2], id)
redis.call('ZREM', KEYS[3], id)
redis.call('ZREM', inflight_prefix .. w[2], id)
if w[6] and w[6] ~= '' then keep = w[6] end
redis.call('ZADD', KEYS[6], tonumber(now) + tonumber(keep), id)
redis.call('ZREM', failing_prefix .. w[2], id)
redis.call('LPUSH', KEYS[2], entry)
redis.call('LTRIM', KEYS[2], 0, limit - 1)
event(KEYS[5], maxlen, id, w[2], w[3], w[1], 'cancelled', w[4], w[5], note, now)
return 1
"""
)

# KEYS: watch, history, leases, updated, events, finished.
# ARGV: id, now, history_limit, state_prefix, due_prefix, counts_prefix, events maxlen, the
#   outcome field (cleared: the next end decides its own), failing_prefix, inflight_prefix, the
#   progress track fields (deleted).
# Returns -1: no such watch, 1: re-armed, or the state the watch is in when it cannot be.
REARM = (
    _REARMABLE_LUA
    + _EVENT_LUA
    + """
local id, now, limit = ARGV[1], ARGV[2], tonumber(ARGV[3])
local state_prefix, due_prefix, counts_prefix, maxlen = ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local outcome_field, failing_prefix, inflight_prefix = ARGV[8], ARGV[9], ARGV[10]
local w = redis.call('HMGET', KEYS[1], 'state', 'provider', 'remote_id', 'timeout', 'last_error',
  'raw_status', 'progress')
if not w[1] then return -1 end
if not rearmable[w[1]] then return w[1] end
local deadline = ''
if w[4] and w[4] ~= '' then
  deadline = string.format('%.17g', tonumber(now) + tonumber(w[4]))
end
local note = 're-armed'
if w[5] and w[5] ~= '' then note = 're-armed (was ' .. w[1] .. ': ' .. w[5] .. ')' end
redis.call('HINCRBY', KEYS[1], 'fence', 1)
redis.call('HSET', KEYS[1], 'state', 'pending', 'updated_at', now, 'finished_at', '',
  'next_poll_at', now, 'errors', 0, 'last_error', '', 'last_error_kind', '', 'interval', '',
  'deadline', deadline, outcome_field, '', 'failing_since', '')
redis.call('ZREM', failing_prefix .. w[2], id)
redis.call('HDEL', KEYS[1], ARGV[11], ARGV[12])
redis.call('ZREM', state_prefix .. w[1], id)
redis.call('ZADD', state_prefix .. 'pending', now, id)
redis.call('HINCRBY', counts_prefix .. w[2], w[1], -1)
redis.call('HINCRBY', counts_prefix .. w[2], 'pending', 1)
redis.call('ZADD', KEYS[4], now, id)
redis.call('ZREM', KEYS[3], id)
redis.call('ZREM', inflight_prefix .. w[2], id)
redis.call('ZREM', KEYS[6], id)
redis.call('ZADD', due_prefix .. w[2], now, id)
-- by hand: cjson would print ``now`` with 14 digits, less than the clock gives
local entry = '{"at":' .. now .. ',"from":' .. cjson.encode(w[1])
  .. ',"to":"pending","raw":null,"note":' .. cjson.encode(note) .. '}'
redis.call('LPUSH', KEYS[2], entry)
redis.call('LTRIM', KEYS[2], 0, limit - 1)
event(KEYS[5], maxlen, id, w[2], w[3], w[1], 'pending', w[6], w[7], note, now)
return 1
"""
)

# KEYS: finished, watches, updated, leases.
# ARGV: mode ('due': only a final watch whose time in ``finished`` has come, by ``now``;
#   'final': any final watch; 'force': any watch), now, then the key prefixes of watch, history,
#   state, provider, due, counts, running, failing and inflight, then per watch: id, its labels
#   as the caller read them, the number n of its label keys and those n keys (the caller builds
#   them: Lua's JSON is not Python's).
# Returns, per watch: 1 removed, 0 no such watch, or the state it is in when it is kept (a
#   non-final watch; 'changed' when its labels are not what the caller read; 'kept' when its
#   time has not come). Everything a watch has goes in one step: hash, history, every index
#   entry (failing and in flight too), its count, the archive-run marker.
REMOVE = (
    _FINAL_LUA
    + """
local mode, now = ARGV[1], tonumber(ARGV[2])
local wp, hp, sp, pp, dp, cp, rp = ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9]
local fp, ip = ARGV[10], ARGV[11]
local out = {}
local i = 12
while i <= #ARGV do
  local id, labels, n = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  local first = i + 3
  i = first + n
  local w = redis.call('HMGET', wp .. id, 'state', 'provider', 'labels')
  local verdict = 1
  if not w[1] then
    verdict = 0
  elseif mode ~= 'force' and not final[w[1]] then
    verdict = w[1]
  elseif (w[3] or '') ~= labels then
    verdict = 'changed'
  elseif mode == 'due' then
    local at = redis.call('ZSCORE', KEYS[1], id)
    if not at or tonumber(at) > now then verdict = 'kept' end
  end
  if verdict == 1 then
    redis.call('DEL', wp .. id, hp .. id, rp .. id)
    for k = 1, 4 do redis.call('ZREM', KEYS[k], id) end
    redis.call('ZREM', sp .. w[1], id)
    redis.call('ZREM', pp .. w[2], id)
    redis.call('ZREM', dp .. w[2], id)
    redis.call('ZREM', fp .. w[2], id)
    redis.call('ZREM', ip .. w[2], id)
    for k = first, first + n - 1 do redis.call('ZREM', ARGV[k], id) end
    if tonumber(redis.call('HINCRBY', cp .. w[2], w[1], -1)) == 0 then
      redis.call('HDEL', cp .. w[2], w[1])
    end
  elseif mode == 'due' and (verdict == 0 or final[w[1]] == nil and verdict ~= 'changed') then
    redis.call('ZREM', KEYS[1], id)  -- a stale entry (no watch, or not final): never due
  end
  out[#out + 1] = verdict
end
return out
"""
)

# KEYS: watch, history. ARGV: entry, history_limit. A line only while the watch exists, so a
# note after a removal leaves no history behind.
NOTE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('LPUSH', KEYS[2], ARGV[1])
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[2]) - 1)
return 1
"""

# KEYS: watch, leases. ARGV: fence, until, id, inflight_prefix. The renewed lease is an
# archive's: the watch's check is no longer in flight.
RENEW = """
local w = redis.call('HMGET', KEYS[1], 'fence', 'provider')
if w[1] ~= ARGV[1] then return 0 end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
if w[2] then redis.call('ZREM', ARGV[4] .. w[2], ARGV[3]) end
return 1
"""

RENEW_RUN = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
"""

END_RUN = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"""

# KEYS: a sorted set. ARGV: member, score, count, '1' for descending.
# The ``count`` members that follow (member, score) in the set's order, with their scores; nil
# when the member is no longer there with that score (the caller then resumes by score).
AFTER = """
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not s or tonumber(s) ~= tonumber(ARGV[2]) then return false end
local n = tonumber(ARGV[3])
if ARGV[4] == '1' then
  local rank = redis.call('ZREVRANK', KEYS[1], ARGV[1])
  return redis.call('ZREVRANGE', KEYS[1], rank + 1, rank + n, 'WITHSCORES')
end
local rank = redis.call('ZRANK', KEYS[1], ARGV[1])
return redis.call('ZRANGE', KEYS[1], rank + 1, rank + n, 'WITHSCORES')
"""

# KEYS: watch hashes. ARGV: length of the watch key prefix, the casefolded needle ('' for none),
#   the field of the other time range, its low and high bounds ('' for none; low <= t < high).
# Returns the 1-based positions of the keys kept: the watch exists, is in the range, and matches
# the needle, or may match it. Lua lowers ASCII only (Redis leaves LC_CTYPE at "C"), and
# casefold maps some non-ASCII characters to ASCII ('ß' -> 'ss'), so a text with a byte over
# 127 is never ruled out here: the caller's casefold decides it. On ASCII text the two agree,
# and a non-ASCII needle is in none, by either.
LIGHT_FILTER = r"""
local skip, needle, field = tonumber(ARGV[1]), ARGV[2], ARGV[3]
local low, high = tonumber(ARGV[4]), tonumber(ARGV[5])
local function verdict(text)
  if not text then return false end
  if string.find(text, '[\128-\255]') then return nil end
  return string.find(string.lower(text), needle, 1, true) ~= nil
end
local out = {}
for i, key in ipairs(KEYS) do
  local w = redis.call('HMGET', key, 'remote_id', 'name', field)
  local keep = w[1] ~= false
  if keep and (low or high) then
    local t = tonumber(w[3])
    if t then keep = not (low and t < low) and not (high and t >= high) end  -- as Python: NaN
  end
  if keep and needle ~= '' then
    local a, b, c = verdict(string.sub(key, skip + 1)), verdict(w[1]), verdict(w[2])
    keep = a or b or c or a == nil or b == nil or c == nil
  end
  if keep then out[#out + 1] = i end
end
return out
"""

# --- the webhook outbox (:mod:`taskwarden.store.webhooks`) ----------------------------------

# KEYS: pending, due. ARGV: now, then (id, record) pairs. Adds each delivery unless it exists.
WEBHOOK_ENQUEUE = """
local added = 0
for i = 2, #ARGV, 2 do
  if redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1]) == 1 then
    redis.call('ZADD', KEYS[2], 'NX', ARGV[1], ARGV[i])
    added = added + 1
  end
end
return added
"""

# KEYS: due. ARGV: now, limit, lease_until. Takes due deliveries, pushing them a lease ahead.
WEBHOOK_CLAIM = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, id in ipairs(ids) do redis.call('ZADD', KEYS[1], 'XX', ARGV[3], id) end
return ids
"""

# KEYS: pending, due, watch, history. ARGV: id, next_at ('' = done), record, on_watch ('1'),
# status, error, attempts, entry, history_limit. Nothing happens to a delivery no longer
# pending (another sender recorded it); the watch's fields and history only while it exists.
WEBHOOK_RECORD = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
if ARGV[2] == '' then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
end
if redis.call('EXISTS', KEYS[3]) == 1 then
  if ARGV[4] == '1' then
    redis.call('HSET', KEYS[3], 'webhook_status', ARGV[5], 'webhook_error', ARGV[6],
      'webhook_attempts', ARGV[7])
  end
  redis.call('LPUSH', KEYS[4], ARGV[8])
  redis.call('LTRIM', KEYS[4], 0, tonumber(ARGV[9]) - 1)
end
return 1
"""
