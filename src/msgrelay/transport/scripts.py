"""The server-side (Lua) scripts of the transports, in one place (those that hand entries out under the
byte budget are in :mod:`msgrelay.transport.fetch_scripts`).

Scripts make multi-step changes atomic and save round trips.

Out of memory: consumers must keep draining a Redis that is full (that is how it stops being full), but
Redis refuses commands such as ``LMOVE``, ``SET`` and ``XADD`` over ``maxmemory``, even when they only move
data. A script that has already written may go on writing, so the scripts of the consumer path start with
``OOM_NOOP_WRITE``, a write that changes nothing (HDEL of a field that never exists): moving an entry to a
processing list, renewing a heartbeat or settling a batch then work while producers are refused. Within
a script the dead letters and retries are still written before anything is acknowledged, so an error
(a key of the wrong type) stops it before an ack.
"""

from __future__ import annotations

from typing import Final

OOM_NOOP_WRITE: Final = (
    "redis.call('HDEL', {key}, '')  -- a write that changes nothing: see the module docstring\n"
)

# KEYS: stream, stats. ARGV: payload field, name of the produced counter, payload...
# One call adds a whole chunk: one command to encode and one reply to read instead of one per message
# (redis-py's per-command cost dominated producing), and the chunk is stored whole or not at all (out of
# memory is refused at the first XADD, before anything is written).
STREAM_SEND: Final = """
for i = 3, #ARGV do redis.call('XADD', KEYS[1], '*', ARGV[1], ARGV[i]) end
redis.call('HINCRBY', KEYS[2], ARGV[2], #ARGV - 2)
"""

# Reads the ARGV layout built by Transport._settlement_args (ARGV[1] is transport-specific):
#   n_handles, handle..., n_dead, (n_fields, name, value, ...)..., n_incr, (field, amount)...,
#   n_retries, (due_ms, member)..., consumer
# then adds the dead letters (KEYS[2]) and schedules the retries (KEYS[4]); `handles` and `count_all`
# are left for the transport's own part, which acknowledges, counts into KEYS[3] and drops the consumer's
# write-journal entry (effectively-once files) in the same step: once acked, the batch needs no journal.
SETTLE_PRELUDE: Final = """
redis.call('HDEL', KEYS[3], '')  -- OOM_NOOP_WRITE (see the module docstring)
local pos = 2
local function take() local v = ARGV[pos]; pos = pos + 1; return v end
local handles = {}
for i = 1, tonumber(take()) do handles[i] = take() end
for _ = 1, tonumber(take()) do
  local fields = {}
  for j = 1, tonumber(take()) * 2 do fields[j] = take() end
  redis.call('XADD', KEYS[2], '*', unpack(fields))
end
local increments = {}
for i = 1, tonumber(take()) * 2 do increments[i] = take() end
for _ = 1, tonumber(take()) do
  local due = take()
  redis.call('ZADD', KEYS[4], due, take())
end
local consumer = take()
local function count_all()
  for i = 1, #increments, 2 do redis.call('HINCRBY', KEYS[3], increments[i], increments[i + 1]) end
end
"""

