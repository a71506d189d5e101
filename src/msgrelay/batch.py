"""What one batch of the consumer is, and what its hooks see: the batch's sorting, its result, the totals.

Kept apart from the loop (:mod:`msgrelay.consumer`) so that hooks (:mod:`msgrelay.reporting`, forgetting,
retention) depend on these small types only.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field

from msgrelay.deadletter import DeadLetter
from msgrelay.message import Delivery, Message
from msgrelay.retries import RetryRecord

__all__ = ["BatchResult", "ConsumerHook", "Pair", "Totals", "Triage", "batch_result", "default_consumer_name"]

Pair = tuple[Delivery, Message]


@dataclass(frozen=True, slots=True)
class BatchResult:
    """What happened to one batch."""

    fetched: int
    written: int
    dead_lettered: int
    duration_s: float
    recovered: bool = False
    retried: int = 0
    held: int = 0

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
    retried: int = 0
    failed_attempts: int = 0
    started: float = field(default_factory=time.monotonic)
    busy_s: float = 0.0
    """Seconds spent on batches (reading them when they were there, writing, settling), without the time
    spent waiting for messages or pausing (``processing_delay_s``)."""

    def add(self, result: BatchResult) -> None:
        self.batches += 1
        self.fetched += result.fetched
        self.written += result.written
        self.dead_lettered += result.dead_lettered
        self.retried += result.retried

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.started


class ConsumerHook:
    """Override what you need; every method is a no-op by default."""

    def after_batch(self, result: BatchResult, totals: Totals) -> None:
        """Called after a batch is settled."""

    def on_failure(self, error: Exception, retry_in_s: float) -> None:
        """Called when lines could not be written (their file is failing); they are written again after
        ``retry_in_s``. Redis failures are not reported here: the consumer's :class:`OutageLog` says them
        once per episode."""

    def on_maintenance(self) -> None:
        """Called every maintenance turn (about once a second): a place for housekeeping."""


def default_consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(slots=True)
class Triage:
    """One batch sorted out: what to write, what is dead, what to retry."""

    to_write: list[Pair] = field(default_factory=list)
    written: list[Pair] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    retries: list[RetryRecord] = field(default_factory=list)
    held: list[Pair] = field(default_factory=list)


def batch_result(triage: Triage, fetched: int, started: float, recovered: bool) -> BatchResult:
    """The :class:`BatchResult` of a settled batch of ``fetched`` entries begun at ``started`` (monotonic)."""
    return BatchResult(
        fetched,
        len(triage.written),
        len(triage.dead),
        time.monotonic() - started,
        recovered,
        retried=len(triage.retries),
        held=len(triage.held),
    )
