"""The CLI as a new user meets it on the first day (issue 10, section 8), as the real ``msgrelay`` process.

What a user reads must be right: "1 message", not "1 messages"; no "success 100.0%" when nothing was done; the
time on every batch line; rates that do not average in idle time; a lost Redis called that, not "batch not
settled"; column headers over aligned columns; progress when ``produce`` is piped; and a burst that finds
nothing says what other consumers still hold, and until when.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis

from msgrelay.config import Settings
from msgrelay.redis_server import RedisServer
from msgrelay.transport import create_transport

RunCli = Callable[..., subprocess.CompletedProcess[str]]
SpawnCli = Callable[..., subprocess.Popen[str]]

TOTALS = re.compile(
    r"^(?:done|stopped by signal[^:]*): (?P<counts>.*?)(?P<success>, success [\d.]+%)?, "
    r"in (?P<elapsed>[\d.]+)s(?: \((?P<elapsed_rate>[\d,]+) msgs/s\))?, "
    r"busy (?P<busy>[\d.]+)s(?: \((?P<busy_rate>[\d,]+) msgs/s\))?$",
    re.MULTILINE,
)


def wait_for_line(process: subprocess.Popen[str], pattern: str, *, stream: str = "stdout") -> list[str]:
    """Lines of the process' stdout (or stderr) up to the first that matches ``pattern``."""
    pipe = process.stdout if stream == "stdout" else process.stderr
    assert pipe is not None
    seen = []
    for line in pipe:
        seen.append(line)
        if re.search(pattern, line):
            return seen
    pytest.fail(f"no line matching {pattern!r}: {''.join(seen)} {process.communicate()}")


def totals(stdout: str) -> re.Match[str]:
    match = TOTALS.search(stdout)
    assert match, stdout
    return match


# --- counts, times and rates ------------------------------------------------------------------------------


def test_one_message_is_one_message_and_each_batch_line_carries_its_time(run_cli: RunCli) -> None:
    produced = run_cli("produce", "--count", "1", "-q")
    before = datetime.now(UTC)
    consumed = run_cli("consume", "--burst", "--log-dir", "logs")

    assert produced.stdout.startswith("sent 1 message to streams queue "), produced.stdout
    assert consumed.returncode == 0, consumed.stderr
    [batch] = [line for line in consumed.stdout.splitlines() if " batch 1: " in line]
    stamp, rest = batch.split(" ", 1)
    assert stamp.endswith("Z") and abs((datetime.fromisoformat(stamp) - before).total_seconds()) < 60
    assert rest.startswith("batch 1: 1 message, 1 written, 0 dead-lettered, success 100.0% | total 1 written")
    assert totals(consumed.stdout)["counts"] == "1 batch, 1 message, 1 written, 0 dead-lettered"


def test_a_run_with_nothing_to_do_claims_no_success_rate_and_no_rate(run_cli: RunCli) -> None:
    consumed = run_cli("consume", "--burst", "--log-dir", "logs")

    assert consumed.returncode == 0, consumed.stderr
    result = totals(consumed.stdout)
    assert result["counts"] == "0 batches, 0 messages, 0 written, 0 dead-lettered"
    assert result["success"] is None and "success" not in consumed.stdout
    assert (result["elapsed_rate"], result["busy_rate"]) == (None, None)


def test_the_busy_rate_leaves_out_the_time_spent_waiting_for_messages(
    run_cli: RunCli, spawn_cli: SpawnCli
) -> None:
    # Given: a consumer that waits idle for a while before any message comes
    consumer = spawn_cli("consume", "--block-timeout", "0.2", "--log-dir", "logs")
    wait_for_line(consumer, r"^consumer .* reading ")
    time.sleep(1.5)  # idle time to be left out (the condition under test, not a synchronisation)

    # When: 200 messages come, are written, and the consumer is stopped
    assert run_cli("produce", "--count", "200", "-q").returncode == 0
    wait_for_line(consumer, r"\| total 200 written$")
    consumer.send_signal(signal.SIGTERM)
    stdout, stderr = consumer.communicate(timeout=30)

    # Then: both times are given; the busy one leaves the idle second and a half out
    assert consumer.returncode == 0, stderr
    result = totals(stdout)
    elapsed, busy = float(result["elapsed"]), float(result["busy"])
    assert elapsed >= 1.5
    assert busy <= elapsed - 1.0, (elapsed, busy)
    busy_rate, elapsed_rate = (int(result[k].replace(",", "")) for k in ("busy_rate", "elapsed_rate"))
    assert busy_rate > elapsed_rate


