"""Replay never damages a queue: only this configuration's queues, each as its own transport, never a key of
another type, and one bad dead letter never blocks the others.

The examples of issue 10 run as a user meets them (real `msgrelay` processes against the private
redis-server of conftest): a lists consumer empties `message_buffer` (Redis deletes an empty list), an
operator replays with the default transport, and before the fix the list came back as a stream that every
`LPUSH` producer and `consume -t lists` then failed on with WRONGTYPE. A property test covers the kind: any
dead letter, with any origin and recorded transport, against any type of key already there.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass

import orjson
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from msgrelay.alerting.model import Notification, NotificationKind
from msgrelay.alerting.outbox import OutboxItem
from msgrelay.config import Settings
from msgrelay.consumer import Consumer
from msgrelay.deadletter import OUTBOX_TRANSPORT, DeadLetter
from msgrelay.dlq import ALL, PAGE_SIZE, DeadLetterStore
from msgrelay.dlq_replay import replay_targets
from msgrelay.message import Delivery
from msgrelay.sinks import LogFileSink
from msgrelay.transport import create_transport

RunCli = Callable[..., subprocess.CompletedProcess[str]]

DLQ = "msgrelay:dlq"


def dead_letter(client: redis.Redis, raw: bytes, *, origin: str, transport: str | None) -> str:
    """A dead letter as a transport's settle writes it; ``transport=None``: as written before the transport
    was recorded (no such field)."""
    letter = DeadLetter(Delivery(raw, raw, "", 1), "poison", "failed")
    fields = letter.to_fields(origin=origin, transport=transport or "", consumer="c1")
    if transport is None:
        del fields[b"transport"]
    return client.xadd(DLQ, fields).decode()  # type: ignore[no-any-return,union-attr]


def dead_letter_ids(client: redis.Redis) -> list[str]:
    return [entry_id.decode() for entry_id, _fields in client.xrange(DLQ)]


# ------------------------------------------------------------------------------ the examples of the issue


@dataclass(frozen=True)
class EmptiedQueue:
    """One queue of the issue: how a consumer empties it and how its producers and consumers use it."""

    key: str
    redis_type: bytes
    poison: bytes
    """What the consumer dead-letters (so the queue ends up empty)."""
    consume: tuple[str, ...]
    produce: tuple[str, ...]
    replay_flags: tuple[str, ...]
    """The replaying operator's flags: the other transport than the queue's, as the issue's operator had."""


EMPTIED = {
    "log list": EmptiedQueue(
        "message_buffer", b"list", b'{"type": "INFO"}',
        ("consume", "--burst", "-t", "lists"), ("send", "disk full", "-t", "lists"), (),
    ),
    "alert list": EmptiedQueue(
        "tweet_queue", b"list", b'{"service": "db", "status": "DOWN"}',
        ("notify", "--burst", "-t", "lists"), ("alert", "-s", "db", "down", "-t", "lists"), (),
    ),
    "log stream": EmptiedQueue(
        "msgrelay:logs", b"stream", b'{"type": "INFO"}',
        ("consume", "--burst"), ("send", "disk full"), ("-t", "lists"),
    ),
    "alert stream": EmptiedQueue(
        "msgrelay:alerts", b"stream", b'{"service": "db", "status": "DOWN"}',
        ("notify", "--burst"), ("alert", "-s", "db", "down"), ("-t", "lists"),
    ),
}  # fmt: skip


@pytest.mark.parametrize("queue", EMPTIED.values(), ids=EMPTIED.keys())
def test_replay_onto_an_emptied_queue_recreates_it_as_its_own_type_and_its_users_keep_working(
    run_cli: RunCli, redis_client: redis.Redis, queue: EmptiedQueue
) -> None:
    # Given: the queue's consumer dead-lettered its only entry, and the queue key is gone (Redis deletes an
    # empty list; a stream gone by DEL, FLUSHDB of a restore ...)
    if queue.redis_type == b"list":
        redis_client.lpush(queue.key, queue.poison)
    else:
        redis_client.xadd(queue.key, {"m": queue.poison})
    assert run_cli(*queue.consume).returncode == 0
    redis_client.delete(queue.key)
    [entry_id] = dead_letter_ids(redis_client)

    # When: an operator replays everything, with the other transport's flags
    replay = run_cli("dlq", "replay", "--all", *queue.replay_flags)

    # Then: the queue is back as the type its producers and consumers use, with the entry on it
    assert replay.returncode == 0, replay.stdout + replay.stderr
    assert replay.stdout.strip() == "replayed 1 dead letter onto their queues"
    assert redis_client.type(queue.key) == queue.redis_type
    assert dead_letter_ids(redis_client) == []
    # And its producer and consumer keep working (the replayed entry is dead-lettered again, as it should)
    produced = run_cli(*queue.produce)
    assert produced.returncode == 0, produced.stderr
    consumed = run_cli(*queue.consume)
    assert consumed.returncode == 0, consumed.stderr
    [again] = [fields for _id, fields in redis_client.xrange(DLQ)]
    assert again[b"raw"] == queue.poison and again[b"origin"] == queue.key.encode()
    assert entry_id not in dead_letter_ids(redis_client)


