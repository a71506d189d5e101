"""The batch consumer: fetch, decode, write, then acknowledge.

One loop, deliberately thin::

    recover own unsettled entries  ->  fetch a batch  ->  decode (bad entries become dead letters)
        ->  sink.write_batch (durable on return)  ->  transport.settle (ack + dead letters, atomically)

A batch is acknowledged only after the sink returned, so a crash at any instant loses nothing: the entries
are still owned by this consumer and come back through ``recover``. ``stop()`` (called from a signal
handler) lets the current batch finish and settle, then ``run`` returns.

Cross-cutting behaviour (printing, metrics) plugs in as :class:`ConsumerHook` objects; a hook that raises is
logged and the consumer goes on.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from msgrelay.codec import decode
from msgrelay.config import ConsumerSettings
from msgrelay.deadletter import DeadLetter
from msgrelay.errors import BrokerConnectionError, BrokerTimeoutError, DecodeError, SinkError
from msgrelay.message import Delivery, Message
from msgrelay.sinks.base import Sink
from msgrelay.transport.base import Transport

log = logging.getLogger(__name__)

BURST_MAX_FAILURES = 5
"""In burst mode, give up (raise) after this many consecutive failed attempts at one batch."""


@dataclass(frozen=True, slots=True)
class BatchResult:
    """What happened to one batch."""

    fetched: int
    written: int
    dead_lettered: int
    duration_s: float
    recovered: bool = False

    @property
    def success_rate(self) -> float:
        """Share of the batch written to its log file (1.0 for an empty batch)."""
        return self.written / self.fetched if self.fetched else 1.0


@dataclass(slots=True)
class Totals:
    """Running totals of one ``run``."""

    batches: int = 0
    fetched: int = 0
    written: int = 0
    dead_lettered: int = 0
    failed_attempts: int = 0
    started: float = field(default_factory=time.monotonic)

    def add(self, result: BatchResult) -> None:
        self.batches += 1
        self.fetched += result.fetched
        self.written += result.written
        self.dead_lettered += result.dead_lettered

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.started


class ConsumerHook:
    """Override what you need; every method is a no-op by default."""

    def after_batch(self, result: BatchResult, totals: Totals) -> None:
        """Called after a batch is settled."""

    def on_failure(self, error: Exception, retry_in_s: float) -> None:
        """Called when a batch could not be written or settled; it will be retried after ``retry_in_s``."""


@dataclass(frozen=True, slots=True)
class Backoff:
    """Capped exponential backoff, pure: ``delay(n)`` for the n-th consecutive failure (n >= 1)."""

    base_s: float = 0.1
    cap_s: float = 5.0

    def delay(self, failures: int) -> float:
        return float(min(self.cap_s, self.base_s * 2 ** (failures - 1)))


def default_consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


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
    ) -> None:
        self.transport = transport
        self.sink = sink
        self.settings = settings
        self.max_message_bytes = max_message_bytes
        self.hooks = list(hooks)
        self.name = settings.consumer_name or default_consumer_name()
        self.backoff = Backoff()
        self.totals = Totals()
        self._stopping = threading.Event()

    def stop(self) -> None:
        """Finish and settle the current batch, then return from ``run``. Safe from a signal handler."""
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def run(self, *, burst: bool = False) -> Totals:
        """Process until ``stop()``; with ``burst``, until the queue is empty."""
        self.totals = Totals()
        self.transport.setup()
        recovering = True  # first settle whatever an earlier run of this consumer name left unsettled
        while not self.stopping:
            try:
                deliveries = self.transport.recover(self.name, self.settings.batch_size) if recovering else []
                if not deliveries:
                    recovering = False
                    deliveries = self._next_batch(burst)
            except (BrokerConnectionError, BrokerTimeoutError) as exc:
                if burst:
                    raise
                self._back_off(exc)  # redis-py reconnects on the next command
                recovering = True  # a read whose reply was lost still made its entries ours
                continue
            if not deliveries:
                if burst:
                    break
                continue
            if self._process_with_retry(deliveries, recovered=recovering, burst=burst):
                self._stopping.wait(self.settings.processing_delay_s)
            else:
                recovering = True  # the failed batch is still ours: take it again from recovery
        return self.totals

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

    def _process_with_retry(self, deliveries: list[Delivery], *, recovered: bool, burst: bool) -> bool:
        """Process one batch; on failure back off. Returns whether the batch was settled.

        A failed batch is not retried here: its entries stay owned by this consumer, and the next turn of
        ``run`` finds them again through ``recover``.
        """
        try:
            result = self.process(deliveries, recovered=recovered)
        except (SinkError, BrokerConnectionError, BrokerTimeoutError) as exc:
            if burst and self.totals.failed_attempts + 1 >= BURST_MAX_FAILURES:
                raise
            self._back_off(exc)
            return False
        self.totals.failed_attempts = 0
        self.totals.add(result)
        self._call_hooks("after_batch", result, self.totals)
        return True

    def _back_off(self, error: Exception) -> None:
        self.totals.failed_attempts += 1
        delay = self.backoff.delay(self.totals.failed_attempts)
        self._call_hooks("on_failure", error, delay)
        self._stopping.wait(delay)

    def process(self, deliveries: Sequence[Delivery], *, recovered: bool = False) -> BatchResult:
        """Decode, write and settle one batch. Raises if the batch could not be written or settled."""
        started = time.monotonic()
        messages, written, dead = self._decode_all(deliveries)
        if messages:
            self.sink.write_batch(messages)
        type_counts = Counter(message.type for message in messages)
        self.transport.settle(self.name, written, dead, type_counts)
        return BatchResult(len(deliveries), len(written), len(dead), time.monotonic() - started, recovered)

    def _decode_all(
        self, deliveries: Sequence[Delivery]
    ) -> tuple[list[Message], list[Delivery], list[DeadLetter]]:
        messages: list[Message] = []
        written: list[Delivery] = []
        dead: list[DeadLetter] = []
        for delivery in deliveries:
            try:
                messages.append(
                    decode(delivery.raw, source_id=delivery.source_id, max_bytes=self.max_message_bytes)
                )
            except DecodeError as exc:
                dead.append(DeadLetter(delivery, exc.reason, exc.detail))
                continue
            except Exception as exc:  # a decoder bug must cost one message, never the worker
                log.exception("unexpected error decoding an entry; dead-lettering it")
                dead.append(DeadLetter(delivery, "decode_crash", f"{type(exc).__name__}: {exc}"))
                continue
            written.append(delivery)
        return messages, written, dead

    def _call_hooks(self, method: str, *args: object) -> None:
        for hook in self.hooks:
            try:
                getattr(hook, method)(*args)
            except Exception:
                log.exception("consumer hook %r failed in %s; going on", hook, method)
