"""The transport interface: the few operations producers and consumers need from Redis.

Every implementation must pass ``tests/test_transport_contract.py``. The failure contract:

* ``send`` either stores every payload or raises; after a :class:`~msgrelay.errors.BrokerConnectionError`
  some payloads may have been stored (at-least-once: resend, downstream dedups by message id).
* ``fetch`` hands out entries that stay owned by the consumer until ``settle``; if the consumer dies they
  are found again by ``recover`` (same consumer name) or by crash recovery.
* ``settle`` acknowledges written entries, moves dead letters and schedules retries in one server-side
  script: the dead letters are added before anything is acknowledged, so a refused write (OOM, wrong type)
  leaves the whole batch held, never a message acknowledged but missing from the dead-letter store.
* ``reclaim`` takes over entries held by a consumer that died or stalled longer than ``min_idle_s``; the
  delivery counter of each entry grows with every take-over, which is how poison messages are found.
* ``fetch``, ``recover`` and ``reclaim`` hand out at most ``max_batch_bytes`` of entries at a time (at
  least one entry), and never an entry over ``max_message_bytes``: that one is dead-lettered (reason
  ``oversize``, a 1 KiB preview) and acknowledged on the server, atomically, without being sent to the
  consumer whole (``fetch_scripts``, ``replies``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import redis
from redis.exceptions import BusyLoadingError

from msgrelay.deadletter import OVERSIZE_PREVIEW_BYTES, DeadLetter
from msgrelay.errors import (
    BrokerConnectionError,
    BrokerError,
    BrokerResponseError,
    BrokerStateError,
    BrokerTimeoutError,
)
from msgrelay.keys import KeySchema, Stat
from msgrelay.message import Delivery
from msgrelay.retries import RetryRecord
from msgrelay.transport.replies import capped_reads
from msgrelay.transport.states import STATES, state_of


def raw_command(target: redis.Redis | redis.client.Pipeline, *args: object) -> Any:
    """A command sent as-is: skips redis-py's per-command wrappers on hot paths and for float timeouts."""
    return target.execute_command(*args)  # type: ignore[no-untyped-call]


@contextmanager
def redis_errors(url: str) -> Iterator[None]:
    """The one place where redis-py exceptions become msgrelay errors. ``url`` must already be masked.

    A reply about the server's state rather than our request (loading, a read-only replica ...: the table
    in :mod:`msgrelay.transport.states`) becomes :class:`BrokerStateError`, which long-running commands
    wait out; redis-py files LOADING under its connection errors, so states are told apart first."""
    try:
        yield
    except redis.exceptions.RedisError as exc:
        raise _translated(exc, url) from exc


def _translated(exc: redis.exceptions.RedisError, url: str) -> BrokerError:
    state = state_of(exc.status_code, str(exc))
    if state is not None and isinstance(exc, redis.exceptions.ResponseError | BusyLoadingError):
        reply = _reply(exc, state)
        return BrokerStateError(f"Redis at {url} {STATES[state]} ({reply})", url=url, state=state)
    if isinstance(exc, redis.exceptions.TimeoutError):
        return BrokerTimeoutError(f"Redis at {url} did not answer in time ({exc})", url=url)
    if isinstance(exc, redis.exceptions.AuthenticationError):
        return BrokerConnectionError(f"Redis at {url} refused the credentials ({exc})", url=url)
    if isinstance(exc, redis.exceptions.ConnectionError):
        return BrokerConnectionError(f"cannot connect to Redis at {url} ({exc})", url=url)
    if isinstance(exc, redis.exceptions.ResponseError):
        return BrokerResponseError(f"Redis at {url} answered with an error: {exc}", url=url)
    return BrokerError(f"Redis error at {url}: {exc}", url=url)


def _reply(exc: redis.exceptions.RedisError, state: str, limit: int = 120) -> str:
    """The server's reply from the state's code on (redis-py drops the code it knows; Redis 6.2 wraps it in
    a script error), cut to its first sentence (MISCONF's runs to 300 characters)."""
    text = str(exc)
    embedded = text.find(f"-{state} ")
    if embedded >= 0:
        text = text[embedded + 1 :]
    elif not text.startswith(state):
        text = f"{state} {text}"
    first = text.split(". ", 1)[0].rstrip(".")
    return first if len(first) <= limit else first[: limit - 3] + "..."


