"""Redis Streams with a consumer group: the reliable default.

Producers ``XADD`` each message as one field ``m``; consumers read with ``XREADGROUP`` and the entry stays
in the group's pending list (PEL) until ``XACK``, so a crashed consumer's entries are never lost: its own
restart takes them back (``recover``), and any live consumer takes over entries idle for longer than
``claim_idle_s`` (``reclaim``, ``XAUTOCLAIM``). A retried message is added again with two more fields,
``n`` (deliveries so far) and ``e`` (the last error). The group is created at id ``0``: messages produced
before the first consumer started are processed too.

Settled entries are deleted with their ack (``XDEL`` in the settle script) while our group is the only one
reading the stream, so the stream holds exactly what is not settled yet and a group deleted under us
(FLUSHALL, DEL, XGROUP DESTROY) is created again at ``0`` without delivering anything already written. With
other groups on the stream they stay until ``XTRIM MINID`` drops them below the oldest entry any group
still needs (pending or undelivered), never with ``MAXLEN`` (which deletes entries whether or not anyone
processed them).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import orjson
import redis
from redis.typing import StreamIdT

from msgrelay.deadletter import DeadLetter
from msgrelay.keys import STREAM_PAYLOAD_FIELD, KeySchema, Stat
from msgrelay.message import Delivery
from msgrelay.retries import RetryRecord
from msgrelay.transport import scripts
from msgrelay.transport.base import HeldEntries, Transport, raw_command, redis_errors

log = logging.getLogger(__name__)

StreamEntry = list[Any]
"""An entry as hiredis parses it: ``[id, [field, value, field, value ...]]``; the fields are None for an
entry deleted while pending."""
LiveEntry = tuple[bytes, list[bytes]]

BACKLOG_SCAN_LIMIT = 100_000
HELD_SCAN_LIMIT = 100
"""Pending entries per consumer ``held_elsewhere`` looks at for the longest idle (the oldest ids: the first
delivered)."""
"""On Redis 6.2 (no group lag) a backlog larger than this is reported as unknown rather than scanned."""

_RETRY_FIELDS = frozenset((STREAM_PAYLOAD_FIELD, b"n", b"e"))
MAX_COUNT_DIGITS = 9
"""A retry count (field ``n``) has at most this many digits; longer is not ours (the promote script writes
counts up to ``max_deliveries``)."""
UNREADABLE_KEEP_BYTES = 64 * 1024


class StreamTransport(Transport):
    """A stream key plus a consumer group."""

    name: ClassVar[str] = "streams"

    def __init__(self, client: redis.Redis, keys: KeySchema, *, url: str, group: str) -> None:
        super().__init__(client, keys, url=url)
        self.group = group
        self._send = client.register_script(scripts.STREAM_SEND)
        self._settle = client.register_script(scripts.STREAM_SETTLE)
        self._promote = client.register_script(scripts.STREAM_PROMOTE)
        self._setup = client.register_script(scripts.STREAM_SETUP)
        self._forget = client.register_script(scripts.STREAM_FORGET)
        self._claim_cursor = b"0-0"
        # Replies of the commands that read entries are used as hiredis parses them (nested lists): redis-py's
        # callbacks would build a tuple and a dict per entry first, which cost more than all our own work.
        for command in ("XREADGROUP", "XAUTOCLAIM"):
            client.set_response_callback(command, _reply_as_parsed)

    def send(self, payloads: Sequence[bytes]) -> None:
        if not payloads:
            return
        with redis_errors(self.url):
            self._send(
                keys=[self.keys.queue, self.keys.stats()],
                args=[STREAM_PAYLOAD_FIELD, Stat.PRODUCED, *payloads],
            )

    def setup(self) -> None:
        with redis_errors(self.url):
            self._setup(keys=[self.keys.queue, self.keys.stats()], args=[self.group])

    def _group_info(self) -> dict[str, Any] | None:
        """Our group's XINFO GROUPS row, or None if the stream or the group does not exist."""
        try:
            groups = self.client.xinfo_groups(self.keys.queue)
        except redis.exceptions.ResponseError:
            return None  # no stream yet
        return next((group for group in groups if group["name"] == self.group.encode()), None)

    def recover(self, consumer: str, count: int) -> list[Delivery]:
        entries = self._read(consumer, count, from_id=b"0", block_s=0.0)
        return self._with_delivery_counts(consumer, entries)

    def fetch(self, consumer: str, count: int, block_s: float) -> list[Delivery]:
        # The hot path: new entries are delivered for the first time, and nearly all are our own format.
        deliveries: list[Delivery] = []
        for entry_id, fields in self._read(consumer, count, b">", block_s):
            if len(fields) == 2 and fields[0] == STREAM_PAYLOAD_FIELD:
                deliveries.append(Delivery(fields[1], entry_id, entry_id.decode()))
            else:
                deliveries.append(_delivery(entry_id, fields, 1))
        return deliveries

    def reclaim(self, consumer: str, count: int, min_idle_s: float) -> list[Delivery]:
        min_idle_ms = max(1, int(min_idle_s * 1000))
        with redis_errors(self.url):
            reply = self._call_with_group(
                lambda: raw_command(
                    self.client,
                    "XAUTOCLAIM",
                    self.keys.queue,
                    self.group,
                    consumer,
                    min_idle_ms,
                    self._claim_cursor,
                    "COUNT",
                    count,
                )
            )
        # Redis 7 also returns (and drops from the PEL) claimed ids whose entries were deleted meanwhile.
        self._claim_cursor, entries = reply[0], reply[1]
        live = self._drop_deleted(entries)  # Redis 6.2 hands deleted entries over with no fields
        if live:
            with redis_errors(self.url):
                raw_command(self.client, "HINCRBY", self.keys.stats(), Stat.RECLAIMED, len(live))
        return self._with_delivery_counts(consumer, live)

    def heartbeat(self, consumer: str, ttl_s: float) -> None:
        """Nothing to do: a stream consumer's liveness is the idle time of the entries it holds."""

    def touch(self, consumer: str, deliveries: Sequence[Delivery]) -> None:
        if not deliveries:
            return
        ids: list[StreamIdT] = [d.handle for d in deliveries]
        with redis_errors(self.url):
            # XCLAIM ... JUSTID resets the idle time without counting a delivery.
            self._call_with_group(
                lambda: self.client.xclaim(self.keys.queue, self.group, consumer, 0, ids, justid=True)
            )

    def _read(self, consumer: str, count: int, from_id: bytes, block_s: float) -> list[LiveEntry]:
        # BLOCK 0 would mean "forever": a non-blocking read leaves BLOCK out.
        block_ms = max(1, int(block_s * 1000)) if block_s > 0 else None
        with redis_errors(self.url):
            reply = self._call_with_group(
                lambda: self.client.xreadgroup(
                    self.group, consumer, {self.keys.queue: from_id}, count=count, block=block_ms
                )
            )
        if not reply:
            return []
        # One stream read: RESP3 replies {stream: entries} (redis-py 8's default), RESP2 [[stream, entries]].
        entries = next(iter(reply.values())) if isinstance(reply, dict) else reply[0][1]
        return self._drop_deleted(entries)

    def _drop_deleted(self, entries: Sequence[StreamEntry]) -> list[LiveEntry]:
        """The entries that still exist; pending entries deleted from the stream (XDEL) are acknowledged."""
        live: list[LiveEntry] = []
        gone: list[bytes] = []
        for entry_id, fields in entries:
            if fields:
                live.append((entry_id, fields))
            else:
                gone.append(entry_id)
        if gone:
            self._ack_ids(gone)
        return live

    def _call_with_group(self, command: Any) -> Any:
        """``command()``; if the stream or our group was deleted under us (FLUSHALL, DEL, XGROUP DESTROY),
        create the group again and retry once. It is created at 0: settled entries were deleted with their
        ack (see ``scripts.STREAM_SETTLE``), so what it delivers is exactly what was never settled,
        entries a dead consumer held at the time included."""
        try:
            return command()
        except redis.exceptions.ResponseError as exc:
            if not str(exc).startswith("NOGROUP"):
                raise
            self.setup()
            log.warning(
                "consumer group %r of stream %r was deleted (FLUSHALL, DEL or XGROUP DESTROY): created it "
                "again; it delivers every entry not settled yet",
                self.group,
                self.keys.queue,
            )
            return command()

    def _with_delivery_counts(self, consumer: str, entries: Sequence[LiveEntry]) -> list[Delivery]:
        """Deliveries for entries read again, each with its delivery counter from the PEL."""
        if not entries:
            return []
        ids = [entry_id for entry_id, _ in entries]
        with redis_errors(self.url):
            first, last = min(ids, key=_parse_id), max(ids, key=_parse_id)  # ids compare as numbers
            pending = self._call_with_group(
                lambda: self.client.xpending_range(
                    self.keys.queue, self.group, first, last, len(ids) * 2 + 10, consumer
                )
            )
        times = {row["message_id"]: int(row["times_delivered"]) for row in pending}
        return [_delivery(entry_id, fields, times.get(entry_id, 2)) for entry_id, fields in entries]

    def _ack_ids(self, ids: Sequence[bytes]) -> None:
        with redis_errors(self.url):
            self.client.xack(self.keys.queue, self.group, *ids)

    def settle(
        self,
        consumer: str,
        written: Sequence[Delivery],
        dead: Sequence[DeadLetter],
        type_counts: Mapping[str, int],
        retries: Sequence[RetryRecord] = (),
    ) -> None:
        handles = [d.handle for d in written] + [letter.delivery.handle for letter in dead]
        handles += [record.handle for record in retries]
        args = self._settlement_args(consumer, handles, dead, type_counts, retries)
        keys = [
            self.keys.queue,
            self.keys.dead_letters(),
            self.keys.stats(),
            self.keys.retry(),
            self.keys.journal(),
        ]
        with redis_errors(self.url):
            self._settle(keys=keys, args=[self.group, *args])

    def promote_retries(self, now_ms: int, count: int) -> int:
        with redis_errors(self.url):
            return int(self._promote(keys=[self.keys.retry(), self.keys.queue], args=[now_ms, count]))

    def trim(self) -> None:
        """``XTRIM MINID`` below the oldest entry any group still needs (pending, or not yet delivered)."""
        with redis_errors(self.url):
            try:
                groups = self.client.xinfo_groups(self.keys.queue)
            except redis.exceptions.ResponseError:
                return  # no stream yet
            if not groups:
                return  # nobody has read anything yet: everything is undelivered
            ms, seq = min(_needed_from(self.client, self.keys.queue, group) for group in groups)
            raw_command(self.client, "XTRIM", self.keys.queue, "MINID", f"{ms}-{seq}")

    def backlog(self) -> int | None:
        with redis_errors(self.url):
            group = self._group_info()
            length = int(self.client.xlen(self.keys.queue))
        if group is None:
            return length  # no group yet: everything is backlog (0 if there is no stream either)
        lag = group.get("lag")
        if lag is not None and 0 <= int(lag) <= length:
            return int(lag)
        # Redis < 7 has no lag, and 7.0 can report a stale one after restarts and trims: count instead.
        return self._count_after(group["last-delivered-id"])

    def _count_after(self, last_delivered: bytes) -> int | None:
        """Redis < 7 has no group lag: count undelivered entries, up to BACKLOG_SCAN_LIMIT (else None)."""
        with redis_errors(self.url):
            entries = raw_command(
                self.client,
                "XRANGE",
                self.keys.queue,
                b"(" + last_delivered,
                "+",
                "COUNT",
                BACKLOG_SCAN_LIMIT + 1,
            )
        return len(entries) if len(entries) <= BACKLOG_SCAN_LIMIT else None

    def pending(self) -> dict[str, int]:
        with redis_errors(self.url):
            try:
                consumers = self.client.xinfo_consumers(self.keys.queue, self.group)
            except redis.exceptions.ResponseError:
                return {}
        return {c["name"].decode(): int(c["pending"]) for c in consumers}

    def held_elsewhere(self, consumer: str, min_idle_s: float) -> list[HeldEntries]:
        """XAUTOCLAIM takes an entry once it has been idle ``min_idle_s``: the soonest is the most idle."""
        held = []
        for name, count in self.pending().items():
            if name == consumer or not count:
                continue
            with redis_errors(self.url):
                oldest = self.client.xpending_range(
                    self.keys.queue, self.group, "-", "+", HELD_SCAN_LIMIT, name
                )
            idle_s = max((int(row["time_since_delivered"]) for row in oldest), default=0) / 1000
            held.append(HeldEntries(name, count, max(0.0, min_idle_s - idle_s)))
        return held

    def leave(self, consumer: str) -> None:
        """Remove the consumer from the group if it holds nothing (keeps XINFO CONSUMERS short)."""
        if self.pending().get(consumer, 1) == 0:
            with redis_errors(self.url):
                self.client.xgroup_delconsumer(self.keys.queue, self.group, consumer)

    def gone_consumers(self, idle_s: float) -> set[str]:
        """Consumers holding nothing whose XINFO CONSUMERS ``idle`` is ``idle_s`` or more. Redis 7.2 counts
        ``idle`` from the consumer's last read or claim attempt; earlier versions from its last one that
        got entries, so there a live consumer waiting on a quiet queue that long counts as gone too (it
        holds nothing, and its next delivery brings it back)."""
        with redis_errors(self.url):
            try:
                consumers = self.client.xinfo_consumers(self.keys.queue, self.group)
            except redis.exceptions.ResponseError:
                return set()
        return {
            c["name"].decode()
            for c in consumers
            if int(c["pending"]) == 0 and int(c["idle"]) >= idle_s * 1000
        }

    def forget_consumers(self, idle_s: float, *, keep: str = "") -> list[str]:
        """``XGROUP DELCONSUMER`` the :meth:`gone_consumers`, in one script (``scripts.STREAM_FORGET``)."""
        with redis_errors(self.url):
            forgotten: list[bytes] = self._forget(
                keys=[self.keys.queue], args=[self.group, max(0, int(idle_s * 1000)), keep]
            )
        return [name.decode() for name in forgotten]


