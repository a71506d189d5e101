"""The dead-letter store ``<ns>:dlq``: list, inspect, replay, purge and trim dead letters.

Work is done in pages (``XRANGE ... COUNT PAGE_SIZE``, then one server-side script per page), so thousands of
dead letters cost a few round trips, never one each. Filters read only the small fields of each entry (a
script projects them server-side), not the raw bytes.

Replay is atomic per entry: one script puts the raw bytes back on the entry's origin queue (``XADD <origin> *
m <raw>`` on a stream, ``LPUSH`` on a list), deletes the entry from the store and counts it, so an entry is
never both back on its queue and still dead-lettered, nor deleted without being replayed. Only queues of
this configuration are written to, each as the transport recorded on the dead letter, never as a key of
another type (see :mod:`msgrelay.dlq_replay`). An oversize entry whose raw bytes were truncated to a preview
is refused: replaying the preview would lose the message. One entry that cannot be replayed is reported
with its id and reason, and the rest go on.
"""

from __future__ import annotations

import builtins
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Final

import redis

from msgrelay.batch import ConsumerHook
from msgrelay.config import DeadLetterSettings
from msgrelay.deadletter import OUTBOX_TRANSPORT, DeadLetterEntry, DeadLetterHead
from msgrelay.dlq_replay import (
    REPLAY_SCRIPT,
    PlannedReplay,
    ReplayResult,
    ReplayTarget,
    SkippedDeadLetter,
    oldest_first,
    plan,
    skipped_by_script,
    with_outbox_payloads,
)
from msgrelay.keys import STREAM_PAYLOAD_FIELD, KeySchema, Stat
from msgrelay.levels import normalize_level
from msgrelay.transport.base import Transport, raw_command, redis_errors

__all__ = ["ALL", "DeadLetterFilter", "DeadLetterStore", "ReplayResult", "ReplayTarget", "Selection"]

PAGE_SIZE: Final = 500
"""Entries read, replayed or purged per round trip."""

DEFAULT_LIST_LIMIT: Final = 100

_ENTRY_ID: Final = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")
"""A full stream id; a bare ``<ms>`` would select a whole millisecond of entries."""

# One page of the store KEYS[1] from ARGV[1] to ARGV[2] (XRANGE bounds), at most ARGV[3] entries, as
# {id, reason, type, origin, truncated, transport} per entry: what filters and replay need, without the raw
# bytes.
_SCAN_HEADS = """
local page = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[2], 'COUNT', tonumber(ARGV[3]))
local heads = {}
for i, entry in ipairs(page) do
  local head = {reason = '', type = '', origin = '', truncated = '0', transport = ''}
  local fields = entry[2]
  for j = 1, #fields, 2 do
    if head[fields[j]] ~= nil then head[fields[j]] = fields[j + 1] end
  end
  heads[i] = {entry[1], head.reason, head.type, head.origin, head.truncated, head.transport}
end
return heads
"""

# Delete dead letters ARGV[2..] from the store KEYS[1]; each one actually deleted counts ARGV[1] in the
# stats hash of its origin, KEYS[i] for ARGV[i]. Returns how many were deleted.
_PURGE = """
local purged = 0
for i = 2, #ARGV do
  if redis.call('XDEL', KEYS[1], ARGV[i]) == 1 then
    redis.pcall('HINCRBY', KEYS[i], ARGV[1], 1)  -- a counter: a stats key of another type must not stop us
    purged = purged + 1
  end
end
return purged
"""


def is_entry_id(text: str) -> bool:
    """Whether ``text`` is a whole stream entry id, ``<ms>-<seq>``."""
    return _ENTRY_ID.fullmatch(text) is not None and all(int(part) < 2**64 for part in text.split("-"))


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
"""Entry ids (``"1732521600000-0"``; unknown ones are reported as missing) or a filter."""


