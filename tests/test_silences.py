"""Silences: ``msgrelay silence add / list / expire`` against the test session's private Redis."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable

import pytest
import redis

from msgrelay.alerting.silences import KEEP_EXPIRED_S, SilenceStore, parse_duration

RunCli = Callable[..., subprocess.CompletedProcess[str]]
KEY = "msgrelay:silences:msgrelay:alerts"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("30m", 1800), ("2h", 7200), ("1d", 86400), ("1h30m", 5400), ("45", 45), (" 2H ", 7200)],
)
def test_durations_read_as_people_write_them(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "2x", "h", "-5", "0", "1h junk", "inf"])
def test_what_is_not_a_positive_duration_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_add_then_list_shows_the_silence_until_it_is_expired(run_cli: RunCli) -> None:
    added = run_cli("silence", "add", "--service", "db", "--for", "2h", "--comment", "maintenance")
    assert added.returncode == 0, added.stderr
    silence_id = added.stdout.split()[0]

    listed = run_cli("silence", "list")
    assert listed.returncode == 0, listed.stderr
    header, line = listed.stdout.splitlines()
    assert header.split() == ["ID", "SERVICE", "STATE", "UNTIL", "COMMENT"]
    assert line.split()[:3] == [silence_id, "db", "active"] and line.endswith("maintenance")

    expired = run_cli("silence", "expire", silence_id)
    assert expired.returncode == 0, expired.stderr
    assert run_cli("silence", "list").stdout == ""  # no longer active ...
    expired_line = run_cli("silence", "list", "--all").stdout.splitlines()[1]  # ... but still listed
    assert expired_line.split()[:3] == [silence_id, "db", "expired"]


def test_a_silence_ends_when_its_time_is_up(redis_client: redis.Redis) -> None:
    store = SilenceStore(redis_client, KEY, url="redis://test")
    now = time.time()
    store.add("payments-*", now + 60)

    assert [s.service for s in store.active(now)] == ["payments-*"]
    assert store.active(now + 61) == []
    assert store.active(now)[0].covers("payments-eu", now)
    assert not store.active(now)[0].covers("db", now)


def test_expired_silences_are_dropped_after_a_week(redis_client: redis.Redis) -> None:
    store = SilenceStore(redis_client, KEY, url="redis://test")
    now = time.time()
    store.add("db", now - KEEP_EXPIRED_S - 1)
    kept = store.add("api", now - 10)

    assert [s.id for s in store.all(now)] == [kept.id]
    assert redis_client.hlen(KEY) == 1


def test_bad_input_is_one_clear_line_and_stores_nothing(run_cli: RunCli, redis_client: redis.Redis) -> None:
    bad_duration = run_cli("silence", "add", "--service", "db", "--for", "forever")
    unknown = run_cli("silence", "expire", "deadbeef")

    assert bad_duration.returncode == 2 and "not a duration" in bad_duration.stderr
    assert unknown.returncode == 1 and "no silence 'deadbeef'" in unknown.stderr
    assert "Traceback" not in bad_duration.stderr + unknown.stderr
    assert not redis_client.exists(KEY)
