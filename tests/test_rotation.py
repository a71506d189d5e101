"""Built-in rotation of the log files (issue 10 §1): by size and by day, keep N, gzip, several consumers.

Real files and a real redis-server (for the effectively-once journal); concurrent writers are separate
sinks, so separate open file descriptions whose ``flock`` locks exclude each other as across processes.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from msgrelay.config import load_settings
from msgrelay.errors import ConfigError
from msgrelay.producer import Producer
from msgrelay.sinks.rotation import RotationPolicy, rotate
from sink_helpers import SinkMaker, Union, batch, file_ids, write

MODES = ("at_least_once", "effectively_once")
YESTERDAY = time.time() - 86_400


def in_order(log_dir: Path, name: str = "error.log") -> list[str]:
    """Every line of the file and its rotated files, oldest first (``<name>.N`` ... ``.1``, then the file)."""
    numbered = sorted(
        (int(p.name[len(name) + 1 :].removesuffix(".gz")), p) for p in log_dir.glob(f"{name}.*")
    )
    ordered = [path for _, path in reversed(numbered)]
    return [i for path in [*ordered, log_dir / name] if path.exists() for i in file_ids(path)]


@pytest.mark.parametrize("mode", MODES)
def test_size_rotation_keeps_every_file_under_max_bytes_and_every_line_in_order_once(
    make_sink: SinkMaker, log_dir: Path, mode: str
) -> None:
    # Given a sink that rotates at 2,000 bytes (a line here is about 50 bytes) and keeps them all
    sink = make_sink(mode, rotation=RotationPolicy(max_bytes=2000, keep=1000))
    rng = random.Random(3)
    # When batches of 1 to 30 lines are written (the largest, 30 lines, is under 2,000 bytes)
    written = [i for n in range(60) for i in write(sink, f"b{n:02d}", rng.randint(1, 30))]
    # Then no file is over 2,000 bytes, names run .1 .. .N, and every line is there once, in order
    files = sorted(log_dir.iterdir())
    assert len(files) > 10
    assert all(path.stat().st_size <= 2000 for path in files)
    assert {path.name for path in files} == {"error.log", *(f"error.log.{n}" for n in range(1, len(files)))}
    assert in_order(log_dir) == written


def test_a_batch_larger_than_max_bytes_goes_whole_into_a_fresh_file(
    make_sink: SinkMaker, log_dir: Path
) -> None:
    sink = make_sink(rotation=RotationPolicy(max_bytes=100))
    first = write(sink, "a", 1)
    big = write(sink, "b", 10)
    assert file_ids(log_dir / "error.log.1") == first
    assert file_ids(log_dir / "error.log") == big  # never split: one batch, one write


def test_keep_deletes_the_oldest_rotated_files(make_sink: SinkMaker, log_dir: Path) -> None:
    sink = make_sink(rotation=RotationPolicy(max_bytes=60, keep=2))  # a line is about 50 bytes: one per file
    batches = [write(sink, f"b{n}", 1) for n in range(5)]
    assert sorted(path.name for path in log_dir.iterdir()) == ["error.log", "error.log.1", "error.log.2"]
    assert in_order(log_dir) == [i for b in batches[2:] for i in b]


def test_a_rotation_never_overwrites_a_file_past_a_gap_in_the_numbers(log_dir: Path) -> None:
    # Given rotated files .1 and .3 (an operator removed .2)
    log_dir.mkdir()
    for name in ("error.log", "error.log.1", "error.log.3"):
        (log_dir / name).write_text(f"{name}\n")
    # When the file is rotated, Then every file moves up by one and none is lost
    rotate(log_dir / "error.log", keep=10)
    assert {p.name: p.read_text() for p in log_dir.iterdir()} == {
        "error.log.1": "error.log\n",
        "error.log.2": "error.log.1\n",
        "error.log.4": "error.log.3\n",
    }


def test_daily_rotation_happens_at_the_first_write_after_midnight_utc(
    make_sink: SinkMaker, log_dir: Path
) -> None:
    sink = make_sink(rotation=RotationPolicy(daily=True))
    yesterday = write(sink, "a", 2)
    os.utime(log_dir / "error.log", (YESTERDAY, YESTERDAY))  # last written yesterday
    today = write(sink, "b", 2)
    later_today = write(sink, "c", 2)
    assert file_ids(log_dir / "error.log.1") == yesterday
    assert file_ids(log_dir / "error.log") == today + later_today


def test_an_idle_file_is_rotated_at_the_maintenance_turn_after_midnight(
    make_sink: SinkMaker, log_dir: Path
) -> None:
    sink = make_sink(rotation=RotationPolicy(daily=True))
    yesterday = write(sink, "a", 2)
    os.utime(log_dir / "error.log", (YESTERDAY, YESTERDAY))
    sink.maintain()  # the consumer's maintenance turn, with no message to write
    assert file_ids(log_dir / "error.log.1") == yesterday
    assert (log_dir / "error.log").read_bytes() == b""  # a fresh file, as logrotate's create makes


def test_an_empty_file_is_never_rotated(make_sink: SinkMaker, log_dir: Path) -> None:
    sink = make_sink(rotation=RotationPolicy(daily=True, max_bytes=10))
    log_dir.joinpath("error.log").touch()
    os.utime(log_dir / "error.log", (YESTERDAY, YESTERDAY))
    sink.maintain()
    assert sorted(path.name for path in log_dir.iterdir()) == ["error.log"]


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_rotated_files_are_gzipped_in_the_background(make_sink: SinkMaker, log_dir: Path) -> None:
    # Given a sink that compresses, with three rotations behind it
    sink = make_sink(rotation=RotationPolicy(max_bytes=300, keep=10, compress=True))
    written = [i for n in range(4) for i in write(sink, f"b{n}", 4)]
    # When its maintenance turn comes
    sink.maintain()
    # Then the rotated files become .gz, with the same lines, and no temporary file stays behind
    wait_for(lambda: len(list(log_dir.glob("*.gz"))) == 3, "three .gz files")
    wait_for(lambda: len(os.listdir(log_dir)) == 4, "the plain rotated files to go")
    assert sorted(os.listdir(log_dir)) == ["error.log", "error.log.1.gz", "error.log.2.gz", "error.log.3.gz"]
    assert in_order(log_dir) == written


def test_a_rotated_file_a_journal_record_refers_to_is_compressed_only_once_settled(
    make_sink: SinkMaker, log_dir: Path
) -> None:
    # Given an effectively-once consumer that wrote a batch, not acknowledged yet (its record is journaled)
    policy = RotationPolicy(max_bytes=300, keep=10, compress=True)
    writer, other = (
        make_sink("effectively_once", "web-1", rotation=policy),
        make_sink("effectively_once", "web-2", rotation=policy),
    )
    first = write(writer, "a", 4, settle=False)
    # When another consumer's write rotates the file, and compression runs
    second = write(other, "b", 4)
    assert other._compressor is not None
    other._compressor.compress_all()
    # Then the rotated file stays plain: recovery must be able to find the record's bytes by its inode
    assert file_ids(log_dir / "error.log.1") == first
    assert writer.already_written(batch("a", 4)[1]) == set(batch("a", 4)[1])
    # And once the batch is acknowledged, it is compressed
    writer.settled()
    other._compressor.compress_all()
    assert file_ids(log_dir / "error.log.1.gz") == first
    assert file_ids(log_dir / "error.log") == second


@pytest.mark.parametrize("mode", MODES)
def test_consumers_sharing_a_folder_rotate_each_file_once_and_lose_nothing(
    make_sink: SinkMaker, log_dir: Path, mode: str
) -> None:
    # Given four consumers on one folder, each in a thread, rotating at 3,000 bytes
    policy = RotationPolicy(max_bytes=3000, keep=10_000)
    sinks = [make_sink(mode, f"web-{n}", rotation=policy) for n in range(4)]
    written: list[list[str]] = [[] for _ in sinks]

    def work(n: int) -> None:
        rng = random.Random(n)
        for k in range(80):
            written[n] += write(sinks[n], f"w{n}-{k:02d}", rng.randint(1, 10))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(len(sinks))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Then every line is in one file, once, whole; and each rotated file was full when rotated (a file
    # rotated twice would leave a small one behind)
    union = Union.read(log_dir)
    assert union.once([i for ids in written for i in ids])
    largest_batch = 10 * 55
    rotated = [path for path in log_dir.iterdir() if path.name != "error.log"]
    assert len(rotated) > 20
    assert all(3000 - largest_batch < path.stat().st_size <= 3000 for path in rotated)


def test_rotation_settings_come_from_the_config_file_and_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "msgrelay.toml"
    config.write_text(
        "[consumer.rotation]\nmax_bytes = 104857600\ndaily = true\nkeep = 14\ncompress = true\n"
    )
    rotation = load_settings(config).consumer.rotation
    assert rotation.model_dump() == {"max_bytes": 104857600, "daily": True, "keep": 14, "compress": True}
    monkeypatch.setenv("MSGRELAY_CONSUMER__ROTATION__KEEP", "3")
    assert load_settings(config).consumer.rotation.keep == 3
    monkeypatch.setenv("MSGRELAY_CONSUMER__ROTATION__KEPT", "3")
    with pytest.raises(ConfigError, match="MSGRELAY_CONSUMER__ROTATION__KEPT"):
        load_settings(config)


@pytest.mark.parametrize(
    ("table", "problem"),
    [("max_size = 1", "max_size"), ("keep = 0", "keep"), ("max_bytes = -1", "max_bytes")],
)
def test_a_wrong_rotation_setting_is_refused_naming_it(tmp_path: Path, table: str, problem: str) -> None:
    config = tmp_path / "msgrelay.toml"
    config.write_text(f"[consumer.rotation]\n{table}\n")
    with pytest.raises(ConfigError, match=rf"consumer\.rotation\.{problem}"):
        load_settings(config)


def test_msgrelay_consume_rotates_as_configured(
    run_cli: Callable[..., object], redis_url: str, tmp_path: Path
) -> None:
    # Given a config file with built-in rotation, and 200 queued ERROR messages
    (tmp_path / "msgrelay.toml").write_text("[consumer.rotation]\nmax_bytes = 4000\nkeep = 100\n")
    producer_settings = load_settings(None, {"redis": {"url": redis_url}})
    with Producer.from_settings(producer_settings) as producer:
        sent = producer.send_many([("ERROR", f"line {n}") for n in range(200)])
    # When msgrelay consume drains them in batches of 20
    result = run_cli("consume", "--burst", "--batch-size", "20", "--log-dir", "logs")
    # Then they are spread over rotated files of at most 4,000 bytes, each line once
    assert result.returncode == 0, result.stderr  # type: ignore[attr-defined]
    union = Union.read(tmp_path / "logs")
    assert union.once(sent)
    assert len(union.files) > 2
    assert all((tmp_path / "logs" / name).stat().st_size <= 4000 for name in union.files)
