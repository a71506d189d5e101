"""The dead-letter store: listing, replay, purge, retention, stats and the `msgrelay dlq` commands.

Everything runs against the private redis-server of conftest, on both transports. Dead letters are made the
way production makes them (a consumer giving up on an entry) or written with ``DeadLetter.to_fields``, the
exact fields a transport writes; old entries get explicit old stream ids instead of waiting for time to pass.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from msgrelay.config import Settings
from msgrelay.consumer import Consumer
from msgrelay.deadletter import OVERSIZE_PREVIEW_BYTES, DeadLetter, DeadLetterEntry
from msgrelay.dlq import ALL, PAGE_SIZE, DeadLetterFilter, DeadLetterStore, ReplayResult
from msgrelay.dlq_replay import replay_targets
from msgrelay.keys import Stat
from msgrelay.message import Delivery
from msgrelay.sinks import LogFileSink
from msgrelay.transport import Transport, create_transport

RunCli = Callable[..., subprocess.CompletedProcess[str]]

DAY_MS = 24 * 3600 * 1000
HOSTILE_RAW = (
    b"\x1b]0;pwned\x07\x1b[2J\x1b[31mred\r\n"  # terminal title, clear screen, colour, carriage return
    + "\u202eevil\u2028".encode()  # bidi override, line separator
    + b"\xff\xfe"  # not UTF-8
    + b" [bold]markup[/bold] :warning:"  # Rich markup and an emoji code
)
UNSAFE_OUTPUT = ("\x1b", "\x07", "\r", "\u202e", "\u2028", "\ufffd", "\u26a0")


@pytest.fixture
def settings(make_settings: Callable[..., Settings], transport_name: str) -> Settings:
    return make_settings(transport_name, consumer={"consumer_name": "c1", "line_format": "json"})


@pytest.fixture
def transport(settings: Settings) -> Iterator[Transport]:
    queue_transport = create_transport(settings)
    yield queue_transport
    queue_transport.close()


@pytest.fixture
def store(transport: Transport, settings: Settings) -> DeadLetterStore:
    return DeadLetterStore.from_transport(transport, replay_targets(settings))


def dead_letter(
    client: redis.Redis,
    raw: bytes,
    reason: str = "malformed_json",
    *,
    origin: str,
    transport: str = "",
    msg_type: str = "",
    entry_id: str = "*",
) -> str:
    """Add a dead letter exactly as a transport's settle does; returns its id. Without ``transport``, the
    configuration tells replay what the origin is (see tests/test_dlq_replay.py)."""
    letter = DeadLetter(Delivery(raw, raw, "", 1), reason, f"detail of {reason}", msg_type)
    fields = letter.to_fields(origin=origin, transport=transport, consumer="c1")
    added = client.xadd("msgrelay:dlq", fields, id=entry_id)
    return added.decode() if isinstance(added, bytes) else str(added)


def queued(transport: Transport) -> list[bytes]:
    """The raw entries waiting on the transport's queue (not yet delivered to any consumer), oldest first."""
    client, queue = transport.client, transport.keys.queue
    if transport.name == "lists":
        return list(reversed(client.lrange(queue, 0, -1)))
    groups = client.xinfo_groups(queue) if client.exists(queue) else []
    delivered = next((g["last-delivered-id"] for g in groups if g["name"] == b"msgrelay"), b"0-0")
    return [fields[b"m"] for _id, fields in client.xrange(queue, min=b"(" + delivered)]


def consume(settings: Settings) -> Any:
    """Run a consumer until the queue is empty; returns its totals."""
    queue_transport = create_transport(settings)
    sink = LogFileSink(settings.consumer.log_dir, line_format="json")
    try:
        consumer = Consumer(
            queue_transport, sink, settings.consumer, max_message_bytes=settings.queue.max_message_bytes
        )
        return consumer.run(burst=True)
    finally:
        sink.close()
        queue_transport.close()


def server_ms(client: redis.Redis) -> int:
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000


# ---------------------------------------------------------------------------------------- reading