@dataclass(frozen=True, slots=True)
class HeldEntries:
    """Entries another consumer holds unsettled: ``count`` of them, the first of which a live consumer can
    take over in ``available_in_s`` seconds (0: now)."""

    consumer: str
    count: int
    available_in_s: float


DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024
"""``queue.max_message_bytes``: entries larger than this are dead-lettered (reason ``oversize``)."""
DEFAULT_MAX_BATCH_BYTES = 16 * 1024 * 1024
"""``consumer.max_batch_bytes``: a consumer needs up to 7-9 times this while it processes a batch."""


class Transport(ABC):
    """Moves raw message bytes through one Redis queue (a stream or a list)."""

    name: ClassVar[str]

    def __init__(
        self,
        client: redis.Redis,
        keys: KeySchema,
        *,
        url: str,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
    ) -> None:
        self.client = client
        self.keys = keys
        self.url = url
        """Masked URL, for error messages."""
        self.max_message_bytes = max_message_bytes
        """Larger entries are dead-lettered on the server by fetch, recover and reclaim, never handed out."""
        self.max_batch_bytes = max_batch_bytes
        """What one fetch, recover or reclaim hands out at most, in bytes of entries (at least one entry)."""
        self._dead_lettered = 0
        self._capped: redis.Redis | None = None

    @abstractmethod
    def send(self, payloads: Sequence[bytes]) -> None:
        """Enqueue payloads in one round trip and count them as produced."""

    def setup(self) -> None:  # noqa: B027 - optional hook, most transports need nothing
        """Create whatever the queue needs (idempotent)."""

    @abstractmethod
    def recover(self, consumer: str, count: int) -> list[Delivery]:
        """Entries this consumer name fetched earlier but never settled (after a crash), oldest first,
        within ``max_batch_bytes``; the others stay held and come next time."""

    @abstractmethod
    def fetch(self, consumer: str, count: int, block_s: float) -> list[Delivery]:
        """Up to ``count`` new entries and ``max_batch_bytes`` of them (at least one), oldest first, waiting
        at most ``block_s`` seconds for the first (0 = don't wait). Empty only when there is nothing to hand
        out. Entries over ``max_message_bytes`` are dead-lettered on the server instead (see
        :meth:`take_dead_lettered`); entries beyond the budget come first next time."""

    @abstractmethod
    def reclaim(self, consumer: str, count: int, min_idle_s: float) -> list[Delivery]:
        """Entries that other consumers have held for ``min_idle_s`` or more without settling, now ours."""

    @abstractmethod
    def heartbeat(self, consumer: str, ttl_s: float) -> None:
        """Tell other consumers that ``consumer`` is alive for the next ``ttl_s`` seconds."""

    @abstractmethod
    def touch(self, consumer: str, deliveries: Sequence[Delivery]) -> None:
        """Keep entries we still hold (a write being retried) from being reclaimed as abandoned."""

    @abstractmethod
    def settle(
        self,
        consumer: str,
        written: Sequence[Delivery],
        dead: Sequence[DeadLetter],
        type_counts: Mapping[str, int],
        retries: Sequence[RetryRecord] = (),
    ) -> None:
        """Acknowledge ``written``, dead-letter ``dead``, schedule ``retries`` and count, atomically."""

    @abstractmethod
    def promote_retries(self, now_ms: int, count: int) -> int:
        """Put retries that are due back on the queue; returns how many were moved."""

    def trim(self) -> None:  # noqa: B027 - optional hook: only streams keep settled entries
        """Drop settled entries the queue no longer needs (never one that is pending or undelivered)."""

    def leave(self, consumer: str) -> None:  # noqa: B027 - optional hook
        """A clean exit: forget ``consumer`` if it holds nothing."""

    def gone_consumers(self, idle_s: float) -> set[str]:
        """Consumers that hold nothing and have been gone ``idle_s`` seconds or more (stats hides them)."""
        return set()

    def forget_consumers(self, idle_s: float, *, keep: str = "") -> list[str]:
        """Forget the :meth:`gone_consumers` (never ``keep``), checking atomically that each still holds
        nothing; returns their names."""
        return []

    @abstractmethod
    def backlog(self) -> int | None:
        """Entries not yet handed to any consumer (``None`` if the server cannot tell)."""

    @abstractmethod
    def pending(self) -> dict[str, int]:
        """Consumer name -> entries it holds but has not settled."""

    @abstractmethod
    def held_elsewhere(self, consumer: str, min_idle_s: float) -> list[HeldEntries]:
        """What consumers other than ``consumer`` hold, and when ``reclaim(..., min_idle_s)`` can take it."""

    def stats(self) -> dict[str, int]:
        """The counters in the stats hash."""
        with redis_errors(self.url):
            raw: dict[bytes, bytes] = raw_command(self.client, "HGETALL", self.keys.stats())
        return {key.decode(): int(value) for key, value in raw.items()}

    def scheduled_retries(self) -> int:
        """Failed messages waiting for their next attempt."""
        with redis_errors(self.url):
            return int(self.client.zcard(self.keys.retry()))

    def dead_letter_count(self) -> int:
        with redis_errors(self.url):
            return int(self.client.xlen(self.keys.dead_letters()))

    def take_dead_lettered(self) -> int:
        """How many oversize entries ``fetch``, ``recover`` and ``reclaim`` dead-lettered on the server since
        the last call (they are counted in the stats hash too, but the consumer never saw them)."""
        taken, self._dead_lettered = self._dead_lettered, 0
        return taken

    def close(self) -> None:
        self.client.close()
        if self._capped is not None:
            self._capped.close()

    def _capped_reads(self) -> redis.Redis:
        """The client of the blocking reads, whose replies honour ``replies.reply_cap`` (made on first use:
        producers never need it)."""
        if self._capped is None:
            self._capped = capped_reads(self.client)
        return self._capped

    def _fetch_args(self, consumer: str, *specific: bytes | str | int) -> list[bytes | str | int]:
        """ARGV of the scripts of :mod:`msgrelay.transport.fetch_scripts`, in the layout they read."""
        return [
            self.max_message_bytes,
            self.max_batch_bytes,
            OVERSIZE_PREVIEW_BYTES,
            self.keys.queue,
            consumer,
            Stat.DEAD_LETTERED,
            self.name,
            *specific,
        ]

    def ping(self) -> None:
        """PING: raises the ``Broker*`` error that says why the server cannot serve (unreachable, loading,
        refusing writes after a failed save, busy, a replica without its primary ...)."""
        with redis_errors(self.url):
            self.client.ping()

    def abort(self) -> None:
        """Cut every connection to Redis now; safe from another thread. A command waiting on the server
        (a stalled one: ``kill -STOP``) fails at once with :class:`BrokerConnectionError` instead of after
        ``socket_timeout_s``; the next command connects again. Used to bound a stop (``stop_timeout_s``)."""
        self.client.connection_pool.disconnect(inuse_connections=True)
        if self._capped is not None:  # the blocking reads have a client of their own
            self._capped.connection_pool.disconnect(inuse_connections=True)

    def primary(self) -> str | None:
        """``host:port`` of the primary when the server is a replica (``ROLE``), else None; never raises,
        it only adds a detail to the line that says the server is a replica."""
        try:
            role = raw_command(self.client, "ROLE")
        except redis.exceptions.RedisError:
            return None
        if not role or role[0] not in (b"slave", "slave"):
            return None
        host = role[1].decode() if isinstance(role[1], bytes) else str(role[1])
        return f"{host}:{role[2]}"

    def _settlement_args(
        self,
        consumer: str,
        handles: Sequence[bytes],
        dead: Sequence[DeadLetter],
        type_counts: Mapping[str, int],
        retries: Sequence[RetryRecord],
    ) -> list[bytes | str | int | float]:
        """ARGV of the settle scripts, in the layout ``scripts.SETTLE_PRELUDE`` reads."""
        args: list[bytes | str | int | float] = [len(handles), *handles, len(dead)]
        for letter in dead:
            fields = letter.to_fields(origin=self.keys.queue, transport=self.name, consumer=consumer)
            args.append(len(fields))
            for name, value in fields.items():
                args += [name, value]  # type: ignore[list-item]
        processed = sum(type_counts.values())
        increments: list[tuple[str, int]] = [(Stat.BATCHES, 1)]
        if processed:
            increments.append((Stat.PROCESSED, processed))
            increments += [(Stat.processed_type(t), n) for t, n in type_counts.items()]
        if dead:
            increments.append((Stat.DEAD_LETTERED, len(dead)))
        if retries:
            increments.append((Stat.RETRIED, len(retries)))
        args.append(len(increments))
        for name, amount in increments:
            args += [name, amount]
        args.append(len(retries))
        for record in retries:
            args += [record.due_ms, record.encode()]
        args.append(consumer)
        return args
