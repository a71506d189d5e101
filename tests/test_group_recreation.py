"""A consumer group deleted under the consumers (XGROUP DESTROY, DEL, FLUSHALL) is created again without
writing any line a second time, and without losing what was not settled (issue 10, section 2).

Settled entries leave the stream with their ack while our group is its only reader, so a group created
again at 0 delivers exactly what was never settled. Real redis-server, real transports; a "crash" is a
transport dropped without settling.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from msgrelay.config import Settings, load_settings
from msgrelay.consumer import Consumer
from msgrelay.message import Delivery
from msgrelay.producer import Producer
from msgrelay.sinks import LogFileSink
from msgrelay.transport import StreamTransport, create_transport

STREAM = "msgrelay:logs"
GROUP = "msgrelay"


@pytest.fixture
def stream_settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings("streams", consumer={"batch_size": 7, "consumer_name": "c1", "block_timeout_s": 0.1})


@pytest.fixture
def drain(stream_settings: Settings, tmp_path: Path) -> Iterator[Callable[[], list[str]]]:
    """Run a burst consumer (the real loop, real files); returns every id written so far, in order."""
    opened: list[StreamTransport | LogFileSink] = []

    def run() -> list[str]:
        transport = create_transport(stream_settings)
        sink = LogFileSink(stream_settings.consumer.log_dir)
        opened.extend([transport, sink])  # type: ignore[list-item]
        Consumer(transport, sink, stream_settings.consumer, max_message_bytes=65536).run(burst=True)
        logs = stream_settings.consumer.log_dir
        return [
            line.split()[2] for path in sorted(logs.glob("*.log")) for line in path.read_text().splitlines()
        ]

    yield run
    for thing in opened:
        thing.close()


@pytest.fixture
def producer(stream_settings: Settings) -> Iterator[Producer]:
    producer = Producer.from_settings(stream_settings)
    yield producer
    producer.close()


def test_xgroup_destroy_never_makes_the_consumer_write_settled_entries_again(
    drain: Callable[[], list[str]], producer: Producer, redis_client: redis.Redis
) -> None:
    # Given 20 messages written and settled (not trimmed yet: the trim runs every 10 s)
    first = producer.send_many([("info", f"m{i}") for i in range(20)])
    assert drain() == first

    # When the group is destroyed and more is sent (before the fix: all 20 were written a second time)
    redis_client.xgroup_destroy(STREAM, GROUP)
    more = producer.send_many([("error", f"n{i}") for i in range(5)])

    # Then only the new messages are written, each once
    assert Counter(drain()) == Counter(first + more)
    assert redis_client.xlen(STREAM) == 0  # settled entries left the stream with their ack


def test_entries_a_dead_consumer_held_are_not_lost_when_the_group_is_destroyed(
    drain: Callable[[], list[str]], producer: Producer, stream_settings: Settings, redis_client: redis.Redis
) -> None:
    # Given a consumer that took 7 entries and died before writing them, 3 more waiting
    ids = producer.send_many([("warning", f"m{i}") for i in range(10)])
    dead = create_transport(stream_settings)
    dead.setup()
    assert len(dead.fetch("dead-one", 7, 0)) == 7
    dead.close()

    # When the group is destroyed: its pending entries list (who held what) is gone with it
    redis_client.xgroup_destroy(STREAM, GROUP)

    # Then a live consumer writes all 10, each once: what the dead one held was still in the stream
    assert Counter(drain()) == Counter(ids)


def test_settled_entries_stay_for_another_group_reading_the_same_stream(
    drain: Callable[[], list[str]], producer: Producer, redis_client: redis.Redis
) -> None:
    # Given another application's group on our stream, which has read nothing yet
    ids = producer.send_many([("info", f"m{i}") for i in range(6)])
    redis_client.xgroup_create(STREAM, "audit", id="0")

    # When our consumer writes and settles everything (and trims)
    assert drain() == ids

    # Then the other group still gets every entry: nothing was deleted under it
    reply = redis_client.xreadgroup("audit", "a1", {STREAM: ">"}, count=100)
    assert len(reply[0][1] if isinstance(reply, list) else reply[STREAM.encode()][0]) == 6


def test_a_batch_held_across_a_del_settles_nothing_of_the_new_stream_that_reuses_its_ids(
    stream_settings: Settings, redis_client: redis.Redis
) -> None:
    # Given consumer a holding an entry, then the stream deleted and a new message given the same id (a new
    # stream's ids start again from the clock: the same millisecond repeats them), taken by consumer b
    a, b = create_transport(stream_settings), create_transport(stream_settings)
    try:
        redis_client.xadd(STREAM, {"m": b"old"}, id="5-1")
        a.setup()
        [held] = a.fetch("a", 10, 0)
        redis_client.delete(STREAM)
        redis_client.xadd(STREAM, {"m": b"new"}, id="5-1")
        [taken] = b.fetch("b", 10, 0)  # the group is created again

        # When a settles what it held (its line was written)
        a.settle("a", [held], [], {"INFO": 1})

        # Then b's message is still b's (before the fix: acknowledged by a's settle, lost when b died)
        assert (held.raw, taken.raw) == (b"old", b"new")
        assert b.pending() == {"b": 1}
        assert [d.raw for d in b.recover("b", 10)] == [b"new"]
    finally:
        a.close()
        b.close()


def test_backlog_counts_right_with_the_tombstones_of_settled_entries(
    stream_settings: Settings, producer: Producer
) -> None:
    # Redis 7.0's group lag turns invalid once entries are deleted (XDEL) at or after the group's position:
    # backlog() then counts instead.
    producer.send_many([("info", f"m{i}") for i in range(10)])
    transport = create_transport(stream_settings)
    try:
        transport.setup()
        taken = transport.fetch("c1", 4, 0)
        transport.settle("c1", taken[:2], [], {"INFO": 2})  # two settled (deleted), two still pending
        assert transport.backlog() == 6
        transport.settle("c1", taken[2:], [], {"INFO": 2})
        assert transport.backlog() == 6
        transport.settle("c1", transport.fetch("c1", 10, 0), [], {"INFO": 6})
        assert transport.backlog() == 0
    finally:
        transport.close()


# --- the kind: any interleaving of consumers, crashes and group deletions --------------------------------


@dataclass
class Model:
    """What the consumers hold, what was written, and what may be written twice."""

    sent: list[str] = field(default_factory=list)
    held: dict[str, list[Delivery]] = field(default_factory=lambda: {"a": [], "b": []})
    written: Counter[str] = field(default_factory=Counter)
    in_flight_at_a_deletion: set[str] = field(default_factory=set)


_streams = itertools.count()
ROUNDS = st.lists(
    st.tuples(
        st.integers(0, 4),  # messages sent
        st.sampled_from(["a", "b"]),  # the consumer that fetches (up to 3) ...
        st.sampled_from(["settle", "crash", "keep"]),  # ... then writes and settles, dies, or holds on
        st.sampled_from(["", "", "destroy", "delete_stream"]),  # and the group or stream may vanish
    ),
    min_size=1,
    max_size=8,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rounds=ROUNDS)
def test_group_deletions_never_rewrite_a_settled_line_and_lose_only_what_redis_deleted(
    redis_url: str, rounds: list[tuple[int, str, str, str]]
) -> None:
    stream = f"prop:{next(_streams)}"  # a fresh stream per example, on the test's own server
    config = load_settings(None, {"redis": {"url": redis_url}, "queue": {"stream": stream}})
    transport = create_transport(config)
    client = transport.client
    model = Model()
    dropped: set[str] = set()
    try:
        transport.setup()
        for sent, name, then, deletion in rounds:
            for op, arg in (("send", str(sent)), ("fetch", name), (then, name), (deletion, "")):
                _apply(transport, client, stream, model, dropped, op, arg)
        for name in ("a", "b"):  # the live consumers settle what they hold ...
            _apply(transport, client, stream, model, dropped, "settle", name)
        _drain(transport, model)  # ... and a new one takes over the crashed ones' and the undelivered
    finally:
        client.delete(stream)
        transport.close()

    # Every message was written, except those Redis itself deleted (DEL of the stream) before delivery;
    # a line is written twice only if its entry was in a consumer's hands when its group was deleted
    assert set(model.sent) - dropped <= set(model.written)
    twice = {entry for entry, count in model.written.items() if count > 1}
    assert twice <= model.in_flight_at_a_deletion, twice - model.in_flight_at_a_deletion


def _apply(
    transport: StreamTransport,
    client: redis.Redis,
    stream: str,
    model: Model,
    dropped: set[str],
    op: str,
    arg: str,
) -> None:
    if op == "send":
        payloads = [f"m-{len(model.sent) + i}".encode() for i in range(int(arg))]
        transport.send(payloads)
        model.sent += [p.decode() for p in payloads]
    elif op == "fetch" and not model.held[arg]:  # a consumer holding a batch settles it before reading
        model.held[arg] = transport.fetch(arg, 3, 0)
    elif op == "settle":
        model.written.update(d.raw.decode() for d in model.held[arg])
        transport.settle(arg, model.held[arg], [], {})
        model.held[arg] = []
    elif op == "crash":
        model.held[arg] = []  # never written: still pending, or still in the stream
    elif op in ("destroy", "delete_stream"):  # ("fetch" by a consumer holding a batch: nothing)
        model.in_flight_at_a_deletion |= {d.raw.decode() for held in model.held.values() for d in held}
        if op == "delete_stream":  # Redis deletes what was in the stream: undelivered and pending alike
            dropped |= {fields[b"m"].decode() for _, fields in client.xrange(stream)}
            client.delete(stream)
        elif client.exists(stream):  # no stream, no group to destroy
            client.xgroup_destroy(stream, GROUP)


def _drain(transport: StreamTransport, model: Model) -> None:
    while True:
        batch = transport.reclaim("z", 100, 0.0) + transport.fetch("z", 100, 0)
        if not batch and not sum(transport.pending().values()):
            return
        model.written.update(d.raw.decode() for d in batch)
        transport.settle("z", batch, [], {})
