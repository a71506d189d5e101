"""Effectively-once file writes: the Redis write journal, a SIGKILLed writer, and recovery without duplicates.

Real redis-server (the session's own), real files, real child processes killed with SIGKILL.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
import redis

from msgrelay.codec import decode
from msgrelay.config import Settings
from msgrelay.consumer import Consumer
from msgrelay.errors import BrokerConnectionError, SinkError
from msgrelay.message import Message
from msgrelay.producer import Producer
from msgrelay.sinks import LogFileSink
from msgrelay.sinks.journal import FileRecord, WriteJournal, content_digest, file_key, handle_digest
from msgrelay.transport import create_transport
from sink_helpers import KEYS, TS, batch, msg
from sink_helpers import file_ids as ids


def entry(client: redis.Redis, consumer: str) -> list[list[str]] | None:
    raw = client.hget(KEYS.journal(), consumer)
    return None if raw is None else list(orjson.loads(raw)["files"])  # type: ignore[arg-type]


class Sinks:
    """Builds journaling sinks on one log folder, one per consumer name, and closes them all."""

    def __init__(self, client: redis.Redis, url: str, log_dir: Path) -> None:
        self.client, self.url, self.log_dir = client, url, log_dir
        self.made: list[LogFileSink] = []

    def __call__(self, consumer: str) -> LogFileSink:
        sink = LogFileSink(self.log_dir, journal=WriteJournal(self.client, KEYS, consumer, url=self.url))
        self.made.append(sink)
        return sink

    def close(self) -> None:
        for sink in self.made:
            sink.close()


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    return tmp_path / "logs"


@pytest.fixture
def sinks(redis_client: redis.Redis, redis_url: str, log_dir: Path) -> Iterator[Sinks]:
    made = Sinks(redis_client, redis_url, log_dir)
    yield made
    made.close()


def test_a_batch_is_journaled_with_its_offsets_and_forgotten_once_settled(
    sinks: Sinks, redis_client: redis.Redis, log_dir: Path
) -> None:
    sink = sinks("web-1")
    sink.write_batch(*batch("a", 3))
    messages, handles = batch("b", 2)
    before = (log_dir / "info.log").stat().st_size
    # When a batch is written
    assert sink.write_batch(messages, handles) == []
    # Then the journal holds where its bytes went, what they hash to and whose handles they are
    [record] = [FileRecord.decode(fields) for fields in entry(redis_client, "web-1") or []]
    data = (log_dir / "info.log").read_bytes()[before:]
    assert record.key == file_key(log_dir.resolve() / "info.log")
    assert (record.start, record.length, record.sha1) == (before, len(data), content_digest(data))
    assert record.handles == {handle_digest(handle) for handle in handles}
    # And once the batch is acknowledged, settled() forgets it
    sink.settled()
    assert entry(redis_client, "web-1") is None


def test_a_complete_but_unacked_batch_is_reported_by_already_written(sinks: Sinks, log_dir: Path) -> None:
    # Given a consumer that wrote a batch across two files and died before its ack
    messages, handles = batch("a", 4)
    errors, error_handles = batch("e", 2, "ERROR")
    sinks("web-1").write_batch(messages + errors, handles + error_handles)
    # When another consumer (or the same name after a restart) takes the entries over
    for taker in ("web-2", "web-1"):
        done = sinks(taker).already_written([*handles, *error_handles, b"1700000000000-never-written"])
        # Then every handle of the batch is reported written, and nothing else
        assert done == {*handles, *error_handles}
    assert ids(log_dir / "info.log") == [m.id for m in messages]


def test_already_written_is_empty_once_settled_and_for_unknown_handles(sinks: Sinks) -> None:
    sink = sinks("web-1")
    messages, handles = batch("a", 2)
    sink.write_batch(messages, handles)
    assert sinks("web-2").already_written([b"other"]) == set()
    sink.settled()
    assert sinks("web-2").already_written(handles) == set()


def test_a_failed_type_is_not_reported_written_but_the_written_one_is(sinks: Sinks, log_dir: Path) -> None:
    # Given error.log on a full disk
    log_dir.mkdir()
    (log_dir / "error.log").symlink_to("/dev/full")
    infos, info_handles = batch("i", 2)
    errors, error_handles = batch("e", 2, "ERROR")
    with pytest.raises(SinkError) as failure:
        sinks("web-1").write_batch(infos + errors, info_handles + error_handles)
    assert failure.value.failed_types == frozenset({"ERROR"})
    # Then recovery acks exactly the INFO lines, which are on disk
    assert sinks("web-2").already_written(info_handles + error_handles) == set(info_handles)


def test_a_torn_record_of_a_dead_writer_is_cut_by_the_next_writer_even_on_a_line_boundary(
    sinks: Sinks, redis_client: redis.Redis, log_dir: Path
) -> None:
    # Given a writer that journaled 10 lines and died after writing 4 whole ones (the file ends with "\n":
    # the tail check alone cannot see the tear, the journal can)
    sinks("web-0").write_batch(*batch("old", 2))
    dead = sinks("dead")
    dead_messages, dead_handles = batch("dead", 10)
    dead.write_batch(dead_messages, dead_handles)
    info = log_dir / "info.log"
    whole = info.read_bytes()
    line_length = len(whole.split(b"\n")[-2]) + 1
    os.truncate(info, len(whole) - 6 * line_length)
    # When another consumer writes its batch
    live_messages, live_handles = batch("live", 3)
    sinks("web-2").write_batch(live_messages, live_handles)
    # Then the dead writer's 4 lines are gone, its record is dropped, and the new lines follow the old ones
    assert ids(info) == ["old-00000", "old-00001", "live-00000", "live-00001", "live-00002"]
    assert entry(redis_client, "dead") is None
    # And the dead writer's messages are not reported written: they will be written again, once
    assert sinks("web-3").already_written(dead_handles) == set()


def test_recovery_itself_cuts_a_torn_record_before_anyone_writes(
    sinks: Sinks, redis_client: redis.Redis, log_dir: Path
) -> None:
    dead_messages, dead_handles = batch("dead", 10)
    sinks("dead").write_batch(dead_messages, dead_handles)
    info = log_dir / "info.log"
    os.truncate(info, info.stat().st_size - 7)  # killed mid-line
    assert sinks("dead").already_written(dead_handles) == set()  # the same name, restarted
    assert info.stat().st_size == 0
    assert entry(redis_client, "dead") is None


def test_a_record_whose_file_was_rotated_is_judged_in_the_rotated_file_not_written_twice(
    sinks: Sinks, redis_client: redis.Redis, log_dir: Path
) -> None:
    # Given a consumer that wrote a batch and died before its ack, and a rotation since (logrotate's rename)
    messages, handles = batch("a", 3)
    sinks("web-1").write_batch(messages, handles)
    (log_dir / "info.log").rename(log_dir / "info.log.1")
    (log_dir / "info.log").write_bytes(b"")
    # When another consumer takes the entries over
    # Then the record is found in the rotated file by its inode: written, acked, never written again
    assert sinks("web-2").already_written(handles) == set(handles)
    assert ids(log_dir / "info.log.1") == [m.id for m in messages]
    assert (log_dir / "info.log").read_bytes() == b""


def test_a_torn_record_in_a_rotated_file_is_cut_there_and_written_again(
    sinks: Sinks, redis_client: redis.Redis, log_dir: Path
) -> None:
    # Given a writer killed mid-line, whose file was then rotated (dated name, as logrotate's dateext)
    sinks("web-0").write_batch(*batch("old", 2))
    messages, handles = batch("dead", 5)
    sinks("dead").write_batch(messages, handles)
    info = log_dir / "info.log"
    os.truncate(info, info.stat().st_size - 7)
    info.rename(log_dir / "info.log-20261201")
    # When recovery judges its record, Then the torn bytes are cut off the rotated file, nothing is acked
    assert sinks("web-2").already_written(handles) == set()
    assert ids(log_dir / "info.log-20261201") == ["old-00000", "old-00001"]
    assert entry(redis_client, "dead") is None


def test_a_record_whose_rotated_file_is_gone_is_written_again(sinks: Sinks, log_dir: Path) -> None:
    # Given a record whose file was rotated and compressed by another tool (a new inode) or deleted
    messages, handles = batch("a", 3)
    sinks("web-1").write_batch(messages, handles)
    (log_dir / "info.log").rename(log_dir / "info.log.1")
    subprocess.run(["gzip", str(log_dir / "info.log.1")], check=True)
    # Then its lines are not reported written: written again (a duplicate at worst, never a loss)
    assert sinks("web-2").already_written(handles) == set()


def test_a_truncated_file_is_never_cut_where_a_record_of_the_old_content_looks_torn(
    sinks: Sinks, redis_client: redis.Redis, log_dir: Path
) -> None:
    # Given a dead writer's record at [start, end), then a copytruncate, then others' lines reaching into it
    sinks("web-0").write_batch(*batch("old", 4))
    dead_messages, dead_handles = batch("dead", 4)
    sinks("dead").write_batch(dead_messages, dead_handles)
    info = log_dir / "info.log"
    shutil.copyfile(info, log_dir / "info.log.1")
    os.truncate(info, 0)
    sinks("web-1").write_batch(*batch("new", 6))  # ends inside the dead record's range
    # When recovery and another writer look at the dead record
    assert sinks("web-2").already_written(dead_handles) == set()
    sinks("web-3").write_batch(*batch("more", 1))
    # Then nothing written after the truncation was cut
    assert ids(info) == [*(f"new-{n:05d}" for n in range(6)), "more-00000"]


def test_records_of_other_hosts_and_malformed_entries_are_never_acted_on(
    sinks: Sinks, redis_client: redis.Redis, log_dir: Path
) -> None:
    sink = sinks("web-1")
    sink.write_batch(*batch("a", 3))
    path = log_dir.resolve() / "info.log"
    size = path.stat().st_size
    foreign = FileRecord(
        f"another-host:{path}", path.stat().st_dev, path.stat().st_ino, 0, size + 10, "0" * 40
    )
    redis_client.hset(KEYS.journal(), "elsewhere", orjson.dumps({"files": [foreign.encode()]}))
    redis_client.hset(KEYS.journal(), "garbage", b"{not json")
    sink.write_batch(*batch("b", 1))
    assert ids(path) == ["a-00000", "a-00001", "a-00002", "b-00000"]
    assert redis_client.hexists(KEYS.journal(), "elsewhere")
    assert redis_client.hget(KEYS.journal(), "garbage") == b"{not json"


def test_journaling_needs_a_handle_per_message(sinks: Sinks) -> None:
    with pytest.raises(ValueError, match="handles"):
        sinks("web-1").write_batch([msg("a")], [])


def test_without_redis_nothing_is_written_and_the_error_is_a_broker_error(
    log_dir: Path, tmp_path: Path
) -> None:
    url = f"unix://{tmp_path / 'nobody.sock'}"
    client = redis.Redis.from_url(url)
    sink = LogFileSink(log_dir, journal=WriteJournal(client, KEYS, "web-1", url=url))
    try:
        with pytest.raises(BrokerConnectionError):
            sink.write_batch(*batch("a", 2))
    finally:
        sink.close()
        client.close()
    assert (log_dir / "info.log").read_bytes() == b""


def test_at_least_once_sink_has_no_journal_and_never_talks_to_redis(
    log_dir: Path, redis_client: redis.Redis
) -> None:
    sink = LogFileSink(log_dir)
    try:
        messages, handles = batch("a", 2)
        assert sink.write_batch(messages, handles) == []
        assert sink.already_written(handles) == set()
        sink.settled()
    finally:
        sink.close()
    assert redis_client.keys("*") == []


# The child: one consumer writing one large batch through the real sink and journal. RLIMIT_FSIZE makes
# the kernel stop its write() part-way (a real short write); the next write() raises SIGXFSZ, whose
# handler tells the parent through the pipe and blocks until the parent SIGKILLs it. With no limit it
# reports "complete" after the write, before any ack, and waits to be killed the same way.
CHILD = textwrap.dedent(
    """
    import os, resource, signal, sys
    from pathlib import Path

    import redis

    from msgrelay.keys import KeySchema
    from msgrelay.message import Message
    from msgrelay.sinks import LogFileSink
    from msgrelay.sinks.journal import WriteJournal

    url, log_dir = sys.argv[1], Path(sys.argv[2])
    ready, limit, count = (int(arg) for arg in sys.argv[3:6])

    def stuck(signum, frame):
        os.write(ready, b"torn\\n")
        os.read(0, 1)  # until SIGKILL

    signal.signal(signal.SIGXFSZ, stuck)
    client = redis.Redis.from_url(url)
    journal = WriteJournal(client, KeySchema("msgrelay", "msgrelay:logs"), "child", url=url)
    sink = LogFileSink(log_dir, journal=journal)
    messages = [Message(f"kid-{n:05d}", "INFO", "payload", 1_700_000_000.0) for n in range(count)]
    handles = [f"1700000000000-kid-{n}".encode() for n in range(count)]
    if limit:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    sink.write_batch(messages, handles)
    os.write(ready, b"complete\\n")
    os.read(0, 1)  # until SIGKILL
    """
)


def run_child_until_killed(redis_url: str, log_dir: Path, limit: int, count: int) -> str:
    """Start the child, wait for it to say where it stands, SIGKILL it, and return what it said."""
    ready_read, ready_write = os.pipe()
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, redis_url, str(log_dir), str(ready_write), str(limit), str(count)],
        stdin=subprocess.PIPE,
        pass_fds=(ready_write,),
    )
    os.close(ready_write)
    try:
        with os.fdopen(ready_read, "rb") as ready:
            said = ready.readline().decode().strip()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        assert child.stdin is not None
        child.stdin.close()
    assert child.returncode == -signal.SIGKILL
    return said


@pytest.mark.parametrize("killed", ["mid-line", "on a line boundary", "after the write, before the ack"])
@pytest.mark.parametrize("next_comes", ["the same name, restarted", "another consumer's batch"])
def test_a_writer_sigkilled_at_any_point_leaves_exactly_once_content_after_recovery(
    sinks: Sinks, redis_client: redis.Redis, redis_url: str, log_dir: Path, killed: str, next_comes: str
) -> None:
    # Given a file with two lines, and a child journaling a 400-line batch to it
    sinks("web-0").write_batch(*batch("old", 2))
    info = log_dir / "info.log"
    start = info.stat().st_size
    line_length = start // 2
    count = 400
    limit = {
        "mid-line": start + 150 * line_length + line_length // 2,
        "on a line boundary": start + 150 * line_length,
        "after the write, before the ack": 0,
    }[killed]
    # When it is SIGKILLed at that point
    said = run_child_until_killed(redis_url, log_dir, limit, count)
    # Then its journal entry is there, and so are its bytes up to the kill
    assert said == ("complete" if not limit else "torn")
    [record] = [FileRecord.decode(fields) for fields in entry(redis_client, "child") or []]
    assert (record.start, record.length) == (start, count * line_length)
    assert info.stat().st_size == (limit or start + count * line_length)
    # When recovery runs (after another consumer's batch, or right away), as the consumer would
    expected_other: list[str] = []
    if next_comes == "another consumer's batch":
        other_messages, other_handles = batch("other", 3)
        sinks("web-2").write_batch(other_messages, other_handles)
        expected_other = [m.id for m in other_messages]
    recovering = sinks("child" if next_comes == "the same name, restarted" else "web-3")
    kid_messages = [msg(f"kid-{n:05d}") for n in range(count)]
    kid_handles = [f"1700000000000-kid-{n}".encode() for n in range(count)]
    done = recovering.already_written(kid_handles)
    todo = [n for n, handle in enumerate(kid_handles) if handle not in done]
    recovering.write_batch([kid_messages[n] for n in todo], [kid_handles[n] for n in todo])
    recovering.settled()
    # Then every line is whole and each message is in the file exactly once
    kid_ids = [m.id for m in kid_messages]
    content = ids(info)
    assert sorted(content) == sorted(["old-00000", "old-00001", *expected_other, *kid_ids])
    if killed == "after the write, before the ack":
        assert done == set(kid_handles)  # nothing was written again
        assert content == ["old-00000", "old-00001", *kid_ids, *expected_other]
    else:
        assert done == set()  # the torn part was cut, the whole batch written once
        assert content == ["old-00000", "old-00001", *expected_other, *kid_ids]


def test_settled_drops_the_records_it_took_over_but_keeps_one_with_handles_still_pending(
    sinks: Sinks, redis_client: redis.Redis
) -> None:
    # Given a dead consumer's two complete entries: one batch is taken over whole, the other only in part
    first, first_handles = batch("a", 3)
    sinks("dead-1").write_batch(first, first_handles)
    second, second_handles = batch("b", 4)
    sinks("dead-2").write_batch(second, second_handles)
    taker = sinks("web-2")
    assert taker.already_written(first_handles + second_handles[:2]) == {*first_handles, *second_handles[:2]}
    # When the taker acks them and settles
    taker.settled()
    # Then the wholly taken-over record is gone, the other stays for the handles not yet taken over
    assert entry(redis_client, "dead-1") is None
    assert entry(redis_client, "dead-2") is not None
    assert sinks("web-3").already_written(second_handles[2:]) == set(second_handles[2:])


# A consumer writing ``batches`` batches of mixed types through the real sink and journal; after each
# write it reports the batch on the pipe before settled(): that report is its "ack".
WRITER = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path

    import redis

    from msgrelay.keys import KeySchema
    from msgrelay.message import Message
    from msgrelay.sinks import LogFileSink
    from msgrelay.sinks.journal import WriteJournal

    url, log_dir, name = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    acks, batches, size = (int(arg) for arg in sys.argv[4:7])
    client = redis.Redis.from_url(url)
    journal = WriteJournal(client, KeySchema("msgrelay", "msgrelay:logs"), name, url=url)
    sink = LogFileSink(log_dir, journal=journal)
    types = ("INFO", "ERROR", "DEBUG", "WARNING", "INFO")
    for b in range(batches):
        numbers = range(b * size, (b + 1) * size)
        messages = [Message(f"{name}-{n:05d}", types[n % 5], "x" * (n % 300), 1.7e9) for n in numbers]
        sink.write_batch(messages, [f"{name}-{n}".encode() for n in numbers])
        os.write(acks, f"{b}\\n".encode())
        sink.settled()
    """
)


