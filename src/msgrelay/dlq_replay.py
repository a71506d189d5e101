"""Replaying dead letters: which queue each one may go back to, and the script that puts it there.

A dead letter is data: anyone who can write to Redis can add one naming any key as its ``origin``, and an
origin queue may have been emptied (Redis deletes an empty list or, with ``DEL``, a stream) since. So
replay trusts neither the origin nor what the key holds now:

* **Only the queues of this configuration** are targets (:func:`replay_targets`): the log stream and list
  (``queue.stream``, ``queue.buffer_key``), the alert stream and list (``alerts.stream``,
  ``alerts.list_key``) and the notify outboxes. Any other origin is refused, never written to.
* **The origin's own transport**, recorded on the dead letter (``streams``, ``lists``, ``outbox``), decides
  how the entry goes back: ``XADD`` to a stream, ``LPUSH`` to a list, ``ZADD`` (with a fresh attempt
  budget) to an outbox. A dead letter written before the transport was recorded takes the one the
  configuration gives its key; a key configured both ways is refused (nothing says which).
* **Never a key of another type**: in the same script as the write, the target's ``TYPE`` must be ``none``
  or the expected one. A ``message_buffer`` emptied by its consumers is recreated as a list, so every
  ``LPUSH message_buffer`` producer and ``consume -t lists`` keeps working (before, it came back as a
  stream and both failed with ``WRONGTYPE``).

One entry that cannot be replayed is skipped with its id and reason; the others go on.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from msgrelay.deadletter import OUTBOX_TRANSPORT, DeadLetterEntry, DeadLetterHead
from msgrelay.keys import KeySchema

if TYPE_CHECKING:  # only read here; importing config at run time would be a cycle through the consumer
    from msgrelay.config import Settings

REDIS_TYPES: Final = {"streams": "stream", "lists": "list", OUTBOX_TRANSPORT: "zset"}
"""What ``TYPE`` answers for the key of each transport."""

# Replay dead letters of the store KEYS[1]: for the n-th one, ARGV[3n+1] is its id, ARGV[3n+2] the Redis
# type its target queue KEYS[2n] must have (or not exist), ARGV[3n+3] what to ZADD into an outbox (the
# notification with a fresh attempt budget); KEYS[2n+1] is the stats hash counting ARGV[2]. A stream entry
# gets the raw bytes as field ARGV[1]. With ARGV[3] = '1' (a dry run) nothing is written. The write comes
# before the delete: should anything fail in between, the entry is duplicated, never lost. Returns one
# status per entry: replayed, missing, truncated or wrong_type:<type>.
REPLAY_SCRIPT: Final = """
local dry = ARGV[3] == '1'
local statuses = {}
for n = 1, (#ARGV - 3) / 3 do
  local id, expected, prepared = ARGV[3 * n + 1], ARGV[3 * n + 2], ARGV[3 * n + 3]
  local target, stats = KEYS[2 * n], KEYS[2 * n + 1]
  local found = redis.call('XRANGE', KEYS[1], id, id)
  local status = 'missing'
  if #found == 1 then
    local raw, truncated = '', '0'
    local fields = found[1][2]
    for j = 1, #fields, 2 do
      if fields[j] == 'raw' then raw = fields[j + 1] end
      if fields[j] == 'truncated' then truncated = fields[j + 1] end
    end
    local kind = redis.call('TYPE', target)['ok']
    if truncated == '1' then
      status = 'truncated'
    elseif kind ~= 'none' and kind ~= expected then
      status = 'wrong_type:' .. kind
    else
      status = 'replayed'
      if not dry then
        if expected == 'stream' then
          redis.call('XADD', target, '*', ARGV[1], raw)
        elseif expected == 'list' then
          redis.call('LPUSH', target, raw)
        else
          redis.call('ZADD', target, redis.call('TIME')[1], prepared)  -- due now
        end
        redis.call('XDEL', KEYS[1], id)
        redis.pcall('HINCRBY', stats, ARGV[2], 1)  -- a counter: a stats key of another type must not stop us
      end
    end
  end
  statuses[n] = status
end
return statuses
"""

SKIP_REASONS: Final = {
    "truncated": "truncated (oversize: only a preview was kept, the message is lost; purge them)",
    "missing": "not found",
    "no_origin": "with no origin queue recorded",
    "foreign_origin": "from a key that is not a queue of this configuration",
    "ambiguous_origin": "with no transport recorded, for a key configured both as stream and list",
    "wrong_type": "for a queue key that now holds another type",
    "bad_notification": "for the notify outbox whose raw entry is not a notification",
}
"""Why a dead letter was not replayed: reason code -> the phrase a summary uses for a count of them."""


@dataclass(frozen=True, slots=True)
class ReplayTarget:
    """A queue of this configuration that dead letters may go back to: its key and transport."""

    key: str
    transport: str
    """``streams``, ``lists`` or ``outbox`` (see :data:`REDIS_TYPES`)."""

    @property
    def redis_type(self) -> str:
        return REDIS_TYPES[self.transport]


def replay_targets(settings: Settings) -> frozenset[ReplayTarget]:
    """Every queue of this configuration, on both transports: the log messages', the alerts' and the notify
    outboxes. A ``--transport`` flag chooses how a command reads; both keys belong to the configuration."""
    ns, queue, alerts = settings.queue.namespace, settings.queue, settings.alerts
    return frozenset(
        (
            ReplayTarget(queue.stream, "streams"),
            ReplayTarget(queue.buffer_key, "lists"),
            ReplayTarget(alerts.stream, "streams"),
            ReplayTarget(alerts.list_key, "lists"),
            ReplayTarget(KeySchema(ns, alerts.stream).outbox(), OUTBOX_TRANSPORT),
            ReplayTarget(KeySchema(ns, alerts.list_key).outbox(), OUTBOX_TRANSPORT),
        )
    )


@dataclass(frozen=True, slots=True)
class SkippedDeadLetter:
    """A dead letter that was not replayed (it stays in the store, unless it was not found there)."""

    id: str
    reason: str
    """A key of :data:`SKIP_REASONS`."""
    detail: str
    """The same, about this entry, for a person."""


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """What ``replay`` did (or, with ``dry_run``, would do)."""

    replayed: int = 0
    skipped_entries: tuple[SkippedDeadLetter, ...] = ()
    """Oldest first."""
    dry_run: bool = False

    @property
    def skipped(self) -> int:
        return len(self.skipped_entries)

    def by_reason(self) -> dict[str, int]:
        """Reason -> how many were skipped for it, in the order of :data:`SKIP_REASONS`."""
        counts = {reason: 0 for reason in SKIP_REASONS}
        for entry in self.skipped_entries:
            counts[entry.reason] += 1
        return {reason: count for reason, count in counts.items() if count}


@dataclass(frozen=True, slots=True)
class PlannedReplay:
    """One dead letter and where it goes back to; ``payload`` is what an outbox gets (empty otherwise)."""

    head: DeadLetterHead
    target: ReplayTarget
    payload: bytes = b""


def plan(
    heads: Iterable[DeadLetterHead], targets: Collection[ReplayTarget]
) -> tuple[list[PlannedReplay], list[SkippedDeadLetter]]:
    """Where each dead letter goes back to, or why it cannot (outbox payloads are filled in later)."""
    planned: list[PlannedReplay] = []
    skipped: list[SkippedDeadLetter] = []
    for head in heads:
        target = _target(head, targets)
        if isinstance(target, SkippedDeadLetter):
            skipped.append(target)
        else:
            planned.append(PlannedReplay(head, target))
    return planned, skipped


def _target(head: DeadLetterHead, targets: Collection[ReplayTarget]) -> ReplayTarget | SkippedDeadLetter:
    if head.truncated:
        return SkippedDeadLetter(head.id, "truncated", "oversize: only a 1 KiB preview was kept")
    if not head.origin:
        return SkippedDeadLetter(head.id, "no_origin", "no origin queue recorded")
    same_key = [target for target in targets if target.key == head.origin]
    matching = [target for target in same_key if target.transport == head.transport or not head.transport]
    if len(matching) == 1:
        return matching[0]
    if matching:
        return SkippedDeadLetter(
            head.id, "ambiguous_origin", f"no transport recorded, and {head.origin!r} is configured as both"
        )
    recorded = f" ({head.transport})" if head.transport else ""
    return SkippedDeadLetter(
        head.id,
        "foreign_origin",
        f"{head.origin!r}{recorded} is not a queue of this configuration (queue.stream, queue.buffer_key, "
        "alerts.stream, alerts.list_key, the notify outbox)",
    )


def with_outbox_payloads(
    planned: Sequence[PlannedReplay], entries: Sequence[DeadLetterEntry]
) -> tuple[list[PlannedReplay], list[SkippedDeadLetter]]:
    """Outbox replays with their notification (attempts reset), or skipped when the raw entry is not one.

    ``entries`` are the whole dead letters of the outbox replays (the others need no raw bytes here)."""
    raw_by_id = {entry.id: entry.raw for entry in entries}
    ready: list[PlannedReplay] = []
    skipped: list[SkippedDeadLetter] = []
    for item in planned:
        if item.target.transport != OUTBOX_TRANSPORT:
            ready.append(item)
            continue
        try:
            payload = fresh_notification(raw_by_id[item.head.id])
        except KeyError:
            skipped.append(SkippedDeadLetter(item.head.id, "missing", "not in the store"))
        except ValueError as exc:
            skipped.append(SkippedDeadLetter(item.head.id, "bad_notification", f"not a notification: {exc}"))
        else:
            ready.append(PlannedReplay(item.head, item.target, payload))
    return ready, skipped


def fresh_notification(raw: bytes) -> bytes:
    """An outbox item as the notify loop wrote it, with its failed attempts reset to 0 (a fresh budget).

    Raises ``ValueError`` when ``raw`` is not an outbox item."""
    from msgrelay.alerting.outbox import OutboxItem  # noqa: PLC0415 - alert modules load only when needed

    try:
        item = OutboxItem.decode(raw)
        return OutboxItem(item.notifier, 0, item.notification).encode()
    except (KeyError, TypeError, ValueError, AttributeError) as exc:  # orjson's errors are among them
        raise ValueError(f"{type(exc).__name__}: {exc}") from None


def oldest_first(skipped: Iterable[SkippedDeadLetter]) -> tuple[SkippedDeadLetter, ...]:
    """``skipped`` in the order of their ids (``<ms>-<seq>``, compared as numbers)."""

    def age(entry: SkippedDeadLetter) -> tuple[int, ...]:
        ms, _, seq = entry.id.partition("-")
        return (int(ms), int(seq)) if ms.isdigit() and seq.isdigit() else (2**64,)

    return tuple(sorted(skipped, key=age))


def skipped_by_script(item: PlannedReplay, status: str) -> SkippedDeadLetter:
    """The skip the replay script reported for ``item`` (any status but ``replayed``)."""
    if status.startswith("wrong_type:"):
        found = status.partition(":")[2]
        return SkippedDeadLetter(
            item.head.id,
            "wrong_type",
            f"{item.target.key!r} now holds a {found}, not the {item.target.redis_type} its "
            f"{item.target.transport} producers and consumers use: nothing was written to it",
        )
    if status == "truncated":
        return SkippedDeadLetter(item.head.id, "truncated", "oversize: only a 1 KiB preview was kept")
    return SkippedDeadLetter(
        item.head.id, "missing", "not in the store (replayed, purged or trimmed meanwhile)"
    )
