"""The scripts that hand entries out under a byte budget, dead-lettering oversize ones on the server.

Every script here starts with :data:`FETCH_PRELUDE` and shares its layout:

* ``KEYS[1]`` the script's main key (stream, queue or processing list), ``KEYS[2]`` the dead-letter
  stream, ``KEYS[3]`` the stats hash; the script's own keys follow.
* ``ARGV[1]`` ``max_message_bytes``, ``ARGV[2]`` the batch budget (``max_batch_bytes``), ``ARGV[3]`` the
  preview size (:data:`msgrelay.deadletter.OVERSIZE_PREVIEW_BYTES`), ``ARGV[4]`` the origin queue key,
  ``ARGV[5]`` the consumer, ``ARGV[6]`` the name of the dead-lettered counter, ``ARGV[7]`` the transport
  (``streams`` or ``lists``, recorded on the dead letter); the script's own arguments follow (built by
  ``Transport._fetch_args``).

An entry larger than ``max_message_bytes`` never leaves Redis: it is added to the dead-letter stream with
only its first 1 KiB (the fields :meth:`msgrelay.deadletter.DeadLetter.to_fields` writes, reason
``oversize``) and acknowledged (streams: ``XACK``; lists: removed) in the same script, atomically. The
other entries are handed out oldest first until the next one would take the batch over the budget; one
entry is always handed out, so a batch holds at most ``max(max_batch_bytes, max_message_bytes)`` bytes.
Each script returns how many entries it dead-lettered last, for the consumer's counts.

Reading an entry into Lua copies it inside Redis (about its size, freed when the script ends): the
per-entry loops (``XRANGE`` / ``LMOVE`` one at a time) stop once they have looked at the budget's worth of
bytes, so one call never holds much more than one oversize entry at a time.
"""

from __future__ import annotations

from typing import Final

from msgrelay.transport.scripts import OOM_NOOP_WRITE

FETCH_PRELUDE: Final = (
    OOM_NOOP_WRITE.format(key="KEYS[3]")
    + """
local limit, budget, preview_bytes = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local dead, seen = 0, 0
-- One time for the whole call, read when first needed (a fetch that dead-letters nothing never asks):
-- entries claimed together are delivered at the same millisecond, as by one XREADGROUP or XAUTOCLAIM
-- (XCLAIM ... TIME), and a take-over of them all is due at once.
local clock
local function now()
  clock = clock or redis.call('TIME')
  return clock
end
local function now_ms()
  return string.format('%d', now()[1] * 1000 + math.floor(now()[2] / 1000))
end
-- What DeadLetter.to_fields writes for an oversize entry: its first preview_bytes only.
local function dead_letter(raw, size, source_id, attempt)
  redis.call('XADD', KEYS[2], '*',
    'reason', 'oversize', 'detail', string.format('%d bytes, over the %d-byte limit', size, limit),
    'raw', string.sub(raw, 1, preview_bytes), 'raw_size', size,
    'truncated', size > preview_bytes and 1 or 0, 'origin', ARGV[4], 'transport', ARGV[7],
    'source_id', source_id,
    'consumer', ARGV[5], 'attempt', attempt,
    'ts', string.format('%d.%03d', now()[1], math.floor(now()[2] / 1000)))
  dead = dead + 1
end
local function count_dead()
  if dead > 0 then redis.call('HINCRBY', KEYS[3], ARGV[6], dead) end
end
-- Whether the per-entry loop should stop before the next entry: the budget's worth has been looked at.
local function looked_enough()
  return seen > math.max(budget, limit)
end
"""
)