class DeadLetterStore:
    """The dead-letter stream of one namespace, shared by every queue of that namespace.

    ``keys`` gives the namespace (and the queue whose stats count a purged entry that names no origin);
    ``targets`` are the queues replay may put dead letters back on (every other origin is refused): see
    :func:`msgrelay.dlq_replay.replay_targets`. ``url`` is the masked URL, for error messages.
    """

    def __init__(
        self,
        client: redis.Redis,
        keys: KeySchema,
        *,
        url: str,
        targets: Iterable[ReplayTarget] = (),
    ) -> None:
        self.client = client
        self.keys = keys
        self.url = url
        self.targets = frozenset(targets)
        self.key = keys.dead_letters()

    @classmethod
    def from_transport(
        cls, transport: Transport, targets: Iterable[ReplayTarget] | None = None
    ) -> DeadLetterStore:
        """The store next to ``transport``'s queue, sharing its connection; replay goes to ``targets``
        (default: that queue and its notify outbox)."""
        own = (
            ReplayTarget(transport.keys.queue, transport.name),
            ReplayTarget(transport.keys.outbox(), OUTBOX_TRANSPORT),
        )
        return cls(
            transport.client, transport.keys, url=transport.url, targets=own if targets is None else targets
        )

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

        Counts ``dlq_replayed`` in each origin queue's stats. An entry that cannot go back (truncated,
        not found, an origin that is not one of ``targets``, a key that now holds another type ...) is
        skipped with its id and reason, and stays in the store; the others go on. A dry run checks the
        same, in the same script, and writes nothing.
        """
        replayed = 0
        skipped: builtins.list[SkippedDeadLetter] = []
        for heads, missing in self._select(selection):
            skipped += [SkippedDeadLetter(entry_id, "missing", "not in the store") for entry_id in missing]
            planned, refused = plan(heads, self.targets)
            planned, not_notifications = self._with_outbox_payloads(planned)
            skipped += refused + not_notifications
            if planned:
                statuses = self._replay_page(planned, dry_run=dry_run)
                replayed += statuses.count("replayed")
                skipped += [
                    skipped_by_script(item, status)
                    for item, status in zip(planned, statuses, strict=True)
                    if status != "replayed"
                ]
        return ReplayResult(replayed=replayed, skipped_entries=oldest_first(skipped), dry_run=dry_run)

    def _with_outbox_payloads(
        self, planned: builtins.list[PlannedReplay]
    ) -> tuple[builtins.list[PlannedReplay], builtins.list[SkippedDeadLetter]]:
        outbox_ids = [item.head.id for item in planned if item.target.transport == OUTBOX_TRANSPORT]
        if not outbox_ids:
            return planned, []
        return with_outbox_payloads(planned, self._entries(outbox_ids))

    def _replay_page(self, planned: Sequence[PlannedReplay], *, dry_run: bool) -> builtins.list[str]:
        keys: builtins.list[str] = [self.key]
        args: builtins.list[str | bytes] = [
            STREAM_PAYLOAD_FIELD.decode(),
            Stat.DLQ_REPLAYED,
            "1" if dry_run else "0",
        ]
        for item in planned:
            keys += [item.target.key, KeySchema(self.keys.namespace, item.target.key).stats()]
            args += [item.head.id, item.target.redis_type, item.payload]
        with redis_errors(self.url):
            statuses: builtins.list[bytes] = raw_command(
                self.client, "EVAL", REPLAY_SCRIPT, len(keys), *keys, *args
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

    def _select(
        self, selection: Selection
    ) -> Iterator[tuple[builtins.list[DeadLetterHead], builtins.list[str]]]:
        """Pages of (heads of the selected entries, the selected ids that are not in the store)."""
        if isinstance(selection, DeadLetterFilter):
            for heads in self._scan(selection):
                yield heads, []
            return
        ids = [selection] if isinstance(selection, str) else list(dict.fromkeys(selection))
        for start in range(0, len(ids), PAGE_SIZE):
            page = ids[start : start + PAGE_SIZE]
            heads = self._heads([entry_id for entry_id in page if is_entry_id(entry_id)])
            found = {head.id for head in heads}
            yield heads, [entry_id for entry_id in page if entry_id not in found]

    def _scan(
        self, where: DeadLetterFilter, *, after: str | None = None
    ) -> Iterator[builtins.list[DeadLetterHead]]:
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

    def _scan_page(self, start: str, end: str, count: int) -> builtins.list[DeadLetterHead]:
        with redis_errors(self.url):
            rows = raw_command(self.client, "EVAL", _SCAN_HEADS, 1, self.key, start, end, count)
        return [_head(row) for row in rows]

    def _heads(self, ids: Sequence[str]) -> builtins.list[DeadLetterHead]:
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


def _matcher(where: DeadLetterFilter) -> Callable[[DeadLetterHead], bool]:
    wanted_type = None if where.msg_type is None else normalize_level(where.msg_type) or where.msg_type

    def matches(head: DeadLetterHead) -> bool:
        return (
            (where.reason is None or head.reason == where.reason)
            and (wanted_type is None or head.msg_type == wanted_type)
            and (where.origin is None or head.origin == where.origin)
        )

    return matches


def _head(row: list[bytes]) -> DeadLetterHead:
    entry_id, reason, msg_type, origin, truncated, transport = (
        value.decode("utf-8", "replace") for value in row
    )
    return DeadLetterHead(entry_id, reason, msg_type, origin, truncated == "1", transport)


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