def test_a_dead_letter_reads_back_with_every_field(
    settings: Settings, transport: Transport, store: DeadLetterStore
) -> None:
    transport.send([b'{"type": "../../etc/passwd", "text": "x"}'])
    consume(settings)

    [entry] = store.list()

    assert entry.reason == "unknown_type"
    assert "../../etc/passwd" in entry.detail
    assert entry.raw == b'{"type": "../../etc/passwd", "text": "x"}'
    assert (entry.raw_size, entry.truncated) == (len(entry.raw), False)
    assert (entry.origin, entry.consumer, entry.attempt, entry.msg_type) == (
        transport.keys.queue,
        "c1",
        1,
        "",
    )
    assert entry.ts > 0
    assert store.get(entry.id) == entry
    assert store.get("1-1") is None
    assert store.get("not an id") is None


def test_list_filters_by_reason_type_and_origin(
    redis_client: redis.Redis, store: DeadLetterStore, transport: Transport
) -> None:
    queue = transport.keys.queue
    broken = dead_letter(redis_client, b"{broken", "malformed_json", origin=queue)
    poison_error = dead_letter(
        redis_client, b'{"type":"error","text":"a"}', "poison", origin=queue, msg_type="ERROR"
    )
    poison_warning = dead_letter(redis_client, b"WARN: b", "poison", origin=queue, msg_type="WARNING")
    elsewhere = dead_letter(redis_client, b"{other", "malformed_json", origin="other-queue")

    def ids(**where: Any) -> list[str]:
        return [entry.id for entry in store.list(**where)]

    assert ids() == [broken, poison_error, poison_warning, elsewhere]
    assert ids(reason="malformed_json") == [broken, elsewhere]
    assert ids(reason="poison") == [poison_error, poison_warning]
    assert ids(msg_type="ERROR") == [poison_error]
    assert ids(msg_type="warn") == [poison_warning]  # a level word, like everywhere else
    assert ids(origin="other-queue") == [elsewhere]
    assert ids(reason="malformed_json", origin=queue) == [broken]
    assert ids(reason="nothing-like-this") == []
    assert ids(limit=2) == [broken, poison_error]
    assert ids(after=poison_error) == [poison_warning, elsewhere]


def test_list_pages_through_more_entries_than_one_scan_page(
    redis_client: redis.Redis, store: DeadLetterStore, transport: Transport
) -> None:
    total = PAGE_SIZE * 2 + 7
    pipe = redis_client.pipeline()
    for n in range(total):
        reason = "rare" if n % 100 == 99 else "common"
        letter = DeadLetter(Delivery(f"entry {n}".encode(), b"", "", 1), reason, "")
        pipe.xadd("msgrelay:dlq", letter.to_fields(origin=transport.keys.queue, transport="", consumer="c1"))
    pipe.execute()

    rare = store.list(reason="rare", limit=total)
    first = store.list(limit=PAGE_SIZE + 3)
    rest = store.list(limit=total, after=first[-1].id)

    assert [entry.raw for entry in rare] == [f"entry {n}".encode() for n in range(99, total, 100)]
    assert [entry.raw for entry in first + rest] == [f"entry {n}".encode() for n in range(total)]
    assert store.count() == total
    assert store.count_by_reason() == {"common": total - len(rare), "rare": len(rare)}
    assert store.count(DeadLetterFilter(reason="rare")) == len(rare)


# ---------------------------------------------------------------------------------------- replay