# Streams. An entry's size is its payload's: the `m` field of our layout (a retry adds `n` and `e`; each
# name once), as msgrelay.transport.stream_entries reads it; else the JSON object the consumer makes of
# its fields, counted without quotes and escapes (a lower bound: msgrelay.codec checks the real size).
# Returns the size, the deliveries before the first (a retry's `n`, if it is a count) and the payload.
_STREAM_ENTRIES: Final = """
local function measure(fields)
  local named, size = {}, 0
  local ours = true
  for i = 1, #fields, 2 do
    local name, value = fields[i], fields[i + 1]
    if named[name] or (name ~= 'm' and name ~= 'n' and name ~= 'e') then ours = false end
    named[name] = value
    size = size + #name + #value
  end
  if ours and named.m then
    local n = named.n or '0'
    return #named.m, (#n <= 9 and tonumber(string.match(n, '^%d+$'))) or 0, named.m
  end
  local parts = {}
  for i = 1, #fields, 2 do
    parts[#parts + 1] = cjson.encode(string.sub(fields[i], 1, preview_bytes)) .. ':'
      .. cjson.encode(string.sub(fields[i + 1], 1, preview_bytes))
  end
  return size, 0, '{' .. table.concat(parts, ',') .. '}'
end
-- Acknowledges entries gone for good (dead-lettered, or deleted). While ours is the only group reading the
-- stream they leave it with their ack, as settled ones do (scripts.STREAM_SETTLE), so that a group created
-- again at 0 never delivers them twice (and a 100 MB entry frees its memory now). XDEL is a pcall: a user
-- whose ACL refuses it still gets on (the entry stays until trimmed).
local function ack(group, ids)
  if #ids == 0 then return end
  for i = 1, #ids, 1000 do
    redis.call('XACK', KEYS[1], group, unpack(ids, i, math.min(i + 999, #ids)))
  end
  local groups = redis.pcall('XINFO', 'GROUPS', KEYS[1])
  if not groups.err and #groups == 1 and groups[1][2] == group then
    for i = 1, #ids, 1000 do
      redis.pcall('XDEL', KEYS[1], unpack(ids, i, math.min(i + 999, #ids)))
    end
  end
end
-- Sorts one pending entry (PEL row: id, owner, idle, deliveries): 'gone' (deleted from the stream, or
-- dead-lettered: acknowledge it), 'full' (over the budget: stays where it is) or 'take' (with its entry).
local total = 0
local function sort_out(row, deliveries, count_so_far)
  local id = row[1]
  local entry = redis.call('XRANGE', KEYS[1], id, id)[1]
  if not entry then return 'gone' end
  local size, earlier, payload = measure(entry[2])
  seen = seen + size
  if size > limit then
    dead_letter(payload, size, id, earlier + deliveries)
    return 'gone'
  end
  if count_so_far > 0 and total + size > budget then return 'full' end
  total = total + size
  return 'take', entry
end
"""

# KEYS: stream, dlq, stats. ARGV[8..]: group, start (an XPENDING start: id, '(id' or '-'), count.
# Entries a read took into this consumer's PEL but did not hand out (a reply too large to read, an
# oversize entry, the byte budget), from `start` on. They were delivered once and never seen by anyone:
# an entry delivered again since (recover, a take-over) is not ours to hand out any more.
# Returns {entries, where to start next time ('' when none are left), dead-lettered}.
STREAM_TAKE_UNREAD: Final = (
    FETCH_PRELUDE
    + _STREAM_ENTRIES
    + """
local group, count = ARGV[8], tonumber(ARGV[10])
local rows = redis.call('XPENDING', KEYS[1], group, ARGV[9], '+', count, ARGV[5])
local out, gone, resume = {}, {}, ''
for _, row in ipairs(rows) do
  if looked_enough() then resume = row[1]; break end
  if row[4] == 1 then
    local verdict, entry = sort_out(row, 1, #out)
    if verdict == 'gone' then gone[#gone + 1] = row[1]
    elseif verdict == 'full' then resume = row[1]; break
    else out[#out + 1] = entry end
  end
end
if resume == '' and #rows == count then resume = '(' .. rows[#rows][1] end
ack(group, gone)
count_dead()
return {out, resume, dead}
"""
)

# Hands pending entries (PEL rows) out to this consumer, oldest first and within the budget, each counting
# one more delivery (XCLAIM ... RETRYCOUNT, as XREADGROUP 0 and XAUTOCLAIM count them). Returns the
# entries, the deliveries of each, and the id of the first row left for next time ('' if none).
_STREAM_CLAIM: Final = """
local function claim(group, rows, min_idle)
  local out, times, gone, resume = {}, {}, {}, ''
  for _, row in ipairs(rows) do
    if looked_enough() then resume = row[1]; break end
    local deliveries = row[4] + 1
    local verdict, entry = sort_out(row, deliveries, #out)
    if verdict == 'gone' then gone[#gone + 1] = row[1]
    elseif verdict == 'full' then resume = row[1]; break
    else
      redis.call('XCLAIM', KEYS[1], group, ARGV[5], min_idle, row[1],
        'TIME', now_ms(), 'RETRYCOUNT', deliveries, 'JUSTID')
      out[#out + 1] = entry
      times[#out] = deliveries
    end
  end
  ack(group, gone)
  return out, times, resume
end
"""