# KEYS: stream, dlq, stats, retry, journal. ARGV[1]: group.
# Acknowledges only entries this consumer still holds: after a DEL or FLUSHALL the stream is new and its ids
# may repeat those of a batch read before (the same millisecond), and acking by those ids would settle other
# messages; after XGROUP DESTROY the new group delivers them again anyway. Checked for the first and last
# entry (a batch comes from one read), entry by entry only if one of them is not ours; the lines of entries
# left out were written all the same, and are counted.
#
# Settled entries then leave the stream while our group is the only one reading it, so that the stream holds
# exactly what is not settled yet (pending or undelivered) and a group created again at 0 (after XGROUP
# DESTROY, FLUSHALL, DEL) delivers those and nothing already written. The cheap way first: XTRIM MINID to
# the oldest entry still needed (the oldest pending one, else the first not delivered) drops every settled
# entry below it, whole stream nodes at a time; only entries settled ahead of an older pending one (another
# consumer's batch) need an XDEL each (a seek and a scan of their node: about 1 us). With other groups on
# the stream the entries stay for them, and `trim` drops them once every group is past them. XTRIM and XDEL
# are pcalls: a user whose ACL refuses them still settles (its entries stay until they can be trimmed).
STREAM_SETTLE: Final = (
    SETTLE_PRELUDE
    + """
local function ours(id)
  local held = redis.pcall('XPENDING', KEYS[1], ARGV[1], id, id, 1, consumer)
  return not held.err and #held == 1
end
if #handles > 0 and not (ours(handles[1]) and ours(handles[#handles])) then
  local held = {}
  for _, handle in ipairs(handles) do if ours(handle) then held[#held + 1] = handle end end
  handles = held
end
local groups = redis.pcall('XINFO', 'GROUPS', KEYS[1])
local alone = not groups.err and #groups == 1 and groups[1][2] == ARGV[1]
local count = 0
for i = 1, #handles, 1000 do
  count = count + redis.call('XACK', KEYS[1], ARGV[1], unpack(handles, i, math.min(i + 999, #handles)))
end
-- Deleted below only if every one was pending (an id twice in a batch is acked once); else none of them,
-- since an id in the middle may be a stale one repeated by a new stream: they stay, to be trimmed later.
local acked = handles
if count ~= #handles then
  local unique, seen = {}, {}
  for _, handle in ipairs(handles) do
    if not seen[handle] then seen[handle] = true; unique[#unique + 1] = handle end
  end
  acked = count == #unique and unique or {}
end
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
if alone and #acked > 0 then
  local row = groups[1]
  local last
  for f = 1, #row, 2 do if row[f] == 'last-delivered-id' then last = row[f + 1] end end
  local oldest = redis.call('XPENDING', KEYS[1], ARGV[1])[2]
  if not oldest and last then  -- nothing pending: every delivered entry is settled
    local ms, seq = parse(last)
    redis.pcall('XTRIM', KEYS[1], 'MINID', string.format('%.0f-%.0f', ms, seq + 1))
  elseif oldest then
    redis.pcall('XTRIM', KEYS[1], 'MINID', oldest)
    local oms, oseq = parse(oldest)
    local ahead = {}
    for _, handle in ipairs(acked) do
      local ms, seq = parse(handle)
      if ms > oms or (ms == oms and seq > oseq) then ahead[#ahead + 1] = handle end
    end
    for i = 1, #ahead, 1000 do
      redis.pcall('XDEL', KEYS[1], unpack(ahead, i, math.min(i + 999, #ahead)))
    end
  end
end
redis.call('HDEL', KEYS[5], consumer)
count_all()
"""
)

# KEYS: processing list, dlq, stats, retry, deliveries hash, journal. ARGV[1]: unused.
LIST_SETTLE: Final = (
    SETTLE_PRELUDE
    + """
local counted = redis.call('EXISTS', KEYS[5]) == 1
local function is_whole_list()
  -- The usual case: the batch is all this consumer holds. Checked element by element, as a multiset.
  if counted or redis.call('LLEN', KEYS[1]) ~= #handles then return false end
  local wanted = {}
  for _, handle in ipairs(handles) do wanted[handle] = (wanted[handle] or 0) + 1 end
  for _, entry in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
    local left = wanted[entry]
    if not left or left == 0 then return false end
    wanted[entry] = left - 1
  end
  return true
end
if is_whole_list() then
  redis.call('DEL', KEYS[1])  -- one command instead of one LREM per entry
else
  for _, handle in ipairs(handles) do
    -- LREM -1: exactly one copy, searched from the tail where the oldest entries sit.
    redis.call('LREM', KEYS[1], -1, handle)
    if counted then redis.call('HDEL', KEYS[5], redis.sha1hex(handle)) end
  end
end
redis.call('HDEL', KEYS[6], consumer)
count_all()
"""
)

