"""What ``msgrelay stats`` reports, gathered as plain data."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from msgrelay.dlq import DeadLetterStore
from msgrelay.forgetting import present_consumers
from msgrelay.keys import Stat
from msgrelay.transport.base import Transport, redis_errors


@dataclass(frozen=True, slots=True)
class QueueStats:
    transport: str
    queue: str
    produced: int
    backlog: int | None
    processed: int
    dead_lettered: int
    dead_letter_store: int
    batches: int
    processed_by_type: dict[str, int] = field(default_factory=dict)
    pending_by_consumer: dict[str, int] = field(default_factory=dict)
    dead_letters_by_reason: dict[str, int] = field(default_factory=dict)
    """The dead-letter store (all queues of the namespace) by reason, most frequent first."""
    dlq_replayed: int = 0
    """Dead letters of this queue put back on it by ``msgrelay dlq replay``."""
    dlq_purged: int = 0
    """Dead letters of this queue deleted by ``msgrelay dlq purge`` (retention trimming is not counted)."""
    reclaimed: int = 0
    """Entries taken over from consumers that died or stalled (XAUTOCLAIM, or requeued by the reaper)."""
    retried: int = 0
    """Failed messages scheduled for another attempt."""
    retries_scheduled: int = 0
    """Failed messages waiting for their next attempt right now."""
    redis_used_memory_bytes: int = 0
    redis_used_memory_human: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def collect_stats(transport: Transport, *, forget_after_s: float = 0.0) -> QueueStats:
    """The queue's stats; consumers gone ``forget_after_s`` or more holding nothing are left out (0: none)."""
    counters = transport.stats()
    with redis_errors(transport.url):
        memory = transport.client.info("memory")
    prefix = Stat.processed_type("")
    return QueueStats(
        transport=transport.name,
        queue=transport.keys.queue,
        produced=counters.get(Stat.PRODUCED, 0),
        backlog=transport.backlog(),
        processed=counters.get(Stat.PROCESSED, 0),
        dead_lettered=counters.get(Stat.DEAD_LETTERED, 0),
        dead_letter_store=transport.dead_letter_count(),
        batches=counters.get(Stat.BATCHES, 0),
        processed_by_type={k[len(prefix) :]: v for k, v in sorted(counters.items()) if k.startswith(prefix)},
        pending_by_consumer=present_consumers(transport, forget_after_s),
        dead_letters_by_reason=DeadLetterStore.from_transport(transport).count_by_reason(),
        dlq_replayed=counters.get(Stat.DLQ_REPLAYED, 0),
        dlq_purged=counters.get(Stat.DLQ_PURGED, 0),
        reclaimed=counters.get(Stat.RECLAIMED, 0),
        retried=counters.get(Stat.RETRIED, 0),
        retries_scheduled=transport.scheduled_retries(),
        redis_used_memory_bytes=int(memory["used_memory"]),
        redis_used_memory_human=str(memory["used_memory_human"]),
    )


NOTIFIER_COUNTERS = ("sent", "deferred", "retried", "dead_lettered")
"""Per-notifier counters of the notify loop, ``<counter>:<notifier>`` in the alert queue's stats hash."""


@dataclass(frozen=True, slots=True)
class AlertStats:
    """The alert queue and the notify loop: what came in, what each verdict was, what each notifier did."""

    transport: str
    queue: str
    pushed: int
    backlog: int | None
    received: int
    dead_lettered: int
    verdicts: dict[str, int] = field(default_factory=dict)
    """firing, repeat, resolved, deduplicated, silenced: how many alerts got each."""
    notifiers: dict[str, dict[str, int]] = field(default_factory=dict)
    """notifier -> sent, deferred, retried, dead_lettered."""
    outbox: int = 0
    """Notifications waiting to be sent (due, leased, or scheduled for a retry)."""
    pending_by_consumer: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def collect_alert_stats(transport: Transport, *, forget_after_s: float = 0.0) -> AlertStats:
    """The alert queue's and notify loop's stats; gone consumers are left out as by :func:`collect_stats`."""
    counters = transport.stats()
    notifiers: dict[str, dict[str, int]] = {}
    for name, value in sorted(counters.items()):
        counter, _, notifier = name.partition(":")
        if notifier and counter in NOTIFIER_COUNTERS:
            notifiers.setdefault(notifier, dict.fromkeys(NOTIFIER_COUNTERS, 0))[counter] = value
    with redis_errors(transport.url):
        outbox = int(transport.client.zcard(transport.keys.outbox()))
    return AlertStats(
        transport=transport.name,
        queue=transport.keys.queue,
        pushed=counters.get(Stat.PRODUCED, 0),
        backlog=transport.backlog(),
        received=counters.get("alerts_received", 0),
        dead_lettered=counters.get(Stat.DEAD_LETTERED, 0),
        verdicts={k.removeprefix("alerts_"): v for k, v in sorted(counters.items()) if _is_verdict(k)},
        notifiers=notifiers,
        outbox=outbox,
        pending_by_consumer=present_consumers(transport, forget_after_s),
    )


def _is_verdict(counter: str) -> bool:
    return counter.startswith("alerts_") and counter != "alerts_received"
