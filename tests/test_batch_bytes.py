"""The byte bound of batches, run against every transport (issue 10, part 5): the transport contract, and
what the consumer makes of it.

``fetch``, ``recover`` and ``reclaim`` hand out at most ``max_batch_bytes`` of entries at a time (at least
one entry), oldest first; the rest comes next. An entry over ``max_message_bytes`` is never handed out: it
is dead-lettered (reason ``oversize``, a 1 KiB preview) on the server, and the consumer never receives it
whole -- checked with Redis' own count of the bytes it sent to clients (``total_net_output_bytes``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from msgrelay.config import ConsumerSettings
from msgrelay.consumer import Consumer
from msgrelay.deadletter import OVERSIZE_PREVIEW_BYTES, DeadLetterEntry
from msgrelay.keys import Stat
from msgrelay.message import Delivery
from msgrelay.sinks import LogFileSink
from msgrelay.transport import Transport

BIG = 20_000_000
"""An oversize entry: if a client received it, Redis' output byte count would show it."""
NOT_RECEIVED = 4_000_000
"""Bytes Redis may send to clients while an oversize entry is being dealt with: the rest of the traffic,
and what fits in socket buffers before a reader drops a reply too large for it."""

MakeTransport = Callable[..., Transport]


@pytest.fixture
def new_transport(make_transport: Callable[..., Transport]) -> MakeTransport:
    """``new_transport(budget, limit)``: a transport with those byte limits (each with its own client)."""

    def make(budget: int = 1000, limit: int = 600) -> Transport:
        transport = make_transport(queue={"max_message_bytes": limit}, consumer={"max_batch_bytes": budget})
        transport.setup()
        return transport

    return make


@pytest.fixture
def transport(new_transport: MakeTransport) -> Transport:
    """A budget of 1,000 bytes and a limit of 600 per entry."""
    return new_transport()


def sized(size: int, tag: int | str = "") -> bytes:
    """A plain-text entry of exactly ``size`` bytes, starting with ``tag`` (so entries differ)."""
    head = f"INFO {tag} ".encode()
    return (head + b"x" * size)[:size]


def raws(deliveries: list[Delivery]) -> list[bytes]:
    return [d.raw for d in deliveries]


def sent_bytes(client: redis.Redis) -> int:
    return int(cast(dict[str, Any], client.info("stats"))["total_net_output_bytes"])


def dead_letters(client: redis.Redis) -> list[DeadLetterEntry]:
    entries = cast(list[tuple[bytes, dict[bytes, bytes]]], client.xrange("msgrelay:dlq"))
    return [DeadLetterEntry.from_fields(entry_id, fields) for entry_id, fields in entries]


def drain(transport: Transport, consumer: str = "c1", count: int = 100) -> list[list[Delivery]]:
    """Fetch and settle until the queue is empty: the batches, in order."""
    batches = []
    while batch := transport.fetch(consumer, count, 0):
        batches.append(batch)
        transport.settle(consumer, batch, [], {"INFO": len(batch)})
    return batches


# --- the budget -----------------------------------------------------------------------------------------


def test_fetch_cuts_a_batch_at_the_byte_budget_and_the_rest_comes_next_in_order(
    transport: Transport,
) -> None:
    entries = [sized(300, i) for i in range(10)]
    transport.send(entries)

    batches = drain(transport)

    assert [len(batch) for batch in batches] == [3, 3, 3, 1]  # 900 bytes each: a 4th would make 1,200
    assert [d.raw for batch in batches for d in batch] == entries
    assert all(d.attempt == 1 for batch in batches for d in batch)  # held back is not delivered
    assert sum(transport.pending().values()) == 0
    assert transport.backlog() == 0


def test_entries_beyond_the_budget_are_not_lost_when_the_consumer_dies_before_the_next_fetch(
    transport: Transport,
    new_transport: MakeTransport,
) -> None:
    # Given a consumer that fetched a batch cut by the budget, then died without settling it
    entries = [sized(300, i) for i in range(10)]
    transport.send(entries)
    first = transport.fetch("c1", 100, 0)
    transport.close()

    # When it restarts (same name): what it held comes back, the rest is fetched; nothing is missing
    restarted = new_transport()
    again = []
    while recovered := restarted.recover("c1", 100):
        again += recovered
        restarted.settle("c1", recovered, [], {"INFO": len(recovered)})
    rest = [d for batch in drain(restarted) for d in batch]

    assert raws(first) == entries[:3]
    assert sorted(raws(again) + raws(rest)) == sorted(entries)
    assert raws(again)[:3] == entries[:3]  # what it held comes back first, oldest first