def writer_batch(name: str, number: int, size: int) -> tuple[list[Message], list[bytes]]:
    types = ("INFO", "ERROR", "DEBUG", "WARNING", "INFO")
    numbers = range(number * size, (number + 1) * size)
    messages = [Message(f"{name}-{n:05d}", types[n % 5], "x" * (n % 300), TS) for n in numbers]
    return messages, [f"{name}-{n}".encode() for n in numbers]


@pytest.mark.parametrize("kill_after", [0, 3, 7, 12])
def test_concurrent_writers_one_sigkilled_at_a_random_instant_leave_every_line_whole_and_once(
    sinks: Sinks, redis_url: str, log_dir: Path, kill_after: int
) -> None:
    # Given three consumers writing 15 batches of 40 mixed-type messages each to the same four files
    batches, size = 15, 40
    names = ("alpha", "beta", "gamma")
    children, pipes = [], []
    for name in names:
        ack_read, ack_write = os.pipe()
        argv = [
            sys.executable,
            "-c",
            WRITER,
            redis_url,
            str(log_dir),
            name,
            str(ack_write),
            str(batches),
            str(size),
        ]
        children.append(subprocess.Popen(argv, pass_fds=(ack_write,)))
        os.close(ack_write)
        pipes.append(os.fdopen(ack_read, "rb"))
    # When "gamma" is SIGKILLed right after its ack of batch `kill_after`, wherever it then is
    victim, victim_acks = children[2], pipes[2]
    while int(victim_acks.readline()) < kill_after:
        pass
    victim.send_signal(signal.SIGKILL)
    for child in children:
        child.wait(timeout=60)
    acked = [[int(line) for line in pipe.read().split()] for pipe in pipes]
    for pipe in pipes:
        pipe.close()
    assert children[0].returncode == children[1].returncode == 0
    last_acked = max([kill_after, *acked[2]])
    # And its unacked batches are recovered by another consumer as the consumer loop would
    reaper = sinks("reaper")
    for number in range(last_acked + 1, batches):
        messages, handles = writer_batch("gamma", number, size)
        done = reaper.already_written(handles)
        todo = [n for n, handle in enumerate(handles) if handle not in done]
        reaper.write_batch([messages[n] for n in todo], [handles[n] for n in todo])
        reaper.settled()
    # Then every file holds whole lines only, and every message of every consumer exactly once
    seen = [line_id for path in sorted(log_dir.iterdir()) for line_id in ids(path)]
    expected = [f"{name}-{n:05d}" for name in names for n in range(batches * size)]
    assert sorted(seen) == sorted(expected)