def test_a_key_already_of_another_type_is_left_alone_and_the_entry_stays(
    run_cli: RunCli, redis_client: redis.Redis
) -> None:
    # Given: message_buffer is a stream (what the old replay left behind), and a dead letter of the list
    redis_client.xadd("message_buffer", {"m": b"left by the old replay"})
    entry_id = dead_letter(redis_client, b"INFO: back", origin="message_buffer", transport="lists")

    # When
    replay = run_cli("dlq", "replay", "--all", "-t", "lists")

    # Then: nothing written to the stream, the dead letter is kept, and the operator is told which and why
    assert replay.returncode == 1
    assert replay.stderr.strip() == (
        f"skipped {entry_id}: 'message_buffer' now holds a stream, not the list its lists producers and "
        "consumers use: nothing was written to it"
    )
    assert replay.stdout.strip() == (
        "replayed 0 dead letters onto their queues; skipped 1: 1 for a queue key that now holds another type"
    )
    assert redis_client.xlen("message_buffer") == 1
    assert dead_letter_ids(redis_client) == [entry_id]


@pytest.mark.parametrize(
    "origin", ["victim", "msgrelay:stats:msgrelay:logs", "msgrelay:dlq", "other:logs", "\x1b[2Jevil"]
)
def test_a_forged_origin_that_is_not_a_queue_of_this_configuration_is_never_written(
    run_cli: RunCli, redis_client: redis.Redis, origin: str
) -> None:
    # Given: a dead letter is data: anyone who can write to Redis can name any key as its origin
    redis_client.hset("msgrelay:stats:msgrelay:logs", "produced", 7)
    forged = dead_letter(redis_client, b"payload", origin=origin, transport="streams")
    before = {key: redis_client.dump(key) for key in redis_client.keys("*") if key != DLQ.encode()}

    # When
    replay = run_cli("dlq", "replay", "--all")

    # Then: refused with its id and why; nothing else in Redis changed
    assert replay.returncode == 1
    [line] = replay.stderr.splitlines()
    assert line.startswith(f"skipped {forged}: ") and "is not a queue of this configuration" in line
    assert "\x1b" not in line
    assert {key: redis_client.dump(key) for key in redis_client.keys("*") if key != DLQ.encode()} == before
    assert dead_letter_ids(redis_client) == [forged]


def test_an_old_dead_letter_without_a_recorded_transport_goes_back_as_its_configured_queue(
    make_settings: Callable[..., Settings], redis_client: redis.Redis
) -> None:
    # Given: dead letters written before the transport was recorded, one per queue of the configuration
    config = make_settings("streams")
    origins = {"message_buffer": b"list", "tweet_queue": b"list", "msgrelay:logs": b"stream"}
    for origin in origins:
        dead_letter(redis_client, b"INFO: old", origin=origin, transport=None)
    store_transport = create_transport(config)
    store = DeadLetterStore.from_transport(store_transport, replay_targets(config))

    # When
    result = store.replay(ALL)

    # Then
    assert (result.replayed, result.skipped) == (3, 0)
    assert {origin: redis_client.type(origin) for origin in origins} == origins
    store_transport.close()


