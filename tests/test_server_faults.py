"""Unsafe server settings and a Redis that goes away, against private redis-servers of the tests' own."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from msgrelay.cli import ExitCode
from msgrelay.config import Settings, load_settings
from msgrelay.errors import ProduceOutcomeUnknown
from msgrelay.producer import Producer
from msgrelay.redis_server import RedisServer
from msgrelay.safety import unsafe_settings
from msgrelay.transport import create_transport


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A server this test may stop, reconfigure and restart (the session's shared one stays untouched)."""
    with RedisServer(tmp_path / "own-redis") as server:
        yield server


@pytest.fixture
def aof_server(tmp_path: Path) -> Iterator[RedisServer]:
    """Like ``own_server``, with the append-only file on from the start (CONFIG SET appendonly yes would
    make a SIGTERM wait for the initial rewrite)."""
    with RedisServer(tmp_path / "aof-redis", extra_args=("--appendonly", "yes")) as server:
        yield server


def settings_for(server: RedisServer, transport: str = "streams") -> Settings:
    return load_settings(None, {"redis": {"url": server.url}, "queue": {"transport": transport}})


# --- unsafe settings ----------------------------------------------------------------------------------


def test_a_server_that_persists_nothing_is_reported(own_server: RedisServer) -> None:
    client = own_server.client()
    try:
        problems = unsafe_settings(client, own_server.url)
    finally:
        client.close()
    assert len(problems) == 1
    assert "persistence is off" in problems[0]


def test_an_evicting_server_with_aof_reports_only_the_eviction(aof_server: RedisServer) -> None:
    client = aof_server.client()
    try:
        client.config_set("maxmemory-policy", "allkeys-lru")
        problems = unsafe_settings(client, aof_server.url)
    finally:
        client.close()
    assert len(problems) == 1
    assert "maxmemory-policy is allkeys-lru" in problems[0]


def test_a_safe_server_has_no_problems(aof_server: RedisServer) -> None:
    client = aof_server.client()
    try:
        assert unsafe_settings(client, aof_server.url) == []
    finally:
        client.close()


def test_consume_warns_about_an_unsafe_server_and_still_runs(
    run_cli: Callable[..., object], redis_url: str
) -> None:
    result = run_cli("consume", "--burst", "--log-dir", "logs")
    assert result.returncode == 0, result.stderr  # type: ignore[attr-defined]
    assert "WARNING: persistence is off" in result.stderr  # type: ignore[attr-defined]


def test_consume_refuses_an_unsafe_server_when_told_to(run_cli: Callable[..., object]) -> None:
    result = run_cli(
        "consume", "--burst", "--log-dir", "logs", env={"MSGRELAY_CONSUMER__UNSAFE_REDIS": "refuse"}
    )
    assert result.returncode == ExitCode.UNSAFE_REDIS  # type: ignore[attr-defined]
    stderr: str = result.stderr  # type: ignore[attr-defined]
    assert stderr.count("\n") == 1 and "persistence is off" in stderr and "Traceback" not in stderr


# --- Redis goes away ----------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["streams", "lists"])
def test_a_send_that_fails_mid_way_reports_its_outcome_as_unknown_never_as_sent(
    own_server: RedisServer, transport: str
) -> None:
    producer = Producer.from_settings(settings_for(own_server, transport))
    producer.pipeline_size = 2
    try:
        messages = producer.build_many([("info", f"m{i}") for i in range(6)])
        own_server.stop()  # Redis dies before the send

        with pytest.raises(ProduceOutcomeUnknown) as raised:
            producer.send_many(messages)
    finally:
        producer.close()

    # Then: the first chunk is "unknown" (it may have left), the rest was never sent, nothing claimed stored
    error = raised.value
    assert error.stored_ids == []
    assert error.unknown_ids == [m.id for m in messages[:2]]
    assert error.unsent_ids == [m.id for m in messages[2:]]
    assert "outcome unknown" in str(error)


@pytest.mark.parametrize("transport", ["streams", "lists"])
def test_producer_and_consumer_carry_on_after_a_redis_restart(
    aof_server: RedisServer, transport: str
) -> None:
    own_server = aof_server  # the restart must keep what was acknowledged
    settings = settings_for(own_server, transport)
    producer = Producer.from_settings(settings)
    before = producer.send_many([("info", "before restart")])

    own_server.stop()
    own_server.start()  # same data folder: the AOF brings the queue back

    after = producer.send_many([("info", "after restart")])  # the same client reconnects on its own
    producer.close()
    transport_ = create_transport(settings)
    try:
        transport_.setup()
        got = transport_.fetch("c1", 10, 0)
    finally:
        transport_.close()
    assert [d.raw for d in got] and len(got) == 2
    assert all(msg_id.encode() in b"".join(d.raw for d in got) for msg_id in before + after)


def test_an_unreachable_redis_fails_send_with_one_line_and_the_password_masked(
    run_cli: Callable[..., object], own_server: RedisServer
) -> None:
    url = own_server.url
    own_server.stop()
    result = run_cli("send", "hello", "--redis-url", url.replace("unix://", "unix://:s3cret@"))
    assert result.returncode == ExitCode.REDIS_UNAVAILABLE  # type: ignore[attr-defined]
    stderr: str = result.stderr  # type: ignore[attr-defined]
    assert "s3cret" not in stderr and "Traceback" not in stderr
    assert stderr.count("\n") == 1
