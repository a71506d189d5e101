"""The dead-letter store ``<ns>:dlq``: list, inspect, replay, purge and trim dead letters.

Work is done in pages (``XRANGE ... COUNT PAGE_SIZE``, then one server-side script per page), so thousands of
dead letters cost a few round trips, never one each. Filters read only the small fields of each entry (a
script projects them server-side), not the raw bytes.

Replay is atomic per entry: one script puts the raw bytes back on the entry's origin queue (``XADD <origin> *
m <raw>`` on a stream, ``LPUSH`` on a list), deletes the entry from the store and counts it, so an entry is
never both back on its queue and still dead-lettered, nor deleted without being replayed. An oversize entry
whose raw bytes were truncated to a preview is refused: replaying the preview would lose the message.
"""

from __future__ import annotations

import builtins
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Final, Literal, NamedTuple

import redis

from msgrelay.config import DeadLetterSettings
from msgrelay.consumer import ConsumerHook
from msgrelay.deadletter import DeadLetterEntry
from msgrelay.keys import STREAM_PAYLOAD_FIELD, KeySchema, Stat
from msgrelay.levels import normalize_level
from msgrelay.transport.base import Transport, raw_command, redis_errors

QueueTransport = Literal["streams", "lists"]

PAGE_SIZE: Final = 500
"""Entries read, replayed or purged per round trip."""

DEFAULT_LIST_LIMIT: Final = 100

_ENTRY_ID: Final = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")
"""A full stream id; a bare ``<ms>`` would select a whole millisecond of entries."""

# One page of the store KEYS[1] from ARGV[1] to ARGV[2] (XRANGE bounds), at most ARGV[3] entries, as
# {id, reason, type, origin, truncated} per entry: what filters need, without the raw bytes.
_SCAN_HEADS = """
local page = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[2], 'COUNT', tonumber(ARGV[3]))
local heads = {}
for i, entry in ipairs(page) do
  local head = {reason = '', type = '', origin = '', truncated = '0'}
  local fields = entry[2]
  for j = 1, #fields, 2 do
    if head[fields[j]] ~= nil then head[fields[j]] = fields[j + 1] end
  end
  heads[i] = {entry[1], head.reason, head.type, head.origin, head.truncated}
end
return heads
"""

# Replay dead letters ARGV[5..] of the store KEYS[1]: the n-th one goes back on its origin queue KEYS[2n]
# (field ARGV[2] of a new stream entry, or LPUSHed on a list: whatever the key holds now; a key that does
# not exist is created as transport ARGV[1]; a notification goes back into the notify outbox, a zset whose
# keys start with ARGV[4]), leaves the store and counts ARGV[3] in the stats hash KEYS[2n + 1]. The write
# comes before the delete: should anything fail in between, the entry is duplicated, never lost. Returns one
# status per entry.
_REPLAY = """
local statuses = {}
for n = 1, #ARGV - 4 do
  local id, origin, stats = ARGV[n + 4], KEYS[2 * n], KEYS[2 * n + 1]
  local found = redis.call('XRANGE', KEYS[1], id, id)
  local status = 'missing'
  if #found == 1 then
    local raw, truncated = '', '0'
    local fields = found[1][2]
    for j = 1, #fields, 2 do
      if fields[j] == 'raw' then raw = fields[j + 1] end
      if fields[j] == 'truncated' then truncated = fields[j + 1] end
    end
    local kind = redis.call('TYPE', origin)['ok']
    if kind == 'none' and string.find(origin, ARGV[4], 1, true) == 1 then
      kind = 'zset'  -- an emptied outbox of the notify loop: its items go back there, not into a new stream
    elseif kind == 'none' then
      kind = (ARGV[1] == 'lists') and 'list' or 'stream'
    end
    if truncated == '1' then
      status = 'truncated'
    elseif kind == 'zset' then
      -- a notification whose sends all failed: back in the outbox, due now, with a fresh budget
      local item = cjson.decode(raw)
      item['attempt'] = 0
      redis.call('ZADD', origin, redis.call('TIME')[1], cjson.encode(item))
      status = 'replayed'
    elseif kind == 'stream' then
      redis.call('XADD', origin, '*', ARGV[2], raw)
      status = 'replayed'
    elseif kind == 'list' then
      redis.call('LPUSH', origin, raw)
      status = 'replayed'
    else
      status = 'bad_origin'
    end
    if status == 'replayed' then
      redis.call('XDEL', KEYS[1], id)
      redis.call('HINCRBY', stats, ARGV[3], 1)
    end
  end
  statuses[n] = status
end
return statuses
"""