def test_a_single_entry_larger_than_the_budget_is_handed_out_alone(new_transport: MakeTransport) -> None:
    transport = new_transport(budget=100, limit=600)
    entries = [sized(500, i) for i in range(3)]
    transport.send(entries)

    batches = drain(transport)

    assert [raws(batch) for batch in batches] == [[entry] for entry in entries]


def test_an_entry_of_exactly_the_limit_is_handed_out(transport: Transport) -> None:
    transport.send([sized(600, "limit"), sized(601, "over")])

    handed_out = [d for batch in drain(transport) for d in batch]

    assert raws(handed_out) == [sized(600, "limit")]
    assert [letter.raw_size for letter in dead_letters(transport.client)] == [601]


def test_recover_hands_out_at_most_the_budget_and_the_rest_next_time(
    transport: Transport,
    new_transport: MakeTransport,
) -> None:
    entries = [sized(300, i) for i in range(6)]
    transport.send(entries)
    held = []
    while batch := transport.fetch("c1", 100, 0):
        held += batch
    transport.close()

    restarted = new_transport()
    first = restarted.recover("c1", 100)
    restarted.settle("c1", first, [], {"INFO": len(first)})
    second = restarted.recover("c1", 100)

    assert raws(held) == entries
    assert raws(first) == entries[:3]
    assert raws(second) == entries[3:]
    assert {d.attempt for d in first + second} == {2}


# --- oversize entries -----------------------------------------------------------------------------------


def test_an_oversize_entry_is_dead_lettered_on_the_server_and_never_sent_to_the_consumer(
    transport: Transport, redis_client: redis.Redis, transport_name: str
) -> None:
    small = [sized(100, "first"), sized(100, "last")]
    big = sized(BIG, "big")
    transport.send([small[0], big, small[1]])
    before = sent_bytes(redis_client)

    handed_out = [d for batch in drain(transport) for d in batch]

    assert sent_bytes(redis_client) - before < NOT_RECEIVED
    assert raws(handed_out) == small
    (letter,) = dead_letters(redis_client)
    assert (letter.reason, letter.raw_size, letter.truncated) == ("oversize", BIG, True)
    assert letter.detail == f"{BIG} bytes, over the 600-byte limit"  # as msgrelay.codec words it
    assert letter.raw == big[:OVERSIZE_PREVIEW_BYTES]
    assert (letter.origin, letter.transport) == (transport.keys.queue, transport_name)  # replay's way back
    assert (letter.consumer, letter.attempt) == ("c1", 1)
    assert letter.source_id == ("" if transport_name == "lists" else letter.source_id)
    assert transport.stats()[Stat.DEAD_LETTERED] == 1
    assert transport.take_dead_lettered() == 1
    assert transport.take_dead_lettered() == 0  # counted once
    assert sum(transport.pending().values()) == 0
    assert transport.backlog() == 0


def test_only_oversize_entries_queued_leave_nothing_to_hand_out_and_all_dead_lettered(
    transport: Transport, redis_client: redis.Redis
) -> None:
    transport.send([sized(5_000, i) for i in range(30)])

    assert transport.fetch("c1", 10, 0) == []  # empty only once there is nothing left to hand out

    assert [letter.raw_size for letter in dead_letters(redis_client)] == [5_000] * 30
    assert transport.take_dead_lettered() == 30
    assert sum(transport.pending().values()) == 0


@pytest.mark.timeout(30)
def test_an_oversize_entry_pushed_while_a_consumer_waits_is_dead_lettered_unread(
    new_transport: MakeTransport, redis_client: redis.Redis
) -> None:
    waiting = new_transport()
    producer = new_transport()
    waiting.fetch("c1", 10, 0)  # registered, waiting for new entries
    before = sent_bytes(redis_client)
    pushed = threading.Event()

    def push() -> None:
        producer.send([sized(BIG, "big")])
        producer.send([sized(100, "after")])
        pushed.set()

    timer = threading.Timer(0.2, push)
    timer.start()
    try:
        deliveries = waiting.fetch("c1", 10, 10.0)  # woken by the big entry, which it drops unread
    finally:
        timer.join()

    assert pushed.is_set()
    assert raws(deliveries) == [sized(100, "after")]
    assert sent_bytes(redis_client) - before < NOT_RECEIVED + BIG // 10  # the producer sent it, once
    assert [letter.raw_size for letter in dead_letters(redis_client)] == [BIG]