def test_an_old_dead_letter_for_a_key_configured_both_as_stream_and_list_is_refused(
    make_settings: Callable[..., Settings], redis_client: redis.Redis
) -> None:
    config = make_settings("lists", queue={"stream": "jobs", "buffer_key": "jobs"})
    old = dead_letter(redis_client, b"old", origin="jobs", transport=None)
    recorded = dead_letter(redis_client, b"new", origin="jobs", transport="lists")
    store_transport = create_transport(config)
    store = DeadLetterStore.from_transport(store_transport, replay_targets(config))

    result = store.replay(ALL)

    assert result.replayed == 1
    assert [(s.id, s.reason) for s in result.skipped_entries] == [(old, "ambiguous_origin")]
    assert redis_client.lrange("jobs", 0, -1) == [b"new"]
    assert dead_letter_ids(redis_client) == [old]
    assert recorded not in dead_letter_ids(redis_client)
    store_transport.close()


def test_every_dead_letter_records_its_transport(
    make_settings: Callable[..., Settings], redis_client: redis.Redis, transport_name: str
) -> None:

    config = make_settings(transport_name)
    queue = create_transport(config)
    queue.send([b'{"type": "../../etc/passwd", "text": "x"}'])
    sink = LogFileSink(config.consumer.log_dir)
    Consumer(queue, sink, config.consumer, max_message_bytes=1024).run(burst=True)
    sink.close()

    [entry] = DeadLetterStore.from_transport(queue).list()

    assert (entry.origin, entry.transport) == (queue.keys.queue, transport_name)
    queue.close()


# -------------------------------------------------------------------------- one bad entry blocks nothing


def test_replay_all_skips_each_bad_entry_with_its_id_and_reason_and_replays_the_rest(
    run_cli: RunCli, redis_client: redis.Redis
) -> None:
    # Given: more than a page of good dead letters, with one bad entry of every kind among them
    outbox = "msgrelay:outbox:msgrelay:alerts"
    redis_client.hset("tweet_queue", "not", "a list")
    good: list[str] = []
    bad: dict[str, str] = {}
    for n in range(PAGE_SIZE + 20):
        good.append(
            dead_letter(redis_client, f"INFO: {n}".encode(), origin="message_buffer", transport="lists")
        )
        if n == 3:
            bad[dead_letter(redis_client, b"{}", origin=outbox, transport=OUTBOX_TRANSPORT)] = (
                "not a notification"
            )
        if n == 100:
            bad[dead_letter(redis_client, b"x", origin="tweet_queue", transport="lists")] = "now holds a hash"
        if n == 250:
            bad[dead_letter(redis_client, b"x", origin="elsewhere", transport="lists")] = (
                "not a queue of this"
            )
        if n == PAGE_SIZE:
            letter = DeadLetter(Delivery(b"x" * 5000, b"", "", 1), "oversize", "too big")
            fields = letter.to_fields(origin="message_buffer", transport="lists", consumer="c1")
            bad[redis_client.xadd(DLQ, fields).decode()] = "only a 1 KiB preview"  # type: ignore[union-attr]
        if n == PAGE_SIZE + 1:
            bad[dead_letter(redis_client, b"x", origin="", transport="lists")] = "no origin queue recorded"

    # When: a dry run, then the replay
    dry = run_cli("dlq", "replay", "--all", "--dry-run")
    dry_length = redis_client.llen("message_buffer")
    replay = run_cli("dlq", "replay", "--all")

    # Then: the dry run said the same and wrote nothing
    assert (dry.returncode, dry_length, dry.stderr) == (1, 0, replay.stderr)
    # And every good one is back, every bad one is named with its reason and kept; exit 1 says so
    assert replay.returncode == 1
    assert redis_client.llen("message_buffer") == len(good)
    lines = replay.stderr.splitlines()
    assert [line.split()[1].rstrip(":") for line in lines] == list(bad)
    for line, why in zip(lines, bad.values(), strict=True):
        assert why in line, line
    assert replay.stdout.strip() == (
        f"replayed {len(good)} dead letters onto their queues; skipped 5: 1 truncated (oversize: only a "
        "preview was kept, the message is lost; purge them), 1 with no origin queue recorded, 1 from a key "
        "that is not a queue of this configuration, 1 for a queue key that now holds another type, 1 for the "
        "notify outbox whose raw entry is not a notification"
    )
    assert sorted(dead_letter_ids(redis_client)) == sorted(bad)
    assert redis_client.hgetall("tweet_queue") == {b"not": b"a list"}