# KEYS: stream, dlq, stats. ARGV[8..]: group, count. This consumer's own pending entries (after a
# restart). Returns {entries, deliveries of each, dead-lettered}.
STREAM_RECOVER: Final = (
    FETCH_PRELUDE
    + _STREAM_ENTRIES
    + _STREAM_CLAIM
    + """
local rows = redis.call('XPENDING', KEYS[1], ARGV[8], '-', '+', tonumber(ARGV[9]), ARGV[5])
local out, times = claim(ARGV[8], rows, 0)
count_dead()
return {out, times, dead}
"""
)

# KEYS: stream, dlq, stats. ARGV[8..]: group, min idle (ms), start (an XPENDING start), count, name of
# the reclaimed counter. Entries idle for min idle or longer, whoever holds them, become this consumer's,
# scanning the group's PEL from `start` as XAUTOCLAIM does. Returns {entries, deliveries of each, where to
# start next time ('-' after the end), dead-lettered}.
STREAM_RECLAIM: Final = (
    FETCH_PRELUDE
    + _STREAM_ENTRIES
    + _STREAM_CLAIM
    + """
local count = tonumber(ARGV[11])
local rows = redis.call('XPENDING', KEYS[1], ARGV[8], 'IDLE', ARGV[9], ARGV[10], '+', count)
local out, times, resume = claim(ARGV[8], rows, ARGV[9])
if resume == '' then resume = #rows == count and ('(' .. rows[#rows][1]) or '-' end
count_dead()
if #out > 0 then redis.call('HINCRBY', KEYS[3], ARGV[12], #out) end
return {out, times, resume, dead}
"""
)