@pytest.mark.parametrize("transport_name", ["streams"])
def test_streams_a_hand_made_oversize_entry_is_dead_lettered_with_a_preview_of_its_fields(
    transport: Transport, redis_client: redis.Redis
) -> None:
    redis_client.xadd("msgrelay:logs", {"level": "warn", "message": "y" * 5_000})

    assert transport.fetch("c1", 10, 0) == []

    (letter,) = dead_letters(redis_client)
    assert letter.raw.startswith(b'{"level":"warn","message":"yyy')  # the JSON the consumer would make
    assert len(letter.raw) == OVERSIZE_PREVIEW_BYTES
    assert letter.raw_size == len("level") + len("warn") + len("message") + 5_000  # fields, without quotes


def test_a_consumer_counts_the_entries_dead_lettered_for_it_on_the_server(
    transport: Transport, tmp_path: Path
) -> None:
    transport.send([sized(100, "a"), sized(BIG, "big"), sized(5_000, "over"), sized(100, "b")])
    sink = LogFileSink(tmp_path / "logs")
    settings = ConsumerSettings(consumer_name="c1", log_dir=tmp_path / "logs")
    consumer = Consumer(transport, sink, settings, max_message_bytes=600)
    try:
        totals = consumer.run(burst=True)
    finally:
        sink.close()

    assert (totals.fetched, totals.written, totals.dead_lettered) == (4, 2, 2)
    assert len((tmp_path / "logs" / "info.log").read_bytes().splitlines()) == 2


@pytest.mark.parametrize("transport_name", ["streams"])
def test_streams_an_oversize_entry_leaves_the_stream_with_its_dead_letter_unless_another_group_reads_it(
    transport: Transport, redis_client: redis.Redis
) -> None:
    # Ours the only group: gone with its ack, as settled entries are (a group created again at 0 after an
    # XGROUP DESTROY must not dead-letter it twice, and its bytes are freed now)
    transport.send([sized(5_000, "alone")])
    assert transport.fetch("c1", 10, 0) == []
    assert redis_client.xlen("msgrelay:logs") == 0

    # Another group reading the stream: the entry stays for it
    redis_client.xgroup_create("msgrelay:logs", "audit", "$")
    transport.send([sized(5_000, "shared")])
    assert transport.fetch("c1", 10, 0) == []
    assert redis_client.xlen("msgrelay:logs") == 1
    assert [letter.raw_size for letter in dead_letters(redis_client)] == [5_000, 5_000]


@pytest.mark.parametrize("transport_name", ["streams"])
def test_streams_a_group_deleted_while_entries_wait_unread_is_created_again_by_the_scripts(
    transport: Transport, redis_client: redis.Redis
) -> None:
    # Given a batch cut by an oversize entry: the rest waits unread in the consumer's pending entries
    entries = [sized(100, "a"), sized(5_000, "big"), sized(100, "b")]
    transport.send(entries)
    first = transport.fetch("c1", 10, 0)
    transport.settle("c1", first, [], {"INFO": len(first)})

    # When the group is deleted under it before each script runs (the take of unread entries, recover,
    # reclaim): each creates it again (NOGROUP; Redis 6.2 wraps it in the script's error) and goes on
    taken = []
    for step in range(3):
        redis_client.execute_command("XGROUP", "DESTROY", "msgrelay:logs", "msgrelay")
        if step == 0:
            taken += transport.fetch("c1", 10, 0)
        elif step == 1:
            taken += transport.recover("c1", 10)
        else:
            taken += transport.reclaim("c2", 10, 0.001)

    # Then what was never settled is delivered again; the oversize entry is dead-lettered, not handed out
    assert raws(first) == [sized(100, "a")]
    assert raws(taken) == [sized(100, "b")]
    assert [letter.raw_size for letter in dead_letters(redis_client)] == [5_000]


# --- a dead consumer's entries --------------------------------------------------------------------------


