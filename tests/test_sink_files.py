"""LogFileSink: one append-only file per type, from a fixed table, and a loud failure when a write fails."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from msgrelay.errors import SinkError
from msgrelay.keys import KeySchema
from msgrelay.levels import LOG_TYPES, TYPE_FILES
from msgrelay.message import Message
from msgrelay.sinks import LogFileSink
from msgrelay.sinks.appendfile import append_whole, open_for_append
from msgrelay.sinks.journal import WriteJournal


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    return tmp_path / "logs"


@pytest.fixture
def sink(log_dir: Path) -> Iterator[LogFileSink]:
    sink = LogFileSink(log_dir)
    yield sink
    sink.close()


def msg(n: int, msg_type: str = "INFO", text: str | None = None) -> Message:
    return Message(
        id=f"m-{n}", type=msg_type, text=f"message {n}" if text is None else text, ts=1_700_000_000.0
    )


def files_in(folder: Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*")}


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def ids(path: Path) -> list[str]:
    """The message id of every line (the text format's third word); a torn line would show as a bad id."""
    return [line.split(" ")[2] for line in lines(path)]


def test_log_folder_is_created_on_start(tmp_path: Path) -> None:
    folder = tmp_path / "a" / "b" / "logs"
    sink = LogFileSink(folder)
    try:
        assert folder.is_dir()
        assert files_in(folder) == set()  # no file until a message of that type arrives
    finally:
        sink.close()


def test_log_folder_that_cannot_be_created_is_a_sink_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    with pytest.raises(SinkError):
        LogFileSink(blocker / "logs")


def test_each_type_goes_to_its_own_file_from_the_fixed_table(sink: LogFileSink, log_dir: Path) -> None:
    # Given one message of every type
    batch = [msg(n, msg_type) for n, msg_type in enumerate(LOG_TYPES)]
    # When the batch is written
    sink.write_batch(batch)
    # Then exactly the four table files exist, each holding its one message
    assert files_in(log_dir) == set(TYPE_FILES.values())
    for n, msg_type in enumerate(LOG_TYPES):
        content = lines(log_dir / TYPE_FILES[msg_type])
        assert len(content) == 1
        assert f" {msg_type} m-{n} message {n}" in content[0]


def test_only_files_of_types_present_are_created(sink: LogFileSink, log_dir: Path) -> None:
    sink.write_batch([msg(1, "ERROR"), msg(2, "ERROR")])
    assert files_in(log_dir) == {"error.log"}


def test_path_for_maps_types_to_the_table_files(sink: LogFileSink, log_dir: Path) -> None:
    for msg_type, name in TYPE_FILES.items():
        assert sink.path_for(msg_type) == log_dir.resolve() / name


@pytest.mark.parametrize("msg_type", ["../../etc/passwd", "/etc/passwd", "error", "CRITICAL", "", "ERROR\0"])
def test_type_outside_the_table_is_a_reject_and_creates_nothing(
    sink: LogFileSink, log_dir: Path, tmp_path: Path, msg_type: str
) -> None:
    with pytest.raises(KeyError):
        sink.path_for(msg_type)
    rejects = sink.write_batch([msg(1, msg_type)])
    assert [index for index, _ in rejects] == [0]
    assert "KeyError" in rejects[0][1]
    assert files_in(log_dir) == set()
    assert files_in(tmp_path) == {"logs"}


def test_one_line_per_message_even_with_hostile_text(sink: LogFileSink, log_dir: Path) -> None:
    texts = ["plain", "two\nlines", "cr\rreturn", "ansi \x1b[2J", "sep\u2028arator", "nel\x85", "nul\x00"]
    sink.write_batch([msg(n, "WARNING", text) for n, text in enumerate(texts)])
    content = (log_dir / "warning.log").read_bytes()
    assert content.count(b"\n") == len(texts)
    assert len(content.decode().splitlines()) == len(texts)  # no \r, NEL or U+2028 split a line either
    assert [line.split(" ", 3)[2] for line in lines(log_dir / "warning.log")] == [
        f"m-{n}" for n in range(len(texts))
    ]


def test_batches_are_appended_in_order(sink: LogFileSink, log_dir: Path) -> None:
    sink.write_batch([msg(1), msg(2)])
    sink.write_batch([msg(3)])
    sink.write_batch([])
    sink.write_batch([msg(4), msg(5, "DEBUG")])
    assert [line.split(" ")[2] for line in lines(log_dir / "info.log")] == ["m-1", "m-2", "m-3", "m-4"]
    assert len(lines(log_dir / "debug.log")) == 1


def test_a_new_sink_appends_to_existing_files_instead_of_truncating(log_dir: Path) -> None:
    first = LogFileSink(log_dir)
    first.write_batch([msg(1)])
    first.close()
    second = LogFileSink(log_dir)
    second.write_batch([msg(2)])
    second.close()
    assert [line.split(" ")[2] for line in lines(log_dir / "info.log")] == ["m-1", "m-2"]


def test_fsync_option_writes_every_line(log_dir: Path) -> None:
    sink = LogFileSink(log_dir, fsync=True)
    try:
        assert sink.fsync
        sink.write_batch([msg(1), msg(2, "ERROR")])
        sink.write_batch([msg(3)])
    finally:
        sink.close()
    assert len(lines(log_dir / "info.log")) == 2
    assert len(lines(log_dir / "error.log")) == 1


def test_json_line_format_writes_one_json_object_per_line(log_dir: Path) -> None:
    sink = LogFileSink(log_dir, line_format="json")
    try:
        sink.write_batch([msg(1, "ERROR", "disk\nfull"), msg(2, "ERROR")])
    finally:
        sink.close()
    records = [orjson.loads(line) for line in lines(log_dir / "error.log")]
    assert [(r["id"], r["type"], r["text"]) for r in records] == [
        ("m-1", "ERROR", "disk\nfull"),
        ("m-2", "ERROR", "message 2"),
    ]


def test_unknown_line_format_is_refused(log_dir: Path) -> None:
    with pytest.raises(KeyError):
        LogFileSink(log_dir, line_format="xml")


def test_files_are_created_with_mode_0644_at_most(sink: LogFileSink, log_dir: Path) -> None:
    sink.write_batch([msg(1)])
    assert (log_dir / "info.log").stat().st_mode & 0o777 & ~0o644 == 0


@pytest.mark.parametrize("fsync", [False, True])
def test_write_failure_raises_sink_error_naming_only_the_failed_type(log_dir: Path, fsync: bool) -> None:
    # Given a log folder whose error.log is a full disk
    log_dir.mkdir()
    (log_dir / "error.log").symlink_to("/dev/full")
    sink = LogFileSink(log_dir, fsync=fsync)
    try:
        # When a batch with messages of three types is written
        with pytest.raises(SinkError, match=r"error\.log.*No space left") as failure:
            sink.write_batch([msg(1, "INFO"), msg(2, "ERROR"), msg(3, "DEBUG"), msg(4, "WARNING")])
        # Then only ERROR is reported as not written, and every other type's file was attempted and written
        assert failure.value.failed_types == frozenset({"ERROR"})
        assert [ids(log_dir / name) for name in ("debug.log", "info.log", "warning.log")] == [
            ["m-3"],
            ["m-1"],
            ["m-4"],
        ]
        # And it keeps failing on retry (the file is reopened, not silently skipped)
        with pytest.raises(SinkError) as again:
            sink.write_batch([msg(5, "ERROR")])
        assert again.value.failed_types == frozenset({"ERROR"})
        # while other types still work
        assert sink.write_batch([msg(6, "DEBUG")]) == []
    finally:
        sink.close()
    assert ids(log_dir / "debug.log") == ["m-3", "m-6"]


def test_a_batch_that_fails_entirely_names_every_type(log_dir: Path) -> None:
    log_dir.mkdir()
    for name in ("error.log", "info.log"):
        (log_dir / name).symlink_to("/dev/full")
    sink = LogFileSink(log_dir)
    try:
        with pytest.raises(SinkError) as failure:
            sink.write_batch([msg(1, "INFO"), msg(2, "ERROR")])
    finally:
        sink.close()
    assert failure.value.failed_types == frozenset({"INFO", "ERROR"})


def test_writer_raises_enospc_instead_of_swallowing_it(tmp_path: Path) -> None:
    fd = open_for_append(Path("/dev/full"))
    try:
        with pytest.raises(OSError) as failure:
            append_whole(fd, b"one line\n", 0, fsync=False)
    finally:
        os.close(fd)
    assert failure.value.errno == errno.ENOSPC


def test_a_message_the_formatter_cannot_render_is_rejected_alone(sink: LogFileSink, log_dir: Path) -> None:
    # Given a batch whose second message carries a field no JSON encoder can write
    unrenderable = Message(id="m-2", type="INFO", text="bad", ts=1_700_000_000.0, fields={"x": object()})
    batch = [msg(1), unrenderable, msg(3), msg(4, "ERROR")]
    # When it is written, Then that one message comes back as a reject and every other one is written
    rejects = sink.write_batch(batch)
    assert [index for index, _ in rejects] == [1]
    assert "Error" in rejects[0][1]
    assert ids(log_dir / "info.log") == ["m-1", "m-3"]
    assert ids(log_dir / "error.log") == ["m-4"]


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (b"2026 INFO m-0 whole\n2026 INFO m-1 half a li", b"2026 INFO m-0 whole\n"),
        (b"no newline at all", b""),
        (b"x" * 200_000 + b"\n" + b"y" * 150_000, b"x" * 200_000 + b"\n"),  # the tail spans read chunks
    ],
)
def test_a_torn_tail_left_by_a_killed_writer_is_cut_before_appending(
    log_dir: Path, before: bytes, after: bytes
) -> None:
    # Given a file whose last line was cut short (its writer was SIGKILLed mid-write, nothing was acked)
    log_dir.mkdir()
    (log_dir / "info.log").write_bytes(before)
    sink = LogFileSink(log_dir)
    try:
        # When a batch is appended
        sink.write_batch([msg(2)])
    finally:
        sink.close()
    # Then the partial line is gone and the new line starts on a line of its own
    content = (log_dir / "info.log").read_bytes()
    assert content.startswith(after)
    assert content[len(after) :].decode().split(" ")[2] == "m-2"
    assert content.count(b"\n") == after.count(b"\n") + 1


