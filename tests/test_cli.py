"""The `msgrelay` command end to end, as real processes against our private redis-server."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from msgrelay.cli import ExitCode
from msgrelay.levels import TYPE_FILES
from msgrelay.redis_server import free_tcp_port

RunCli = Callable[..., subprocess.CompletedProcess[str]]


def _ids_by_file(log_dir: Path, line_format: str = "text") -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in sorted(log_dir.iterdir()):
        lines = path.read_text(encoding="utf-8").splitlines()
        if line_format == "json":
            found[path.name] = [json.loads(line)["id"] for line in lines]
        else:
            found[path.name] = [line.split(" ", 3)[2] for line in lines]
    return found


@pytest.mark.parametrize("line_format", ["text", "json"])
def test_every_produced_id_lands_once_in_the_file_of_its_type(
    run_cli: RunCli, transport_name: str, tmp_path: Path, line_format: str
) -> None:
    # Given: 3000 generated messages, with a ledger of their ids and types
    produced = run_cli(
        "produce", "-n", "3000", "--seed", "1", "--id-log", "ids.txt", "-q", "-t", transport_name
    )
    assert produced.returncode == 0, produced.stderr
    ledger = dict(line.split() for line in (tmp_path / "ids.txt").read_text().splitlines())
    assert len(ledger) == 3000
    # When
    consumed = run_cli(
        "consume", "--burst", "-b", "128", "--log-dir", "logs", "--format", line_format, "-t", transport_name
    )
    # Then
    assert consumed.returncode == 0, consumed.stderr
    assert "success 100.0%" in consumed.stdout
    assert "3000 written, 0 dead-lettered" in consumed.stdout
    by_file = _ids_by_file(tmp_path / "logs", line_format)
    assert set(by_file) <= set(TYPE_FILES.values())
    seen = Counter(msg_id for ids in by_file.values() for msg_id in ids)
    assert set(seen) == set(ledger)
    assert max(seen.values()) == 1
    for name, ids in by_file.items():
        assert all(TYPE_FILES[ledger[msg_id]] == name for msg_id in ids)


def test_send_prints_the_id_and_the_line_carries_it_and_its_fields(
    run_cli: RunCli, transport_name: str, tmp_path: Path
) -> None:
    sent = run_cli(
        "send", "--type", "ERROR", "disk full on /var", "--field", "host=web1", "-t", transport_name
    )
    assert sent.returncode == 0, sent.stderr
    msg_id = sent.stdout.strip()
    assert run_cli("consume", "--burst", "--log-dir", "logs", "-t", transport_name).returncode == 0
    line = (tmp_path / "logs" / "error.log").read_text(encoding="utf-8")
    assert f" ERROR {msg_id} disk full on /var " in line
    assert '"host":"web1"' in line


def test_send_with_an_unknown_type_is_refused_with_one_line(run_cli: RunCli) -> None:
    result = run_cli("send", "--type", "bogus", "hello")
    assert result.returncode == ExitCode.INVALID_MESSAGE
    assert result.stderr.strip().count("\n") == 0
    assert "bogus" in result.stderr


def test_legacy_lpush_entries_are_consumed_by_the_lists_transport(
    run_cli: RunCli, redis_client: redis.Redis, tmp_path: Path
) -> None:
    redis_client.lpush(
        "message_buffer",
        '{"type":"error","message":"naïve café ☕"}',
        "WARN: plain text line",
        "no level here",
    )
    assert run_cli("consume", "--burst", "--log-dir", "logs", "-t", "lists").returncode == 0
    logs = tmp_path / "logs"
    assert "naïve café ☕" in (logs / "error.log").read_text(encoding="utf-8")
    assert "plain text line" in (logs / "warning.log").read_text(encoding="utf-8")
    assert "no level here" in (logs / "info.log").read_text(encoding="utf-8")


def test_stats_reports_produced_processed_backlog_and_dead_letters(
    run_cli: RunCli, redis_client: redis.Redis, transport_name: str
) -> None:
    assert run_cli("produce", "-n", "100", "-q", "-t", transport_name).returncode == 0
    queue = "msgrelay:logs" if transport_name == "streams" else "message_buffer"
    if transport_name == "streams":
        redis_client.xadd(queue, {"m": b"{not json"})
    else:
        redis_client.lpush(queue, b"{not json")
    assert run_cli("consume", "--burst", "--log-dir", "logs", "-t", transport_name).returncode == 0
    result = run_cli("stats", "--json", "-t", transport_name)
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout)
    assert stats["produced"] == 100
    assert stats["processed"] == 100
    assert sum(stats["processed_by_type"].values()) == 100
    assert stats["backlog"] == 0
    assert stats["dead_lettered"] == 1
    assert all(pending == 0 for pending in stats["pending_by_consumer"].values())
    assert stats["redis_used_memory_bytes"] > 0
    human = run_cli("stats", "-t", transport_name)
    assert "backlog" in human.stdout
    assert "dead-lettered" in human.stdout


@pytest.mark.parametrize("command", [["consume", "--burst"], ["produce", "-n", "1", "-q"], ["stats"]])
def test_unreachable_redis_is_one_line_with_the_password_masked(run_cli: RunCli, command: list[str]) -> None:
    url = f"redis://:topsecret@127.0.0.1:{free_tcp_port()}/0"
    result = run_cli(*command, "--redis-url", url, url=False)
    assert result.returncode == ExitCode.REDIS_UNAVAILABLE
    assert len(result.stderr.strip().splitlines()) == 1
    assert "***" in result.stderr
    assert "topsecret" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_config_show_masks_secrets_and_applies_precedence(run_cli: RunCli, tmp_path: Path) -> None:
    (tmp_path / "msgrelay.toml").write_text("[consumer]\nbatch_size = 5\nblock_timeout_s = 2.0\n")
    result = run_cli(
        "config", "show", "--redis-url", "redis://:hunter2@example:6379/0",
        env={"MSGRELAY_CONSUMER__BATCH_SIZE": "7"}, url=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "hunter2" not in result.stdout
    shown = json.loads(result.stdout)
    assert shown["redis"]["url"] == "redis://:***@example:6379/0"
    assert shown["consumer"]["batch_size"] == 7  # env beats file
    assert shown["consumer"]["block_timeout_s"] == 2.0  # file beats default


def test_unknown_settings_are_config_errors_that_name_them(run_cli: RunCli, tmp_path: Path) -> None:
    env_typo = run_cli("config", "show", env={"MSGRELAY_CONSUMER__BATCHSIZE": "1"}, url=False)
    assert env_typo.returncode == ExitCode.CONFIG_ERROR
    assert "MSGRELAY_CONSUMER__BATCHSIZE" in env_typo.stderr
    (tmp_path / "msgrelay.toml").write_text("[consumer]\nbatch_sise = 5\n")
    file_typo = run_cli("config", "show", url=False)
    assert file_typo.returncode == ExitCode.CONFIG_ERROR
    assert "batch_sise" in file_typo.stderr


def test_sigterm_finishes_the_current_batch_acks_it_and_exits_zero(
    run_cli: RunCli, redis_url: str, transport_name: str, tmp_path: Path
) -> None:
    # Given: a backlog far larger than one batch
    assert (
        run_cli("produce", "-n", "20000", "-q", "--id-log", "ids.txt", "-t", transport_name).returncode == 0
    )
    consumer = subprocess.Popen(
        [sys.executable, "-m", "msgrelay", "consume", "-b", "100", "--processing-delay", "0.01",
         "--log-dir", "logs", "--name", "c1", "-t", transport_name, "--redis-url", redis_url],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert consumer.stdout is not None
    # When: SIGTERM once it has reported its first batch (an event, not a sleep)
    for line in consumer.stdout:
        if line.startswith("batch"):
            break
    consumer.send_signal(signal.SIGTERM)
    rest, _ = consumer.communicate(timeout=15)
    # Then: a clean exit, nothing left half-acknowledged, no duplicate
    assert consumer.returncode == 0
    assert "stopped by signal" in rest
    stats = json.loads(run_cli("stats", "--json", "-t", transport_name).stdout)
    assert stats["pending_by_consumer"].get("c1", 0) == 0
    written = [i for ids in _ids_by_file(tmp_path / "logs").values() for i in ids]
    assert len(written) == len(set(written)) == stats["processed"]
    assert 0 < len(written) < 20000
    # And the rest is still there for the next consumer: every id exactly once in the end
    assert run_cli("consume", "--burst", "--log-dir", "logs", "-t", transport_name).returncode == 0
    final = Counter(i for ids in _ids_by_file(tmp_path / "logs").values() for i in ids)
    ledger = {line.split()[0] for line in (tmp_path / "ids.txt").read_text().splitlines()}
    assert set(final) == ledger
    assert max(final.values()) == 1


def test_help_and_version_and_bad_usage(run_cli: RunCli) -> None:
    assert "msgrelay" in run_cli("--version").stdout
    help_text = run_cli("--help").stdout
    for command in ("produce", "consume", "send", "stats", "config", "demo"):
        assert command in help_text
    assert run_cli("consume", "--no-such-option").returncode == ExitCode.USAGE
