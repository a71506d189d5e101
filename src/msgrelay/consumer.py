"""The batch consumer: fetch, decode, write, then acknowledge.

One loop, deliberately thin::

    take work: own unsettled entries (after a restart) -> entries abandoned by dead consumers -> new ones
        ->  triage (poison and undecodable entries become dead letters)
        ->  sink.write_batch (durable on return)  ->  transport.settle (ack + dead letters + retries, atomic)

A batch is acknowledged only after the sink returned, so a crash at any instant loses nothing: the entries
are still owned by this consumer and come back through ``recover`` (same name) or ``reclaim`` (any live
consumer, once they have been idle for ``claim_idle_s``). An entry delivered more than ``max_deliveries``
times (it crashed every consumer that took it) is dead-lettered; a message the sink rejects is retried with
capped exponential backoff, then dead-lettered. Lines whose *file* cannot be written (disk full) are held
in memory, owned and kept from being reclaimed, and written again with backoff while the other types keep
flowing. ``stop()`` (called from a signal handler) lets the current batch finish and settle.

After each batch the consumer pauses ``processing_delay_s`` (0 by default): a throttle, like the sleep between
batches of the scripts msgrelay replaces. ``stop()`` ends the pause at once.

Cross-cutting behaviour (printing, metrics) plugs in as :class:`ConsumerHook` objects; a hook that raises is
logged and the consumer goes on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace

from msgrelay.barriers import crash_letter, refusal
from msgrelay.batch import (
    BatchResult,
    ConsumerHook,
    Pair,
    Totals,
    Triage,
    batch_result,
    default_consumer_name,
)
from msgrelay.codec import decode
from msgrelay.config import ConsumerSettings
from msgrelay.deadletter import DeadLetter
from msgrelay.errors import BrokerError, BrokerStateError, DecodeError, SinkError
from msgrelay.message import Delivery, Message
from msgrelay.outage import OutageLog, waitable
from msgrelay.retries import Backoff, RetryPolicy, RetryRecord
from msgrelay.sinks.base import Sink
from msgrelay.transport.base import Transport

log = logging.getLogger(__name__)

__all__ = [
    "BURST_MAX_FAILURES",
    "Backoff",
    "BatchResult",
    "Consumer",
    "ConsumerHook",
    "Totals",
    "default_consumer_name",
]

BURST_MAX_FAILURES = 5
"""In burst mode, give up (raise) after this many consecutive failed attempts at one batch."""
HELD_BATCHES_MAX = 10
"""Lines waiting for an unwritable file, in batches, before the consumer stops taking new work."""
CAUGHT_UP_TRIM_S = 0.1
"""Once caught up with the queue, trim settled entries at most this often (a full Redis needs it back)."""
PROMOTE_MAX = 1000
"""Due retries moved back onto the queue per maintenance turn."""


class Consumer:
    """Runs the fetch-write-settle loop for one consumer name."""

    def __init__(
        self,
        transport: Transport,
        sink: Sink,
        settings: ConsumerSettings,
        *,
        max_message_bytes: int,
        hooks: Sequence[ConsumerHook] = (),
        trim_interval_s: float = 10.0,
        outage: OutageLog | None = None,
    ) -> None:
        self.transport = transport
        self.sink = sink
        self.settings = settings
        self.max_message_bytes = max_message_bytes
        self.hooks = list(hooks)
        self.name = settings.consumer_name or default_consumer_name()
        self.backoff = Backoff(cap_s=min(5.0, settings.claim_idle_s / 3))
        self.retry_policy = RetryPolicy(
            settings.retry_backoff_s, settings.retry_backoff_cap_s, settings.max_deliveries
        )
        self.trim_interval_s = trim_interval_s
        self.maintenance_interval_s = min(1.0, settings.claim_idle_s / 4)
        self.totals = Totals()
        self.outage = outage or OutageLog(primary=transport.primary)
        """Says once per episode that Redis cannot serve us, and once that it serves again."""
        self._stopping = threading.Event()
        self._set_up = False
        self._unsettled: Triage | None = None
        self._trim_failing = False
        self._held: list[Pair] = []
        self._held_types: set[str] = set()
        self._held_retry_at = 0.0
        self._next_maintenance = 0.0
        self._last_trim = -float("inf")
        self._next_self_check = 0.0
        self._reclaiming = True
        self._recovering = True
        self._redelivery_batch = 1 if settings.delivery == "at_least_once" else settings.batch_size
        self._busy_from = 0.0
        self._backlog = False

    def stop(self) -> None:
        """Finish and settle the current batch, then return from ``run``. Safe from a signal handler."""
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    # --- the loop -------------------------------------------------------------------------------------

    def run(self, *, burst: bool = False) -> Totals:
        """Process until ``stop()``; with ``burst``, until the queue is empty (nothing held or pending).

        Redis failing (a lost connection, a timeout, a state such as loading or a read-only replica: see
        :mod:`msgrelay.outage`) is waited out with backoff, at start and while running; in burst mode it is
        raised. A refusal of our request (NOPERM, WRONGTYPE ...) is raised."""
        self.totals = Totals()
        self._set_up = False
        self._recovering = True  # first settle whatever an earlier run of this consumer name left unsettled
        while not self.stopping:
            try:
                self._set_up_once()
                self._maintain()
                self._settle_kept()
                if self._retry_held_if_due(burst):
                    continue
                deliveries = self._timed_next_work(burst)
            except BrokerError as exc:
                self._broker_failed(exc, burst)
                continue
            self._count_dead_on_server()
            if deliveries and not self._process_with_retry(deliveries, burst=burst):
                continue
            self.outage.recovered()
            if not deliveries and self._held:
                self._wait_for_held()
            elif not deliveries and burst:
                break
        self._leave()
        return self.totals

    def _timed_next_work(self, burst: bool) -> list[Delivery]:
        started = time.monotonic()
        deliveries = self._next_work(burst)
        # A read that may have waited for messages is idle time, not busy time: count the read only when
        # it could not wait (burst) or the last batch was full (a backlog: the read returned at once).
        self._busy_from = started if burst or self._backlog else time.monotonic()
        return deliveries

    def _set_up_once(self) -> None:
        if not self._set_up:
            self.transport.setup()
            self._set_up = True

    def _next_work(self, burst: bool) -> list[Delivery]:
        """The next batch, by priority: this name's own unsettled entries, entries abandoned by dead
        consumers, then new entries.

        Redelivered entries (own or abandoned) come one at a time: each may be what killed a consumer, and
        alone it cannot take good entries down with it (their delivery counts stay put). Effectively-once
        files take them a batch at a time instead, so that the write journal can confirm a crashed batch
        as a whole (a poison message may then cost its batch-mates deliveries too)."""
        if self._recovering and not self._held:  # held lines are ours already: do not count them again
            own = self.transport.recover(self.name, self._redelivery_batch)
            if own:
                return own
            self._recovering = False
        if self._reclaiming:
            abandoned = self.transport.reclaim(self.name, self._redelivery_batch, self.settings.claim_idle_s)
            self._reclaiming = bool(abandoned)
            if abandoned:
                return abandoned
        return self._next_batch(burst)

    def _count_dead_on_server(self) -> None:
        """Oversize entries the transport dead-lettered on the server while taking work: never seen here,
        but part of what this consumer fetched and gave up on."""
        dead = self.transport.take_dead_lettered()
        if dead:
            self._record(BatchResult(dead, 0, dead, 0.0))

    def _broker_failed(self, error: BrokerError, burst: bool) -> None:
        """Redis failed us: say so (once per episode), back off, then look for entries a lost reply made
        ours; the next command opens a new connection. Not something that goes away by itself: raise."""
        if burst or not waitable(error):
            raise error
        self.outage.failed(error)
        self.totals.failed_attempts += 1
        self._stopping.wait(self.backoff.delay(self.totals.failed_attempts))
        self._recovering = True

    def _wait_for_held(self) -> None:
        self._stopping.wait(max(0.0, self._held_retry_at - time.monotonic()))

    def _maintain(self) -> None:
        """Housekeeping at most every ``maintenance_interval_s``: liveness, reaper, due retries, trimming."""
        now = time.monotonic()
        if now < self._next_maintenance:
            return
        self._next_maintenance = now + self.maintenance_interval_s
        self.transport.heartbeat(self.name, self.settings.claim_idle_s)
        self._reclaiming = True
        if now >= self._next_self_check:  # a reply lost on the way may have left entries ours: look
            self._next_self_check = now + self.settings.claim_idle_s
            self._recovering = True
        self.transport.promote_retries(int(time.time() * 1000), PROMOTE_MAX)
        self._trim_if(older_than_s=self.trim_interval_s)
        self._call_hooks("on_maintenance")

    def _trim_if(self, *, older_than_s: float) -> None:
        """Trim when the last trim is older than that. Trimming is housekeeping: if it fails (a lost
        connection included), the next turn tries again."""
        now = time.monotonic()
        if self.trim_interval_s <= 0 or now - self._last_trim < older_than_s:
            return
        self._last_trim = now
        try:
            self.transport.trim()
        except Exception as exc:
            self._trim_failed(exc)
        else:
            self._trim_failing = False

    def _trim_failed(self, error: Exception) -> None:
        """Said once until a trim works again. A Redis state (loading, a replica ...) is not said here: the
        loop's own commands fail too, and its outage log says it."""
        if self._trim_failing or isinstance(error, BrokerStateError):
            return
        self._trim_failing = True
        if isinstance(error, BrokerError):
            log.warning("trimming the queue failed (%s); trying again every %gs", error, self.trim_interval_s)
        else:  # a bug: the traceback, once
            log.exception("trimming the queue failed; trying again every %gs", self.trim_interval_s)

    def _next_batch(self, burst: bool) -> list[Delivery]:
        size = self.settings.batch_size
        batch = self.transport.fetch(self.name, size, 0.0 if burst else self.settings.block_timeout_s)
        if batch and len(batch) < size and self.settings.batch_wait_s > 0:
            deadline = time.monotonic() + self.settings.batch_wait_s
            while len(batch) < size and not self.stopping:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                batch += self.transport.fetch(self.name, size - len(batch), remaining)
        return batch

    def _leave(self) -> None:
        try:
            self.transport.leave(self.name)
        except BrokerError:
            log.warning("could not unregister consumer %s; the reaper will", self.name)

    # --- one batch ------------------------------------------------------------------------------------

    def _process_with_retry(self, deliveries: list[Delivery], *, burst: bool) -> bool:
        """Process one batch; returns whether it was settled. If Redis failed us the entries are still ours:
        back off, then recover (or settle the kept batch: ``_settle_kept``)."""
        recovered = any(delivery.attempt > 1 for delivery in deliveries)
        try:
            result = self.process(deliveries, recovered=recovered)
        except BrokerError as exc:
            self._broker_failed(exc, burst and self.totals.failed_attempts + 1 >= BURST_MAX_FAILURES)
            return False
        if not self._held:
            self.totals.failed_attempts = 0
        self._record(result)
        self._backlog = len(deliveries) >= self.settings.batch_size
        if not self._backlog:
            # caught up with the queue: give the memory of what we settled back now (a full Redis needs it)
            self._trim_if(older_than_s=CAUGHT_UP_TRIM_S)
        self.totals.busy_s += time.monotonic() - self._busy_from
        if self._held and not result.written:
            self._wait_for_held()  # every file we tried is failing: no point in taking more work yet
        elif self.settings.processing_delay_s > 0:
            self._stopping.wait(self.settings.processing_delay_s)  # a stop() ends the pause at once
        return True

    def _record(self, result: BatchResult) -> None:
        self.totals.add(result)
        if result.written or result.dead_lettered or result.retried:
            self._call_hooks("after_batch", result, self.totals)

    def process(self, deliveries: Sequence[Delivery], *, recovered: bool = False) -> BatchResult:
        """Triage, write and settle one batch. Raises if it could not be settled (nothing acknowledged)."""
        started = time.monotonic()
        triage = self._triage(deliveries)
        self._write(triage)
        try:
            self._settle(triage)
        except BrokerStateError:
            # A state refusal (read-only replica, loading ...) is definite: the settle script did not run
            # (each starts with a write, see transport.scripts), so the written batch is settled once Redis
            # serves again instead of being delivered and written a second time.
            self._unsettled = triage
            raise
        return batch_result(triage, len(deliveries), started, recovered)

    def _settle_kept(self) -> None:
        """Settle the batch whose settle Redis refused (``process``), before taking any other work."""
        kept = self._unsettled
        if kept is None:
            return
        started = time.monotonic()
        self._settle(kept)
        self._unsettled = None
        fetched = len(kept.written) + len(kept.dead) + len(kept.retries) + len(kept.held)
        self._record(batch_result(kept, fetched, started, recovered=True))

    def _triage(self, deliveries: Sequence[Delivery]) -> Triage:
        triage = Triage()
        max_deliveries = self.retry_policy.max_deliveries
        for delivery in deliveries:
            if delivery.attempt > max_deliveries or delivery.unreadable:  # barriers.refused_before_decoding
                triage.dead.append(refusal(delivery, max_deliveries))  # inline: one test for the usual entry
                continue
            try:  # the per-entry barrier (see msgrelay.barriers): nothing one entry holds stops the loop
                message = decode(delivery.raw, source_id=delivery.source_id, max_bytes=self.max_message_bytes)
            except DecodeError as exc:
                triage.dead.append(DeadLetter(delivery, exc.reason, exc.detail))
                continue
            except Exception as exc:  # a decoder bug must cost one message, never the worker
                log.exception("unexpected error decoding an entry; dead-lettering it")
                triage.dead.append(crash_letter(delivery, "decode", exc))
                continue
            if message.type in self._held_types:
                triage.held.append((delivery, message))  # its file is failing: wait with the others
            else:
                triage.to_write.append((delivery, message))
        self._skip_already_written(triage)
        return triage

    def _skip_already_written(self, triage: Triage) -> None:
        """Effectively-once files: redelivered entries a crashed write already put on disk are only acked."""
        redelivered = [delivery.handle for delivery, _ in triage.to_write if delivery.attempt > 1]
        if not redelivered:
            return
        done = self.sink.already_written(redelivered)
        if done:
            triage.written += [pair for pair in triage.to_write if pair[0].handle in done]
            triage.to_write = [pair for pair in triage.to_write if pair[0].handle not in done]

    def _write(self, triage: Triage) -> None:
        """Write ``to_write``; sort the outcome into written, retries / dead letters, and held lines."""
        pairs = triage.to_write
        if not pairs:
            return
        messages = [message for _, message in pairs]
        try:
            rejected = dict(self.sink.write_batch(messages, [delivery.handle for delivery, _ in pairs]))
        except SinkError as exc:
            # Lines of the failed files stay ours and are written again after a backoff (see _park).
            failed = exc.failed_types or frozenset(message.type for message in messages)
            triage.held += [pair for pair in pairs if pair[1].type in failed]
            self._held_types.update(failed)
            self._held_failed(exc)
            pairs = [pair for pair in pairs if pair[1].type not in failed]
            rejected = {}
        now_ms = int(time.time() * 1000)
        for index, pair in enumerate(pairs):
            error = rejected.get(index)
            if error is None:
                triage.written.append(pair)
            elif self.retry_policy.exhausted(pair[0].attempt):
                triage.dead.append(self._dead_letter(pair[0], "processing_failed", error, pair[1]))
            else:
                due_ms = now_ms + int(self.retry_policy.delay_s(pair[0].attempt) * 1000)
                triage.retries.append(RetryRecord(pair[0], error, due_ms))

    def _settle(self, triage: Triage) -> None:
        self._park(triage)
        type_counts = Counter(message.type for _, message in triage.written)
        delivered = [delivery for delivery, _ in triage.written]
        self.transport.settle(self.name, delivered, triage.dead, type_counts, triage.retries)
        self.sink.settled()
        self._held += triage.held

    def _dead_letter(
        self, delivery: Delivery, reason: str, detail: str, message: Message | None = None
    ) -> DeadLetter:
        msg_type = message.type if message is not None else ""
        return DeadLetter(delivery, reason, f"{detail} (attempt {delivery.attempt})"[:1000], msg_type)

    # --- lines whose file is failing ------------------------------------------------------------------

    def _park(self, triage: Triage) -> None:
        """Keep held lines in memory up to ``HELD_BATCHES_MAX`` batches; defer the rest through the retry
        schedule (acknowledged with the batch, back on the queue when the backoff is over, their attempt
        not counted), so a file that stays broken never stops the other types nor fills our memory."""
        room = max(0, HELD_BATCHES_MAX * self.settings.batch_size - len(self._held))
        if len(triage.held) <= room:
            return
        overflow, triage.held = triage.held[room:], triage.held[:room]
        wait_s = max(0.1, self._held_retry_at - time.monotonic())
        due_ms = int((time.time() + wait_s) * 1000)
        for delivery, _ in overflow:
            not_counted = replace(delivery, attempt=delivery.attempt - 1)
            triage.retries.append(
                RetryRecord(not_counted, "deferred: its log file cannot be written", due_ms)
            )

    def _held_failed(self, error: Exception) -> None:
        self.totals.failed_attempts += 1
        delay = self.backoff.delay(self.totals.failed_attempts)
        self._held_retry_at = time.monotonic() + delay
        self._call_hooks("on_failure", error, delay)

    def _retry_held_if_due(self, burst: bool) -> bool:
        """Write the held lines again once their backoff is over. Returns whether it tried."""
        if not self._held or time.monotonic() < self._held_retry_at:
            return False
        if burst and self.totals.failed_attempts >= BURST_MAX_FAILURES:
            raise SinkError(
                f"gave up after {self.totals.failed_attempts} failed writes; nothing acknowledged"
            )
        self.transport.touch(self.name, [delivery for delivery, _ in self._held])
        held, self._held, self._held_types = self._held, [], set()
        started = time.monotonic()
        triage = Triage(to_write=held)
        self._write(triage)
        self._settle(triage)
        if not self._held:
            self.totals.failed_attempts = 0
        self._record(batch_result(triage, len(held), started, recovered=False))
        return True

    # --- plumbing -------------------------------------------------------------------------------------

    def _call_hooks(self, method: str, *args: object) -> None:
        for hook in self.hooks:
            try:
                getattr(hook, method)(*args)
            except Exception:
                log.exception("consumer hook %r failed in %s; going on", hook, method)