# Delete dead letters ARGV[2..] from the store KEYS[1]; each one actually deleted counts ARGV[1] in the
# stats hash of its origin, KEYS[i] for ARGV[i]. Returns how many were deleted.
_PURGE = """
local purged = 0
for i = 2, #ARGV do
  if redis.call('XDEL', KEYS[1], ARGV[i]) == 1 then
    redis.call('HINCRBY', KEYS[i], ARGV[1], 1)
    purged = purged + 1
  end
end
return purged
"""


def is_entry_id(text: str) -> bool:
    """Whether ``text`` is a whole stream entry id, ``<ms>-<seq>``."""
    return _ENTRY_ID.fullmatch(text) is not None and all(int(part) < 2**64 for part in text.split("-"))


class _Head(NamedTuple):
    """The fields of a dead letter that filters look at."""

    id: str
    reason: str
    msg_type: str
    origin: str
    truncated: bool


@dataclass(frozen=True, slots=True)
class DeadLetterFilter:
    """Which dead letters an operation applies to: every criterion given must hold.

    ``msg_type`` is a level word (``warn`` selects ``WARNING``); only dead letters that decoded carry a type.
    ``older_than_s`` selects entries dead-lettered more than that many seconds ago (by the server's clock).
    ``DeadLetterFilter()`` selects every dead letter (see :data:`ALL`).
    """

    reason: str | None = None
    msg_type: str | None = None
    origin: str | None = None
    older_than_s: float | None = None


ALL: Final = DeadLetterFilter()
"""Every dead letter: ``store.replay(ALL)``, ``store.purge(ALL)``."""

Selection = Sequence[str] | DeadLetterFilter
"""Entry ids (``"1732521600000-0"``; unknown ones are counted as missing) or a filter."""


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """What ``replay`` did (or, with ``dry_run``, would do)."""

    replayed: int = 0
    truncated: int = 0
    """Refused: only a preview of the oversize entry is kept."""
    missing: int = 0
    """Not in the store: already replayed, purged or trimmed, or not an entry id."""
    bad_origin: int = 0
    """No origin queue recorded, or its key now holds something that is neither a stream nor a list."""
    dry_run: bool = False

    @property
    def skipped(self) -> int:
        return self.truncated + self.missing + self.bad_origin