def test_replay_puts_the_exact_raw_bytes_back_and_a_consumer_then_processes_them(
    make_settings: Callable[..., Settings], transport_name: str, redis_client: redis.Redis
) -> None:
    # Given: a valid but large message dead-lettered under a low limit, and a hostile entry
    strict = make_settings(transport_name, queue={"max_message_bytes": 200}, consumer={"line_format": "json"})
    large = b'{"id": "big-1", "type": "error", "text": "' + b"x" * 500 + b'"}'
    queue_transport = create_transport(strict)
    queue_transport.send([large, HOSTILE_RAW])
    assert consume(strict).dead_lettered == 2
    store = DeadLetterStore.from_transport(queue_transport)
    assert queued(queue_transport) == []

    # When: the limit is raised and every dead letter is replayed
    result = store.replay(ALL)

    # Then: the exact bytes are back on the queue they came from, the store is empty, replays are counted
    assert result == ReplayResult(replayed=2)
    assert queued(queue_transport) == [large, HOSTILE_RAW]
    assert store.count() == 0
    assert queue_transport.stats()[Stat.DLQ_REPLAYED] == 2

    # And a consumer with the raised limit writes the large one; the hostile one is dead-lettered again
    relaxed = make_settings(transport_name, consumer={"line_format": "json"})
    totals = consume(relaxed)
    assert (totals.written, totals.dead_lettered) == (1, 1)
    [line] = (relaxed.consumer.log_dir / "error.log").read_text().splitlines()
    assert json.loads(line)["id"] == "big-1"
    [again] = store.list()
    assert again.raw == HOSTILE_RAW
    queue_transport.close()


def test_replay_recreates_a_deleted_origin_queue_as_its_own_transport(
    redis_client: redis.Redis, store: DeadLetterStore, transport: Transport, settings: Settings
) -> None:
    queue = transport.keys.queue
    dead_letter(redis_client, b"INFO: back again", "poison", origin=queue, msg_type="INFO")
    assert not redis_client.exists(queue)

    assert store.replay(ALL).replayed == 1

    assert redis_client.type(queue) == (b"stream" if transport.name == "streams" else b"list")
    assert consume(settings).written == 1


def test_replay_goes_back_to_each_queue_of_the_configuration_whatever_the_callers_transport(
    redis_client: redis.Redis, store: DeadLetterStore
) -> None:
    redis_client.xadd("msgrelay:logs", {"m": b"already here"})
    redis_client.lpush("message_buffer", b"already here")
    dead_letter(redis_client, b"to the stream", origin="msgrelay:logs", transport="streams")
    dead_letter(redis_client, b"to the list", origin="message_buffer", transport="lists")

    assert store.replay(ALL).replayed == 2

    assert [fields[b"m"] for _id, fields in redis_client.xrange("msgrelay:logs")] == [
        b"already here",
        b"to the stream",
    ]
    assert redis_client.lrange("message_buffer", 0, -1) == [b"to the list", b"already here"]
    assert redis_client.hget("msgrelay:stats:msgrelay:logs", Stat.DLQ_REPLAYED) == b"1"
    assert redis_client.hget("msgrelay:stats:message_buffer", Stat.DLQ_REPLAYED) == b"1"


def test_replay_by_ids_reason_and_type_touches_only_those(
    redis_client: redis.Redis, store: DeadLetterStore, transport: Transport
) -> None:
    queue = transport.keys.queue
    first = dead_letter(redis_client, b"one", "malformed_json", origin=queue)
    dead_letter(redis_client, b"two", "missing_text", origin=queue)
    dead_letter(redis_client, b"ERROR: three", "poison", origin=queue, msg_type="ERROR")
    dead_letter(redis_client, b"INFO: four", "poison", origin=queue, msg_type="INFO")

    by_ids = store.replay([first, "1-1", "garbage"])
    assert (by_ids.replayed, by_ids.by_reason()) == (1, {"missing": 2})
    assert [skipped.id for skipped in by_ids.skipped_entries] == ["1-1", "garbage"]
    assert store.replay(DeadLetterFilter(reason="missing_text")).replayed == 1
    assert store.replay(DeadLetterFilter(msg_type="error")).replayed == 1

    assert queued(transport) == [b"one", b"two", b"ERROR: three"]
    assert [entry.raw for entry in store.list()] == [b"INFO: four"]


def test_replay_dry_run_changes_nothing(
    redis_client: redis.Redis, store: DeadLetterStore, transport: Transport
) -> None:
    dead_letter(redis_client, b"one", origin=transport.keys.queue)
    dead_letter(redis_client, b"x" * (OVERSIZE_PREVIEW_BYTES + 1), "oversize", origin=transport.keys.queue)

    result = store.replay(ALL, dry_run=True)

    assert (result.replayed, result.by_reason(), result.dry_run) == (1, {"truncated": 1}, True)
    assert store.count() == 2
    assert queued(transport) == []


