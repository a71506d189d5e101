"""``msgrelay notify``: alerts from their queue to the notifiers, never twice, never lost.

The design, and why: docs/alerts-design.md.

Two stages, each safe to kill at any instant:

* **intake** reads a batch of alerts, judges each against its service's stored state (dedup, repeat,
  resolve, silences: :mod:`msgrelay.alerting.policy`), groups and routes what is to be notified, writes the
  new states and one outbox item per (notification, notifier), then acknowledges the batch (alerts that are
  not alerts are dead-lettered with their reason). Killed before the ack, the batch comes again and is judged
  against the states already written: nothing is notified twice.
* **delivery** leases due outbox items (no other consumer takes them before the lease ends), sends each,
  and settles it: sent (marked, so it is never sent again), deferred (HTTP 429: due at ``Retry-After``, no
  attempt used), retried (capped exponential backoff with jitter), or dead-lettered (permanent error, or
  ``max_attempts`` failed sends). Killed mid-send, the item is sent again once its lease ends: at least
  once, with the same idempotency key.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from msgrelay.alerting.codec import decode_alert
from msgrelay.alerting.model import Alert, Status
from msgrelay.alerting.notifiers.base import Notifier
from msgrelay.alerting.outbox import OutboxItem, decode_state, encode_state
from msgrelay.alerting.policy import Route, ServiceState, Silence, Verdict, group, judge, route
from msgrelay.alerting.silences import SilenceStore
from msgrelay.barriers import MAX_DETAIL_CHARS, crash_letter, refused_before_decoding
from msgrelay.deadletter import OUTBOX_TRANSPORT, DeadLetter
from msgrelay.errors import (
    BrokerError,
    DecodeError,
    NotifyDeferred,
    NotifyPermanentError,
    NotifyTransientError,
)
from msgrelay.message import Delivery
from msgrelay.outage import OutageLog
from msgrelay.retries import Backoff, RetryPolicy
from msgrelay.transport.base import Transport, raw_command, redis_errors

if TYPE_CHECKING:
    from msgrelay.config import AlertSettings

log = logging.getLogger(__name__)

SENT_TTL_S: Final = 24 * 3600
"""How long a sent notification is remembered (longer than any lease and retry schedule)."""
BACKOFF: Final = Backoff(base_s=0.5, cap_s=10.0)
"""Between attempts while Redis is failing."""
DELIVER_AT_ONCE: Final = 50
"""Outbox items sent per round at most, before the loop looks for new alerts again."""

# KEYS: outbox. ARGV: now, how many, lease end. Takes the due items and moves them to the lease end.
_LEASE: Final = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, item in ipairs(due) do redis.call('ZADD', KEYS[1], 'XX', ARGV[3], item) end
return due
"""


@dataclass(frozen=True, slots=True)
class NotifyPolicy:
    """What the notify loop needs to know beyond its queue: where notifications go, and how often to try."""

    routes: Sequence[Route] = ()
    default_notifiers: Sequence[str] = ("console",)
    repeat_interval_s: float = 4 * 3600.0
    lease_s: float = 60.0
    retry: RetryPolicy = field(default_factory=lambda: RetryPolicy(base_s=1.0, cap_s=300.0, max_deliveries=8))

    @classmethod
    def from_settings(cls, alerts: AlertSettings) -> NotifyPolicy:
        routes = [
            Route(rule.notifiers, rule.services, frozenset(Status(status) for status in rule.statuses))
            for rule in alerts.routes
        ]
        retry = RetryPolicy(alerts.retry_backoff_s, alerts.retry_backoff_cap_s, alerts.max_attempts)
        return cls(routes, alerts.default_notifiers, alerts.repeat_interval_s, alerts.lease_s, retry)


@dataclass(slots=True)
class NotifyTotals:
    received: int = 0
    dead_lettered: int = 0
    queued: int = 0
    sent: int = 0
    deferred: int = 0
    retried: int = 0
    failed: int = 0