def hold_as_an_older_consumer(client: redis.Redis, transport: Transport, consumer: str) -> None:
    """What a consumer of an earlier version (or with a larger limit) did: take every queued entry,
    oversize ones included, and die holding them."""
    if transport.name == "streams":
        client.execute_command("XREADGROUP", "GROUP", "msgrelay", consumer, "STREAMS", "msgrelay:logs", ">")
    else:
        while client.lmove(transport.keys.queue, transport.keys.processing(consumer), "RIGHT", "LEFT"):
            pass
        client.sadd(transport.keys.consumers(), consumer)


def test_recover_dead_letters_an_oversize_entry_it_held_without_loading_it(
    transport: Transport, redis_client: redis.Redis
) -> None:
    transport.send([sized(100, "a"), sized(BIG, "big"), sized(100, "b")])
    hold_as_an_older_consumer(redis_client, transport, "c1")
    before = sent_bytes(redis_client)

    recovered = []
    while batch := transport.recover("c1", 10):
        recovered += batch
        transport.settle("c1", batch, [], {"INFO": len(batch)})

    assert sent_bytes(redis_client) - before < NOT_RECEIVED
    assert raws(recovered) == [sized(100, "a"), sized(100, "b")]
    assert {d.attempt for d in recovered} == {2}
    (letter,) = dead_letters(redis_client)
    assert (letter.raw_size, letter.attempt, letter.consumer) == (BIG, 2, "c1")
    assert sum(transport.pending().values()) == 0


def test_recover_goes_past_held_entries_that_were_all_oversize(
    transport: Transport, redis_client: redis.Redis
) -> None:
    transport.send([sized(5_000, "big 1"), sized(5_000, "big 2"), sized(100, "small")])
    hold_as_an_older_consumer(redis_client, transport, "c1")

    # One call with room for two: both are oversize, yet what follows them is handed out, not "nothing"
    assert raws(transport.recover("c1", 2)) == [sized(100, "small")]
    assert transport.take_dead_lettered() == 2


def test_a_dead_consumers_oversize_entry_is_dead_lettered_by_the_one_taking_over(
    transport: Transport, redis_client: redis.Redis
) -> None:
    transport.send([sized(100, "a"), sized(BIG, "big"), sized(100, "b")])
    hold_as_an_older_consumer(redis_client, transport, "dead")
    redis_client.delete(transport.keys.heartbeat("dead"))  # lists: its heartbeat has expired
    before = sent_bytes(redis_client)

    taken_over = []
    while batch := transport.reclaim("live", 10, 0.001) or transport.fetch("live", 10, 0):
        taken_over += batch
        transport.settle("live", batch, [], {"INFO": len(batch)})

    assert sent_bytes(redis_client) - before < NOT_RECEIVED
    assert raws(taken_over) == [sized(100, "a"), sized(100, "b")]
    assert {d.attempt for d in taken_over} == {2}
    assert [(letter.raw_size, letter.attempt) for letter in dead_letters(redis_client)] == [(BIG, 2)]
    assert sum(transport.pending().values()) == 0


# --- the whole kind -------------------------------------------------------------------------------------

SIZES = st.one_of(st.integers(1, 400), st.integers(401, 2_000), st.sampled_from([80_000, 200_000]))


@given(
    sizes=st.lists(SIZES, min_size=1, max_size=25),
    budget=st.integers(1, 1_500),
    limit=st.integers(1, 600),
    count=st.integers(1, 8),
)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_mix_of_sizes_is_handed_out_in_order_within_the_budget_or_dead_lettered(
    new_transport: MakeTransport,
    redis_client: redis.Redis,
    sizes: list[int],
    budget: int,
    limit: int,
    count: int,
) -> None:
    # Every example starts from an empty private server (the fixture checked it is our own child)
    redis_client.flushall()
    transport = new_transport(budget=budget, limit=limit)
    entries = [sized(size, i) for i, size in enumerate(sizes)]
    transport.send(entries)

    batches = drain(transport, count=count)

    handed_out = [d for batch in batches for d in batch]
    assert raws(handed_out) == [entry for entry in entries if len(entry) <= limit]
    for batch in batches:
        assert len(batch) <= count
        assert len(batch) == 1 or sum(len(d.raw) for d in batch) <= budget
    assert [letter.raw_size for letter in dead_letters(redis_client)] == [
        len(entry) for entry in entries if len(entry) > limit
    ]
    assert sum(transport.pending().values()) == 0
    assert transport.backlog() == 0
