"""The transport contract, run against every transport (``transport_name`` is "streams" then "lists").

Every test talks to the private redis-server of this test session. A "crash" is simulated by dropping a
transport without settling and building a new one (new connection) for the same consumer name.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import cast

import orjson
import pytest
import redis

from msgrelay.codec import decode
from msgrelay.config import Settings
from msgrelay.deadletter import DeadLetter
from msgrelay.errors import BrokerResponseError
from msgrelay.keys import Stat
from msgrelay.message import Delivery
from msgrelay.transport import ListTransport, StreamTransport, Transport, create_transport

MakeTransport = Callable[[], Transport]

# Raw entries a real queue sees: our JSON, binary junk, non-ASCII text, an empty-ish line.
PAYLOADS = [
    b'{"id":"a-1","type":"INFO","text":"first","ts":1.0}',
    b"\x00\xff\xfe binary \x80\x81",
    "ERROR: d\u00e9j\u00e0 vu \u2013 \u65e5\u672c\u8a9e \U0001f525".encode(),
    b'{"id":"a-4","type":"DEBUG","text":"last","ts":4.0}',
]


@pytest.fixture
def new_transport(make_transport: MakeTransport) -> MakeTransport:
    """Builds independent transports (each with its own client), all closed at the end."""
    return make_transport


@pytest.fixture
def transport(new_transport: MakeTransport) -> Transport:
    return new_transport()


def raws(deliveries: list[Delivery]) -> list[bytes]:
    return [d.raw for d in deliveries]


def total_pending(transport: Transport) -> int:
    return sum(transport.pending().values())


# --- send / fetch -------------------------------------------------------------------------------------


def test_send_stores_every_payload_and_counts_them_as_produced(transport: Transport) -> None:
    transport.send(PAYLOADS)
    transport.send([b"one more"])

    assert transport.backlog() == len(PAYLOADS) + 1
    assert transport.stats()[Stat.PRODUCED] == len(PAYLOADS) + 1


def test_send_of_nothing_stores_nothing(transport: Transport) -> None:
    transport.send([])

    assert transport.backlog() == 0
    assert Stat.PRODUCED not in transport.stats()


def test_fetch_returns_deliveries_oldest_first_with_raw_bytes_intact(transport: Transport) -> None:
    transport.send(PAYLOADS[:2])
    transport.send(PAYLOADS[2:])

    deliveries = transport.fetch("c1", 10, 0)

    assert all(isinstance(d, Delivery) for d in deliveries)
    assert raws(deliveries) == PAYLOADS
    assert all(d.attempt == 1 for d in deliveries)


def test_fetch_returns_at_most_count_entries_and_the_rest_on_the_next_fetch(transport: Transport) -> None:
    payloads = [f"line {i}".encode() for i in range(10)]
    transport.send(payloads)

    first = transport.fetch("c1", 3, 0)
    second = transport.fetch("c1", 100, 0)

    assert raws(first) == payloads[:3]
    assert raws(second) == payloads[3:]
    assert transport.fetch("c1", 100, 0) == []


@pytest.mark.timeout(15)
def test_non_blocking_fetch_on_an_empty_queue_returns_nothing(transport: Transport) -> None:
    # block_s=0 means "do not wait", never "wait forever" (the timeout marker catches a hang)
    assert transport.fetch("c1", 10, 0) == []
    assert transport.fetch("c1", 10, 0.0) == []


@pytest.mark.timeout(15)
def test_blocking_fetch_on_an_empty_queue_gives_up_with_nothing(transport: Transport) -> None:
    assert transport.fetch("c1", 10, 0.05) == []


@pytest.mark.timeout(30)
def test_blocking_fetch_returns_an_entry_pushed_by_another_client_while_it_waits(
    transport: Transport, new_transport: MakeTransport
) -> None:
    transport.setup()
    producer = new_transport()
    pushed = threading.Event()

    def push() -> None:
        producer.send([b"arrived while blocking"])
        pushed.set()

    timer = threading.Timer(0.1, push)
    timer.start()
    try:
        deliveries = transport.fetch("c1", 10, 5.0)
    finally:
        timer.join()

    assert pushed.is_set()
    assert raws(deliveries) == [b"arrived while blocking"]


def test_two_consumers_share_the_work_and_never_receive_the_same_entry(transport: Transport) -> None:
    payloads = [f"entry {i}".encode() for i in range(20)]
    transport.send(payloads)

    got: dict[str, list[bytes]] = {"a": [], "b": []}
    while True:
        batch_a = transport.fetch("a", 3, 0)
        batch_b = transport.fetch("b", 4, 0)
        got["a"] += raws(batch_a)
        got["b"] += raws(batch_b)
        if not batch_a and not batch_b:
            break

    assert got["a"] and got["b"]
    assert not set(got["a"]) & set(got["b"])
    assert sorted(got["a"] + got["b"]) == sorted(payloads)
    assert transport.pending() == {"a": len(got["a"]), "b": len(got["b"])}


# --- recovery -----------------------------------------------------------------------------------------


def test_unsettled_entries_come_back_from_recover_after_a_crash_and_not_from_fetch(
    transport: Transport, new_transport: MakeTransport
) -> None:
    transport.send(PAYLOADS)
    held = transport.fetch("c1", 3, 0)
    transport.close()  # the consumer dies without settling

    restarted = new_transport()
    recovered = restarted.recover("c1", 10)

    assert raws(recovered) == raws(held) == PAYLOADS[:3]
    assert all(d.attempt > 1 for d in recovered)
    # fetch only hands out what nobody holds yet
    assert raws(restarted.fetch("c1", 10, 0)) == PAYLOADS[3:]
    # another consumer name cannot see c1's entries
    assert restarted.recover("someone-else", 10) == []


def test_recover_returns_at_most_count_entries_oldest_first(transport: Transport) -> None:
    payloads = [f"e{i}".encode() for i in range(6)]
    transport.send(payloads)
    transport.fetch("c1", 6, 0)

    first = transport.recover("c1", 4)

    assert raws(first) == payloads[:4]


def test_recover_with_nothing_held_returns_nothing(transport: Transport) -> None:
    transport.send([b"x"])
    assert transport.recover("c1", 10) == []


def test_recovered_entries_can_be_settled(transport: Transport, new_transport: MakeTransport) -> None:
    transport.send(PAYLOADS)
    transport.fetch("c1", 10, 0)
    restarted = new_transport()

    recovered = restarted.recover("c1", 10)
    restarted.settle("c1", recovered, [], {"INFO": len(recovered)})

    assert restarted.recover("c1", 10) == []
    assert total_pending(restarted) == 0


# --- settle -------------------------------------------------------------------------------------------


def test_settle_acknowledges_written_entries(transport: Transport) -> None:
    transport.send(PAYLOADS)
    deliveries = transport.fetch("c1", 10, 0)
    assert transport.pending() == {"c1": len(PAYLOADS)}

    transport.settle("c1", deliveries, [], {"INFO": len(deliveries)})

    assert transport.backlog() == 0
    assert total_pending(transport) == 0
    assert transport.recover("c1", 10) == []
    assert transport.fetch("c1", 10, 0) == []


def test_settle_of_part_of_a_batch_leaves_the_rest_held(transport: Transport) -> None:
    transport.send(PAYLOADS)
    deliveries = transport.fetch("c1", 10, 0)

    transport.settle("c1", deliveries[:1], [], {"INFO": 1})

    assert raws(transport.recover("c1", 10)) == PAYLOADS[1:]
    assert transport.pending() == {"c1": len(PAYLOADS) - 1}


def test_settle_moves_dead_letters_to_the_dlq_and_acknowledges_them(
    transport: Transport, redis_client: redis.Redis
) -> None:
    transport.send(PAYLOADS)
    deliveries = transport.fetch("c1", 10, 0)
    good, rest = deliveries[:1], deliveries[1:]
    letters = [DeadLetter(d, "malformed_json", "not what we expected") for d in rest]

    transport.settle("c1", good, letters, {"INFO": 1})

    assert total_pending(transport) == 0
    assert transport.recover("c1", 10) == []
    assert transport.dead_letter_count() == len(rest)
    entries = cast(list[tuple[bytes, dict[bytes, bytes]]], redis_client.xrange("msgrelay:dlq"))
    assert [fields[b"raw"] for _, fields in entries] == PAYLOADS[1:]  # bytes intact, in order
    for _, fields in entries:
        assert fields[b"reason"] == b"malformed_json"
        assert fields[b"detail"] == b"not what we expected"
        assert fields[b"origin"] == transport.keys.queue.encode()
        assert fields[b"consumer"] == b"c1"


def test_settle_updates_the_stats_counters(transport: Transport) -> None:
    transport.send(PAYLOADS)
    first = transport.fetch("c1", 3, 0)
    transport.settle("c1", first[:2], [DeadLetter(first[2], "unknown_type", "x")], {"INFO": 1, "ERROR": 1})
    second = transport.fetch("c1", 3, 0)
    transport.settle("c1", second, [], {"DEBUG": 1})

    stats = transport.stats()
    assert stats[Stat.PRODUCED] == 4
    assert stats[Stat.PROCESSED] == 3
    assert stats[Stat.processed_type("INFO")] == 1
    assert stats[Stat.processed_type("ERROR")] == 1
    assert stats[Stat.processed_type("DEBUG")] == 1
    assert stats[Stat.DEAD_LETTERED] == 1
    assert stats[Stat.BATCHES] == 2


def test_settle_is_all_or_nothing_when_redis_refuses_the_dead_letters(
    transport: Transport, redis_client: redis.Redis
) -> None:
    transport.send(PAYLOADS)
    deliveries = transport.fetch("c1", 10, 0)
    letters = [DeadLetter(deliveries[1], "invalid_utf8", "x")]
    written = [deliveries[0], *deliveries[2:]]

    # Given: the dead-letter key was clobbered with a value of the wrong type
    redis_client.set(transport.keys.dead_letters(), "not a stream")
    with pytest.raises(BrokerResponseError):
        transport.settle("c1", written, letters, {"INFO": 3})

    # Then: not even the acks happened; the batch is still held and can be settled later
    assert raws(transport.recover("c1", 10)) == PAYLOADS
    assert Stat.PROCESSED not in transport.stats()
    redis_client.delete(transport.keys.dead_letters())
    transport.settle("c1", written, letters, {"INFO": 3})
    assert total_pending(transport) == 0
    assert transport.dead_letter_count() == 1


def test_a_full_redis_refuses_producers_but_consumers_still_drain_it(
    transport: Transport, redis_client: redis.Redis
) -> None:
    transport.send(PAYLOADS)
    transport.setup()
    redis_client.config_set("maxmemory", 1)  # Given: Redis is over maxmemory (noeviction)
    try:
        # Then: a producer is refused ...
        with pytest.raises(BrokerResponseError) as refused:
            transport.send([b"one too many"])
        assert refused.value.transient
        # ... while a consumer can still fetch, renew its heartbeat, dead-letter and acknowledge
        transport.heartbeat("c1", 30)
        deliveries = transport.fetch("c1", 10, 0)
        transport.settle("c1", deliveries[1:], [DeadLetter(deliveries[0], "invalid_field", "x")], {"INFO": 3})
    finally:
        redis_client.config_set("maxmemory", 0)
    assert raws(deliveries) == PAYLOADS
    assert total_pending(transport) == 0
    assert transport.dead_letter_count() == 1
    assert transport.backlog() == 0


# --- backlog / pending --------------------------------------------------------------------------------


def test_backlog_and_pending_follow_entries_through_the_pipeline(transport: Transport) -> None:
    assert transport.backlog() == 0
    assert total_pending(transport) == 0

    transport.send([f"m{i}".encode() for i in range(5)])
    assert transport.backlog() == 5

    a = transport.fetch("a", 2, 0)
    b = transport.fetch("b", 1, 0)
    assert transport.backlog() == 2
    assert transport.pending() == {"a": 2, "b": 1}

    transport.settle("a", a, [], {"INFO": 2})
    assert transport.pending() == {"a": 0, "b": 1}
    transport.settle("b", b, [], {"INFO": 1})
    assert total_pending(transport) == 0
    assert transport.backlog() == 2


def test_held_elsewhere_tells_what_other_consumers_hold_and_when_it_can_be_taken_over(
    transport: Transport,
) -> None:
    transport.send([f"m{i}".encode() for i in range(3)])
    transport.fetch("a", 2, 0)

    [held] = transport.held_elsewhere("b", 30.0)

    assert (held.consumer, held.count) == ("a", 2)
    assert 25.0 < held.available_in_s <= 30.0  # just fetched: a whole claim_idle_s to go
    assert transport.held_elsewhere("a", 30.0) == []  # never one's own entries
    assert transport.held_elsewhere("b", 30.0)[0].available_in_s <= held.available_in_s  # counts down


def test_entries_held_elsewhere_are_taken_over_once_available(
    make_settings: Callable[..., Settings], transport_name: str
) -> None:
    """The promise behind the number: when available_in_s is over, reclaim hands the entries over."""
    settings = make_settings(transport_name, consumer={"claim_idle_s": 0.5})
    transport = create_transport(settings)
    try:
        transport.send([b"x", b"y"])
        transport.fetch("a", 2, 0)

        deadline = time.monotonic() + 10
        while (held := transport.held_elsewhere("b", 0.5)) and held[0].available_in_s > 0:
            assert time.monotonic() < deadline, held
            time.sleep(0.05)
        taken = transport.reclaim("b", 10, 0.5)
        while len(taken) < 2 and (more := transport.fetch("b", 10, 0)):  # lists: requeued, fetched one by one
            taken += more

        assert sorted(raws(taken)) == [b"x", b"y"]
        [now_held] = transport.held_elsewhere("c", 0.5)
        assert (now_held.consumer, now_held.count) == ("b", 2)
    finally:
        transport.close()


# --- lists: duplicates and legacy producers -----------------------------------------------------------


@pytest.mark.parametrize("transport_name", ["lists"])
def test_lists_deliver_each_duplicate_and_settle_removes_one_copy_per_delivery(transport: Transport) -> None:
    assert isinstance(transport, ListTransport)
    transport.send([b"same", b"same", b"same", b"other"])

    deliveries = transport.fetch("c1", 3, 0)
    assert raws(deliveries) == [b"same", b"same", b"same"]

    transport.settle("c1", deliveries[:1], [], {"INFO": 1})
    assert transport.pending() == {"c1": 2}
    assert raws(transport.recover("c1", 10)) == [b"same", b"same"]

    transport.settle("c1", deliveries[1:], [], {"INFO": 2})
    assert transport.pending() == {"c1": 0}
    assert raws(transport.fetch("c1", 10, 0)) == [b"other"]


@pytest.mark.parametrize("transport_name", ["lists"])
def test_lists_consume_entries_of_legacy_lpush_producers(
    transport: Transport, redis_client: redis.Redis
) -> None:
    legacy = [
        orjson.dumps({"type": "warning", "message": "disk 91% full", "host": "web1"}),
        orjson.dumps({"type": "error", "message": "disk full"}),
    ]
    for entry in legacy:
        redis_client.lpush("message_buffer", entry)

    deliveries = transport.fetch("c1", 10, 0)

    assert raws(deliveries) == legacy
    messages = [decode(d.raw, source_id=d.source_id, max_bytes=65536) for d in deliveries]
    assert [(m.type, m.text) for m in messages] == [("WARNING", "disk 91% full"), ("ERROR", "disk full")]
    assert messages[0].fields == {"host": "web1"}


# --- streams: hand-made entries and late consumer groups ----------------------------------------------


@pytest.mark.parametrize("transport_name", ["streams"])
def test_streams_read_a_hand_made_entry_with_other_fields_as_a_json_object(
    transport: Transport, redis_client: redis.Redis
) -> None:
    assert isinstance(transport, StreamTransport)
    redis_client.xadd("msgrelay:logs", {"type": "warn", "message": "x"})

    (delivery,) = transport.fetch("c1", 10, 0)

    assert orjson.loads(delivery.raw) == {"type": "warn", "message": "x"}
    message = decode(delivery.raw, source_id=delivery.source_id, max_bytes=65536)
    assert (message.type, message.text, message.fields) == ("WARNING", "x", {"level": "warn"})


@pytest.mark.parametrize("transport_name", ["streams"])
def test_streams_consume_messages_produced_before_any_consumer_group_existed(
    transport: Transport, new_transport: MakeTransport, redis_client: redis.Redis
) -> None:
    transport.send(PAYLOADS)
    assert redis_client.xinfo_groups("msgrelay:logs") == []
    assert transport.backlog() == len(PAYLOADS)  # no group yet: everything is backlog

    consumer = new_transport()
    assert raws(consumer.fetch("c1", 10, 0)) == PAYLOADS

    # and an explicit setup() after the fact does not skip anything either
    redis_client.delete("msgrelay:logs")
    transport.send([b"late"])
    consumer.setup()
    assert raws(consumer.fetch("c1", 10, 0)) == [b"late"]


def test_settle_drops_the_consumers_write_journal_entry_in_the_same_step(
    transport: Transport, redis_client: redis.Redis
) -> None:
    # Given: an effectively-once consumer journaled the batch it is writing
    transport.send(PAYLOADS[:2])
    deliveries = transport.fetch("c1", 10, 0)
    redis_client.hset(transport.keys.journal(), mapping={"c1": b"{}", "c2": b"{}"})

    transport.settle("c1", deliveries, [], {"INFO": 2})

    # Then: its entry went with the ack (no window where the batch is acked but still journaled)
    assert redis_client.hkeys(transport.keys.journal()) == [b"c2"]


def test_recover_counts_every_delivery_of_a_large_batch(
    transport: Transport, new_transport: MakeTransport
) -> None:
    # Given 120 entries (stream ids ...-9 and ...-100 in one millisecond must compare as numbers, not text)
    transport.send([f"entry {i}".encode() for i in range(120)])
    assert len(transport.fetch("c1", 120, 0)) == 120

    # When the consumer restarts twice and takes them back both times without settling
    new_transport().recover("c1", 120)
    again = new_transport().recover("c1", 120)

    # Then every entry knows it is on its third delivery
    assert len(again) == 120
    assert {d.attempt for d in again} == {3}


# --- the hot paths ------------------------------------------------------------------------------------


@pytest.mark.parametrize("transport_name", ["streams"])
@pytest.mark.parametrize("protocol", [2, 3])
def test_streams_read_the_same_deliveries_over_resp2_and_resp3(
    transport: Transport, redis_url: str, protocol: int
) -> None:
    # Reads use the reply as hiredis parsed it, which differs between the protocols (redis-py 8 speaks
    # RESP3 by default, older versions RESP2): fetch, recover and take-over must not care.
    assert isinstance(transport, StreamTransport)
    client = redis.Redis.from_url(redis_url, protocol=protocol)
    reader = StreamTransport(client, transport.keys, url="redis://test", group=transport.group)
    try:
        reader.send(PAYLOADS)
        fetched = reader.fetch("c1", 3, 0)
        recovered = reader.recover("c1", 10)
        taken_over: list[Delivery] = []
        deadline = time.monotonic() + 5
        while len(taken_over) < 3 and time.monotonic() < deadline:  # each once idle for 1 ms (a ms apart?)
            taken_over += reader.reclaim("c2", 10, 0.001)
        rest = reader.fetch("c2", 10, 0.1)
    finally:
        reader.close()

    assert raws(fetched) == raws(recovered) == raws(taken_over) == PAYLOADS[:3]
    assert [d.attempt for d in fetched] == [1, 1, 1]
    assert [d.attempt for d in recovered] == [2, 2, 2]
    assert [d.attempt for d in taken_over] == [3, 3, 3]
    assert raws(rest) == PAYLOADS[3:]
    assert all(d.source_id == d.handle.decode() for d in fetched + rest)


@pytest.mark.parametrize("transport_name", ["lists"])
def test_lists_settle_of_as_many_entries_as_held_removes_only_those_given(transport: Transport) -> None:
    # Settling everything a consumer holds drops its processing list at once, but only after checking,
    # entry by entry, that the batch is exactly what it holds: a same-sized but different batch (an
    # entry it no longer holds) must leave the others held.
    transport.send([b"a", b"b"])
    held = transport.fetch("c1", 2, 0)
    stale = Delivery(b"gone", b"gone")

    transport.settle("c1", [held[0], stale], [], {"INFO": 1})

    assert raws(transport.recover("c1", 10)) == [b"b"]
    assert transport.pending() == {"c1": 1}
