"""The harness checks itself: the checker's arithmetic and torn-line detection, and the proxy's modes."""

from __future__ import annotations

import gzip
import time
from pathlib import Path

import pytest
import redis

from msgrelay.message import Message
from msgrelay.sinks.files import LogFileSink

from .conftest import MakeRun
from .harness.checker import judge, read_logs
from .harness.ledger import Ledger

pytestmark = pytest.mark.chaos


def _message(message_id: str, msg_type: str = "INFO") -> Message:
    return Message(id=message_id, type=msg_type, text=f"m {message_id} ok xxxx", ts=1_700_000_000.0)


def test_the_checker_counts_lost_recovered_unexpected_and_duplicates(tmp_path: Path) -> None:
    # Given lines written by the real sink: a twice, c (an unknown send), z (never sent)
    sink = LogFileSink(tmp_path)
    sink.write_batch([_message("p-1"), _message("p-1"), _message("p-3", "ERROR"), _message("p-9")])
    ledger = Ledger(ok={"p-1", "p-2"}, unknown={"p-3", "p-4"}, fail={"p-5"})

    # When the checker reads them
    verdict = judge(ledger, read_logs(tmp_path))

    # Then
    assert (verdict.lost, verdict.recovered, verdict.unexpected, verdict.dup, verdict.torn) == (1, 1, 1, 1, 0)
    assert verdict.lost_sample == ("p-2",)


def test_a_partial_write_glued_to_the_next_line_is_torn_not_a_message(tmp_path: Path) -> None:
    # Given a write cut short by ENOSPC, then the retried batch appended after it
    whole = "2026-11-25T00:00:00.000Z INFO p-1 m p-1 ok xxxx\n"
    (tmp_path / "info.log").write_text(whole[:30] + whole + "2026-11-25T00:00:00.000Z INFO p-2 m p-2 ok x")

    # When the checker reads the file
    seen = read_logs(tmp_path)

    # Then the glued line and the unterminated last line are torn, not counted as messages
    assert seen.torn == 2
    assert dict(seen.counts) == {}


def test_a_line_in_the_wrong_file_is_torn(tmp_path: Path) -> None:
    (tmp_path / "error.log").write_text("2026-11-25T00:00:00.000Z INFO p-1 m p-1 ok xxxx\n")
    assert read_logs(tmp_path).torn == 1


def test_rotated_and_gzipped_files_are_read_and_temporary_files_are_not(tmp_path: Path) -> None:
    # Given lines spread over a log file, its rotated files (plain, gzipped, dated) and a compressor's temp
    line = "2026-11-25T00:00:00.000Z ERROR {0} m {0} ok xxxx\n".format
    (tmp_path / "error.log").write_text(line("p-1"))
    (tmp_path / "error.log.1").write_text(line("p-2"))
    (tmp_path / "error.log.2.gz").write_bytes(gzip.compress(line("p-3").encode()))
    (tmp_path / "error.log-20261201").write_text(line("p-4"))
    (tmp_path / ".error.log.77.12.gz.tmp").write_bytes(gzip.compress(line("p-5").encode())[:10])
    (tmp_path / "info.log.1.gz").write_bytes(gzip.compress((line("p-6") + line("p-7")).encode())[:-12])

    # When the checker reads the folder
    seen = read_logs(tmp_path)

    # Then every rotated file counts, the temp file does not, and a compressed file cut short is torn
    assert dict(seen.counts) == {"p-1": 1, "p-2": 1, "p-3": 1, "p-4": 1}
    assert seen.torn == 1


def test_the_proxy_forwards_delays_blackholes_resets_and_cuts(chaos: MakeRun) -> None:
    # Given a TCP redis behind the proxy
    run = chaos("harness proxy", "streams")
    run.start_redis(tcp=True)
    proxy = run.start_proxy()
    client = redis.Redis.from_url(proxy.url, socket_timeout=1.0)
    big = b"v" * 100_000

    def attempt() -> tuple[str, float]:
        started = time.monotonic()
        try:
            client.set("k", big)
            outcome = "ok" if client.get("k") == big else "corrupt"
        except redis.exceptions.TimeoutError:
            outcome = "timeout"
        except redis.exceptions.ConnectionError:
            outcome = "reset"
        return outcome, time.monotonic() - started

    # When each mode is switched on in turn, Then the client sees exactly that fault
    try:
        assert attempt()[0] == "ok"
        proxy.set_mode("delay", 100)
        outcome, took = attempt()
        assert outcome == "ok" and took >= 0.2
        proxy.set_mode("blackhole")
        assert attempt()[0] == "timeout"
        proxy.set_mode("reset")
        assert attempt()[0] == "reset"
        proxy.set_mode("cut", 300)
        assert attempt()[0] == "reset"
        proxy.set_mode("pass")
        assert attempt()[0] == "ok"
    finally:
        client.close()
