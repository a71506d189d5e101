"""Log files moved under a running consumer: nothing acknowledged may be lost to rotation (issue 10 §1).

Real files, a real redis-server, real ``msgrelay consume`` processes and signals. The races with a rotator
that takes no lock are driven at the one place where they live, between the sink's path check and its
write, and by a rotator thread hammering a live sink.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from msgrelay.config import load_settings
from msgrelay.producer import Producer
from msgrelay.sinks import logfile
from sink_helpers import SinkMaker, Union, file_ids, write

MODES = ("at_least_once", "effectively_once")


# --- the path is checked before each write -------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_a_file_moved_away_between_batches_is_opened_again_at_its_path(
    make_sink: SinkMaker, log_dir: Path, mode: str
) -> None:
    sink = make_sink(mode)
    first = write(sink, "a", 3)
    (log_dir / "error.log").rename(log_dir / "error.log.1")  # logrotate nocreate, or an operator's mv
    second = write(sink, "b", 3)
    assert file_ids(log_dir / "error.log.1") == first
    assert file_ids(log_dir / "error.log") == second


@pytest.mark.parametrize("mode", MODES)
def test_a_file_removed_under_the_consumer_is_created_again(
    make_sink: SinkMaker, log_dir: Path, mode: str
) -> None:
    sink = make_sink(mode)
    write(sink, "a", 3)
    (log_dir / "error.log").unlink()
    second = write(sink, "b", 3)
    assert file_ids(log_dir / "error.log") == second


# --- a rotator acting between the check and the write ---------------------------------------------------


def rotate_then(action: str, log_dir: Path) -> Callable[[], None]:
    """A lock-free rotator's moves on error.log: mv; mv then rm (the issue's example); mv then gzip
    (logrotate's compress); copy then truncate (copytruncate)."""
    current, rotated = log_dir / "error.log", log_dir / "error.log.1"

    def act() -> None:
        if action == "copytruncate":
            shutil.copyfile(current, rotated)
            os.truncate(current, 0)
            return
        current.rename(rotated)
        if action == "mv+rm":
            rotated.unlink()
        elif action == "mv+gzip":
            subprocess.run(["gzip", str(rotated)], check=True)

    return act


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("action", ["mv", "mv+rm", "mv+gzip", "copytruncate"])
def test_a_rotation_between_the_path_check_and_the_write_never_loses_the_acknowledged_lines(
    make_sink: SinkMaker,
    log_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
    action: str,
) -> None:
    # Given a consumer whose error.log holds a batch
    sink = make_sink(mode)
    first = write(sink, "a", 3)
    # When a rotator moves the file right after the sink checked the path, before its write
    rotator = rotate_then(action, log_dir)
    real_append = logfile.append_whole
    moves = []

    def append_after_a_rotation(fd: int, data: bytes, start: int, *, fsync: bool) -> None:
        if not moves:
            moves.append(action)
            rotator()
        real_append(fd, data, start, fsync=fsync)

    monkeypatch.setattr(logfile, "append_whole", append_after_a_rotation)
    second = write(sink, "b", 3)
    # Then once write_batch returned (the batch may be acked), its lines are in the file at the path
    assert moves == [action]
    assert file_ids(log_dir / "error.log") == second
    # And they are nowhere else: the bytes that went to the moved file were taken back off it
    union = Union.read(log_dir)
    assert union.once(first + second) if action != "mv+rm" else union.once(second)


@pytest.mark.parametrize("mode", MODES)
def test_a_rotator_hammering_the_file_never_loses_duplicates_or_tears_a_line(
    make_sink: SinkMaker, log_dir: Path, mode: str
) -> None:
    # Given a rotator thread that, every few milliseconds and with no lock, renames error.log and creates
    # it again (logrotate's create), and gzips the files it rotated over half a second ago (delaycompress:
    # logrotate compresses a file one rotation period after renaming it)
    sink = make_sink(mode)
    write(sink, "first", 1)
    stop = threading.Event()
    rounds: list[int] = []
    plain: list[tuple[float, Path]] = []
    compressed: list[Path] = []

    def rotator() -> None:
        while not stop.wait(0.002):
            number = len(rounds) + 1
            try:
                (log_dir / "error.log").rename(log_dir / f"error.log.{number}")
            except FileNotFoundError:
                continue
            with contextlib.suppress(FileExistsError):  # the sink may have been quicker (after its grace)
                os.close(os.open(log_dir / "error.log", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
            rounds.append(number)
            plain.append((time.monotonic(), log_dir / f"error.log.{number}"))
            while plain and plain[0][0] < time.monotonic() - 0.5:
                old = plain.pop(0)[1]
                old.with_name(old.name + ".gz").write_bytes(gzip.compress(old.read_bytes()))
                old.unlink()
                compressed.append(old)

    thread = threading.Thread(target=rotator)
    thread.start()
    written: list[str] = []
    deadline = time.monotonic() + 60
    try:
        # When the consumer writes batch after batch meanwhile, through 40 rotations and 5 compressions
        while (len(rounds) < 40 or len(compressed) < 5) and time.monotonic() < deadline:
            written += write(sink, f"b{len(written):06d}", 5)
    finally:
        stop.set()
        thread.join()
    # Then every acknowledged line is in exactly one file, whole
    assert len(rounds) >= 40 and len(compressed) >= 5
    union = Union.read(log_dir)
    lost, extra = set(written) - set(union.counts), union.counts - Counter(["first-00000", *written])
    assert union.once(["first-00000", *written]), f"lost {sorted(lost)[:5]}, duplicated {dict(extra)}"


# --- copytruncate ------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_lines_written_between_a_copy_and_its_truncation_are_written_again(
    make_sink: SinkMaker, log_dir: Path, mode: str
) -> None:
    # Given logrotate's copytruncate, with a batch written after its copy and before its truncation
    sink = make_sink(mode)
    first = write(sink, "a", 3)
    shutil.copyfile(log_dir / "error.log", log_dir / "error.log.1")
    caught = write(sink, "b", 3)
    os.truncate(log_dir / "error.log", 0)
    # When the next batch is written
    third = write(sink, "c", 3)
    # Then the caught batch is written again: every line once in the copy or the file, none lost
    assert file_ids(log_dir / "error.log.1") == first
    assert file_ids(log_dir / "error.log") == caught + third


def test_a_line_the_copy_caught_half_written_is_cut_off_the_copy_and_written_again(
    make_sink: SinkMaker, log_dir: Path
) -> None:
    # Given a copy that read the file while a batch was half written (its copy ends mid-line)
    sink = make_sink()
    first = write(sink, "a", 3)
    caught = write(sink, "b", 3)
    whole = (log_dir / "error.log").read_bytes()
    (log_dir / "error.log.1").write_bytes(whole[:-20])
    os.truncate(log_dir / "error.log", 0)
    # When the next batch is written, Then no torn line is left in the copy and nothing is lost
    third = write(sink, "c", 3)
    assert file_ids(log_dir / "error.log.1") == first
    assert file_ids(log_dir / "error.log") == caught + third


def test_without_a_copy_in_the_folder_the_remembered_lines_are_written_again(
    make_sink: SinkMaker, log_dir: Path, tmp_path: Path
) -> None:
    # Given a copytruncate into another folder (logrotate's olddir): the copy cannot be found
    sink = make_sink()
    first = write(sink, "a", 3)
    elsewhere = tmp_path / "old"
    elsewhere.mkdir()
    shutil.copyfile(log_dir / "error.log", elsewhere / "error.log.1")
    os.truncate(log_dir / "error.log", 0)
    # Then what this consumer wrote recently is written again: duplicates at worst, never a loss
    second = write(sink, "b", 3)
    assert file_ids(log_dir / "error.log") == first + second


def test_a_consumer_notices_a_truncation_another_consumer_wrote_past(
    make_sink: SinkMaker, log_dir: Path
) -> None:
    # Given two consumers on one folder; a copytruncate; then the second writes beyond where the first was
    one, two = make_sink(name="web-1"), make_sink(name="web-2")
    first = write(one, "a", 2)
    shutil.copyfile(log_dir / "error.log", log_dir / "error.log.1")
    caught = write(one, "b", 2)  # after the copy: lost by the truncation
    os.truncate(log_dir / "error.log", 0)
    other = write(two, "c", 12)
    # When the first consumer writes again (the file is longer than its last write: size alone says nothing)
    last = write(one, "d", 1)
    # Then it still sees its lines are gone and writes them again
    union = Union.read(log_dir)
    assert union.once(first + caught + other + last)
    assert file_ids(log_dir / "error.log") == other + caught + last


# --- msgrelay consume: the example, and SIGHUP ---------------------------------------------------


class LiveConsumer:
    """A ``msgrelay consume`` process on ``<tmp>/logs``, and a producer for it."""

    def __init__(self, redis_url: str, tmp_path: Path) -> None:
        self.log_dir = tmp_path / "logs"
        self.output = tmp_path / "consume.out"
        argv = [sys.executable, "-m", "msgrelay", "consume", "--redis-url", redis_url, "--quiet"]
        with self.output.open("wb") as out:
            self.process = subprocess.Popen(
                [*argv, "--log-dir", str(self.log_dir), "--name", "live"],
                stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path,
            )  # fmt: skip
        self.producer = Producer.from_settings(load_settings(None, {"redis": {"url": redis_url}}))
        wait_until(lambda: b" reading " in self.output.read_bytes(), what="the consumer to start")

    def send(self, texts: list[str]) -> list[str]:
        return self.producer.send_many([("ERROR", text) for text in texts])

    def open_files(self) -> list[str]:
        """What the consumer's descriptors point to (``/proc/<pid>/fd``)."""
        names = []
        for fd in os.listdir(f"/proc/{self.process.pid}/fd"):
            try:
                names.append(os.readlink(f"/proc/{self.process.pid}/fd/{fd}"))
            except OSError:
                continue
        return names

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)

    def close(self) -> None:
        self.producer.close()
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def live(redis_url: str, tmp_path: Path) -> Iterator[LiveConsumer]:
    consumer = LiveConsumer(redis_url, tmp_path)
    yield consumer
    consumer.close()


def wait_until(condition: Callable[[], bool], *, what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def holds(path: Path, ids: list[str]) -> bool:
    return path.exists() and set(ids) <= set(file_ids(path))


def test_mv_then_rm_under_a_live_consumer_loses_no_acknowledged_line(
    live: LiveConsumer, redis_client: redis.Redis
) -> None:
    # Given a running consumer that wrote to error.log
    logs = live.log_dir
    before = live.send(["before 1", "before 2"])
    wait_until(lambda: holds(logs / "error.log", before), what="the first lines")
    # When the file is moved away, lines arrive, and the moved file is deleted (the example)
    (logs / "error.log").rename(logs / "error.log.1")
    after_mv = live.send(["after mv 1", "after mv 2"])
    wait_until(lambda: holds(logs / "error.log", after_mv), what="the lines sent after mv")
    (logs / "error.log.1").unlink()
    after_rm = live.send(["after rm 1", "after rm 2"])
    # Then every line sent after the mv is in error.log, created again at its path, and acknowledged
    wait_until(lambda: holds(logs / "error.log", after_rm), what="the lines sent after rm")
    assert file_ids(logs / "error.log") == after_mv + after_rm
    assert redis_client.xpending("msgrelay:logs", "msgrelay")["pending"] == 0
    assert live.stop() == 0


def test_sighup_reopens_every_file_and_the_consumer_goes_on(live: LiveConsumer) -> None:
    # Given a running consumer whose error.log was moved away (logrotate without create)
    logs = live.log_dir
    first = live.send(["one"])
    wait_until(lambda: holds(logs / "error.log", first), what="the first line")
    (logs / "error.log").rename(logs / "error.log.1")
    assert any(name.endswith("error.log.1") for name in live.open_files())
    # When it gets SIGHUP (logrotate's postrotate `kill -HUP`)
    live.process.send_signal(signal.SIGHUP)
    # Then it lets go of the moved file at once (its disk space can be freed), without dying (was: 129)
    wait_until(
        lambda: not any(name.endswith("error.log.1") for name in live.open_files()),
        what="the moved file to be closed",
    )
    assert live.process.poll() is None
    # And it goes on writing, at the path
    second = live.send(["two"])
    wait_until(lambda: holds(logs / "error.log", second), what="the line sent after SIGHUP")
    assert file_ids(logs / "error.log.1") == first
    assert live.stop() == 0