def test_replay_refuses_truncated_oversize_entries(
    redis_client: redis.Redis, store: DeadLetterStore, transport: Transport
) -> None:
    huge = dead_letter(redis_client, b"x" * 5000, "oversize", origin=transport.keys.queue)
    [entry] = store.list()
    assert (entry.truncated, entry.raw_size, len(entry.raw)) == (True, 5000, OVERSIZE_PREVIEW_BYTES)

    for selection in ([huge], ALL):
        result = store.replay(selection)
        assert (result.replayed, result.by_reason()) == (0, {"truncated": 1})
        assert result.skipped_entries[0].id == huge

    assert queued(transport) == []
    assert store.count() == 1


def test_replay_keeps_an_entry_whose_queue_key_now_holds_another_type(
    redis_client: redis.Redis, store: DeadLetterStore, transport: Transport
) -> None:
    redis_client.hset(transport.keys.queue, "k", "v")
    entry_id = dead_letter(redis_client, b"nowhere to go", origin=transport.keys.queue)

    result = store.replay(ALL)

    assert (result.replayed, [(s.id, s.reason) for s in result.skipped_entries]) == (
        0,
        [(entry_id, "wrong_type")],
    )
    assert store.count() == 1
    assert redis_client.hgetall(transport.keys.queue) == {b"k": b"v"}


