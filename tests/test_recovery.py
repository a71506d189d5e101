"""Crash recovery, poison messages, retries and trimming, for both transports, against a real Redis.

A "dead" consumer is one that fetched entries and never settled them (its process was killed); the tests
wait for the very thing under test (an entry's idle time, a heartbeat's expiry) by polling Redis with a
deadline, never with a fixed sleep.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from msgrelay.config import Settings
from msgrelay.consumer import BatchResult, Consumer, ConsumerHook, Totals
from msgrelay.keys import Stat
from msgrelay.levels import TYPE_FILES
from msgrelay.message import Message
from msgrelay.producer import Producer
from msgrelay.sinks import LogFileSink
from msgrelay.transport import Transport, create_transport

CLAIM_IDLE_S = 0.2


@pytest.fixture
def settings(make_settings: Callable[..., Settings], transport_name: str) -> Settings:
    return make_settings(
        transport_name,
        consumer={
            "batch_size": 5,
            "block_timeout_s": 0.05,
            "line_format": "json",
            "claim_idle_s": CLAIM_IDLE_S,
            "max_deliveries": 3,
            "retry_backoff_s": 0.01,
            "retry_backoff_cap_s": 0.02,
        },
    )


@pytest.fixture
def made(settings: Settings) -> Iterator[list[Any]]:
    things: list[Any] = []
    yield things
    for thing in things:
        thing.close()


@pytest.fixture
def new_transport(settings: Settings, made: list[Any]) -> Callable[[], Transport]:
    def make() -> Transport:
        transport = create_transport(settings)
        made.append(transport)
        return transport

    return make


@pytest.fixture
def producer(settings: Settings, made: list[Any]) -> Producer:
    producer = Producer.from_settings(settings)
    made.append(producer)
    return producer


def make_consumer(
    settings: Settings, transport: Transport, sink: Any, name: str, *hooks: ConsumerHook
) -> Consumer:
    consumer_settings = settings.consumer.model_copy(update={"consumer_name": name})
    return Consumer(transport, sink, consumer_settings, max_message_bytes=65536, hooks=hooks)


def file_ids(settings: Settings) -> list[str]:
    ids: list[str] = []
    for name in TYPE_FILES.values():
        path = Path(settings.consumer.log_dir) / name
        if path.exists():
            ids += [orjson.loads(line)["id"] for line in path.read_text().splitlines()]
    return ids


def wait_until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def abandoned(transport_name: str, client: redis.Redis, settings: Settings, name: str) -> Callable[[], bool]:
    """True once the entries ``name`` holds count as abandoned: idle past claim_idle_s / heartbeat gone."""
    if transport_name == "lists":
        heartbeat = f"{settings.queue.namespace}:heartbeat:{settings.queue.buffer_key}:{name}"
        return lambda: client.exists(heartbeat) == 0
    stream, group = settings.queue.stream, settings.queue.group

    def idle_enough() -> bool:
        rows = client.xpending_range(stream, group, "-", "+", 1000, name)
        return bool(rows) and min(r["time_since_delivered"] for r in rows) >= CLAIM_IDLE_S * 1000

    return idle_enough


def dead_letters(client: redis.Redis, settings: Settings) -> list[dict[bytes, bytes]]:
    return [fields for _, fields in client.xrange(f"{settings.queue.namespace}:dlq")]


# --- a dead consumer's work -----------------------------------------------------------------------------


def test_a_live_consumer_takes_over_what_a_dead_consumer_held(
    settings: Settings,
    transport_name: str,
    producer: Producer,
    new_transport: Callable[[], Transport],
    redis_client: redis.Redis,
) -> None:
    ids = producer.send_many([("info", f"m{i}") for i in range(12)])
    # Given: consumer "dead" took 5 entries and was killed before writing them
    assert len(new_transport().fetch("dead", 5, 0)) == 5
    wait_until(abandoned(transport_name, redis_client, settings, "dead"))

    # When: another consumer runs
    observer = new_transport()
    sink = LogFileSink(settings.consumer.log_dir, line_format="json")
    totals = make_consumer(settings, new_transport(), sink, "live").run(burst=True)
    sink.close()

    # Then: everything is written exactly once and nothing stays pending
    assert sorted(file_ids(settings)) == sorted(ids)
    assert totals.written == 12
    assert sum(observer.pending().values()) == 0
    assert observer.stats()[Stat.RECLAIMED] == 5


def test_a_consumer_that_is_alive_keeps_its_entries(
    settings: Settings,
    producer: Producer,
    new_transport: Callable[[], Transport],
) -> None:
    producer.send_many([("info", f"m{i}") for i in range(3)])
    holder = new_transport()
    held = holder.fetch("busy", 3, 0)
    # Given: "busy" is still working on its batch and says so (heartbeat / touch) as it goes
    deadline = time.monotonic() + CLAIM_IDLE_S * 3
    other = new_transport()
    while time.monotonic() < deadline:
        holder.touch("busy", held)
        # Then: another consumer never takes them, however long the batch takes
        assert other.reclaim("other", 10, CLAIM_IDLE_S) == []
        assert other.fetch("other", 10, 0) == []
        time.sleep(CLAIM_IDLE_S / 4)
    assert other.pending().get("busy") == 3


# --- poison messages ----------------------------------------------------------------------------------


def test_an_entry_that_kills_every_consumer_is_dead_lettered_after_max_deliveries(
    settings: Settings,
    transport_name: str,
    producer: Producer,
    new_transport: Callable[[], Transport],
    redis_client: redis.Redis,
) -> None:
    [poison] = producer.send_many([("error", "I crash whoever reads me")])
    # Given: three consumers in turn took it and died (max_deliveries is 3)
    for victim in ("v1", "v2", "v3"):
        transport = new_transport()
        # streams hand it over through XAUTOCLAIM; the lists reaper puts it back on the queue for fetch
        taken = transport.reclaim(victim, 10, CLAIM_IDLE_S) or transport.fetch(victim, 10, 0)
        assert len(taken) == 1, victim
        wait_until(abandoned(transport_name, redis_client, settings, victim))
    good = producer.send_many([("info", f"fine {i}") for i in range(4)])

    # When: a fourth consumer gets it
    sink = LogFileSink(settings.consumer.log_dir, line_format="json")
    totals = make_consumer(settings, new_transport(), sink, "survivor").run(burst=True)
    sink.close()

    # Then: it is dead-lettered with the reason and attempt count, the rest flowed, nothing is stuck
    [letter] = dead_letters(redis_client, settings)
    assert letter[b"reason"] == b"max_deliveries"
    assert letter[b"attempt"] == b"4"
    assert poison.encode() in letter[b"raw"]
    assert sorted(file_ids(settings)) == sorted(good)
    assert totals.dead_lettered == 1
    assert sum(new_transport().pending().values()) == 0


class RejectingSink:
    """The real sink, except that messages whose text contains "poison" make it fail (a handler bug)."""

    def __init__(self, inner: LogFileSink) -> None:
        self.inner = inner
        self.poison_attempts: list[float] = []

    def write_batch(self, messages: Sequence[Message], handles: Sequence[bytes]) -> list[tuple[int, str]]:
        rejected = [(i, "ValueError: cannot format") for i, m in enumerate(messages) if "poison" in m.text]
        self.poison_attempts += [time.monotonic()] * len(rejected)
        bad = {i for i, _ in rejected}
        self.inner.write_batch([m for i, m in enumerate(messages) if i not in bad], [])
        return rejected

    def already_written(self, handles: Sequence[bytes]) -> set[bytes]:
        return set()

    def settled(self) -> None:
        pass

    def close(self) -> None:
        self.inner.close()


class StopWhenDeadLettered(ConsumerHook):
    def __init__(self) -> None:
        self.consumer: Consumer | None = None

    def after_batch(self, result: BatchResult, totals: Totals) -> None:
        if totals.dead_lettered and self.consumer is not None:
            self.consumer.stop()


@pytest.mark.timeout(30)
def test_a_failing_message_is_retried_with_backoff_then_dead_lettered_without_blocking_its_batch(
    settings: Settings, producer: Producer, new_transport: Callable[[], Transport], redis_client: redis.Redis
) -> None:
    ids = producer.send_many([("info", "fine 1"), ("info", "poison pill"), ("info", "fine 2")])
    sink = RejectingSink(LogFileSink(settings.consumer.log_dir, line_format="json"))
    stopper = StopWhenDeadLettered()
    consumer = make_consumer(settings, new_transport(), sink, "worker", stopper)
    stopper.consumer = consumer

    totals = consumer.run()  # until the poison is dead-lettered
    sink.close()

    # Then: the good messages of its batch were written at once, the poison tried max_deliveries times
    assert file_ids(settings) == [ids[0], ids[2]]
    assert len(sink.poison_attempts) == 3
    gaps = [b - a for a, b in zip(sink.poison_attempts, sink.poison_attempts[1:], strict=False)]
    assert all(gap >= 0.005 for gap in gaps)  # never retried before its backoff (≥ half of 10 ms)
    [letter] = dead_letters(redis_client, settings)
    assert letter[b"reason"] == b"processing_failed"
    assert b"cannot format" in letter[b"detail"]
    assert letter[b"attempt"] == b"3"
    assert totals.retried == 2
    assert redis_client.zcard(f"{settings.queue.namespace}:retry:{new_transport().keys.queue}") == 0
    assert sum(new_transport().pending().values()) == 0


# --- trimming (streams) -------------------------------------------------------------------------------


@pytest.mark.parametrize("transport_name", ["streams"])
def test_trim_drops_settled_entries_and_never_a_pending_or_undelivered_one(
    settings: Settings, producer: Producer, new_transport: Callable[[], Transport], redis_client: redis.Redis
) -> None:
    stream = settings.queue.stream
    producer.send_many([("info", f"m{i}") for i in range(300)])
    transport = new_transport()
    transport.setup()
    done = transport.fetch("fast", 190, 0)
    held = transport.fetch("slow", 10, 0)  # these 10 stay pending
    transport.settle("fast", done, [], {"INFO": len(done)})

    transport.trim()

    # Then: the pending 10 and the undelivered 100 are all still there
    remaining = {entry_id for entry_id, _ in redis_client.xrange(stream)}
    assert {d.handle for d in held} <= remaining

    def as_tuple(entry_id: bytes) -> tuple[int, int]:
        ms, seq = entry_id.split(b"-")
        return int(ms), int(seq)

    assert len([e for e in remaining if as_tuple(e) > as_tuple(held[-1].handle)]) == 100
    assert len(remaining) == 110  # and everything settled below the oldest pending entry is gone
    # once the slow consumer settles, a trim may drop everything up to the undelivered ones
    transport.settle("slow", held, [], {"INFO": len(held)})
    transport.trim()
    assert redis_client.xlen(stream) == 100
    assert len(transport.fetch("fast", 1000, 0)) == 100