# KEYS: consumers set, queue, deliveries hash, stats. ARGV: heartbeat key prefix, processing key prefix,
# this consumer's name. Every other consumer whose heartbeat expired is dead: its processing list goes
# back to the tail of the queue (oldest consumed first), each entry counting one delivery. Returns how
# many entries were requeued.
LIST_REAP: Final = (
    OOM_NOOP_WRITE.format(key="KEYS[3]")
    + """
local requeued = 0
for _, name in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if name ~= ARGV[3] and redis.call('EXISTS', ARGV[1] .. name) == 0 then
    local processing = ARGV[2] .. name
    while true do
      local entry = redis.call('LMOVE', processing, KEYS[2], 'LEFT', 'RIGHT')
      if not entry then break end
      redis.call('HINCRBY', KEYS[3], redis.sha1hex(entry), 1)
      requeued = requeued + 1
    end
    redis.call('SREM', KEYS[1], name)
  end
end
if requeued > 0 then redis.call('HINCRBY', KEYS[4], 'reclaimed', requeued) end
return requeued
"""
)

# KEYS: heartbeat key, deliveries hash. ARGV: ttl (ms). A heartbeat must beat even when Redis is full.
LIST_HEARTBEAT: Final = (
    OOM_NOOP_WRITE.format(key="KEYS[2]") + "redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])\n"
)

# Due retries back onto the queue. KEYS: retry zset, queue, deliveries hash (lists only).
# ARGV: now (ms), max count. Member layout: see msgrelay.retries.RetryRecord.encode.
_PROMOTE_HEAD: Final = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, member in ipairs(due) do
  local newline = string.find(member, '\\n', 1, true)
  local raw = string.sub(member, newline + 1)
  local attempts, err = string.match(string.sub(member, 1, newline - 1), '^%S+ (%d+) ?(.*)$')
  redis.call('ZREM', KEYS[1], member)  -- first: a write Redis allows when full (see OOM_NOOP_WRITE)
"""
_PROMOTE_TAIL: Final = """
end
return #due
"""
STREAM_PROMOTE: Final = (
    _PROMOTE_HEAD + "  redis.call('XADD', KEYS[2], '*', 'm', raw, 'n', attempts, 'e', err)\n" + _PROMOTE_TAIL
)
LIST_PROMOTE: Final = (
    _PROMOTE_HEAD
    + "  redis.call('HSET', KEYS[3], redis.sha1hex(raw), attempts)\n"
    + "  redis.call('LPUSH', KEYS[2], raw)\n"  # the producers' end: behind the backlog, as on a stream
    + _PROMOTE_TAIL
)

# KEYS: stream, stats hash. ARGV: group. Creates the group at 0 (and the stream) unless it exists; works
# on a full Redis too, or consumers could never start draining a queue whose group is not there yet.
STREAM_SETUP: Final = (
    OOM_NOOP_WRITE.format(key="KEYS[2]")
    + """
local created = redis.pcall('XGROUP', 'CREATE', KEYS[1], ARGV[1], '0', 'MKSTREAM')
if type(created) == 'table' and created.err and not string.find(created.err, 'BUSYGROUP', 1, true) then
  return redis.error_reply(created.err)
end
return 1
"""
)

# KEYS: stream. ARGV: group, idle (ms), a consumer name never to forget (the caller's own).
# Forgets the consumers of the group that hold nothing and were idle at least ARGV[2] ms. XGROUP DELCONSUMER
# drops a consumer's pending entries with it, unclaimable (https://github.com/redis/redis/issues/9745), so
# the pending count is checked in the same script as the delete: no read can hand the consumer an entry in
# between. A consumer forgotten while it waits in XREADGROUP is created again by its next delivery. Returns
# the names forgotten.
STREAM_FORGET: Final = """
local consumers = redis.pcall('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
if consumers['err'] then return {} end  -- no stream or no group: nobody to forget
local forgotten = {}
for _, row in ipairs(consumers) do
  local consumer = {}
  for i = 1, #row, 2 do consumer[row[i]] = row[i + 1] end
  if consumer['pending'] == 0 and consumer['idle'] >= tonumber(ARGV[2]) and consumer['name'] ~= ARGV[3] then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], consumer['name'])
    forgotten[#forgotten + 1] = consumer['name']
  end
end
return forgotten
"""