def test_concurrent_replays_put_each_entry_back_exactly_once(
    redis_client: redis.Redis, settings: Settings, transport: Transport
) -> None:
    """Atomic per entry: never replayed twice, never both back on the queue and still dead-lettered."""
    total = PAGE_SIZE * 3
    pipe = redis_client.pipeline()
    for n in range(total):
        letter = DeadLetter(Delivery(f"entry {n}".encode(), b"", "", 1), "poison", "")
        pipe.xadd("msgrelay:dlq", letter.to_fields(origin=transport.keys.queue, transport="", consumer="c1"))
    pipe.execute()
    results: list[ReplayResult] = []
    start = threading.Barrier(2)

    def replay_all() -> None:
        queue_transport = create_transport(settings)
        try:
            start.wait()
            results.append(DeadLetterStore.from_transport(queue_transport).replay(ALL))
        finally:
            queue_transport.close()

    threads = [threading.Thread(target=replay_all) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sum(result.replayed for result in results) == total
    assert sorted(queued(transport)) == sorted(f"entry {n}".encode() for n in range(total))
    assert redis_client.xlen("msgrelay:dlq") == 0
    assert transport.stats()[Stat.DLQ_REPLAYED] == total


# ---------------------------------------------------------------------------------------- purge


def test_purge_by_ids_reason_and_age_counts_in_the_origin_stats(
    redis_client: redis.Redis, store: DeadLetterStore, transport: Transport
) -> None:
    queue = transport.keys.queue
    now = server_ms(redis_client)
    old = dead_letter(redis_client, b"old", "missing_text", origin=queue, entry_id=f"{now - 3 * DAY_MS}-0")
    by_id = dead_letter(redis_client, b"one", "malformed_json", origin=queue)
    dead_letter(redis_client, b"two", "unknown_type", origin=queue)
    dead_letter(redis_client, b"three", "unknown_type", origin="other-queue")
    kept = dead_letter(redis_client, b"four", "malformed_json", origin=queue)

    assert store.purge([by_id, "1-1"]) == 1
    assert store.purge(DeadLetterFilter(older_than_s=DAY_MS / 1000)) == 1
    assert store.purge(DeadLetterFilter(reason="unknown_type")) == 2

    assert [entry.id for entry in store.list()] == [kept]
    assert store.get(old) is None
    assert transport.stats()[Stat.DLQ_PURGED] == 3
    assert redis_client.hget("msgrelay:stats:other-queue", Stat.DLQ_PURGED) == b"1"

    assert store.purge(ALL) == 1
    assert store.count() == 0


# ---------------------------------------------------------------------------------------- retention


def test_retention_trims_by_age(redis_client: redis.Redis, store: DeadLetterStore) -> None:
    now = server_ms(redis_client)
    for age_days in (30, 15, 13):
        dead_letter(
            redis_client, f"{age_days} days old".encode(), origin="q", entry_id=f"{now - age_days * DAY_MS}-0"
        )
    dead_letter(redis_client, b"new", origin="q")

    assert store.apply_retention(14 * 24 * 3600, 0) == 2

    assert [entry.raw for entry in store.list()] == [b"13 days old", b"new"]


def test_retention_trims_by_count_keeping_the_newest(
    redis_client: redis.Redis, store: DeadLetterStore
) -> None:
    for n in range(10):
        dead_letter(redis_client, f"entry {n}".encode(), origin="q")

    assert store.apply_retention(0, 3) == 7

    assert [entry.raw for entry in store.list()] == [b"entry 7", b"entry 8", b"entry 9"]


def test_retention_of_zero_keeps_everything(redis_client: redis.Redis, store: DeadLetterStore) -> None:
    dead_letter(redis_client, b"ancient", origin="q", entry_id="1000-0")
    dead_letter(redis_client, b"new", origin="q")

    assert store.apply_retention(0, 0) == 0
    assert store.count() == 2


# ---------------------------------------------------------------------------------------- dead letters


def test_a_dead_letter_keeps_its_type_when_known(redis_client: redis.Redis, store: DeadLetterStore) -> None:
    delivery = Delivery(b"raw", b"raw", "1-0", 3)
    typed = DeadLetter(delivery, "poison", "failed 5 times", "ERROR").to_fields(
        origin="q", transport="lists", consumer="c"
    )
    untyped = DeadLetter(delivery, "malformed_json", "x").to_fields(
        origin="q", transport="lists", consumer="c"
    )
    assert b"type" not in untyped

    entry_id = redis_client.xadd("msgrelay:dlq", typed).decode()

    entry = store.get(entry_id)
    assert entry is not None
    assert (entry.msg_type, entry.reason, entry.attempt, entry.source_id, entry.raw) == (
        "ERROR",
        "poison",
        3,
        "1-0",
        b"raw",
    )


def test_an_entry_added_by_hand_with_missing_or_garbled_fields_still_reads() -> None:
    entry = DeadLetterEntry.from_fields(b"7-1", {b"raw": b"abc", b"attempt": b"many", b"ts": b"\xff"})

    assert (entry.id, entry.raw, entry.raw_size, entry.attempt, entry.ts) == ("7-1", b"abc", 3, 0, 0.0)
    assert (entry.reason, entry.origin, entry.truncated) == ("", "", False)


# ---------------------------------------------------------------------------------------- stats


def test_stats_show_dead_letters_by_reason_and_replayed_and_purged_counts(
    run_cli: RunCli, redis_client: redis.Redis, transport: Transport, store: DeadLetterStore
) -> None:
    queue = transport.keys.queue
    for raw, reason in [
        (b"a", "malformed_json"),
        (b"b", "malformed_json"),
        (b"c", "unknown_type"),
        (b"d", "invalid_utf8"),
    ]:
        dead_letter(redis_client, raw, reason, origin=queue)
    store.replay(DeadLetterFilter(reason="invalid_utf8"))
    store.purge(DeadLetterFilter(reason="unknown_type"))

    result = run_cli("stats", "--json", "-t", transport.name)
    human = run_cli("stats", "-t", transport.name)

    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout)
    assert stats["dead_letters_by_reason"] == {"malformed_json": 2}
    assert (stats["dlq_replayed"], stats["dlq_purged"], stats["dead_letter_store"]) == (1, 1, 2)
    assert human.returncode == 0, human.stderr
    for row in (r"malformed_json\W+2\b", r"dead letters replayed\W+1\b", r"dead letters purged\W+1\b"):
        assert re.search(row, human.stdout), row


# ---------------------------------------------------------------------------------------- CLI