def test_a_file_torn_while_the_sink_holds_it_open_is_cut_too(sink: LogFileSink, log_dir: Path) -> None:
    sink.write_batch([msg(1)])
    with (log_dir / "info.log").open("ab") as other_writer:  # another consumer, killed mid-line
        other_writer.write(b"2026 INFO m-x trunc")
    sink.write_batch([msg(2)])
    assert ids(log_dir / "info.log") == ["m-1", "m-2"]


def test_appends_wait_for_the_file_lock_of_another_writer(sink: LogFileSink, log_dir: Path) -> None:
    # Given another writer (another open file description, as another process has) holding info.log's lock
    sink.write_batch([msg(1)])
    holder = os.open(log_dir / "info.log", os.O_RDWR)
    fcntl.flock(holder, fcntl.LOCK_EX)
    writer = threading.Thread(target=sink.write_batch, args=([msg(2)],))
    try:
        # When the sink appends, Then it waits for the lock
        writer.start()
        writer.join(timeout=0.3)
        assert writer.is_alive()
        assert ids(log_dir / "info.log") == ["m-1"]
    finally:
        fcntl.flock(holder, fcntl.LOCK_UN)  # And it appends once the lock is released
        os.close(holder)
        writer.join(timeout=10)
    assert ids(log_dir / "info.log") == ["m-1", "m-2"]