def _needed_from(client: redis.Redis, stream: str, group: dict[str, Any]) -> tuple[int, int]:
    """The smallest entry id the group still needs, as (ms, seq): its oldest pending entry, else the
    first entry after its last delivered one."""
    candidates = [_next_id(group["last-delivered-id"])]
    if int(group["pending"]):
        summary = client.xpending(stream, group["name"])
        if summary["min"] is not None:  # the entries may have been acknowledged since XINFO
            candidates.append(_parse_id(summary["min"]))
    return min(candidates)


def _parse_id(entry_id: bytes | str) -> tuple[int, int]:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def _next_id(entry_id: bytes) -> tuple[int, int]:
    ms, seq = _parse_id(entry_id)
    return ms, seq + 1


def _reply_as_parsed(reply: Any, **_options: Any) -> Any:
    return reply


def _delivery(entry_id: bytes, flat_fields: list[bytes], times_delivered: int) -> Delivery:
    """The delivery of one entry, whatever its fields hold: never raises.

    One entry must never crash a fetch, a recovery or a take-over, nor keep its batch-mates pending: an entry
    that cannot be read (an error reading its fields included) comes back marked ``unreadable`` with the
    error, for the consumer to dead-letter (see :mod:`msgrelay.barriers`)."""
    try:
        return _read_entry(entry_id, flat_fields, times_delivered)
    except Exception as exc:
        return Delivery(
            _fields_as_text(flat_fields),
            entry_id,
            entry_id.decode("ascii", "replace"),
            times_delivered,
            unreadable=f"{type(exc).__name__}: {exc}",
        )