def dlq_cli(run_cli: RunCli, transport: Transport, *args: str, env: dict[str, str] | None = None) -> Any:
    return run_cli("dlq", *args, "-t", transport.name, env=env)


def test_cli_list_shows_one_line_per_dead_letter_and_a_summary(
    run_cli: RunCli, redis_client: redis.Redis, transport: Transport
) -> None:
    queue = transport.keys.queue
    first = dead_letter(redis_client, b"{broken", "malformed_json", origin=queue)
    second = dead_letter(redis_client, b"ERROR: poison", "poison", origin=queue, msg_type="ERROR")

    everything = dlq_cli(run_cli, transport, "list")
    errors = dlq_cli(run_cli, transport, "list", "--type", "error")
    one = dlq_cli(run_cli, transport, "list", "--limit", "1")

    assert everything.returncode == 0, everything.stderr
    header, *lines = everything.stdout.splitlines()
    assert header.split() == ["ID", "REASON", "TYPE", "ORIGIN", "SIZE", "RAW"]
    assert lines[0].split()[:4] == [first, "malformed_json", "-", queue]
    assert lines[0].endswith("{broken")
    assert lines[1].split()[:4] == [second, "poison", "ERROR", queue]
    assert lines[2] == "2 dead letters shown, 2 in msgrelay:dlq"
    assert [line.split()[0] for line in errors.stdout.splitlines()[1:-1]] == [second]
    assert (
        one.stdout.splitlines()[-1] == f"1 dead letter shown, 2 in msgrelay:dlq (next page: --after {first})"
    )


def test_cli_list_json_has_the_exact_raw_bytes(
    run_cli: RunCli, redis_client: redis.Redis, transport: Transport
) -> None:
    dead_letter(redis_client, HOSTILE_RAW, "invalid_utf8", origin=transport.keys.queue)
    dead_letter(redis_client, b'{"text": "caf\xc3\xa9"}', "missing_text", origin=transport.keys.queue)

    result = dlq_cli(run_cli, transport, "list", "--json")

    assert result.returncode == 0, result.stderr
    assert result.stdout.isascii()
    document = json.loads(result.stdout)
    assert (document["shown"], document["total"]) == (2, 2)
    hostile, cafe = document["entries"]
    assert base64.b64decode(hostile["raw_base64"]) == HOSTILE_RAW
    assert hostile["raw_text"] is None  # not UTF-8: only the base64 is exact
    assert cafe["raw_text"] == '{"text": "café"}'
    assert (cafe["reason"], cafe["origin"], cafe["truncated"]) == (
        "missing_text",
        transport.keys.queue,
        False,
    )


def test_cli_prints_hostile_raw_bytes_as_visible_escapes(
    run_cli: RunCli, redis_client: redis.Redis, transport: Transport
) -> None:
    entry_id = dead_letter(redis_client, HOSTILE_RAW, "invalid_utf8", origin=transport.keys.queue)

    listed = dlq_cli(run_cli, transport, "list", "--raw")
    shown = dlq_cli(run_cli, transport, "show", entry_id)

    for result in (listed, shown):
        assert result.returncode == 0, result.stderr
        for unsafe in UNSAFE_OUTPUT:
            assert unsafe not in result.stdout, repr(unsafe)
        assert "\\x1b]0;pwned\\x07\\x1b[2J\\x1b[31mred\\r\\n\\u202eevil\\u2028\\xff\\xfe" in result.stdout
        assert "[bold]markup[/bold] :warning:" in result.stdout  # as typed: no markup, no emoji
    assert len(listed.stdout.splitlines()) == 3  # the header, the entry and the summary: no forged lines


