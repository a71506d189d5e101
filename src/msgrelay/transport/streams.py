"""Redis Streams with a consumer group: the reliable default.

Producers ``XADD`` each message as one field ``m``; consumers read with ``XREADGROUP`` and the entry stays
in the group's pending list (PEL) until ``XACK``, so a crashed consumer's entries are never lost: its own
restart takes them back (``recover``), and any live consumer takes over entries idle for longer than
``claim_idle_s`` (``reclaim``: ``XPENDING ... IDLE`` and ``XCLAIM`` in a script, as ``XAUTOCLAIM`` would).
A retried message is added again with two more fields, ``n`` (deliveries so far) and ``e`` (the last
error). The group is created at id ``0``: messages produced before the first consumer started are
processed too.

Settled entries are deleted with their ack (``XDEL`` in the settle script) while our group is the only one
reading the stream, so the stream holds exactly what is not settled yet and a group deleted under us
(FLUSHALL, DEL, XGROUP DESTROY) is created again at ``0`` without delivering anything already written. With
other groups on the stream they stay until ``XTRIM MINID`` drops them below the oldest entry any group
still needs (pending or undelivered), never with ``MAXLEN`` (which deletes entries whether or not anyone
processed them).

Bytes: new entries are read with a plain ``XREADGROUP COUNT n BLOCK`` (the hot path, nothing added in
Redis), through a client whose reply is abandoned past a cap (:mod:`msgrelay.transport.replies`). Entries
a read took but did not hand out -- all of a reply too large to read, or those from an oversize entry or
the byte budget on -- stay pending in this consumer's PEL, delivered once and seen by nobody: the next
fetch hands them out first, on the server side (``fetch_scripts.STREAM_TAKE_UNREAD``: oversize ones are
dead-lettered there, the rest comes within the budget). ``recover`` and ``reclaim`` read pending entries
one by one in a script too, so a dead consumer's 100 MB entry is never loaded by the one taking it over.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import redis
from redis.typing import StreamIdT

from msgrelay.deadletter import DeadLetter
from msgrelay.keys import STREAM_PAYLOAD_FIELD, KeySchema, Stat
from msgrelay.message import Delivery
from msgrelay.retries import RetryRecord
from msgrelay.transport import fetch_scripts, scripts
from msgrelay.transport.base import (
    DEFAULT_MAX_BATCH_BYTES,
    DEFAULT_MAX_MESSAGE_BYTES,
    HeldEntries,
    Transport,
    raw_command,
    redis_errors,
)
from msgrelay.transport.replies import ReplyTooLarge, reply_cap
from msgrelay.transport.stream_entries import StreamEntry, entry_delivery, redeliveries

log = logging.getLogger(__name__)

BACKLOG_SCAN_LIMIT = 100_000
HELD_SCAN_LIMIT = 100
"""Pending entries per consumer ``held_elsewhere`` looks at for the longest idle (the oldest ids: the first
delivered)."""
"""On Redis 6.2 (no group lag) a backlog larger than this is reported as unknown rather than scanned."""

_ENTRY_REPLY_BYTES = 128
"""RESP bytes around one entry of our format in an XREADGROUP reply (its id and headers), for the cap."""


class StreamTransport(Transport):
    """A stream key plus a consumer group."""

    name: ClassVar[str] = "streams"

    def __init__(
        self,
        client: redis.Redis,
        keys: KeySchema,
        *,
        url: str,
        group: str,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
    ) -> None:
        super().__init__(
            client, keys, url=url, max_message_bytes=max_message_bytes, max_batch_bytes=max_batch_bytes
        )
        self.group = group
        self._send = client.register_script(scripts.STREAM_SEND)
        self._settle = client.register_script(scripts.STREAM_SETTLE)
        self._promote = client.register_script(scripts.STREAM_PROMOTE)
        self._setup = client.register_script(scripts.STREAM_SETUP)
        self._forget = client.register_script(scripts.STREAM_FORGET)
        self._take_unread = client.register_script(fetch_scripts.STREAM_TAKE_UNREAD)
        self._recover = client.register_script(fetch_scripts.STREAM_RECOVER)
        self._reclaim = client.register_script(fetch_scripts.STREAM_RECLAIM)
        self._claim_cursor = b"-"
        self._unread: dict[str, bytes] = {}
        """Consumer -> XPENDING start of the entries a read took but did not hand out."""
        self._last_read: dict[str, bytes] = {}
        """Consumer -> id of the last entry its latest read returned (unread entries come after it)."""

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
        args = self._fetch_args(consumer, self.group, count)
        entries, times, _ = self._until_handed_out(lambda: self._recover(keys=self._script_keys(), args=args))
        return redeliveries(entries, times)

    def fetch(self, consumer: str, count: int, block_s: float) -> list[Delivery]:
        deadline = time.monotonic() + block_s
        while True:
            while consumer in self._unread:
                taken = self._take(consumer, count)
                if taken:
                    return taken
            read = self._read_new(consumer, count, deadline - time.monotonic() if block_s > 0 else 0.0)
            if read is None:
                continue  # a reply too large to read: its entries are ours, unread, taken above
            entries, reply_bytes = read
            if not entries:
                return []
            deliveries = self._hand_out(consumer, entries, reply_bytes)
            if deliveries:
                return deliveries

    def reclaim(self, consumer: str, count: int, min_idle_s: float) -> list[Delivery]:
        min_idle_ms = max(1, int(min_idle_s * 1000))

        def reclaim_some() -> list[Any]:
            args = self._fetch_args(
                consumer, self.group, min_idle_ms, self._claim_cursor, count, Stat.RECLAIMED
            )
            reply: list[Any] = self._reclaim(keys=self._script_keys(), args=args)
            self._claim_cursor = reply[2]
            return reply

        entries, times, _, _ = self._until_handed_out(reclaim_some)
        return redeliveries(entries, times)

    def _read_new(self, consumer: str, count: int, block_s: float) -> tuple[list[StreamEntry], int] | None:
        """``XREADGROUP ... >``, the hot path: the entries and the size of the reply. None when the reply was
        too large to read (its entries are now ours, unread: ``_unread`` says where they start)."""
        # BLOCK 0 would mean "forever": a non-blocking read leaves BLOCK out.
        block_ms = max(1, int(block_s * 1000)) if block_s > 0 else None
        reads = self._capped_reads()
        # The largest reply a batch we could hand out whole makes; anything larger is dropped unread.
        largest = min(max(self.max_batch_bytes, self.max_message_bytes), count * self.max_message_bytes)
        cap = largest + count * _ENTRY_REPLY_BYTES
        with redis_errors(self.url):
            try:
                with reply_cap(cap) as meter:
                    reply = self._call_with_group(
                        lambda: reads.xreadgroup(
                            self.group, consumer, {self.keys.queue: b">"}, count=count, block=block_ms
                        )
                    )
            except ReplyTooLarge:
                last = self._last_read.get(consumer)
                self._unread[consumer] = b"(" + last if last else b"-"
                return None
        if not reply:
            return [], meter.read_bytes
        # One stream read: RESP3 replies {stream: entries} (redis-py 8's default), RESP2 [[stream, entries]].
        entries: list[StreamEntry] = next(iter(reply.values())) if isinstance(reply, dict) else reply[0][1]
        self._last_read[consumer] = entries[-1][0]
        return entries, meter.read_bytes

    def _hand_out(self, consumer: str, entries: list[StreamEntry], reply_bytes: int) -> list[Delivery]:
        """Deliveries for new entries (nearly all in our own format), up to an oversize one and within the
        byte budget; the entries after those handed out stay unread, for the next fetch. ``reply_bytes``,
        the size of the reply they came in, bounds their size from above."""
        limit = self.max_message_bytes
        deliveries: list[Delivery] = []
        append = deliveries.append
        for entry_id, fields in entries:
            if len(fields) == 2 and fields[0] == STREAM_PAYLOAD_FIELD and len(fields[1]) <= limit:
                append(Delivery(fields[1], entry_id, entry_id.decode()))
                continue
            delivery = entry_delivery(entry_id, fields, 1)
            if len(delivery.raw) > limit:
                return self._within_budget(consumer, entries, deliveries)
            append(delivery)
        budget = self.max_batch_bytes
        if reply_bytes > budget and sum([len(delivery.raw) for delivery in deliveries]) > budget:
            return self._within_budget(consumer, entries, deliveries)
        return deliveries

    def _within_budget(
        self, consumer: str, entries: list[StreamEntry], deliveries: list[Delivery]
    ) -> list[Delivery]:
        """The longest first part of ``deliveries`` (the first entries of ``entries``) within the budget, at
        least one; the entries after it stay unread."""
        kept, total = len(deliveries), 0
        for index, delivery in enumerate(deliveries):
            total += len(delivery.raw)
            if total > self.max_batch_bytes and index > 0:
                kept = index
                break
        if kept < len(entries):
            self._unread[consumer] = entries[kept][0]
        return deliveries[:kept]

    def _take(self, consumer: str, count: int) -> list[Delivery]:
        """Entries a read took but did not hand out, decided on the server (see STREAM_TAKE_UNREAD)."""
        start = self._unread[consumer]
        args = self._fetch_args(consumer, self.group, start, count)
        with redis_errors(self.url):
            entries, resume, dead = self._call_with_group(
                lambda: self._take_unread(keys=self._script_keys(), args=args)
            )
        self._dead_lettered += int(dead)
        if resume:
            self._unread[consumer] = resume
        else:
            del self._unread[consumer]
        return [entry_delivery(entry_id, fields, 1) for entry_id, fields in entries]

    def _until_handed_out(self, call: Callable[[], list[Any]]) -> list[Any]:
        """The reply of a recover or reclaim script call, repeated while a call only dead-lettered oversize
        entries: it stops after about the budget's worth of bytes, and more may wait behind them."""
        while True:
            with redis_errors(self.url):
                reply: list[Any] = self._call_with_group(call)
            dead = int(reply[-1])
            self._dead_lettered += dead
            if reply[0] or not dead:
                return reply

    def _capped_reads(self) -> redis.Redis:
        made = self._capped is None
        reads = super()._capped_reads()
        if made:
            # Read replies are used as hiredis parses them (nested lists): redis-py's callback would build a
            # tuple and a dict per entry first, which cost more than all our own work.
            reads.set_response_callback("XREADGROUP", _reply_as_parsed)
        return reads

    def _script_keys(self) -> list[str]:
        return [self.keys.queue, self.keys.dead_letters(), self.keys.stats()]

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

    def _call_with_group(self, command: Any) -> Any:
        """``command()``; if the stream or our group was deleted under us (FLUSHALL, DEL, XGROUP DESTROY),
        create the group again and retry once. It is created at 0: settled entries were deleted with their
        ack (see ``scripts.STREAM_SETTLE``), so what it delivers is exactly what was never settled,
        entries a dead consumer held at the time included."""
        try:
            return command()
        except redis.exceptions.ResponseError as exc:
            if not _no_group(exc):
                raise
            self.setup()
            log.warning(
                "consumer group %r of stream %r was deleted (FLUSHALL, DEL or XGROUP DESTROY): created it "
                "again; it delivers every entry not settled yet",
                self.group,
                self.keys.queue,
            )
            return command()

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
        """``reclaim`` takes an entry once it has been idle ``min_idle_s``: the soonest is the most idle."""
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


def _no_group(exc: redis.exceptions.ResponseError) -> bool:
    """Whether the reply is NOGROUP: a command's, or one inside a script's error (Redis 6.2 wraps it as
    ``Error running script (...): @user_script:9: NOGROUP ...``; 7.0 passes it on as it is)."""
    text = str(exc)
    return text.startswith("NOGROUP") or ": NOGROUP " in text


def _reply_as_parsed(reply: Any, **_options: Any) -> Any:
    return reply
