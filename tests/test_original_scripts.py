"""Settings that do something (issue 10, section 7), run as the real ``msgrelay`` process.

The scripts msgrelay replaces ran with batch 5, a 4 s delay after each batch, a 10 s read timeout and a
producer of 20 messages 2 s apart. The README maps each to a setting and gives the ``msgrelay.toml``; these
tests run that very file: the consumer prints batches of up to 5, 4 s apart, and stops at once on SIGTERM
during its pause; ``produce`` keeps the 2 s pace and stops cleanly on SIGTERM as on SIGINT; a socket timeout
too short for a blocking read is refused with both values, by ``consume`` and by ``notify``.
"""

from __future__ import annotations

import itertools
import json
import re
import signal
import subprocess
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest
import redis

from msgrelay.cli import ExitCode

RunCli = Callable[..., subprocess.CompletedProcess[str]]
SpawnCli = Callable[..., subprocess.Popen[str]]

README = Path(__file__).resolve().parent.parent / "README.md"
BATCH = re.compile(
    r"^(?P<time>\S+Z) batch (?P<number>\d+): (?P<fetched>\d+) messages?, (?P<written>\d+) written, .*"
    r"\| total (?P<total>\d+) written$"
)


def original_scripts_config() -> str:
    """The ``msgrelay.toml`` of the README's section on the original scripts."""
    section = README.read_text(encoding="utf-8").split("### Coming from the original scripts", 1)[1]
    match = re.search(r"```toml\n(.*?)```", section, re.DOTALL)
    assert match, "the README's original-scripts section has no toml block"
    return match.group(1)


@pytest.fixture
def original_config(tmp_path: Path) -> Path:
    path = tmp_path / "msgrelay.toml"  # the working folder of run_cli / spawn_cli: read by every command
    path.write_text(original_scripts_config(), encoding="utf-8")
    return path


def read_batches(process: subprocess.Popen[str], until_total: int) -> list[re.Match[str]]:
    """The consumer's batch lines, read from its stdout as they come, up to the one reaching a total of
    ``until_total`` written."""
    assert process.stdout is not None
    batches, seen = [], []
    for line in process.stdout:
        seen.append(line)
        if (batch := BATCH.match(line.rstrip("\n"))) is not None:
            batches.append(batch)
            if int(batch["total"]) >= until_total:
                return batches
    pytest.fail(f"consumer ended before writing {until_total}: {''.join(seen)} {process.communicate()[1]}")


def test_the_original_settings_map_to_ours_as_the_readme_says(run_cli: RunCli, original_config: Path) -> None:
    shown = run_cli("config", "show")

    assert shown.returncode == 0, shown.stderr
    config = json.loads(shown.stdout)
    assert (config["consumer"]["batch_size"], config["consumer"]["processing_delay_s"]) == (5, 4.0)
    assert config["consumer"]["block_timeout_s"] == 10.0
    assert (config["producer"]["max_messages"], config["producer"]["delay_between_messages_s"]) == (20, 2.0)
    assert (config["queue"]["transport"], config["queue"]["buffer_key"]) == ("lists", "message_buffer")
    assert config["redis"]["socket_timeout_s"] == 15.0  # derived from the 10 s timeout, not refused


def test_with_the_original_settings_consume_prints_batches_of_up_to_5_every_4_seconds(
    run_cli: RunCli, spawn_cli: SpawnCli, original_config: Path
) -> None:
    # Given: 7 messages waiting (the producer's pace overridden: the consumer's pace is under test)
    produced = run_cli("produce", "--count", "7", "--delay", "0", "-q")
    assert produced.returncode == 0, produced.stderr

    # When: the consumer runs with the original settings (batch 5, delay 4 s, timeout 10 s)
    consumer = spawn_cli("consume")
    first, second = read_batches(consumer, until_total=7)
    consumer.send_signal(signal.SIGTERM)  # lands in the 4 s pause after the second batch
    rest, stderr = consumer.communicate(timeout=30)

    # Then: a full batch of 5, then the other 2 after the 4 s pause, each line with its time
    assert (first["fetched"], second["fetched"]) == ("5", "2")
    gap_s = (datetime.fromisoformat(second["time"]) - datetime.fromisoformat(first["time"])).total_seconds()
    assert 4.0 <= gap_s < 10.0, gap_s
    assert consumer.returncode == 0, stderr
    assert "stopped by signal" in rest
    assert len((original_config.parent / "application_logs" / "info.log").read_text().splitlines()) <= 7