def test_cli_show_prints_every_field_or_fails_clearly(
    run_cli: RunCli, redis_client: redis.Redis, transport: Transport
) -> None:
    entry_id = dead_letter(redis_client, b"x" * 3000, "oversize", origin=transport.keys.queue)

    shown = dlq_cli(run_cli, transport, "show", entry_id)
    as_json = dlq_cli(run_cli, transport, "show", entry_id, "--json")
    missing = dlq_cli(run_cli, transport, "show", "1-1")
    malformed = dlq_cli(run_cli, transport, "show", "yesterday")

    assert shown.returncode == 0, shown.stderr
    fields = dict(
        line.split(None, 1) for line in shown.stdout.splitlines() if not line.startswith("source id")
    )
    assert (fields["id"], fields["reason"], fields["origin"]) == (entry_id, "oversize", transport.keys.queue)
    assert "3000 bytes (truncated" in fields["size"]
    assert json.loads(as_json.stdout)["raw_size"] == 3000
    assert missing.returncode == 1
    assert missing.stderr.strip() == "error: no dead letter 1-1 in msgrelay:dlq"
    assert malformed.returncode == 2
    assert "not a dead-letter id" in malformed.stderr


def test_cli_replay_puts_entries_back_and_says_what_it_skipped(
    run_cli: RunCli, redis_client: redis.Redis, transport: Transport
) -> None:
    queue = transport.keys.queue
    good = dead_letter(redis_client, b"INFO: fixed", "poison", origin=queue, msg_type="INFO")
    huge = dead_letter(redis_client, b"x" * 3000, "oversize", origin=queue)

    dry = dlq_cli(run_cli, transport, "replay", "--all", "--dry-run")
    assert queued(transport) == []
    replayed = dlq_cli(run_cli, transport, "replay", "--all")
    by_id = dlq_cli(run_cli, transport, "replay", huge, good)

    assert dry.returncode == 1
    assert dry.stdout.startswith(
        "dry run: would replay 1 dead letter onto their queues; skipped 1: 1 truncated"
    )
    assert replayed.returncode == 1  # some were skipped
    assert replayed.stderr.strip() == f"skipped {huge}: oversize: only a 1 KiB preview was kept"
    assert replayed.stdout.startswith(
        "replayed 1 dead letter onto their queues; skipped 1: 1 truncated (oversize"
    )
    assert queued(transport) == [b"INFO: fixed"]
    assert by_id.returncode == 1  # named entries that could not all be replayed
    assert by_id.stdout.strip().endswith(
        "skipped 2: 1 truncated (oversize: only a preview was kept, "
        "the message is lost; purge them), 1 not found"
    )


def test_cli_replay_by_reason_and_type(
    run_cli: RunCli, redis_client: redis.Redis, transport: Transport
) -> None:
    queue = transport.keys.queue
    dead_letter(redis_client, b"{a", "malformed_json", origin=queue)
    dead_letter(redis_client, b"WARN: b", "poison", origin=queue, msg_type="WARNING")
    dead_letter(redis_client, b"ERROR: c", "poison", origin=queue, msg_type="ERROR")

    by_type = dlq_cli(run_cli, transport, "replay", "--type", "warning")
    by_reason = dlq_cli(run_cli, transport, "replay", "--reason", "malformed_json")

    assert (by_type.returncode, by_reason.returncode) == (0, 0)
    assert queued(transport) == [b"WARN: b", b"{a"]
    assert [line.split()[1] for line in dlq_cli(run_cli, transport, "list").stdout.splitlines()[1:-1]] == [
        "poison"
    ]


@pytest.mark.parametrize(
    "args",
    [
        ("replay",),
        ("replay", "--all", "--reason", "x"),
        ("replay", "1-1", "--all"),
        ("replay", "1-1", "--type", "ERROR"),
        ("replay", "not-an-id"),
        ("show", "\u0661-\u0661"),  # digits, but not ASCII ones
        ("show", "99999999999999999999-0"),  # over 64 bits
        ("purge", "--yes"),
        ("purge", "--all", "--older-than", "5", "--yes"),
        ("purge", "--older-than", "-1", "--yes"),
        ("list", "--limit", "0"),
        ("list", "--after", "x"),
    ],
)
def test_cli_usage_errors_exit_2_and_change_nothing(
    run_cli: RunCli, redis_client: redis.Redis, transport: Transport, args: tuple[str, ...]
) -> None:
    dead_letter(redis_client, b"{a", origin=transport.keys.queue)

    result = dlq_cli(run_cli, transport, *args)

    assert result.returncode == 2, result.stdout + result.stderr
    assert redis_client.xlen("msgrelay:dlq") == 1


