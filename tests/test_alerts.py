"""Alerts on the wire: the tweet bot's JSON format, what is refused and why, and ``msgrelay alert``."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime

import orjson
import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st

from msgrelay.alerting.codec import decode_alert, encode_alert
from msgrelay.alerting.model import Alert, Status
from msgrelay.config import Settings
from msgrelay.errors import DecodeError
from msgrelay.transport import create_transport

RunCli = Callable[..., subprocess.CompletedProcess[str]]
LIMIT = 16 * 1024
LEGACY = b'{"service":"db","status":"DOWN","message":"connection refused","timestamp":1642234567}'


def test_the_legacy_bot_format_is_an_alert() -> None:
    alert = decode_alert(LEGACY, max_bytes=LIMIT)

    assert alert == Alert("db", Status.DOWN, "connection refused", 1642234567.0, {})


def test_status_in_any_case_iso_timestamps_and_extra_keys_are_accepted() -> None:
    raw = b'{"service":" api ","status":"up","message":"ok","timestamp":"2026-11-25T10:00:00Z","region":"eu"}'

    alert = decode_alert(raw, max_bytes=LIMIT)

    assert (alert.service, alert.status, alert.fields) == ("api", Status.UP, {"region": "eu"})
    assert alert.timestamp == datetime(2026, 11, 25, 10, tzinfo=UTC).timestamp()


def test_an_alert_without_a_timestamp_is_stamped_when_read() -> None:
    before = datetime.now(UTC).timestamp()
    alert = decode_alert(b'{"service":"db","status":"DOWN","message":"x"}', max_bytes=LIMIT)
    assert before <= alert.timestamp <= datetime.now(UTC).timestamp()


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"service":"db","status":"DOWN","message":"' + b"x" * LIMIT + b'"}', "oversize"),
        (b'{"service":"db\xff","status":"DOWN","message":"x"}', "invalid_utf8"),
        (b'{"service":"db",', "malformed_json"),
        (b'["db","DOWN","x"]', "malformed_json"),
        (b"db is down", "malformed_json"),
        (b'{"status":"DOWN","message":"x"}', "missing_service"),
        (b'{"service":"  ","status":"DOWN","message":"x"}', "missing_service"),
        (b'{"service":5,"status":"DOWN","message":"x"}', "missing_service"),
        (b'{"service":"db","message":"x"}', "missing_status"),
        (b'{"service":"db","status":"DEGRADED","message":"x"}', "invalid_status"),
        (b'{"service":"db","status":7,"message":"x"}', "invalid_status"),
        (b'{"service":"db","status":"DOWN","timestamp":1642234567}', "missing_message"),
        (b'{"service":"db","status":"DOWN","message":null}', "missing_message"),
        (b'{"service":"db","status":"DOWN","message":""}', "missing_message"),  # accepted before
        (b'{"service":"db","status":"DOWN","message":" \\t\\n\\u3000"}', "missing_message"),
        (b'{"service":"db","status":"DOWN","message":"x","timestamp":"yesterday"}', "invalid_field"),
    ],
)
def test_what_cannot_be_an_alert_is_refused_with_its_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as refused:
        decode_alert(raw, max_bytes=LIMIT)

    assert refused.value.reason == reason
    assert refused.value.raw == raw  # kept whole for the dead-letter store


@given(
    service=st.text(min_size=1, max_size=50).filter(lambda s: s.strip() == s and s),
    status=st.sampled_from(Status),
    message=st.text(max_size=200).filter(str.strip),
    timestamp=st.floats(min_value=0, max_value=4e9),
    fields=st.dictionaries(
        st.text(max_size=8).filter(lambda k: k not in ("service", "status", "message", "timestamp")),
        st.text(max_size=10) | st.integers(-1000, 1000) | st.booleans(),
        max_size=3,
    ),
)
def test_an_encoded_alert_decodes_back_to_an_equal_alert(
    service: str, status: Status, message: str, timestamp: float, fields: dict[str, object]
) -> None:
    alert = Alert(service, status, message, timestamp, fields)

    assert decode_alert(encode_alert(alert), max_bytes=LIMIT) == alert


# --- msgrelay alert -----------------------------------------------------------------------------------


def test_alert_command_pushes_onto_the_alert_stream_not_the_log_stream(
    run_cli: RunCli, redis_client: redis.Redis
) -> None:
    done = run_cli("alert", "--service", "db", "--status", "down", "connection refused")

    assert done.returncode == 0, done.stderr
    [(_, fields)] = redis_client.xrange("msgrelay:alerts")
    pushed = decode_alert(fields[b"m"], max_bytes=LIMIT)
    assert (pushed.service, pushed.status, pushed.message) == ("db", Status.DOWN, "connection refused")
    assert orjson.loads(done.stdout) == orjson.loads(fields[b"m"])  # it prints what it pushed
    assert not redis_client.exists("msgrelay:logs")  # alerts never share the log messages' queue


def test_alert_command_on_lists_pushes_onto_tweet_queue_like_the_old_producers(
    run_cli: RunCli, redis_client: redis.Redis
) -> None:
    done = run_cli("alert", "-s", "web", "--status", "UP", "-t", "lists", "back after restart")

    assert done.returncode == 0, done.stderr
    [raw] = redis_client.lrange("tweet_queue", 0, -1)
    assert decode_alert(raw, max_bytes=LIMIT).status is Status.UP


def test_alert_command_refuses_an_invalid_status_in_one_line_and_pushes_nothing(
    run_cli: RunCli, redis_client: redis.Redis
) -> None:
    done = run_cli("alert", "--service", "db", "--status", "sideways", "hmm")

    assert done.returncode == 7  # ExitCode.INVALID_MESSAGE
    assert done.stderr.strip().count("\n") == 0
    assert "invalid_status" in done.stderr and "Traceback" not in done.stderr
    assert redis_client.keys("*") == []


@pytest.mark.parametrize("message", ["", "   ", "\t"])
def test_alert_command_refuses_an_empty_message_like_a_missing_one_and_pushes_nothing(
    run_cli: RunCli, redis_client: redis.Redis, message: str
) -> None:
    done = run_cli("alert", "-s", "db", message)

    assert done.returncode == 7  # ExitCode.INVALID_MESSAGE, as for any alert notify would dead-letter
    assert done.stderr.strip().count("\n") == 0
    assert "missing_message" in done.stderr and "Traceback" not in done.stderr
    assert redis_client.keys("*") == []


def test_alert_command_sends_an_argument_that_is_not_utf8_as_a_visible_escape(
    run_cli: RunCli, redis_client: redis.Redis
) -> None:
    done = run_cli("alert", "-s", "db", os.fsdecode(b"cannot read caf\xe9.db"))  # a traceback before

    assert done.returncode == 0, done.stderr
    [(_, fields)] = redis_client.xrange("msgrelay:alerts")
    assert decode_alert(fields[b"m"], max_bytes=LIMIT).message == "cannot read caf\\udce9.db"


def test_alerts_pushed_by_hand_with_lpush_are_read_from_tweet_queue(
    make_settings: Callable[..., Settings], redis_client: redis.Redis
) -> None:
    settings = make_settings("lists", alerts={"transport": "lists"})
    redis_client.lpush("tweet_queue", LEGACY)  # what `redis-cli LPUSH tweet_queue '{...}'` does
    transport = create_transport(settings, queue=settings.alerts.as_queue(settings.queue.namespace))
    try:
        [delivery] = transport.fetch("notifier-1", 10, 0)
    finally:
        transport.close()

    assert decode_alert(delivery.raw, max_bytes=LIMIT).message == "connection refused"