# Lists. KEYS: queue, dlq, stats, processing list, consumers set, heartbeat key, deliveries hash.
# ARGV[8..]: max entries, heartbeat ttl (ms), isolate suspects (1/0), head (1: BLMOVE has just put an
# entry at the head of the processing list; it is decided here like the others, its content never sent
# back). Moves up to ARGV[8] entries from the tail of the queue to the head of the processing list,
# registers the consumer and renews its heartbeat; returns {entries, earlier deliveries of each (only if
# any are known), dead-lettered}. Entries over the budget go back to the tail of the queue, in order.
#
# An entry delivered before (its consumer died, or it was retried) is a suspect: it may be what killed that
# consumer. With ARGV[10] = 1 (at-least-once consumers) a suspect is handed out alone, so that if it kills
# this consumer too, only its own delivery count grows, not that of good entries in the same batch: a
# suspect met after other entries goes back to the tail of the queue, to be the next fetch's single entry.
LIST_FETCH: Final = (
    FETCH_PRELUDE
    + """
redis.call('SADD', KEYS[5], ARGV[5])
redis.call('SET', KEYS[6], '1', 'PX', ARGV[9])
local want, isolate = tonumber(ARGV[8]), ARGV[10] == '1'
local counted = redis.call('EXISTS', KEYS[7]) == 1
local moved, earlier, total = {}, {}, 0
-- Deliveries counted before; a count that is not a number reads as none (as lists._deliveries reads it).
local function count_of(entry)
  if not counted then return 0 end
  return tonumber(redis.call('HGET', KEYS[7], redis.sha1hex(entry))) or 0
end
local function dead_letter_head(entry, n)  -- the entry just moved to the head of the processing list
  redis.call('LPOP', KEYS[4])
  if counted then redis.call('HDEL', KEYS[7], redis.sha1hex(entry)) end
  dead_letter(entry, #entry, '', n + 1)
end
if ARGV[11] == '1' then
  local first = redis.call('LINDEX', KEYS[4], 0)
  if first then
    local n = count_of(first)
    if #first > limit then dead_letter_head(first, n)
    else moved[1], earlier[1], total = first, n, #first end
  end
end
-- From entries[first] on: oversize ones are dead-lettered, the others kept while within the budget, and
-- those from the one that would pass it on go back to the tail of the queue, oldest at the tail.
local function sort_out_popped(entries, first)
  local keep, sum = {}, total
  for j = 1, first - 1 do
    keep[j] = entries[j]
    sum = sum + #entries[j]
  end
  for j = first, #entries do
    local entry = entries[j]
    local size = #entry
    if size > limit then dead_letter(entry, size, '', 1)
    elseif #moved + #keep > 0 and sum + size > budget then
      for k = #entries, j, -1 do redis.call('RPUSH', KEYS[1], entries[k]) end
      break
    else
      keep[#keep + 1] = entry
      sum = sum + size
    end
  end
  return keep
end
-- The entries to hand out: all of them in the usual case (no copy), else what sort_out_popped keeps.
-- Checking each size costs Redis about 0.1 us per entry (Lua), the one cost this adds to the lists' hot path.
local function within_budget(entries)
  local sum = total
  for i = 1, #entries do
    local size = #entries[i]
    sum = sum + size
    if size > limit or (sum > budget and #moved + i > 1) then return sort_out_popped(entries, i) end
  end
  return entries
end
if not counted then
  -- No entry was delivered before, so none is a suspect: move the batch in two commands, not one per entry.
  -- RPOP hands the oldest first and LPUSH puts each at the head: the same order as LMOVE one by one.
  local entries = want > #moved and redis.call('RPOP', KEYS[1], want - #moved)
  if not entries then
    count_dead()
    return {moved, {}, dead}
  end
  local keep = within_budget(entries)
  for i = 1, #keep, 1000 do
    redis.call('LPUSH', KEYS[4], unpack(keep, i, math.min(i + 999, #keep)))
  end
  count_dead()
  if #moved == 0 then return {keep, {}, dead} end
  for _, entry in ipairs(keep) do moved[#moved + 1] = entry end
  return {moved, {}, dead}
end
while #moved < want and not (isolate and earlier[1] and earlier[1] > 0) and not looked_enough() do
  local entry = redis.call('LMOVE', KEYS[1], KEYS[4], 'RIGHT', 'LEFT')
  if not entry then break end
  local n, size = count_of(entry), #entry
  seen = seen + size
  if size > limit then dead_letter_head(entry, n)
  elseif #moved > 0 and ((isolate and n > 0) or total + size > budget) then
    redis.call('LMOVE', KEYS[4], KEYS[1], 'LEFT', 'RIGHT')  -- a suspect, or over the budget: next fetch
    break
  else
    moved[#moved + 1] = entry
    earlier[#moved] = n
    total = total + size
  end
end
count_dead()
return {moved, earlier, dead}
"""
)

# KEYS: processing list, dlq, stats, deliveries hash. ARGV[8]: how many (from the tail, the oldest).
# A restarted consumer takes back what it held, oldest first: each entry counts one more delivery.
# Returns {entries, deliveries counted so far of each, dead-lettered}.
LIST_RECOVER: Final = (
    FETCH_PRELUDE
    + """
local entries = redis.call('LRANGE', KEYS[1], -tonumber(ARGV[8]), -1)
local out, counts, total = {}, {}, 0
for i = #entries, 1, -1 do
  local entry = entries[i]
  local size, digest = #entry, redis.sha1hex(entry)
  -- Deliveries counted before; a count that is not a number reads as none (as lists._deliveries reads it).
  local n = tonumber(redis.call('HGET', KEYS[4], digest)) or 0
  if size > limit then
    redis.call('LREM', KEYS[1], -1, entry)
    redis.call('HDEL', KEYS[4], digest)
    dead_letter(entry, size, '', n + 2)  -- its first delivery, those counted since, and this one
  elseif #out > 0 and total + size > budget then break
  else
    total = total + size
    out[#out + 1] = entry
    counts[#out] = n + 1
    redis.call('HSET', KEYS[4], digest, n + 1)
  end
end
count_dead()
return {out, counts, dead}
"""
)