def test_the_producer_keeps_the_original_pace_of_2_seconds(
    run_cli: RunCli, redis_client: redis.Redis, original_config: Path
) -> None:
    produced = run_cli("produce", "--count", "3", "-q")

    assert produced.returncode == 0, produced.stderr
    entries = [json.loads(raw) for raw in reversed(redis_client.lrange("message_buffer", 0, -1))]
    gaps = [later["ts"] - earlier["ts"] for earlier, later in itertools.pairwise(entries)]
    assert len(entries) == 3
    assert all(1.9 <= gap < 4.0 for gap in gaps), gaps


def test_sigterm_ends_a_long_processing_delay_at_once(run_cli: RunCli, spawn_cli: SpawnCli) -> None:
    # Given: a consumer pausing a minute after each one-message batch, and two messages
    assert run_cli("produce", "--count", "2", "-q").returncode == 0
    consumer = spawn_cli(
        "consume", "--batch-size", "1", "--processing-delay", "60", "--claim-idle", "120", "--log-dir", "logs"
    )

    # When: SIGTERM arrives during the pause after the first batch
    read_batches(consumer, until_total=1)
    signalled = time.monotonic()
    consumer.send_signal(signal.SIGTERM)
    rest, stderr = consumer.communicate(timeout=60)

    # Then: it exits at once (not after the minute), cleanly, with the second message left queued
    assert time.monotonic() - signalled < 20, "the pause was not interrupted"
    assert consumer.returncode == 0, stderr
    assert "stopped by signal after finishing its batch: 1 batch, 1 message, 1 written" in rest
    stats = json.loads(run_cli("stats", "--json").stdout)
    assert (stats["processed"], stats["backlog"]) == (1, 1)


def test_consume_takes_the_original_timeout_of_10_seconds(run_cli: RunCli) -> None:
    # block_timeout_s = 10 was refused against the default socket timeout of 10 s
    result = run_cli("consume", "--burst", "--block-timeout", "10", "--log-dir", "logs")

    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("command", "env", "message"),
    [
        (
            ("consume", "--burst", "--block-timeout", "10"),
            {"MSGRELAY_REDIS__SOCKET_TIMEOUT_S": "10"},
            "redis.socket_timeout_s = 10 must be larger than consumer.block_timeout_s = 10",
        ),
        (
            ("notify", "--burst"),
            {"MSGRELAY_REDIS__SOCKET_TIMEOUT_S": "2", "MSGRELAY_ALERTS__BLOCK_TIMEOUT_S": "5"},
            "redis.socket_timeout_s = 2 must be larger than alerts.block_timeout_s = 5",
        ),
    ],
    ids=["consume", "notify"],
)
def test_a_socket_timeout_set_shorter_than_a_blocking_read_is_refused_naming_both(
    run_cli: RunCli, command: tuple[str, ...], env: dict[str, str], message: str
) -> None:
    result = run_cli(*command, env=env)

    assert result.returncode == ExitCode.CONFIG_ERROR, result.stdout + result.stderr
    assert message in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_produce_stopped_by_a_signal_finishes_its_chunk_logs_every_id_and_exits_0(
    spawn_cli: SpawnCli, redis_client: redis.Redis, tmp_path: Path, signum: signal.Signals
) -> None:
    # Given: a producer with a long way to go, writing an id log
    producer = spawn_cli("produce", "--count", "1000000", "--rate", "2000", "--id-log", "ids.txt", "-q")
    id_log = tmp_path / "ids.txt"
    deadline = time.monotonic() + 60
    while not (id_log.exists() and id_log.stat().st_size):
        assert time.monotonic() < deadline and producer.poll() is None, "no id logged"
        time.sleep(0.05)

    # When
    producer.send_signal(signum)
    stdout, stderr = producer.communicate(timeout=60)

    # Then: exit 0, and the id log holds exactly what reached the queue, as the last line says
    assert producer.returncode == 0, stderr
    ids = id_log.read_text(encoding="utf-8").splitlines()
    sent = re.search(
        r"^stopped by signal: sent (\d+) messages? to streams queue 'msgrelay:logs'$", stdout, re.M
    )
    assert sent, stdout
    assert int(sent[1]) == len(ids) == redis_client.xlen("msgrelay:logs") > 0
    assert "Traceback" not in stderr