class NotifyLoop:
    """Intake and delivery for one consumer name. ``clock`` is epoch seconds (tests step it).

    Each alert is decoded, judged and rendered behind its own barrier (:mod:`msgrelay.barriers`), and so is
    each outbox item read for delivery: whatever one of them raises makes it a dead letter with the reason
    and the error text, never a crashed loop. An alert delivered more than ``max_deliveries`` times (every
    consumer that took it died) is dead-lettered as ``max_deliveries`` without being decoded again."""

    def __init__(
        self,
        transport: Transport,
        notifiers: Mapping[str, Notifier],
        policy: NotifyPolicy,
        *,
        name: str,
        batch_size: int = 100,
        max_message_bytes: int = 16 * 1024,
        claim_idle_s: float = 30.0,
        group_wait_s: float = 0.0,
        max_deliveries: int = 5,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        housekeeping: Callable[[], object] | None = None,
        outage: OutageLog | None = None,
    ) -> None:
        self.transport = transport
        self.notifiers = dict(notifiers)
        self.policy = policy
        self.name = name
        self.batch_size = batch_size
        self.max_message_bytes = max_message_bytes
        self.clock = clock
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not secrets
        self.silences = SilenceStore.from_transport(transport)
        self.keys = transport.keys
        self.totals = NotifyTotals()
        self._lease = transport.client.register_script(_LEASE)
        self.claim_idle_s = claim_idle_s
        self.group_wait_s = group_wait_s
        self.max_deliveries = max_deliveries
        self._recovering = True
        self._next_takeover = 0.0
        self.housekeeping = housekeeping
        """Called once a second with the take-over (forgetting gone consumers: see msgrelay.forgetting)."""
        self.outage = outage or OutageLog(primary=transport.primary)
        """Says once per episode that Redis cannot serve us, and once that it serves again."""

    # --- the loop ---------------------------------------------------------------------------------------

    def run(self, stop: threading.Event, *, block_s: float = 1.0, burst: bool = False) -> NotifyTotals:
        """Intake and delivery until ``stop`` is set; ``burst``: until no alert and no due item is left.

        Redis failing (at start or while running: a lost connection, loading, a read-only replica ...) is
        waited out with backoff and said once per episode (the next command reconnects; what this name read
        and did not acknowledge is recovered); in burst mode it is raised."""
        failures = 0
        set_up = False
        while not stop.is_set():
            try:
                if not set_up:
                    self.transport.setup()
                    set_up = True
                read = self.intake(0.0 if burst else self._wait_s(block_s))
                handled = self.deliver_due()
                self.outage.recovered()
                if burst and not read and not handled and not self._due_soon():
                    break
                failures = 0
            except BrokerError as exc:
                if burst:
                    raise
                failures += 1
                self.outage.failed(exc)
                self._recovering = True
                stop.wait(BACKOFF.delay(failures))
        return self.totals

    def _wait_s(self, block_s: float) -> float:
        """Block for new alerts no longer than until the next outbox item is due."""
        with redis_errors(self.transport.url):
            first = raw_command(self.transport.client, "ZRANGE", self.keys.outbox(), 0, 0, "WITHSCORES")
        if not first:
            return block_s
        return min(block_s, max(0.0, float(first[0][1]) - self.clock()))

    def _due_soon(self) -> bool:
        with redis_errors(self.transport.url):
            return bool(
                raw_command(self.transport.client, "ZCOUNT", self.keys.outbox(), "-inf", self.clock())
            )

    # --- intake -----------------------------------------------------------------------------------------

    def intake(self, block_s: float) -> int:
        """Read one batch of alerts into the outbox; returns how many entries were read."""
        deliveries = self._next_batch(block_s)
        self.totals.dead_lettered += self.transport.take_dead_lettered()  # oversize: decided by Redis
        if not deliveries:
            return 0
        taken: list[tuple[Delivery, Alert]] = []
        dead: list[DeadLetter] = []
        for delivery in deliveries:
            outcome = self._decode(delivery)
            if isinstance(outcome, DeadLetter):
                dead.append(outcome)
            else:
                taken.append((delivery, outcome))
        read, items, states, counts = self._judge(taken, dead)
        self._store(items, states, counts)
        self.transport.settle(self.name, read, dead, {})
        self.totals.received += len(read)
        self.totals.dead_lettered += len(dead)
        self.totals.queued += len(items)
        return len(deliveries)

    def _decode(self, delivery: Delivery) -> Alert | DeadLetter:
        """The alert of one delivery, or its dead letter: the per-alert barrier of decoding."""
        refused = refused_before_decoding(delivery, self.max_deliveries)
        if refused is not None:
            return refused
        try:
            return decode_alert(delivery.raw, max_bytes=self.max_message_bytes)
        except DecodeError as exc:
            return DeadLetter(delivery, exc.reason, exc.detail)
        except Exception as exc:  # a decoder bug must cost one alert, never the loop
            log.exception("unexpected error decoding an alert; dead-lettering it")
            return crash_letter(delivery, "decode", exc)

    def _next_batch(self, block_s: float) -> list[Delivery]:
        if self._recovering:  # after a restart, first what this name read and never acknowledged
            own = self.transport.recover(self.name, self.batch_size)
            if own:
                return own
            self._recovering = False
        if self.clock() >= self._next_takeover:  # then what a dead notify consumer left (once a second)
            self._next_takeover = self.clock() + 1.0
            self.transport.heartbeat(self.name, self.claim_idle_s)
            if self.housekeeping is not None:
                self.housekeeping()
            abandoned = self.transport.reclaim(self.name, self.batch_size, self.claim_idle_s)
            if abandoned:
                return abandoned
        return self._gathered(self.transport.fetch(self.name, self.batch_size, block_s))

    def _gathered(self, batch: list[Delivery]) -> list[Delivery]:
        """Alerts that arrive within ``group_wait_s`` of the first become one batch, hence one notification
        per kind (a network outage takes many services down within a second or two)."""
        deadline = time.monotonic() + self.group_wait_s
        while batch and len(batch) < self.batch_size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            batch += self.transport.fetch(self.name, self.batch_size - len(batch), remaining)
        return batch

    def _judge(
        self, taken: list[tuple[Delivery, Alert]], dead: list[DeadLetter]
    ) -> tuple[list[Delivery], list[OutboxItem], dict[str, ServiceState], dict[str, int]]:
        """Judge each alert against its service's state, behind a per-alert barrier (an alert whose judging
        or rendering raises is added to ``dead``); returns the deliveries judged, the outbox items, the new
        states and the counts."""
        now = self.clock()
        states = self._states({alert.service for _, alert in taken})
        silences = self.silences.active(now)
        read: list[Delivery] = []
        counts: dict[str, int] = {}
        judged: list[tuple[Verdict, Alert, float]] = []
        for delivery, alert in taken:
            try:
                verdict, state = self._judge_one(alert, states.get(alert.service), silences, now)
            except Exception as exc:  # a bug, or something no check foresaw: it costs this alert only
                log.exception("unexpected error judging an alert; dead-lettering it")
                dead.append(crash_letter(delivery, "render", exc))
                continue
            read.append(delivery)
            states[alert.service] = state
            counts[f"alerts_{verdict.value}"] = counts.get(f"alerts_{verdict.value}", 0) + 1
            if verdict.notifies:
                judged.append((verdict, alert, state.since))
        counts["alerts_received"] = len(read)
        items = [
            OutboxItem(notifier, 0, note)
            for note in group(judged)
            for notifier in route(note, self.policy.routes, self.policy.default_notifiers)
        ]
        return read, items, states, counts

    def _judge_one(
        self, alert: Alert, state: ServiceState | None, silences: Sequence[Silence], now: float
    ) -> tuple[Verdict, ServiceState]:
        verdict, new_state = judge(
            alert, state, silences, now=now, repeat_interval_s=self.policy.repeat_interval_s
        )
        if verdict.notifies:  # rendered and encoded alone first, so that a failure costs this alert only
            OutboxItem("", 0, group([(verdict, alert, new_state.since)])[0]).encode()
        return verdict, new_state

    def _states(self, services: set[str]) -> dict[str, ServiceState]:
        if not services:
            return {}
        ordered = sorted(services)
        with redis_errors(self.transport.url):
            stored = raw_command(self.transport.client, "HMGET", self.keys.alert_states(), *ordered)
        states = {
            service: decode_state(service, raw) for service, raw in zip(ordered, stored, strict=True) if raw
        }
        return {service: state for service, state in states.items() if state is not None}

    def _store(
        self, items: list[OutboxItem], states: dict[str, ServiceState], counts: dict[str, int]
    ) -> None:
        """States, outbox items and counts in one transaction, before the batch is acknowledged."""
        now = self.clock()
        with redis_errors(self.transport.url):
            pipe = self.transport.client.pipeline(transaction=True)
            if states:
                pipe.hset(self.keys.alert_states(), mapping={s: encode_state(v) for s, v in states.items()})
            for order, item in enumerate(items):  # due now, in the order made (firing before resolved)
                pipe.zadd(self.keys.outbox(), {item.encode(): now + order * 1e-6}, nx=True)
            for field, amount in counts.items():
                pipe.hincrby(self.keys.stats(), field, amount)
            pipe.execute()

    # --- delivery ---------------------------------------------------------------------------------------

    def deliver_due(self) -> int:
        """Send the outbox items that are due, each leased just before it is sent (a slow notifier must not
        let the leases of items still waiting in our hands run out); returns how many were handled."""
        handled = 0
        while handled < DELIVER_AT_ONCE:
            now = self.clock()
            with redis_errors(self.transport.url):
                leased = self._lease(keys=[self.keys.outbox()], args=[now, 1, now + self.policy.lease_s])
            if not leased:
                break
            self._deliver(leased[0])
            handled += 1
        return handled

    def _deliver(self, raw: bytes) -> None:
        try:
            item = OutboxItem.decode(raw)
        except Exception as exc:  # written by an older version, or by hand: it costs this item only
            self.totals.failed += 1
            detail = f"outbox item cannot be read: {type(exc).__name__}: {exc}"
            letter = DeadLetter(Delivery(raw, b""), "unreadable_entry", detail[:MAX_DETAIL_CHARS])
            self._settle(raw, remove=True, dead=letter)
            return
        sent_key = self.keys.sent(item.notifier, item.notification.key)
        with redis_errors(self.transport.url):
            already = raw_command(self.transport.client, "EXISTS", sent_key)
        if already:  # sent by someone whose lease ran out before it could clear the item
            self._settle(raw, remove=True)
            return
        notifier = self.notifiers.get(item.notifier)
        try:
            if notifier is None:
                raise NotifyPermanentError(f"no notifier named {item.notifier!r} is configured")
            notifier.send(item.notification)
        except NotifyDeferred as exc:
            self.totals.deferred += 1
            self._settle(raw, due=self.clock() + exc.retry_after_s, count=f"deferred:{item.notifier}")
        except NotifyPermanentError as exc:
            self._fail(raw, item, f"{exc}")
        except (NotifyTransientError, Exception) as exc:  # a notifier bug is retried like an outage
            if not isinstance(exc, NotifyTransientError):
                log.exception("notifier %s failed unexpectedly; retrying", item.notifier)
            self._retry_or_fail(raw, item, str(exc))
        else:
            self.totals.sent += 1
            self._settle(raw, remove=True, mark=sent_key, count=f"sent:{item.notifier}")

    def _retry_or_fail(self, raw: bytes, item: OutboxItem, error: str) -> None:
        attempt = item.attempt + 1
        if attempt >= self.policy.retry.max_deliveries:
            self._fail(raw, item, f"gave up after {attempt} attempts: {error}")
            return
        self.totals.retried += 1
        again = OutboxItem(item.notifier, attempt, item.notification).encode()
        due = self.clock() + self.policy.retry.delay_s(attempt, self.rng)
        self._settle(raw, remove=True, add=(again, due), count=f"retried:{item.notifier}")

    def _fail(self, raw: bytes, item: OutboxItem, error: str) -> None:
        self.totals.failed += 1
        letter = DeadLetter(
            Delivery(raw, b"", item.notification.key, item.attempt + 1), "notify_failed", error
        )
        self._settle(raw, remove=True, dead=letter, count=f"dead_lettered:{item.notifier}")

    def _settle(
        self,
        raw: bytes,
        *,
        remove: bool = False,
        due: float | None = None,
        add: tuple[bytes, float] | None = None,
        mark: str | None = None,
        dead: DeadLetter | None = None,
        count: str | None = None,
    ) -> None:
        """One transaction per outcome, so an item is never both gone and unsent."""
        outbox = self.keys.outbox()
        with redis_errors(self.transport.url):
            pipe = self.transport.client.pipeline(transaction=True)
            if dead is not None:
                fields = dead.to_fields(origin=outbox, transport=OUTBOX_TRANSPORT, consumer=self.name)
                pipe.xadd(self.keys.dead_letters(), fields)
            if mark is not None:
                pipe.set(mark, self.name, ex=SENT_TTL_S)
            if add is not None:
                pipe.zadd(outbox, {add[0]: add[1]})
            if remove:
                pipe.zrem(outbox, raw)
            if due is not None:
                pipe.zadd(outbox, {raw: due}, xx=True)
            if count is not None:
                pipe.hincrby(self.keys.stats(), count, 1)
            pipe.execute()
