"""LogFileSink: one append-only file per type, from a fixed table, and a loud failure when a write fails."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from msgrelay.errors import SinkError
from msgrelay.levels import LOG_TYPES, TYPE_FILES
from msgrelay.message import Message
from msgrelay.sinks import LogFileSink


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
def test_type_outside_the_table_is_a_key_error_and_creates_nothing(
    sink: LogFileSink, log_dir: Path, tmp_path: Path, msg_type: str
) -> None:
    with pytest.raises(KeyError):
        sink.path_for(msg_type)
    with pytest.raises(KeyError):
        sink.write_batch([msg(1, msg_type)])
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
def test_write_failure_raises_sink_error(log_dir: Path, fsync: bool) -> None:
    # Given a log folder whose error.log is a full disk
    log_dir.mkdir()
    (log_dir / "error.log").symlink_to("/dev/full")
    sink = LogFileSink(log_dir, fsync=fsync)
    try:
        # When a batch with an ERROR message is written, Then the sink says so instead of losing it
        with pytest.raises(SinkError, match=r"error\.log"):
            sink.write_batch([msg(1, "INFO"), msg(2, "ERROR")])
        # And it keeps failing on retry (the file is reopened, not silently skipped)
        with pytest.raises(SinkError):
            sink.write_batch([msg(3, "ERROR")])
        # while other types still work
        sink.write_batch([msg(4, "DEBUG")])
    finally:
        sink.close()
    assert len(lines(log_dir / "debug.log")) == 1


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
