"""Redis lists, compatible with producers that ``LPUSH message_buffer ...``.

Consumers never pop into thin air (a bare ``BRPOP`` loses the batch in flight when the worker dies):
entries are moved atomically with ``LMOVE``/``BLMOVE`` from the tail of the queue into the consumer's own
processing list, and removed from there (``LREM``) only after they are written. The processing list is
what ``recover`` reads after a restart.

Bytes: the fetch script checks each entry's size as it moves it (``fetch_scripts.LIST_FETCH``): an
oversize entry is dead-lettered there and never reaches the processing list, and entries beyond the byte
budget go back to the tail of the queue, in order, for the next fetch. An idle consumer waits in
``BLMOVE``, whose reply is read with a cap (:mod:`msgrelay.transport.replies`): whatever it moved is then
decided by the same script, from the head of the processing list, so a 100 MB entry is never loaded.

Every fetch renews the consumer's heartbeat key (TTL ``heartbeat_ttl_s``). A consumer whose heartbeat
expired is dead: ``reclaim`` (the reaper, run by every live consumer) puts its processing list back on the
queue. Lists carry no delivery counter, so one is kept in a hash, by the SHA-1 of the entry, only for entries
delivered more than once (after a take-over, a restart or a retry): the common path pays nothing for it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import redis

from msgrelay.deadletter import DeadLetter
from msgrelay.keys import KeySchema, Stat
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

DEFAULT_HEARTBEAT_TTL_S = 30.0


class ListTransport(Transport):
    """A list key; one processing list per consumer."""

    name: ClassVar[str] = "lists"

    def __init__(
        self,
        client: redis.Redis,
        keys: KeySchema,
        *,
        url: str,
        heartbeat_ttl_s: float = DEFAULT_HEARTBEAT_TTL_S,
        isolate_suspects: bool = True,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
    ) -> None:
        super().__init__(
            client, keys, url=url, max_message_bytes=max_message_bytes, max_batch_bytes=max_batch_bytes
        )
        self.heartbeat_ttl_s = heartbeat_ttl_s
        self.isolate_suspects = isolate_suspects
        """Hand out an entry delivered before alone (see ``fetch_scripts.LIST_FETCH``)."""
        self._fetch = client.register_script(fetch_scripts.LIST_FETCH)
        self._recover = client.register_script(fetch_scripts.LIST_RECOVER)
        self._reap = client.register_script(scripts.LIST_REAP)
        self._settle = client.register_script(scripts.LIST_SETTLE)
        self._promote = client.register_script(scripts.LIST_PROMOTE)
        self._heartbeat = client.register_script(scripts.LIST_HEARTBEAT)

    def send(self, payloads: Sequence[bytes]) -> None:
        if not payloads:
            return
        with redis_errors(self.url):
            pipe = self.client.pipeline(transaction=False)
            pipe.lpush(self.keys.queue, *payloads)
            pipe.hincrby(self.keys.stats(), Stat.PRODUCED, len(payloads))
            pipe.execute()

    def recover(self, consumer: str, count: int) -> list[Delivery]:
        keys = [
            self.keys.processing(consumer),
            self.keys.dead_letters(),
            self.keys.stats(),
            self.keys.deliveries(),
        ]
        while True:  # a call that only dead-lettered oversize entries may have left more behind them
            with redis_errors(self.url):
                entries, counts, dead = self._recover(keys=keys, args=self._fetch_args(consumer, count))
            self._dead_lettered += int(dead)
            if entries or not dead:
                break
        # Oldest first (the script reads from the tail); each count includes this delivery's increment.
        return _deliveries(entries, counts)

    def fetch(self, consumer: str, count: int, block_s: float) -> list[Delivery]:
        deadline = time.monotonic() + block_s
        with redis_errors(self.url):
            moved, earlier = self._move(consumer, count)
            while not moved and block_s > 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._wait_for_entry(consumer, remaining):
                    return []
                moved, earlier = self._move(consumer, count, head=True)
        return _deliveries(moved, earlier)

    def _wait_for_entry(self, consumer: str, block_s: float) -> bool:
        """``BLMOVE`` the next entry to the head of our processing list, waiting up to ``block_s``; whether
        one came. Its content is not used (the fetch script decides it), so the reply is read only up to
        the size an entry may have: a larger one is dropped unread."""
        reads = self._capped_reads()
        processing = self.keys.processing(consumer)
        try:
            with reply_cap(self.max_message_bytes + 1024):
                first = raw_command(reads, "BLMOVE", self.keys.queue, processing, "RIGHT", "LEFT", block_s)
        except ReplyTooLarge:
            return True
        return first is not None

    def _move(self, consumer: str, count: int, *, head: bool = False) -> tuple[list[bytes], list[int]]:
        """Run the fetch script until it moves something or dead-letters nothing (a call that only
        dead-lettered oversize entries may have left more behind them)."""
        keys = [
            self.keys.queue,
            self.keys.dead_letters(),
            self.keys.stats(),
            self.keys.processing(consumer),
            self.keys.consumers(),
            self.keys.heartbeat(consumer),
            self.keys.deliveries(),
        ]
        ttl_ms = int(self.heartbeat_ttl_s * 1000)
        while True:
            args = self._fetch_args(consumer, count, ttl_ms, int(self.isolate_suspects), int(head))
            moved, earlier, dead = self._fetch(keys=keys, args=args)
            self._dead_lettered += int(dead)
            if moved or not dead:
                return moved, earlier
            head = False

    def reclaim(self, consumer: str, count: int, min_idle_s: float) -> list[Delivery]:
        """Requeue the processing lists of consumers whose heartbeat expired; they are fetched again.

        Liveness is the heartbeat's TTL (``heartbeat_ttl_s``), so ``min_idle_s`` and ``count`` are not used:
        a dead consumer's whole list goes back at once, to the tail of the queue, oldest first.
        """
        keys = [self.keys.consumers(), self.keys.queue, self.keys.deliveries(), self.keys.stats()]
        args = [self.keys.heartbeat(""), self.keys.processing(""), consumer]
        with redis_errors(self.url):
            self._reap(keys=keys, args=args)
        return []

    def heartbeat(self, consumer: str, ttl_s: float) -> None:
        keys = [self.keys.heartbeat(consumer), self.keys.deliveries()]
        with redis_errors(self.url):
            self._heartbeat(keys=keys, args=[max(1, int(ttl_s * 1000))])

    def touch(self, consumer: str, deliveries: Sequence[Delivery]) -> None:
        self.heartbeat(consumer, self.heartbeat_ttl_s)

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
            self.keys.processing(consumer),
            self.keys.dead_letters(),
            self.keys.stats(),
            self.keys.retry(),
            self.keys.deliveries(),
            self.keys.journal(),
        ]
        with redis_errors(self.url):
            self._settle(keys=keys, args=["", *args])

    def promote_retries(self, now_ms: int, count: int) -> int:
        keys = [self.keys.retry(), self.keys.queue, self.keys.deliveries()]
        with redis_errors(self.url):
            return int(self._promote(keys=keys, args=[now_ms, count]))

    def backlog(self) -> int:
        with redis_errors(self.url):
            return int(self.client.llen(self.keys.queue))

    def pending(self) -> dict[str, int]:
        with redis_errors(self.url):
            members: set[bytes] = raw_command(self.client, "SMEMBERS", self.keys.consumers())
            consumers = sorted(name.decode() for name in members)
            pipe = self.client.pipeline(transaction=False)
            for name in consumers:
                pipe.llen(self.keys.processing(name))
            lengths = pipe.execute()
        return dict(zip(consumers, (int(n) for n in lengths), strict=True))

    def gone_consumers(self, idle_s: float) -> set[str]:
        """Registered consumers whose heartbeat expired and whose processing list is empty. A list consumer
        keeps no time of its last beat, so ``idle_s`` cannot be honoured: once its heartbeat expired
        (``heartbeat_ttl_s``), any live consumer's reaper forgets it (:meth:`reclaim`), and so does this."""
        with redis_errors(self.url):
            members: set[bytes] = raw_command(self.client, "SMEMBERS", self.keys.consumers())
            names = sorted(name.decode() for name in members)
            pipe = self.client.pipeline(transaction=False)
            for name in names:
                pipe.exists(self.keys.heartbeat(name), self.keys.processing(name))
            alive_or_holding = pipe.execute()
        return {name for name, found in zip(names, alive_or_holding, strict=True) if not found}

    def held_elsewhere(self, consumer: str, min_idle_s: float) -> list[HeldEntries]:
        """The reaper requeues a processing list once its owner's heartbeat has expired: its TTL is the
        wait (liveness is ``heartbeat_ttl_s`` here, so ``min_idle_s`` is not used)."""
        held = {name: count for name, count in self.pending().items() if name != consumer and count}
        with redis_errors(self.url):
            pipe = self.client.pipeline(transaction=False)
            for name in held:
                pipe.pttl(self.keys.heartbeat(name))
            ttls_ms = pipe.execute()
        return [
            HeldEntries(name, count, max(0, int(ttl_ms)) / 1000)  # -2: no heartbeat, so available now
            for (name, count), ttl_ms in zip(held.items(), ttls_ms, strict=True)
        ]

    def leave(self, consumer: str) -> None:
        """Unregister and stop the heartbeat, unless the consumer still holds entries (then the reaper will
        requeue them once the heartbeat expires)."""
        with redis_errors(self.url):
            if int(self.client.llen(self.keys.processing(consumer))) == 0:
                pipe = self.client.pipeline(transaction=True)
                pipe.srem(self.keys.consumers(), consumer)
                pipe.delete(self.keys.heartbeat(consumer))
                pipe.execute()


def _deliveries(entries: list[bytes], earlier: list[Any]) -> list[Delivery]:
    """One delivery per entry, counting the deliveries before this one (``earlier``: a count per entry, or
    empty when none was delivered before). A count that is missing or not a number reads as 0: the counts
    only find poison entries, and one that went astray must not stop a fetch or a recovery."""
    if not earlier:  # the usual fetch: nothing was delivered before
        return [Delivery(entry, entry, "", 1) for entry in entries]
    return [Delivery(entry, entry, "", _count(earlier, index) + 1) for index, entry in enumerate(entries)]


def _count(counts: list[Any], index: int) -> int:
    count = counts[index] if index < len(counts) else 0
    return count if type(count) is int else 0