def test_a_dead_lettered_notification_goes_back_into_its_outbox_with_a_fresh_budget(
    make_settings: Callable[..., Settings], redis_client: redis.Redis
) -> None:

    config = make_settings("streams")
    outbox = "msgrelay:outbox:tweet_queue"
    item = OutboxItem("ops", 7, Notification("k1", NotificationKind.FIRING, "db is DOWN", ())).encode()
    kept = dead_letter(redis_client, b"\xff not json", origin=outbox, transport=OUTBOX_TRANSPORT)
    dead_letter(redis_client, item, origin=outbox, transport=OUTBOX_TRANSPORT)
    store_transport = create_transport(config)
    store = DeadLetterStore.from_transport(store_transport, replay_targets(config))

    result = store.replay(ALL)

    assert result.replayed == 1
    assert [(s.id, s.reason) for s in result.skipped_entries] == [(kept, "bad_notification")]
    [member] = redis_client.zrange(outbox, 0, -1)
    assert orjson.loads(member) == {**orjson.loads(item), "attempt": 0}
    store_transport.close()


# ------------------------------------------------------------------------------------------- the kind

KEY_STATES = ("none", "string", "hash", "list", "stream", "zset", "set")
CONFIGURED = (
    "msgrelay:logs",
    "message_buffer",
    "msgrelay:alerts",
    "tweet_queue",
    "msgrelay:outbox:tweet_queue",
)
STATS = tuple(f"msgrelay:stats:{key}" for key in CONFIGURED)
ORIGINS = (*CONFIGURED, "", "victim", DLQ, STATS[1])
TRANSPORTS = (None, "", "streams", "lists", OUTBOX_TRANSPORT, "fifo")
OUTBOX_ITEM = b'{"alerts":[],"attempt":3,"key":"k","kind":"firing","notifier":"ops","text":"t"}'


def make_key(client: redis.Redis, key: str, state: str) -> None:
    setters: dict[str, Callable[[], object]] = {
        "none": lambda: None,
        "string": lambda: client.set(key, "v"),
        "hash": lambda: client.hset(key, "f", "v"),
        "list": lambda: client.lpush(key, "v"),
        "stream": lambda: client.xadd(key, {"m": "v"}),
        "zset": lambda: client.zadd(key, {"v": 1}),
        "set": lambda: client.sadd(key, "v"),
    }
    setters[state]()


dead_letters = st.lists(
    st.tuples(st.sampled_from(ORIGINS), st.sampled_from(TRANSPORTS), st.booleans()), min_size=1, max_size=12
)
key_states = st.fixed_dictionaries(
    {key: st.sampled_from(KEY_STATES) for key in (*CONFIGURED, *STATS, "victim")}
)


@settings(
    derandomize=True,
    database=None,
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(letters=dead_letters, states=key_states)
def test_replay_never_changes_a_keys_type_never_writes_elsewhere_and_accounts_for_every_entry(
    make_settings: Callable[..., Settings],
    redis_url: str,
    letters: list[tuple[str, str | None, bool]],
    states: dict[str, str],
) -> None:
    # Given: any keys of any type where the queues, their stats and a victim are, and any dead letters
    client = redis.Redis.from_url(redis_url)
    client.flushall()  # our own session server (conftest checked its pid): each example starts empty
    for key, state in states.items():
        make_key(client, key, state)
    ids = [
        dead_letter(client, OUTBOX_ITEM if valid else b"\x00junk", origin=origin, transport=transport)
        for origin, transport, valid in letters
    ]
    before = {key: (client.type(key), client.dump(key)) for key in states}
    config = make_settings("streams")
    store_transport = create_transport(config)
    targets = {(t.key, t.redis_type) for t in replay_targets(config)}

    # When
    result = DeadLetterStore.from_transport(store_transport, replay_targets(config)).replay(ALL)

    # Then: every entry is either replayed (gone from the store) or skipped with its id (kept)
    skipped = [entry.id for entry in result.skipped_entries]
    assert result.replayed + len(skipped) == len(ids)
    assert dead_letter_ids(client) == skipped  # oldest first, as the store holds them
    # And no key changed type; only a queue of its own type (or a new one) and its stats were written
    for key, (kind, dump) in before.items():
        now = client.type(key)
        if key in STATS:
            assert now == kind or (kind, now) == (b"none", b"hash"), key
        elif (key, now.decode()) in targets:
            assert kind in (now, b"none"), key
        else:
            assert (now, client.dump(key)) == (kind, dump), key
    created = {key.decode() for key in client.keys("*")} - set(states) - {DLQ}
    assert created <= {f"msgrelay:stats:{key}" for key, _kind in targets}
    store_transport.close()
    client.close()
