"""One entry can never crash or wedge the consumer (issue 10, section 3), against a real Redis.

Whatever one entry holds, reading it (fetch, recovery of this name's own entries, take-over of a dead
consumer's) and decoding it run behind a per-entry barrier: the entry becomes a dead letter with the reason
and the error text, its batch-mates are written, nothing stays pending, and the consumer goes on.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
import redis

from msgrelay.config import Settings
from msgrelay.consumer import Consumer
from msgrelay.levels import TYPE_FILES
from msgrelay.sinks import LogFileSink
from msgrelay.transport import Transport, create_transport, stream_entries

CLAIM_IDLE_S = 0.2
HUGE_COUNT = b"9" * 5000  # int() refuses strings over 4,300 digits (Python's int_max_str_digits)


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(
        "streams",
        consumer={"batch_size": 10, "line_format": "json", "claim_idle_s": CLAIM_IDLE_S, "max_deliveries": 3},
    )


@pytest.fixture
def transports(settings: Settings) -> Iterator[Callable[[], Transport]]:
    made: list[Transport] = []

    def make() -> Transport:
        made.append(create_transport(settings))
        return made[-1]

    yield make
    for transport in made:
        transport.close()


def good(n: int) -> bytes:
    return orjson.dumps({"id": f"good-{n}", "type": "INFO", "text": f"fine {n}", "ts": 1732873505.0})


def consume(settings: Settings, transport: Transport, name: str) -> None:
    sink = LogFileSink(settings.consumer.log_dir, line_format="json")
    try:
        Consumer(
            transport,
            sink,
            settings.consumer.model_copy(update={"consumer_name": name}),
            max_message_bytes=settings.queue.max_message_bytes,
        ).run(burst=True)
    finally:
        sink.close()


def written_ids(settings: Settings) -> list[str]:
    ids: list[str] = []
    for name in TYPE_FILES.values():
        path = Path(settings.consumer.log_dir) / name
        if path.exists():
            ids += [orjson.loads(line)["id"] for line in path.read_text("utf-8").splitlines()]
    return sorted(ids)


def dead_letters(client: redis.Redis, settings: Settings) -> list[dict[bytes, bytes]]:
    return [fields for _, fields in client.xrange(f"{settings.queue.namespace}:dlq")]


def wait_until_idle(client: redis.Redis, settings: Settings, name: str) -> None:
    deadline = time.monotonic() + 10
    while True:
        rows = client.xpending_range(settings.queue.stream, settings.queue.group, "-", "+", 100, name)
        if rows and min(row["time_since_delivered"] for row in rows) >= CLAIM_IDLE_S * 1000:
            return
        assert time.monotonic() < deadline, "entries never became idle"
        time.sleep(0.01)


def assert_nothing_pending(client: redis.Redis, settings: Settings) -> None:
    assert client.xpending(settings.queue.stream, settings.queue.group)["pending"] == 0


@pytest.mark.parametrize("path", ["fetch", "recover", "reclaim"])
def test_a_retry_count_python_cannot_convert_is_a_dead_letter_not_a_crash_on_every_path(
    settings: Settings,
    transports: Callable[[], Transport],
    redis_client: redis.Redis,
    path: str,
) -> None:
    # Given the entry, XADDed by hand in our retry layout with a 5000-digit count (int() raised
    # ValueError inside fetch, recover and reclaim: every consumer that took it crashed, forever), among
    # good entries of the same batch
    stream = settings.queue.stream
    redis_client.xadd(stream, {"m": good(0)})
    bad_id = redis_client.xadd(stream, {"m": good(99), "n": HUGE_COUNT, "e": "boom"})
    redis_client.xadd(stream, {"m": good(1)})
    redis_client.xadd(stream, {"m": good(2)})
    name = "c1"
    if path == "recover":  # this name took them and was killed: its restart recovers them
        assert len(transports().fetch(name, 10, 0)) == 4
    elif path == "reclaim":  # a dead consumer took them: a live one takes them over
        assert len(transports().fetch("dead", 10, 0)) == 4
        wait_until_idle(redis_client, settings, "dead")

    # When a consumer runs
    consume(settings, transports(), name)

    # Then it did not crash: the good ones are written, the bad one is a dead letter that says why and keeps
    # the message (replayable as a fresh entry), and nothing is left pending
    assert written_ids(settings) == ["good-0", "good-1", "good-2"]
    [letter] = dead_letters(redis_client, settings)
    assert letter[b"reason"] == b"unreadable_entry"
    assert b"retry count" in letter[b"detail"] and b"5000 characters" in letter[b"detail"]
    assert letter[b"raw"] == good(99)
    assert letter[b"source_id"] == bad_id
    assert_nothing_pending(redis_client, settings)


@pytest.mark.parametrize("path", ["fetch", "recover", "reclaim"])
def test_any_error_reading_one_entry_costs_that_entry_only(
    settings: Settings,
    transports: Callable[[], Transport],
    redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    path: str,
) -> None:
    # Given a reader of stream entries with a bug that only one entry's fields trigger
    real = stream_entries._read_entry

    def buggy(entry_id: bytes, flat_fields: list[bytes], times_delivered: int) -> object:
        if b"trigger" in flat_fields:
            raise KeyError("a bug in reading fields")
        return real(entry_id, flat_fields, times_delivered)

    monkeypatch.setattr(stream_entries, "_read_entry", buggy)
    stream = settings.queue.stream
    redis_client.xadd(stream, {"m": good(0)})
    redis_client.xadd(stream, {"trigger": "x", "text": "hand-made"})
    redis_client.xadd(stream, {"m": good(1)})
    if path == "recover":
        assert len(transports().fetch("c1", 10, 0)) == 3
    elif path == "reclaim":
        assert len(transports().fetch("dead", 10, 0)) == 3
        wait_until_idle(redis_client, settings, "dead")

    # When a consumer runs
    consume(settings, transports(), "c1")

    # Then that entry is a dead letter with the error text; the others are written; nothing is pending
    assert written_ids(settings) == ["good-0", "good-1"]
    [letter] = dead_letters(redis_client, settings)
    assert letter[b"reason"] == b"unreadable_entry"
    assert letter[b"detail"].startswith(b"KeyError: 'a bug in reading fields'")
    assert b"trigger" in letter[b"raw"] and b"hand-made" in letter[b"raw"]
    assert_nothing_pending(redis_client, settings)


def test_a_field_name_given_twice_keeps_every_value(
    settings: Settings, transports: Callable[[], Transport], redis_client: redis.Redis
) -> None:
    # XADD s * message a message b: Redis keeps both pairs; reading them into a dict dropped "a" silently
    redis_client.execute_command("XADD", settings.queue.stream, "*", "message", "a", "message", "b", "k", "v")

    consume(settings, transports(), "c1")

    [letter] = dead_letters(redis_client, settings)
    assert letter[b"reason"] == b"invalid_field"  # the text is not one string: said, not guessed
    assert orjson.loads(letter[b"raw"]) == {"message": ["a", "b"], "k": "v"}
    assert_nothing_pending(redis_client, settings)


def test_a_lists_delivery_count_gone_astray_never_stops_a_fetch(
    make_settings: Callable[..., Settings], redis_client: redis.Redis
) -> None:
    # Given effectively-once consumers (suspects are not isolated) and a delivery count in the deliveries
    # hash that is not a number: the fetch script's reply then lists fewer counts than entries (a Lua nil
    # ends the array), which raised IndexError in fetch, every time
    config = make_settings("lists", consumer={"delivery": "effectively_once"})
    transport = create_transport(config)
    try:
        redis_client.lpush(config.queue.buffer_key, b"first", b"second", b"third")
        deliveries = transport.keys.deliveries()
        redis_client.hset(deliveries, hashlib.sha1(b"first").hexdigest(), 1)  # the script's key
        redis_client.hset(deliveries, hashlib.sha1(b"second").hexdigest(), "not a number")

        # When a consumer fetches them
        fetched = transport.fetch("c1", 10, 0)

        # Then it gets all three, counting what it can read (a lost count reads as a first delivery)
        assert [(d.raw, d.attempt) for d in fetched] == [(b"first", 2), (b"second", 1), (b"third", 1)]
    finally:
        transport.close()