def test_a_restarted_consumer_acks_the_batch_its_crash_left_written_without_writing_it_again(
    make_settings: Callable[..., Settings], transport_name: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    # Given 25 queued messages, and a consumer "web-1" that fetched 10, wrote them and died before its ack
    settings = make_settings(
        transport_name, consumer={"batch_size": 10, "block_timeout_s": 0.05, "delivery": "effectively_once"}
    )
    with Producer.from_settings(settings) as producer:
        sent = producer.send_many(
            [("INFO", f"message {n}", {}) for n in range(20)] + [("ERROR", "e", {})] * 5
        )
    transport = create_transport(settings)
    try:
        transport.setup()
        fetched = transport.fetch("web-1", 10, 0.0)
        crashed = LogFileSink(
            settings.consumer.log_dir,
            journal=WriteJournal(transport.client, transport.keys, "web-1", url=transport.url),
        )
        crashed.write_batch(
            [decode(d.raw, source_id=d.source_id, max_bytes=65536) for d in fetched],
            [d.handle for d in fetched],
        )
        crashed.close()
        # When "web-1" restarts (same name) and drains the queue
        sink = LogFileSink(
            settings.consumer.log_dir,
            journal=WriteJournal(transport.client, transport.keys, "web-1", url=transport.url),
        )
        consumer_settings = settings.consumer.model_copy(update={"consumer_name": "web-1"})
        Consumer(transport, sink, consumer_settings, max_message_bytes=65536).run(burst=True)
        sink.close()
        stats = transport.stats()
    finally:
        transport.close()
    # Then every message is in its file exactly once, all of them acknowledged, and the journal is empty
    written = [line_id for path in sorted(settings.consumer.log_dir.iterdir()) for line_id in ids(path)]
    assert sorted(written) == sorted(sent)
    assert stats["processed"] == 25
    assert redis_client.hgetall(transport.keys.journal()) == {}