def test_sink_recovers_once_the_file_is_writable_again(log_dir: Path) -> None:
    log_dir.mkdir()
    (log_dir / "error.log").symlink_to("/dev/full")
    sink = LogFileSink(log_dir)
    try:
        with pytest.raises(SinkError):
            sink.write_batch([msg(1, "ERROR")])
        (log_dir / "error.log").unlink()  # the operator frees space / fixes the file
        sink.write_batch([msg(1, "ERROR")])
    finally:
        sink.close()
    assert [line.split(" ")[2] for line in lines(log_dir / "error.log")] == ["m-1"]


def test_close_releases_every_file_and_can_be_called_twice(log_dir: Path) -> None:
    sink = LogFileSink(log_dir)
    sink.write_batch([msg(n, msg_type) for n, msg_type in enumerate(LOG_TYPES)])
    fds_before = set(os.listdir("/proc/self/fd"))
    sink.close()
    sink.close()
    assert len(fds_before - set(os.listdir("/proc/self/fd"))) == len(LOG_TYPES)


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs of our own, to fill to the brim (needs root or CAP_SYS_ADMIN; skipped otherwise)."""
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command: cannot make a small disk to fill")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k,mode=0755", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"mount -t tmpfs is not permitted here: {mounted.stderr.strip() or mounted.returncode}")
    try:
        yield mount_point
    finally:
        if subprocess.run(["umount", str(mount_point)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(mount_point)], check=False)  # still busy: detach it anyway


def fill_to_the_brim(folder: Path) -> Path:
    """A file that takes every free byte of ``folder``'s file system."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for chunk in (b"f" * 4096, b"f"):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, chunk)
    finally:
        os.close(fd)
    return filler


