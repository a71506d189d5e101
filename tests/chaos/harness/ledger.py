"""A producer thread that keeps a ledger: for every message id, ``ok``, ``fail`` or ``unknown``.

Ids come from :meth:`msgrelay.producer.Producer.build` before anything is sent. ``ok``: ``send_many``
returned. ``unknown``: the connection dropped or timed out after sending (the entry may or may not be
stored). ``fail``: a definite refusal (an error reply such as OOM to a one-message send; a pipelined chunk
that gets an error reply is ``unknown``, since the commands before the failing one were stored).

Every text is ``m <id> <tag> xxxx...``: the checker can tell a whole line from a torn or glued one.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass, field

from msgrelay.config import load_settings
from msgrelay.errors import BrokerError, BrokerResponseError
from msgrelay.levels import LOG_TYPES
from msgrelay.message import Message
from msgrelay.producer import Producer

POISON_TAG = "POISON-EXIT"
GOOD_TAG = "ok"


@dataclass(slots=True)
class Ledger:
    ok: set[str] = field(default_factory=set)
    fail: set[str] = field(default_factory=set)
    unknown: set[str] = field(default_factory=set)
    poison: set[str] = field(default_factory=set)
    types: dict[str, str] = field(default_factory=dict)
    """id -> the type it was sent as (the file its line must be in)."""
    errors: list[str] = field(default_factory=list)
    ok_times: list[float] = field(default_factory=list)
    """monotonic time of each successful send."""

    @property
    def attempted(self) -> set[str]:
        return self.ok | self.fail | self.unknown

    def first_ok_after(self, moment: float) -> float | None:
        return next((t for t in self.ok_times if t >= moment), None)


@dataclass(slots=True)
class ProducerPlan:
    """What to send: ``total`` messages in chunks of ``chunk`` at about ``rate_per_s``."""

    total: int
    rate_per_s: float
    chunk: int = 100
    pad: int = 24
    poison_every: int = 0
    """Every n-th message carries the POISON-EXIT tag (0: none)."""
    retry_pause_s: float = 0.05
    stop_after_failures: int = 0
    """Stop after this many consecutive ``fail`` results (0: never); for the OOM scenario."""


class LedgerProducer:
    """Runs a :class:`ProducerPlan` in a thread against one Redis URL."""

    def __init__(
        self, url: str, transport: str, plan: ProducerPlan, *, socket_timeout_s: float = 2.0
    ) -> None:
        settings = load_settings(
            None,
            {
                "redis": {"url": url, "socket_timeout_s": socket_timeout_s, "connect_timeout_s": 1.0},
                "queue": {"transport": transport},
                "producer": {"pipeline_size": max(plan.chunk, 1)},
            },
        )
        self.producer = Producer.from_settings(settings)
        self.plan = plan
        self.ledger = Ledger()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-producer", daemon=True)
        self._sent = 0
        self._fails_in_a_row = 0

    def start(self) -> LedgerProducer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout_s: float) -> bool:
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    @property
    def sent(self) -> int:
        return self._sent

    def _build(self, index: int) -> Message:
        msg_type = LOG_TYPES[index % len(LOG_TYPES)]
        poison = self.plan.poison_every > 0 and index % self.plan.poison_every == self.plan.poison_every - 1
        message = self.producer.build(msg_type, "")
        tag = POISON_TAG if poison else GOOD_TAG
        message = dataclasses.replace(message, text=f"m {message.id} {tag} {'x' * self.plan.pad}")
        self.ledger.types[message.id] = message.type
        if poison:
            self.ledger.poison.add(message.id)
        return message

    def _run(self) -> None:
        started = time.monotonic()
        try:
            while self._sent < self.plan.total and not self._stop.is_set():
                count = min(self.plan.chunk, self.plan.total - self._sent)
                batch = [self._build(self._sent + i) for i in range(count)]
                self._sent += count
                self._send(batch)
                if self.plan.stop_after_failures and self._fails_in_a_row >= self.plan.stop_after_failures:
                    break
                ahead = started + self._sent / self.plan.rate_per_s - time.monotonic()
                if ahead > 0:
                    self._stop.wait(ahead)
        finally:
            self.producer.close()

    def _send(self, batch: list[Message]) -> None:
        ids = [message.id for message in batch]
        try:
            self.producer.send_many(batch)
        except BrokerResponseError as exc:  # an error reply: definite only for a one-message send
            (self.ledger.fail if len(ids) == 1 else self.ledger.unknown).update(ids)
            self._fails_in_a_row += 1
            self._note(exc)
        except BrokerError as exc:  # connection lost or timed out after sending: maybe stored
            self.ledger.unknown.update(ids)
            self._note(exc)
        else:
            self.ledger.ok.update(ids)
            self.ledger.ok_times.append(time.monotonic())
            self._fails_in_a_row = 0
            return
        self._stop.wait(self.plan.retry_pause_s)

    def _note(self, exc: Exception) -> None:
        if len(self.ledger.errors) < 1000:
            self.ledger.errors.append(f"{type(exc).__name__}: {exc}")
