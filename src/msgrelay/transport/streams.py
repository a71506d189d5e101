"""Redis Streams with a consumer group: the reliable default.

Producers ``XADD`` each message as one field ``m``; consumers read with ``XREADGROUP`` and the entry stays
in the group's pending list (PEL) until ``XACK``, so a crashed consumer's entries are never lost.
The group is created at id ``0``: messages produced before the first consumer started are processed too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import orjson
import redis

from msgrelay.deadletter import DeadLetter
from msgrelay.keys import STREAM_PAYLOAD_FIELD, KeySchema, Stat
from msgrelay.message import Delivery
from msgrelay.transport.base import Transport, raw_command, redis_errors

StreamEntry = tuple[bytes, dict[bytes, bytes] | None]

BACKLOG_SCAN_LIMIT = 100_000
"""On Redis 6.2 (no group lag) a backlog larger than this is reported as unknown rather than scanned."""


class StreamTransport(Transport):
    """A stream key plus a consumer group."""

    name: ClassVar[str] = "streams"

    def __init__(self, client: redis.Redis, keys: KeySchema, *, url: str, group: str) -> None:
        super().__init__(client, keys, url=url)
        self.group = group

    def send(self, payloads: Sequence[bytes]) -> None:
        if not payloads:
            return
        stream = self.keys.queue
        with redis_errors(self.url):
            pipe = self.client.pipeline(transaction=False)
            for payload in payloads:
                raw_command(pipe, "XADD", stream, "*", STREAM_PAYLOAD_FIELD, payload)
            pipe.hincrby(self.keys.stats(), Stat.PRODUCED, len(payloads))
            pipe.execute()

    def setup(self) -> None:
        with redis_errors(self.url):
            try:
                self.client.xgroup_create(self.keys.queue, self.group, id="0", mkstream=True)
            except redis.exceptions.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    def recover(self, consumer: str, count: int) -> list[Delivery]:
        return self._read(consumer, count, from_id=b"0", block_s=0.0, attempt=2)

    def fetch(self, consumer: str, count: int, block_s: float) -> list[Delivery]:
        return self._read(consumer, count, from_id=b">", block_s=block_s, attempt=1)

    def _read(
        self, consumer: str, count: int, *, from_id: bytes, block_s: float, attempt: int
    ) -> list[Delivery]:
        # BLOCK 0 would mean "forever": a non-blocking read leaves BLOCK out.
        block_ms = max(1, int(block_s * 1000)) if block_s > 0 else None
        with redis_errors(self.url):
            try:
                reply = self._xreadgroup(consumer, count, from_id, block_ms)
            except redis.exceptions.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                self.setup()  # the stream or group was deleted under us: recreate and read again
                reply = self._xreadgroup(consumer, count, from_id, block_ms)
        if not reply:
            return []
        entries: list[StreamEntry] = reply[0][1]
        deliveries = []
        for entry_id, fields in entries:
            if not fields:
                # Pending entry deleted from the stream (XDEL/trim): nothing left to process.
                self._ack_ids([entry_id])
                continue
            deliveries.append(Delivery(_payload(fields), entry_id, entry_id.decode(), attempt))
        return deliveries

    def _xreadgroup(self, consumer: str, count: int, from_id: bytes, block_ms: int | None) -> Any:
        return self.client.xreadgroup(
            self.group, consumer, {self.keys.queue: from_id}, count=count, block=block_ms
        )

    def _ack_ids(self, ids: Sequence[bytes]) -> None:
        with redis_errors(self.url):
            self.client.xack(self.keys.queue, self.group, *ids)

    def settle(
        self,
        consumer: str,
        written: Sequence[Delivery],
        dead: Sequence[DeadLetter],
        type_counts: Mapping[str, int],
    ) -> None:
        ids = [d.handle for d in written] + [letter.delivery.handle for letter in dead]
        with redis_errors(self.url):
            pipe = self.client.pipeline(transaction=True)
            if ids:
                pipe.xack(self.keys.queue, self.group, *ids)
            self._record_settlement(pipe, consumer, dead, type_counts)
            pipe.execute()

    def backlog(self) -> int | None:
        with redis_errors(self.url):
            try:
                groups = self.client.xinfo_groups(self.keys.queue)
            except redis.exceptions.ResponseError:
                return 0  # no stream yet
        for group in groups:
            if group["name"] == self.group.encode():
                lag = group.get("lag")
                return self._count_after(group["last-delivered-id"]) if lag is None else int(lag)
        with redis_errors(self.url):
            return int(self.client.xlen(self.keys.queue))  # no group yet: everything is backlog

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


def _payload(fields: dict[bytes, bytes]) -> bytes:
    """Our entries carry one field ``m``; an entry XADDed by hand with other fields reads as a JSON object."""
    payload = fields.get(STREAM_PAYLOAD_FIELD)
    if payload is not None and len(fields) == 1:
        return payload
    return orjson.dumps(
        {k.decode("utf-8", "replace"): v.decode("utf-8", "replace") for k, v in fields.items()}
    )