class DeadLetterStore:
    """The dead-letter stream of one namespace, shared by every queue of that namespace.

    ``keys`` gives the namespace (and the queue whose stats count a purged entry that names no origin);
    ``new_queue_transport`` (``streams`` or ``lists``) is how replay recreates an origin queue that no longer
    exists. ``url`` is the masked URL, for error messages.
    """

    def __init__(
        self,
        client: redis.Redis,
        keys: KeySchema,
        *,
        url: str,
        new_queue_transport: QueueTransport = "streams",
    ) -> None:
        self.client = client
        self.keys = keys
        self.url = url
        self.new_queue_transport = new_queue_transport
        self.key = keys.dead_letters()

    @classmethod
    def from_transport(cls, transport: Transport) -> DeadLetterStore:
        """The store next to ``transport``'s queue, sharing its connection."""
        kind: QueueTransport = "lists" if transport.name == "lists" else "streams"
        return cls(transport.client, transport.keys, url=transport.url, new_queue_transport=kind)

    def close(self) -> None:
        self.client.close()

    # ------------------------------------------------------------------------------------------- reading

    def list(
        self,
        reason: str | None = None,
        msg_type: str | None = None,
        origin: str | None = None,
        *,
        limit: int = DEFAULT_LIST_LIMIT,
        after: str | None = None,
    ) -> builtins.list[DeadLetterEntry]:
        """Up to ``limit`` dead letters matching every criterion given, oldest first.

        ``after`` is an entry id: pass the last id of one page to get the next.
        """
        where = DeadLetterFilter(reason=reason, msg_type=msg_type, origin=origin)
        ids: builtins.list[str] = []
        for heads in self._scan(where, after=after):
            ids += [head.id for head in heads]
            if len(ids) >= limit:
                break
        return self._entries(ids[:limit])

    def get(self, entry_id: str) -> DeadLetterEntry | None:
        """The dead letter with this id, or ``None``."""
        found = self._entries([entry_id])
        return found[0] if found else None

    def count(self, selection: Selection | None = None) -> int:
        """How many dead letters the store holds, or how many of them ``selection`` selects."""
        if selection is None:
            with redis_errors(self.url):
                return int(self.client.xlen(self.key))
        return sum(len(heads) for heads, _missing in self._select(selection))

    def count_by_reason(self) -> dict[str, int]:
        """Reason -> dead letters, most frequent first."""
        reasons: Counter[str] = Counter()
        for heads in self._scan(ALL):
            reasons.update(head.reason for head in heads)
        return dict(reasons.most_common())

    # ------------------------------------------------------------------------------------------- changing

    def replay(self, selection: Selection, *, dry_run: bool = False) -> ReplayResult:
        """Put the selected dead letters back on their origin queues, each atomically leaving the store.

        Counts ``dlq_replayed`` in each origin queue's stats. Truncated (oversize) entries are refused. A dry
        run reads the store only: an origin key that has since become neither a stream nor a list is found
        out by the real replay alone.
        """
        tally: Counter[str] = Counter()
        for heads, missing in self._select(selection):
            tally["missing"] += missing
            replayable = [head for head in heads if head.origin and not head.truncated]
            tally["truncated"] += sum(head.truncated for head in heads)
            tally["bad_origin"] += sum(not head.origin and not head.truncated for head in heads)
            if dry_run:
                tally["replayed"] += len(replayable)
            elif replayable:
                tally.update(self._replay_page(replayable))
        return ReplayResult(
            replayed=tally["replayed"],
            truncated=tally["truncated"],
            missing=tally["missing"],
            bad_origin=tally["bad_origin"],
            dry_run=dry_run,
        )

    def _replay_page(self, heads: Sequence[_Head]) -> builtins.list[str]:
        keys: builtins.list[str] = [self.key]
        for head in heads:
            keys += [head.origin, KeySchema(self.keys.namespace, head.origin).stats()]
        outboxes = KeySchema(self.keys.namespace, "").outbox()  # the prefix of every notify outbox key
        args = [
            self.new_queue_transport,
            STREAM_PAYLOAD_FIELD,
            Stat.DLQ_REPLAYED,
            outboxes,
            *(h.id for h in heads),
        ]
        with redis_errors(self.url):
            statuses: builtins.list[bytes] = raw_command(
                self.client, "EVAL", _REPLAY, len(keys), *keys, *args
            )
        return [status.decode() for status in statuses]

    def purge(self, selection: Selection) -> int:
        """Delete the selected dead letters for good; returns how many. Counts ``dlq_purged`` per origin."""
        purged = 0
        for heads, _missing in self._select(selection):
            if not heads:
                continue
            stats = [KeySchema(self.keys.namespace, head.origin or self.keys.queue).stats() for head in heads]
            with redis_errors(self.url):
                purged += int(
                    raw_command(
                        self.client,
                        "EVAL",
                        _PURGE,
                        1 + len(stats),
                        self.key,
                        *stats,
                        Stat.DLQ_PURGED,
                        *(head.id for head in heads),
                    )
                )
        return purged

    def apply_retention(self, retention_s: float, max_entries: int) -> int:
        """Trim dead letters older than ``retention_s`` and beyond the newest ``max_entries`` (0: no limit).

        Returns how many were removed. Entry ids are the server's millisecond clock at dead-lettering, so
        age is measured by the server's clock. Trimmed entries are not counted as purged.
        """
        removed = 0
        with redis_errors(self.url):
            if retention_s > 0:
                removed += int(
                    raw_command(self.client, "XTRIM", self.key, "MINID", self._cutoff(retention_s))
                )
            if max_entries > 0:
                removed += int(raw_command(self.client, "XTRIM", self.key, "MAXLEN", max_entries))
        return removed

    # ------------------------------------------------------------------------------------------- paging

    def _select(self, selection: Selection) -> Iterator[tuple[builtins.list[_Head], int]]:
        """Pages of (heads of the selected entries, how many selected ids are not in the store)."""
        if isinstance(selection, DeadLetterFilter):
            for heads in self._scan(selection):
                yield heads, 0
            return
        ids = [selection] if isinstance(selection, str) else list(dict.fromkeys(selection))
        for start in range(0, len(ids), PAGE_SIZE):
            page = ids[start : start + PAGE_SIZE]
            heads = self._heads([entry_id for entry_id in page if is_entry_id(entry_id)])
            yield heads, len(page) - len(heads)

    def _scan(self, where: DeadLetterFilter, *, after: str | None = None) -> Iterator[builtins.list[_Head]]:
        """Pages of the heads of matching entries, oldest first (a page may hold none)."""
        start = "-" if after is None else f"({after}"
        end = "+" if where.older_than_s is None else f"({self._cutoff(where.older_than_s)}-0"
        matches = _matcher(where)
        while True:
            page = self._scan_page(start, end, PAGE_SIZE)
            yield [head for head in page if matches(head)]
            if len(page) < PAGE_SIZE:
                return
            start = f"({page[-1].id}"

    def _scan_page(self, start: str, end: str, count: int) -> builtins.list[_Head]:
        with redis_errors(self.url):
            rows = raw_command(self.client, "EVAL", _SCAN_HEADS, 1, self.key, start, end, count)
        return [_head(row) for row in rows]

    def _heads(self, ids: Sequence[str]) -> builtins.list[_Head]:
        """The heads of the entries with these (well-formed) ids that are in the store, in one round trip."""
        with redis_errors(self.url):
            pipe = self.client.pipeline(transaction=False)
            for entry_id in ids:
                raw_command(pipe, "EVAL", _SCAN_HEADS, 1, self.key, entry_id, entry_id, 1)
            pages: builtins.list[builtins.list[builtins.list[bytes]]] = pipe.execute()
        return [_head(row) for page in pages for row in page]

    def _entries(self, ids: Sequence[str]) -> builtins.list[DeadLetterEntry]:
        """Whole entries, in the order of ``ids``; ids not in the store (or malformed) are left out."""
        valid = [entry_id for entry_id in ids if is_entry_id(entry_id)]
        if not valid:
            return []
        with redis_errors(self.url):
            pipe = self.client.pipeline(transaction=False)
            for entry_id in valid:
                raw_command(pipe, "XRANGE", self.key, entry_id, entry_id)
            pages: builtins.list[builtins.list[tuple[bytes, dict[bytes, bytes]]]] = pipe.execute()
        return [DeadLetterEntry.from_fields(entry_id, fields) for page in pages for entry_id, fields in page]

    def _cutoff(self, age_s: float) -> int:
        """The server's time, in ms, ``age_s`` seconds ago: ids below it are older."""
        with redis_errors(self.url):
            seconds, micros = raw_command(self.client, "TIME")
        return max(0, int(seconds) * 1000 + int(micros) // 1000 - int(age_s * 1000))


def _matcher(where: DeadLetterFilter) -> Callable[[_Head], bool]:
    wanted_type = None if where.msg_type is None else normalize_level(where.msg_type) or where.msg_type

    def matches(head: _Head) -> bool:
        return (
            (where.reason is None or head.reason == where.reason)
            and (wanted_type is None or head.msg_type == wanted_type)
            and (where.origin is None or head.origin == where.origin)
        )

    return matches


def _head(row: list[bytes]) -> _Head:
    entry_id, reason, msg_type, origin, truncated = (value.decode("utf-8", "replace") for value in row)
    return _Head(entry_id, reason, msg_type, origin, truncated == "1")


class DeadLetterRetention(ConsumerHook):
    """Trims the dead-letter store to ``[deadletter]`` retention, at most every ``interval_s``."""

    def __init__(
        self, store: DeadLetterStore, settings: DeadLetterSettings, *, interval_s: float = 60.0
    ) -> None:
        self.store = store
        self.settings = settings
        self.interval_s = interval_s
        self._next = 0.0

    def on_maintenance(self) -> None:
        now = time.monotonic()
        if now >= self._next:
            self._next = now + self.interval_s
            self.store.apply_retention(self.settings.retention_s, self.settings.max_entries)
