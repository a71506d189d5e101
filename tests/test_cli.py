"""The `msgrelay` command end to end: real processes against the private redis-server of conftest.

Every test reads what a user would read (exit codes, stdout, stderr, the log files, `stats --json`).
Nothing waits on a clock: `consume --burst` drains and exits, and the SIGTERM test waits for the
consumer's first batch line on its stdout.
"""

from __future__ import annotations

import json
import random
import re
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import redis

from msgrelay import __version__
from msgrelay.cli import ExitCode
from msgrelay.config import Settings
from msgrelay.levels import TYPE_FILES
from msgrelay.redis_server import free_tcp_port
from msgrelay.transport import create_transport

RunCli = Callable[..., subprocess.CompletedProcess[str]]
SpawnCli = Callable[..., subprocess.Popen[str]]

BATCH_LINE = re.compile(
    r"^(?P<time>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) batch(?:es)? (?P<first>\d+)(?:-(?P<last>\d+))?: "
    r"(?P<fetched>\d+) messages?, (?P<written>\d+) written, (?P<dead>\d+) dead-lettered, "
    r"success (?P<rate>[\d.]+)%"
)
TOTALS_LINE = re.compile(
    r"^(?P<how>done|stopped by signal[^:]*): (?P<batches>\d+) batch(?:es)?, (?P<fetched>\d+) messages?, "
    r"(?P<written>\d+) written, (?P<dead>\d+) dead-lettered(?:, success (?P<rate>[\d.]+)%)?, "
    r"in (?P<elapsed>[\d.]+)s(?: \((?P<elapsed_rate>[\d,]+) msgs/s\))?, "
    r"busy (?P<busy>[\d.]+)s(?: \((?P<busy_rate>[\d,]+) msgs/s\))?$"
)


# ------------------------------------------------------------------------------------------------ helpers


@dataclass(frozen=True)
class LogLine:
    file: str
    type: str
    id: str
    text: str
    fields: dict[str, Any] = field(default_factory=dict)


def _parse_text_line(file: str, line: str) -> LogLine:
    """``<iso ts> <TYPE> <id> <text> [json fields]``."""
    ts, msg_type, msg_id, rest = line.split(" ", 3)
    assert datetime.fromisoformat(ts).tzinfo is not None, line
    text, fields = rest, {}
    if rest.endswith("}") and ' {"' in rest:
        text, _, tail = rest.rpartition(' {"')
        fields = json.loads('{"' + tail)
    return LogLine(file, msg_type, msg_id, text, fields)


def _parse_json_line(file: str, line: str) -> LogLine:
    record = json.loads(line)
    assert datetime.fromisoformat(record.pop("ts")).tzinfo is not None, line
    return LogLine(file, record.pop("type"), record.pop("id"), record.pop("text"), record)


def _log_lines(log_dir: Path, line_format: str = "text") -> list[LogLine]:
    """Every line of every file in ``log_dir``, parsed (a line that does not parse fails the test)."""
    parse = _parse_json_line if line_format == "json" else _parse_text_line
    return [
        parse(path.name, line)
        for path in sorted(log_dir.iterdir())
        for line in path.read_text(encoding="utf-8").splitlines()
    ]


def _ledger(path: Path) -> dict[str, str]:
    """``--id-log`` lines ``<id> <TYPE>`` as id -> type (fails on a repeated id)."""
    pairs = [line.split() for line in path.read_text(encoding="utf-8").splitlines()]
    ledger = dict(pairs)
    assert len(ledger) == len(pairs), "the producer logged an id twice"
    return ledger


def _assert_each_id_once_in_its_file(lines: list[LogLine], ledger: dict[str, str]) -> None:
    seen = Counter(line.id for line in lines)
    duplicates = {msg_id: n for msg_id, n in seen.items() if n > 1}
    assert not duplicates, f"{len(duplicates)} ids written more than once, e.g. {list(duplicates)[:3]}"
    assert set(seen) == set(ledger), (
        f"missing {len(set(ledger) - set(seen))}, unexpected {len(set(seen) - set(ledger))}"
    )
    for line in lines:
        assert line.type == ledger[line.id], line
        assert line.file == TYPE_FILES[line.type], line


def _totals(stdout: str) -> dict[str, str]:
    matches = [m for line in stdout.splitlines() if (m := TOTALS_LINE.match(line))]
    assert len(matches) == 1, stdout
    return matches[0].groupdict()