def test_cli_purge_without_yes_and_without_a_terminal_refuses(
    run_cli: RunCli, redis_client: redis.Redis, transport: Transport
) -> None:
    dead_letter(redis_client, b"{a", origin=transport.keys.queue)

    result = dlq_cli(run_cli, transport, "purge", "--all")

    assert result.returncode == 2
    assert "add --yes" in result.stderr
    assert redis_client.xlen("msgrelay:dlq") == 1


def test_cli_purge_with_yes_by_reason_and_age(
    run_cli: RunCli, redis_client: redis.Redis, transport: Transport
) -> None:
    queue = transport.keys.queue
    now = server_ms(redis_client)
    dead_letter(redis_client, b"old", "missing_text", origin=queue, entry_id=f"{now - 2 * DAY_MS}-0")
    dead_letter(redis_client, b"{a", "malformed_json", origin=queue)
    kept = dead_letter(redis_client, b"{b", "unknown_type", origin=queue)

    by_age = dlq_cli(run_cli, transport, "purge", "--older-than", str(DAY_MS // 1000), "--yes")
    by_reason = dlq_cli(run_cli, transport, "purge", "--reason", "malformed_json", "-y")

    assert (by_age.returncode, by_reason.returncode) == (0, 0)
    assert by_age.stdout == "purged 1 dead letter from msgrelay:dlq\n"
    assert by_reason.stdout == "purged 1 dead letter from msgrelay:dlq\n"
    assert [entry_id.decode() for entry_id, _ in redis_client.xrange("msgrelay:dlq")] == [kept]
    assert transport.stats()[Stat.DLQ_PURGED] == 2


@pytest.mark.parametrize(("answer", "code", "left"), [(b"y\n", 0, 0), (b"n\n", 1, 2)])
def test_cli_purge_on_a_terminal_asks_first(
    redis_url: str,
    redis_client: redis.Redis,
    transport: Transport,
    tmp_path: Path,
    answer: bytes,
    code: int,
    left: int,
) -> None:
    dead_letter(redis_client, b"{a", origin=transport.keys.queue)
    dead_letter(redis_client, b"{b", origin=transport.keys.queue)
    terminal, child_end = os.openpty()
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "msgrelay", "dlq", "purge", "--all", "--redis-url", redis_url],
            stdin=child_end,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=tmp_path,
            text=True,
        )
        os.close(child_end)
        os.write(terminal, answer)  # the terminal holds the line until the prompt reads it
        stdout, stderr = process.communicate(timeout=60)
    finally:
        os.close(terminal)

    assert process.returncode == code, stderr
    assert "Purge 2 dead letters from msgrelay:dlq for good? [y/N]" in stdout
    assert redis_client.xlen("msgrelay:dlq") == left


def test_cli_applies_the_configured_retention(
    run_cli: RunCli, redis_client: redis.Redis, transport: Transport
) -> None:
    now = server_ms(redis_client)
    dead_letter(redis_client, b"too old", origin="q", entry_id=f"{now - 20 * DAY_MS}-0")
    for n in range(4):
        dead_letter(redis_client, f"entry {n}".encode(), origin="q")

    result = dlq_cli(run_cli, transport, "list", env={"MSGRELAY_DEADLETTER__MAX_ENTRIES": "2"})

    assert result.returncode == 0, result.stderr
    assert "retention: trimmed 3 dead letters" in result.stderr  # 1 by age (14 days default), 2 by count
    assert [line.split()[-1] for line in result.stdout.splitlines()[1:-1]] == ["2", "3"]


def test_cli_reports_an_unreachable_redis_with_its_exit_code(run_cli: RunCli, tmp_path: Path) -> None:
    result = run_cli("dlq", "list", "--redis-url", f"unix://{tmp_path}/nothing.sock")

    assert result.returncode == 4
    assert result.stderr.startswith("error: cannot connect to Redis")