def test_a_lost_redis_is_reported_as_such_not_as_a_batch_not_settled(
    spawn_cli: SpawnCli, tmp_path: Path
) -> None:
    # Given: a consumer of a Redis of its own, waiting for messages (it holds no batch)
    with RedisServer(tmp_path / "own-redis") as server:
        consumer = spawn_cli("consume", "--log-dir", "logs", "--redis-url", server.url, url=False)
        wait_for_line(consumer, r"^consumer .* reading ")

        # When: that Redis goes away
        server.stop()
        seen = wait_for_line(consumer, r"cannot connect to Redis at ", stream="stderr")

    # Then: the line names what failed, with the time, once for the outage (issue 10 section 2: not once
    # per retry); nothing claims a batch was held
    said = r"^\S+Z cannot connect to Redis at .*; waiting for it, msgrelay resumes by itself$"
    assert re.match(said, seen[-1]), seen[-1]
    consumer.send_signal(signal.SIGTERM)
    stdout, stderr = consumer.communicate(timeout=30)
    assert consumer.returncode == 0
    assert not any("batch not settled" in line for line in [*seen, stdout, stderr])
    assert "cannot connect to Redis at " not in stderr  # said once, though it retried until the SIGTERM


def test_notify_counts_one_alert_as_one_alert(run_cli: RunCli) -> None:
    assert run_cli("alert", "--service", "db", "connection refused").returncode == 0

    notified = run_cli("notify", "--burst")

    assert notified.returncode == 0, notified.stderr
    assert "done: 1 alert read, 0 dead-lettered; 1 notification queued, 1 sent" in notified.stderr


# --- tables ----------------------------------------------------------------------------------------------


def assert_aligned(lines: list[str], headers: list[str]) -> None:
    """Each column starts where its header does, in every line."""
    header = lines[0]
    assert header.split() == headers, header
    starts = [header.index(name) for name in headers]
    for line in lines[1:]:
        for start in starts[1:]:
            assert line[start - 2 : start] == "  " and line[start] != " ", (line, start)


def test_dlq_list_has_a_header_over_aligned_columns(run_cli: RunCli, redis_client: redis.Redis) -> None:
    redis_client.lpush(
        "message_buffer", b"{broken json", b"\xff\xfe bytes", b'{"type":"../../etc/passwd","text":"x"}'
    )
    assert run_cli("consume", "--burst", "-t", "lists", "--log-dir", "logs").returncode == 0

    listed = run_cli("dlq", "list", "-t", "lists")

    assert listed.returncode == 0, listed.stderr
    *table, summary = listed.stdout.splitlines()
    assert_aligned(table, ["ID", "REASON", "TYPE", "ORIGIN", "SIZE", "RAW"])
    assert sorted(line.split()[1] for line in table[1:]) == ["invalid_utf8", "malformed_json", "unknown_type"]
    assert summary == "3 dead letters shown, 3 in msgrelay:dlq"


def test_silence_list_has_a_header_over_aligned_columns(run_cli: RunCli) -> None:
    for service, comment in (("db", "maintenance"), ("payments-*", "card processor, 2 h")):
        assert run_cli("silence", "add", "-s", service, "--for", "2h", "--comment", comment).returncode == 0

    listed = run_cli("silence", "list")

    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert_aligned(lines, ["ID", "SERVICE", "STATE", "UNTIL", "COMMENT"])
    assert [line.split()[1:3] for line in lines[1:]] == [["db", "active"], ["payments-*", "active"]]
    assert lines[2].endswith("card processor, 2 h")


# --- a burst that finds nothing ---------------------------------------------------------------------------


def test_a_burst_says_what_another_consumer_holds_and_when_it_can_be_taken_over(
    run_cli: RunCli, make_settings: Callable[..., Settings], transport_name: str
) -> None:
    # Given: 3 messages, one of them held by a consumer that went away without settling it
    assert run_cli("produce", "--count", "3", "-q", "-t", transport_name).returncode == 0
    holder = create_transport(make_settings(transport_name))
    assert len(holder.fetch("gone", 1, 0)) == 1
    holder.close()

    # When: a burst consumer drains what it may take
    consumed = run_cli("consume", "--burst", "--log-dir", "logs", "-t", transport_name)

    # Then: it writes the other two and says why it stops with one left, and for how long
    assert consumed.returncode == 0, consumed.stderr
    assert totals(consumed.stdout)["counts"] == "1 batch, 2 messages, 2 written, 0 dead-lettered"
    notice = re.search(
        r"^1 entry pending for consumer gone, available for take-over in (\d+) s "
        r"\(consumer\.claim_idle_s = 30; `msgrelay consume --name gone` takes it back at once\)$",
        consumed.stdout,
        re.MULTILINE,
    )
    assert notice, consumed.stdout
    assert 20 <= int(notice[1]) <= 30


# --- produce, piped -------------------------------------------------------------------------------------


def test_produce_prints_plain_progress_lines_when_not_on_a_terminal(run_cli: RunCli) -> None:
    produced = run_cli("produce", "--count", "60", "--rate", "20")  # about 3 s, stdout and stderr piped

    assert produced.returncode == 0, produced.stderr
    progress = re.findall(
        r"^produced (\d+)/60 messages \([\d,]+ msgs/s\), backlog \d+$", produced.stderr, re.M
    )
    assert progress, produced.stderr
    assert all(0 < int(sent) <= 60 for sent in progress)
    assert produced.stdout == "sent 60 messages to streams queue 'msgrelay:logs'\n"