def _batch_lines(stdout: str) -> list[dict[str, str]]:
    return [m.groupdict() for line in stdout.splitlines() if (m := BATCH_LINE.match(line))]


def _stats(run_cli: RunCli, transport: str) -> dict[str, Any]:
    result = run_cli("stats", "--json", "-t", transport)
    assert result.returncode == 0, result.stderr
    stats: dict[str, Any] = json.loads(result.stdout)
    return stats


def _produce(run_cli: RunCli, transport: str, count: int, *extra: str) -> None:
    result = run_cli("produce", "--count", str(count), "-q", "--transport", transport, *extra)
    assert result.returncode == 0, result.stderr
    assert f"sent {count} message{'' if count == 1 else 's'} " in result.stdout


# ------------------------------------------------------------------------- 1. produce -> consume -> files


@pytest.mark.parametrize("line_format", ["text", "json"])
def test_every_produced_message_is_written_exactly_once_to_the_file_of_its_type(
    run_cli: RunCli, transport_name: str, tmp_path: Path, line_format: str
) -> None:
    # Given: 3000 generated messages and the producer's ledger of their ids and types
    _produce(run_cli, transport_name, 3000, "--seed", "1", "--id-log", "ids.txt")
    ledger = _ledger(tmp_path / "ids.txt")
    assert len(ledger) == 3000
    assert set(ledger.values()) == set(TYPE_FILES)  # the generator makes all four types

    # When
    consumed = run_cli(
        "consume", "--burst", "--batch-size", "128", "--log-dir", "logs",
        "--format", line_format, "--transport", transport_name,
    )  # fmt: skip

    # Then: the four files, each id once, in the file of its type, with its fields
    assert consumed.returncode == 0, consumed.stderr
    assert sorted(p.name for p in (tmp_path / "logs").iterdir()) == sorted(TYPE_FILES.values())
    lines = _log_lines(tmp_path / "logs", line_format)
    _assert_each_id_once_in_its_file(lines, ledger)
    assert all(set(line.fields) >= {"host", "app"} and line.text for line in lines)

    # And the output reports the batches and the totals
    totals = _totals(consumed.stdout)
    assert totals["how"] == "done"
    assert (totals["fetched"], totals["written"], totals["dead"]) == ("3000", "3000", "0")
    assert totals["batches"] == str(-(-3000 // 128))
    assert totals["rate"] == "100.0"
    batches = _batch_lines(consumed.stdout)
    assert batches, consumed.stdout
    assert all(b["rate"] == "100.0" for b in batches)


def test_batch_lines_account_for_every_batch_of_the_run(run_cli: RunCli, transport_name: str) -> None:
    """Fast batches are coalesced into one line, but the last ones of a run must be reported too."""
    _produce(run_cli, transport_name, 1000)
    consumed = run_cli("consume", "--burst", "-b", "100", "--log-dir", "logs", "-t", transport_name)
    assert consumed.returncode == 0, consumed.stderr
    batches = _batch_lines(consumed.stdout)
    assert sum(int(b["fetched"]) for b in batches) == 1000, consumed.stdout
    assert sum(int(b["written"]) for b in batches) == 1000
    assert batches[0]["first"] == "1"
    assert (batches[-1]["last"] or batches[-1]["first"]) == _totals(consumed.stdout)["batches"] == "10"


def test_quiet_consume_prints_only_the_start_and_the_totals(run_cli: RunCli, tmp_path: Path) -> None:
    _produce(run_cli, "streams", 300)
    consumed = run_cli("consume", "--burst", "-q", "-b", "50", "--log-dir", "logs")
    assert consumed.returncode == 0, consumed.stderr
    assert _batch_lines(consumed.stdout) == []
    assert _totals(consumed.stdout)["written"] == "300"
    assert len(_log_lines(tmp_path / "logs")) == 300


# -------------------------------------------------------------------------------- 2. parallel consumers


def test_two_consumers_in_parallel_share_the_backlog_and_never_write_an_id_twice(
    run_cli: RunCli, spawn_cli: SpawnCli, transport_name: str, tmp_path: Path
) -> None:
    # Given: a backlog big enough that both consumers are still draining when the second one starts
    # (200 batches with a 30 ms pause each take one consumer alone at least 6 s)
    _produce(run_cli, transport_name, 20000, "--id-log", "ids.txt")
    ledger = _ledger(tmp_path / "ids.txt")

    # When: two burst consumers start at the same time, writing into the same folder
    common = ("consume", "--burst", "-b", "100", "--processing-delay", "0.03", "--log-dir", "logs",
              "-t", transport_name)  # fmt: skip
    consumers = {name: spawn_cli(*common, "--name", name) for name in ("a", "b")}
    outputs = {name: process.communicate(timeout=60) for name, process in consumers.items()}

    # Then: both did part of the work, together all of it, and no id was written twice
    written = {}
    for name, process in consumers.items():
        stdout, stderr = outputs[name]
        assert process.returncode == 0, stderr
        totals = _totals(stdout)
        assert totals["dead"] == "0"
        written[name] = int(totals["written"])
    assert written["a"] > 0 and written["b"] > 0, written
    assert written["a"] + written["b"] == 20000
    _assert_each_id_once_in_its_file(_log_lines(tmp_path / "logs"), ledger)
    stats = _stats(run_cli, transport_name)
    assert stats["processed"] == 20000
    assert stats["backlog"] == 0
    assert stats["pending_by_consumer"] == {}  # both held nothing at exit and left the group


# ------------------------------------------------------------------------------------------------ 3. send


def test_send_prints_the_id_and_the_line_in_error_log_carries_it_and_its_field(
    run_cli: RunCli, transport_name: str, tmp_path: Path
) -> None:
    sent = run_cli(
        "send", "--type", "ERROR", "disk full on /var", "--field", "host=web1", "-t", transport_name
    )
    assert sent.returncode == 0, sent.stderr
    msg_id = sent.stdout.strip()
    assert msg_id and len(msg_id.split()) == 1 and sent.stdout.count("\n") == 1

    consumed = run_cli("consume", "--burst", "--log-dir", "logs", "-t", transport_name)

    assert consumed.returncode == 0, consumed.stderr
    assert [p.name for p in (tmp_path / "logs").iterdir()] == ["error.log"]
    assert _log_lines(tmp_path / "logs") == [
        LogLine("error.log", "ERROR", msg_id, "disk full on /var", {"host": "web1"})
    ]


def test_send_accepts_a_level_synonym_and_keeps_the_word(run_cli: RunCli, tmp_path: Path) -> None:
    sent = run_cli("send", "--type", "critical", "raid degraded")
    assert sent.returncode == 0, sent.stderr
    assert run_cli("consume", "--burst", "--log-dir", "logs").returncode == 0
    [line] = _log_lines(tmp_path / "logs")
    assert (line.file, line.type, line.id, line.text) == (
        "error.log",
        "ERROR",
        sent.stdout.strip(),
        "raid degraded",
    )
    assert line.fields == {"level": "critical"}


def test_send_with_an_unknown_type_exits_invalid_message_with_one_line_and_sends_nothing(
    run_cli: RunCli, redis_client: redis.Redis
) -> None:
    result = run_cli("send", "--type", "bogus", "hello")
    assert result.returncode == ExitCode.INVALID_MESSAGE
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
    assert "bogus" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert redis_client.exists("msgrelay:logs") == 0


def test_send_with_a_field_that_is_not_key_value_is_a_usage_error(run_cli: RunCli) -> None:
    result = run_cli("send", "hello", "--field", "novalue")
    assert result.returncode == ExitCode.USAGE
    assert "key=value" in result.stderr


# ------------------------------------------------------------------------------------- 4. compatibility


def test_legacy_lpush_entries_are_filed_by_level_with_non_ascii_text_intact(
    run_cli: RunCli, redis_client: redis.Redis, tmp_path: Path
) -> None:
    # Given: what an existing producer pushes today, JSON and plain lines
    redis_client.lpush(
        "message_buffer",
        '{"type":"error","message":"naïve café ☕"}',
        "WARN: plain text line",
        "no level here",
    )
    # When
    consumed = run_cli("consume", "--burst", "--log-dir", "logs", "--transport", "lists")
    # Then
    assert consumed.returncode == 0, consumed.stderr
    assert _totals(consumed.stdout)["written"] == "3"
    by_file = {line.file: line for line in _log_lines(tmp_path / "logs")}
    assert set(by_file) == {"error.log", "warning.log", "info.log"}
    assert (by_file["error.log"].type, by_file["error.log"].text) == ("ERROR", "naïve café ☕")
    assert (by_file["warning.log"].type, by_file["warning.log"].text) == ("WARNING", "plain text line")
    assert (by_file["info.log"].type, by_file["info.log"].text) == ("INFO", "no level here")
    assert "naïve café ☕".encode() in (tmp_path / "logs" / "error.log").read_bytes()  # UTF-8, not escaped
    assert len({line.id for line in by_file.values()}) == 3
    assert redis_client.llen("message_buffer") == 0


# ----------------------------------------------------------------------------------------------- 5. stats


def test_stats_reports_produced_processed_backlog_dead_letters_pending_and_memory(
    run_cli: RunCli, redis_client: redis.Redis, transport_name: str
) -> None:
    # Given: 100 produced messages and one malformed entry pushed by hand, all consumed
    _produce(run_cli, transport_name, 100)
    if transport_name == "streams":
        redis_client.xadd("msgrelay:logs", {"m": b"{not json"})
    else:
        redis_client.lpush("message_buffer", b"{not json")
    consumed = run_cli("consume", "--burst", "--name", "w1", "--log-dir", "logs", "-t", transport_name)
    assert consumed.returncode == 0, consumed.stderr
    assert _totals(consumed.stdout)["dead"] == "1"

    # When
    stats = _stats(run_cli, transport_name)

    # Then
    assert stats["transport"] == transport_name
    assert stats["produced"] == 100
    assert stats["processed"] == 100
    assert stats["backlog"] == 0
    assert sum(stats["processed_by_type"].values()) == 100
    assert set(stats["processed_by_type"]) <= set(TYPE_FILES)
    assert stats["dead_lettered"] == 1
    assert stats["dead_letter_store"] == 1
    assert stats["pending_by_consumer"] == {}  # w1 held nothing at exit and left
    assert stats["redis_used_memory_bytes"] > 0

    # And the human table shows the same things
    human = run_cli("stats", "-t", transport_name)
    assert human.returncode == 0, human.stderr
    for word in ("produced", "processed", "backlog", "dead-lettered", "redis used memory"):
        assert word in human.stdout, word
    assert re.search(r"\bproduced\W+100\b", human.stdout), human.stdout
    assert re.search(r"\bprocessed\W+100\b", human.stdout), human.stdout


def test_stats_shows_consumer_names_verbatim(
    run_cli: RunCli, transport_name: str, make_settings: Callable[..., Settings]
) -> None:
    """Names are data, not markup: brackets are shown as typed and never crash the command."""
    _produce(run_cli, transport_name, 5)
    consumed = run_cli("consume", "--burst", "--name", "w[bold]0", "--log-dir", "logs", "-t", transport_name)
    assert consumed.returncode == 0, consumed.stderr
    assert "consumer w[bold]0 reading" in consumed.stdout
    _produce(run_cli, transport_name, 2)
    holder = create_transport(make_settings(transport_name))
    for name in ("w[bold]1", "w[/x]2"):  # each holds one entry, so stats lists it
        assert len(holder.fetch(name, 1, 0)) == 1
    holder.close()
    human = run_cli("stats", "-t", transport_name)
    assert human.returncode == 0, human.stderr
    assert "pending: w[bold]1" in human.stdout
    assert "pending: w[/x]2" in human.stdout


# ---------------------------------------------------------------------------------------------- 6. config


def test_config_show_prints_the_effective_config_as_json_with_the_password_masked(run_cli: RunCli) -> None:
    result = run_cli("config", "show", "--redis-url", "redis://:hunter2@example:6379/0", url=False)
    assert result.returncode == 0, result.stderr
    assert "hunter2" not in result.stdout + result.stderr
    shown = json.loads(result.stdout)
    assert set(shown) == {"redis", "queue", "producer", "consumer", "deadletter", "alerts", "monitor"}
    assert shown["redis"]["url"] == "redis://:***@example:6379/0"
    assert shown["redis"]["effective_url"] == "redis://:***@example:6379/0"
    assert shown["queue"]["transport"] == "streams"
    assert shown["consumer"]["batch_size"] == 500


def test_config_show_masks_a_password_set_in_the_file(run_cli: RunCli, tmp_path: Path) -> None:
    (tmp_path / "msgrelay.toml").write_text('[redis]\nhost = "cache.internal"\npassword = "s3cr3t-file"\n')
    result = run_cli("config", "show", url=False)
    assert result.returncode == 0, result.stderr
    assert "s3cr3t-file" not in result.stdout
    shown = json.loads(result.stdout)
    assert shown["redis"]["password"] == "***"
    assert shown["redis"]["effective_url"] == "redis://:***@cache.internal:6379/0"


def test_config_show_takes_env_vars(run_cli: RunCli) -> None:
    result = run_cli("config", "show", env={"MSGRELAY_CONSUMER__BATCH_SIZE": "7"}, url=False)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["consumer"]["batch_size"] == 7


def test_config_precedence_is_flag_then_env_then_file_then_default(run_cli: RunCli, tmp_path: Path) -> None:
    (tmp_path / "msgrelay.toml").write_text(
        '[redis]\nurl = "redis://from-file:1/0"\n'
        '[queue]\ntransport = "lists"\n'
        "[consumer]\nbatch_size = 5\nblock_timeout_s = 2.5\n"
    )
    env = {
        "MSGRELAY_REDIS__URL": "redis://from-env:2/0",
        "MSGRELAY_QUEUE__TRANSPORT": "streams",
        "MSGRELAY_CONSUMER__BATCH_SIZE": "7",
    }
    result = run_cli(
        "config", "show", "--redis-url", "redis://from-flag:3/0", "--transport", "lists", env=env, url=False
    )
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["redis"]["url"] == "redis://from-flag:3/0"  # flag beats env and file
    assert shown["queue"]["transport"] == "lists"  # flag beats env
    assert shown["consumer"]["batch_size"] == 7  # env beats file
    assert shown["consumer"]["block_timeout_s"] == 2.5  # file beats default
    assert shown["consumer"]["batch_wait_s"] == 0.0  # default

    without_flags = json.loads(run_cli("config", "show", env=env, url=False).stdout)
    assert without_flags["redis"]["url"] == "redis://from-env:2/0"  # env beats file
    assert without_flags["queue"]["transport"] == "streams"


def test_an_unknown_env_var_is_a_config_error_that_names_it(run_cli: RunCli) -> None:
    result = run_cli("config", "show", env={"MSGRELAY_CONSUMER__BATCHSIZE": "1"}, url=False)
    assert result.returncode == ExitCode.CONFIG_ERROR
    assert "MSGRELAY_CONSUMER__BATCHSIZE" in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stdout == ""


def test_an_unknown_key_in_the_config_file_is_a_config_error_that_names_it(
    run_cli: RunCli, tmp_path: Path
) -> None:
    (tmp_path / "msgrelay.toml").write_text("[consumer]\nbatch_sise = 5\n")
    result = run_cli("config", "show", url=False)
    assert result.returncode == ExitCode.CONFIG_ERROR
    assert "batch_sise" in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_an_unknown_transport_is_a_config_error_before_anything_runs(run_cli: RunCli) -> None:
    result = run_cli("consume", "--burst", "--transport", "kafka")
    assert result.returncode == ExitCode.CONFIG_ERROR
    assert "transport" in result.stderr
    assert result.stdout == ""


# ------------------------------------------------------------------------------------- 7. unreachable Redis


@pytest.mark.parametrize(
    "command", [("consume", "--burst"), ("produce", "--count", "1", "-q"), ("stats",)], ids=lambda c: c[0]
)
def test_unreachable_redis_exits_redis_unavailable_with_one_masked_line(
    run_cli: RunCli, command: tuple[str, ...]
) -> None:
    port = free_tcp_port()
    result = run_cli(*command, "--redis-url", f"redis://:topsecret@127.0.0.1:{port}/0", url=False, timeout=30)
    assert result.returncode == ExitCode.REDIS_UNAVAILABLE, result.stderr
    assert result.stderr.endswith("\n") and result.stderr.count("\n") == 1, result.stderr
    assert "***" in result.stderr
    assert f"127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr
    assert "topsecret" not in result.stderr + result.stdout


# ------------------------------------------------------------------------------------------ 8. SIGTERM


def test_sigterm_stops_after_the_current_batch_with_nothing_lost_or_duplicated(
    run_cli: RunCli, spawn_cli: SpawnCli, transport_name: str, tmp_path: Path
) -> None:
    # Given: a backlog that takes many seconds at 100 messages per 10 ms pause
    total = 50000
    _produce(run_cli, transport_name, total, "--id-log", "ids.txt")
    ledger = _ledger(tmp_path / "ids.txt")
    consumer = spawn_cli(
        "consume", "--batch-size", "100", "--processing-delay", "0.01", "--log-dir", "logs",
        "--name", "stopper", "-t", transport_name,
    )  # fmt: skip
    assert consumer.stdout is not None

    # When: SIGTERM as soon as it has reported its first batch (an event on its stdout, not a sleep)
    head = []
    for line in consumer.stdout:
        head.append(line)
        if BATCH_LINE.match(line):
            break
    else:
        pytest.fail(f"consumer ended without a batch line: {''.join(head)} {consumer.communicate()[1]}")
    consumer.send_signal(signal.SIGTERM)
    rest, stderr = consumer.communicate(timeout=10)

    # Then: a clean exit that says why
    assert consumer.returncode == 0, stderr
    assert "Traceback" not in stderr
    totals = _totals(rest)
    assert totals["how"].startswith("stopped by signal")

    # And every written line is acknowledged and counted, none twice, none held back
    lines = _log_lines(tmp_path / "logs")
    ids = [line.id for line in lines]
    assert len(ids) == len(set(ids))
    assert 0 < len(ids) < total
    assert len(ids) == int(totals["written"])
    stats = _stats(run_cli, transport_name)
    assert stats["processed"] == len(ids)
    assert stats["pending_by_consumer"] == {}  # the stopped consumer held nothing and left
    assert stats["backlog"] == total - len(ids)

    # And the next consumer finishes the rest: every id exactly once in the end
    finished = run_cli("consume", "--burst", "-b", "500", "--log-dir", "logs", "-t", transport_name)
    assert finished.returncode == 0, finished.stderr
    assert int(_totals(finished.stdout)["written"]) == total - len(ids)
    _assert_each_id_once_in_its_file(_log_lines(tmp_path / "logs"), ledger)


# -------------------------------------------------------------------------------------------- 9. the CLI


def test_version_prints_the_package_version(run_cli: RunCli) -> None:
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"msgrelay {__version__}"


def test_help_lists_the_commands(run_cli: RunCli) -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("send", "produce", "consume", "stats", "config"):
        assert re.search(rf"^\W*{command} {{2,}}\S", result.stdout, re.MULTILINE), command  # name, summary


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("consume", "--no-such-option"), "--no-such-option"),
        (("no-such-command",), "no-such-command"),
        (("produce", "--count", "many"), "--count"),
    ],
    ids=["unknown-option", "unknown-command", "not-an-integer"],
)
def test_bad_usage_exits_with_code_2_and_names_the_problem(
    run_cli: RunCli, args: tuple[str, ...], named: str
) -> None:
    result = run_cli(*args)
    assert result.returncode == ExitCode.USAGE == 2
    assert named in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