def _read_entry(entry_id: bytes, flat_fields: list[bytes], times_delivered: int) -> Delivery:
    names, values = flat_fields[::2], flat_fields[1::2]
    fields = dict(zip(names, values, strict=True))
    ours = len(fields) == len(names) and STREAM_PAYLOAD_FIELD in fields and fields.keys() <= _RETRY_FIELDS
    if ours:  # our layout: the payload, and for a retry its count so far and last error
        return _retried(entry_id, fields, times_delivered)
    return Delivery(_payload(names, values), entry_id, entry_id.decode(), times_delivered)


def _retried(entry_id: bytes, fields: dict[bytes, bytes], times_delivered: int) -> Delivery:
    """An entry in our layout. Its retry count is range-checked: a count that is not a delivery count (a
    5000-digit one, which ``int()`` refuses) makes it unreadable, its message kept whole for a replay."""
    payload, count = fields[STREAM_PAYLOAD_FIELD], fields.get(b"n", b"0")
    if not (count.isdigit() and len(count) <= MAX_COUNT_DIGITS):
        shown = repr(count[:20])[1:] + ("..." if len(count) > 20 else "")
        detail = f"retry count n={shown} ({len(count)} characters) is not a delivery count"
        return Delivery(payload, entry_id, entry_id.decode(), times_delivered, unreadable=detail)
    last_error = fields.get(b"e", b"").decode("utf-8", "replace")
    return Delivery(payload, entry_id, entry_id.decode(), int(count) + times_delivered, last_error)


def _payload(names: list[bytes], values: list[bytes]) -> bytes:
    """An entry XADDed by hand with fields other than ours reads as one JSON object of its fields. A name
    given more than once (Redis keeps every pair) holds the list of its values, so none is dropped."""
    record: dict[str, Any] = {}
    for name, value in zip(names, values, strict=True):
        key, text = name.decode("utf-8", "replace"), value.decode("utf-8", "replace")
        if key not in record:
            record[key] = text
        elif isinstance(record[key], list):
            record[key].append(text)
        else:
            record[key] = [record[key], text]
    return orjson.dumps(record)


def _fields_as_text(flat_fields: object) -> bytes:
    """What an unreadable entry's dead letter keeps of it: its fields as text (last resort, never raises)."""
    return repr(flat_fields).encode("utf-8", "backslashreplace")[:UNREADABLE_KEEP_BYTES]