@pytest.mark.parametrize("mode", ["at_least_once", "fsync", "effectively_once"])
def test_disk_full_mid_batch_fails_that_type_alone_and_leaves_no_torn_line(
    tiny_disk: Path, mode: str, request: pytest.FixtureRequest
) -> None:
    # Given a sink on a tiny disk whose info.log and error.log each hold a line, and a disk then filled up
    log_dir = tiny_disk / "logs"
    journal = None
    if mode == "effectively_once":
        client, url = request.getfixturevalue("redis_client"), request.getfixturevalue("redis_url")
        journal = WriteJournal(client, KeySchema("msgrelay", "msgrelay:logs"), "web-1", url=url)
    sink = LogFileSink(log_dir, fsync=mode == "fsync", journal=journal)
    handles = [f"h-{n}".encode() for n in range(200)]
    try:
        sink.write_batch([msg(0, "INFO"), msg(1, "ERROR")], handles[:2])
        filler = fill_to_the_brim(tiny_disk)
        # When a batch comes with one short INFO line (it fits in the page info.log already has) and
        # 30 KiB of ERROR lines (error.log's page takes part of them, then the disk is full: ENOSPC)
        errors = [msg(n, "ERROR", text="e" * 300) for n in range(10, 110)]
        with pytest.raises(SinkError, match="No space left") as failure:
            sink.write_batch([msg(2, "INFO"), *errors], handles[2:3] + handles[10:110])
        # Then ERROR alone is reported failed, INFO is written, and error.log was cut back to its whole line
        assert failure.value.failed_types == frozenset({"ERROR"})
        assert ids(log_dir / "info.log") == ["m-0", "m-2"]
        assert (log_dir / "error.log").read_bytes().endswith(b"\n")
        assert ids(log_dir / "error.log") == ["m-1"]
        if journal is not None:  # and recovery would ack the INFO line alone
            assert sink.already_written(handles[2:3] + handles[10:110]) == set(handles[2:3])
        # And once space returns, the retried ERROR lines are written whole
        filler.unlink()
        assert sink.write_batch(errors, handles[10:110]) == []
    finally:
        sink.close()
    assert ids(log_dir / "error.log") == ["m-1", *(f"m-{n}" for n in range(10, 110))]