@pytest.mark.timeout(120)
def test_effectively_once_consumer_killed_repeatedly_leaves_every_id_exactly_once(
    run_cli: RunCli, spawn_cli: SpawnCli, transport_name: str, tmp_path: Path
) -> None:
    # Given: a backlog, and a consumer in effectively-once mode
    total = 30000
    _produce(run_cli, transport_name, total, "--id-log", "ids.txt")
    ledger = _ledger(tmp_path / "ids.txt")
    # (fsync widens the window between a batch's write and its ack, where an at-least-once kill duplicates)
    common = ("consume", "--batch-size", "200", "--fsync", "--log-dir", "logs", "--name", "w", "--delivery",
              "effectively_once", "-t", transport_name)  # fmt: skip

    # When: it is SIGKILLed eight times while busy, restarting each time: the kill lands at a random instant
    # (0-20 ms) after it reported a batch, i.e. anywhere in the fetch-write-fsync-ack cycle of later ones
    chaos = random.Random(20261125)
    for _ in range(8):
        consumer = spawn_cli(*common)
        assert consumer.stdout is not None
        for line in consumer.stdout:
            if BATCH_LINE.match(line):
                break
        time.sleep(chaos.uniform(0, 0.02))  # fault injection timing, not synchronisation
        consumer.kill()
        consumer.communicate(timeout=10)
    finished = run_cli(*common, "--burst")
    assert finished.returncode == 0, finished.stderr

    # Then: every id is in its file exactly once: no loss, no duplicate line, no torn line
    _assert_each_id_once_in_its_file(_log_lines(tmp_path / "logs"), ledger)
    stats = _stats(run_cli, transport_name)
    assert stats["pending_by_consumer"] == {}
