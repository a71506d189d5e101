"""The transport interface: the few operations producers and consumers need from Redis.

Every implementation must pass ``tests/test_transport_contract.py``. The failure contract:

* ``send`` either stores every payload or raises; after a :class:`~msgrelay.errors.BrokerConnectionError`
  some payloads may have been stored (at-least-once: resend, downstream dedups by message id).
* ``fetch`` hands out entries that stay owned by the consumer until ``settle``; if the consumer dies they
  are found again by ``recover`` (same consumer name) or by crash recovery.
* ``settle`` acknowledges written entries and moves dead letters in one atomic step (MULTI/EXEC): either
  every ack and dead letter of the batch happens, or none does.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

import redis

from msgrelay.deadletter import DeadLetter
from msgrelay.errors import BrokerConnectionError, BrokerError, BrokerResponseError, BrokerTimeoutError
from msgrelay.keys import KeySchema, Stat
from msgrelay.message import Delivery


def raw_command(target: redis.Redis | redis.client.Pipeline, *args: object) -> Any:
    """A command sent as-is: skips redis-py's per-command wrappers on hot paths and for float timeouts."""
    return target.execute_command(*args)  # type: ignore[no-untyped-call]


@contextmanager
def redis_errors(url: str) -> Iterator[None]:
    """The one place where redis-py exceptions become msgrelay errors. ``url`` must already be masked."""
    try:
        yield
    except redis.exceptions.TimeoutError as exc:
        raise BrokerTimeoutError(f"Redis at {url} did not answer in time ({exc})", url=url) from exc
    except redis.exceptions.AuthenticationError as exc:
        raise BrokerConnectionError(f"Redis at {url} refused the credentials ({exc})", url=url) from exc
    except redis.exceptions.ConnectionError as exc:
        raise BrokerConnectionError(f"cannot connect to Redis at {url} ({exc})", url=url) from exc
    except redis.exceptions.ResponseError as exc:
        raise BrokerResponseError(f"Redis at {url} answered with an error: {exc}", url=url) from exc
    except redis.exceptions.RedisError as exc:
        raise BrokerError(f"Redis error at {url}: {exc}", url=url) from exc


class Transport(ABC):
    """Moves raw message bytes through one Redis queue (a stream or a list)."""

    name: ClassVar[str]

    def __init__(self, client: redis.Redis, keys: KeySchema, *, url: str) -> None:
        self.client = client
        self.keys = keys
        self.url = url
        """Masked URL, for error messages."""

    @abstractmethod
    def send(self, payloads: Sequence[bytes]) -> None:
        """Enqueue payloads in one round trip and count them as produced."""

    def setup(self) -> None:  # noqa: B027 - optional hook, most transports need nothing
        """Create whatever the queue needs (idempotent)."""

    @abstractmethod
    def recover(self, consumer: str, count: int) -> list[Delivery]:
        """Entries this consumer name fetched earlier but never settled (after a crash), oldest first."""

    @abstractmethod
    def fetch(self, consumer: str, count: int, block_s: float) -> list[Delivery]:
        """Up to ``count`` new entries, waiting at most ``block_s`` seconds for the first (0 = don't wait)."""

    @abstractmethod
    def settle(
        self,
        consumer: str,
        written: Sequence[Delivery],
        dead: Sequence[DeadLetter],
        type_counts: Mapping[str, int],
    ) -> None:
        """Acknowledge ``written``, dead-letter ``dead``, and update the counters, atomically."""

    @abstractmethod
    def backlog(self) -> int | None:
        """Entries not yet handed to any consumer (``None`` if the server cannot tell)."""

    @abstractmethod
    def pending(self) -> dict[str, int]:
        """Consumer name -> entries it holds but has not settled."""

    def stats(self) -> dict[str, int]:
        """The counters in the stats hash."""
        with redis_errors(self.url):
            raw: dict[bytes, bytes] = raw_command(self.client, "HGETALL", self.keys.stats())
        return {key.decode(): int(value) for key, value in raw.items()}

    def dead_letter_count(self) -> int:
        with redis_errors(self.url):
            return int(self.client.xlen(self.keys.dead_letters()))

    def close(self) -> None:
        self.client.close()

    def _record_settlement(
        self,
        pipe: redis.client.Pipeline,
        consumer: str,
        dead: Sequence[DeadLetter],
        type_counts: Mapping[str, int],
    ) -> None:
        """Queue the dead-letter XADDs and counter updates shared by every transport's ``settle``."""
        stats = self.keys.stats()
        for letter in dead:
            pipe.xadd(self.keys.dead_letters(), letter.to_fields(origin=self.keys.queue, consumer=consumer))
        processed = sum(type_counts.values())
        if processed:
            pipe.hincrby(stats, Stat.PROCESSED, processed)
            for msg_type, count in type_counts.items():
                pipe.hincrby(stats, Stat.processed_type(msg_type), count)
        if dead:
            pipe.hincrby(stats, Stat.DEAD_LETTERED, len(dead))
        pipe.hincrby(stats, Stat.BATCHES, 1)
