"""Gone consumers are forgotten, so `stats` stops listing a dead consumer's name forever; a consumer that
holds entries never is (its entries stay visible until a live consumer takes them over).

Consumers "die" here the way a SIGKILL leaves them: they fetched (and maybe settled) and never left. Redis
measures a stream consumer's idle time by its own clock, so the tests wait for it, polling XINFO CONSUMERS
with a deadline (no sleep stands in for an event).
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from msgrelay.config import Settings
from msgrelay.errors import ConfigError
from msgrelay.forgetting import ConsumerForgetting
from msgrelay.monitor import collect_stats
from msgrelay.transport import StreamTransport, Transport, create_transport

RunCli = Callable[..., subprocess.CompletedProcess[str]]

FORGET_AFTER_S = 1.0
CLAIM_IDLE_S = 0.5
ENV = {
    "MSGRELAY_CONSUMER__FORGET_AFTER_S": str(FORGET_AFTER_S),
    "MSGRELAY_CONSUMER__CLAIM_IDLE_S": str(CLAIM_IDLE_S),
    "MSGRELAY_CONSUMER__BLOCK_TIMEOUT_S": "0.1",
}


def wait_until(condition: Callable[[], bool], *, within_s: float = 20.0) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def idle_ms(client: redis.Redis, stream: str, group: str) -> dict[str, int]:
    return {c["name"].decode(): int(c["idle"]) for c in client.xinfo_consumers(stream, group)}


def crash(transport: Transport, name: str, *, holding: bool) -> None:
    """``name`` fetches one entry and dies, holding it or after settling it (as a SIGKILL leaves it)."""
    transport.send([f'{{"type": "INFO", "text": "for {name}"}}'.encode()])
    [delivery] = transport.fetch(name, 1, 0.0)
    if not holding:
        transport.settle(name, [delivery], [], {"INFO": 1})


@pytest.fixture
def settings(make_settings: Callable[..., Settings], transport_name: str) -> Settings:
    return make_settings(
        transport_name,
        consumer={"forget_after_s": FORGET_AFTER_S, "claim_idle_s": CLAIM_IDLE_S, "block_timeout_s": 0.1},
    )


@pytest.fixture
def streams(make_settings: Callable[..., Settings]) -> StreamTransport:
    transport = create_transport(make_settings("streams"))
    assert isinstance(transport, StreamTransport)
    return transport


def test_a_gone_stream_consumer_holding_nothing_is_forgotten_and_one_holding_entries_is_kept(
    streams: StreamTransport, redis_client: redis.Redis
) -> None:
    # Given: two dead consumers, one holding an entry, both idle longer than the threshold
    crash(streams, "dead-idle", holding=False)
    crash(streams, "dead-holding", holding=True)
    crash(streams, "me", holding=False)  # the caller is in the group too (and never forgets itself)
    wait_until(lambda: min(idle_ms(redis_client, "msgrelay:logs", "msgrelay").values()) >= 500)

    # When
    gone = streams.gone_consumers(0.5)
    forgotten = streams.forget_consumers(0.5, keep="me")

    # Then: only the one holding nothing is forgotten; the other's entry is still pending, for a take-over
    assert gone == {"dead-idle", "me"}
    assert forgotten == ["dead-idle"]
    assert set(idle_ms(redis_client, "msgrelay:logs", "msgrelay")) == {"dead-holding", "me"}
    assert streams.pending() == {"dead-holding": 1, "me": 0}
    streams.close()


def test_forgetting_never_drops_a_pending_entry_even_racing_a_busy_consumer(
    streams: StreamTransport, make_settings: Callable[..., Settings]
) -> None:
    """DELCONSUMER drops the consumer's pending entries: the pending check must be atomic with it."""
    total = 1500
    streams.send([f'{{"type": "INFO", "text": "{n}"}}'.encode() for n in range(total)])
    streams.setup()
    done = threading.Event()
    acked: list[int] = []

    def busy() -> None:  # reads one entry at a time and acknowledges it: pending is 0 between entries
        reader = create_transport(make_settings("streams"))
        try:
            while len(acked) < total:
                for delivery in reader.fetch("busy", 1, 0.0):
                    acked.append(int(reader.client.xack("msgrelay:logs", "msgrelay", delivery.handle)))
        finally:
            done.set()
            reader.close()

    worker = threading.Thread(target=busy)
    worker.start()
    forgotten = 0
    while not done.is_set():
        forgotten += len(streams.forget_consumers(0.0, keep="nobody"))  # "gone" as soon as it holds nothing
    worker.join()

    assert forgotten > 0  # the race happened, many times
    assert acked == [1] * total  # every entry was still pending when acknowledged: none was dropped
    streams.close()


def test_stats_hides_gone_consumers_holding_nothing_and_a_live_consume_forgets_them(
    run_cli: RunCli, settings: Settings, redis_client: redis.Redis, transport_name: str, tmp_path: Path
) -> None:
    # Given: two consumers killed, one holding an entry; they have been gone longer than forget_after_s
    transport = create_transport(settings)
    crash(transport, "dead-idle", holding=False)
    crash(transport, "dead-holding", holding=True)
    assert collect_stats(transport).pending_by_consumer == {"dead-holding": 1, "dead-idle": 0}
    if transport_name == "streams":
        wait_until(lambda: min(idle_ms(redis_client, "msgrelay:logs", "msgrelay").values()) >= 1000)
    else:  # a list consumer is gone once its heartbeat expired (claim_idle_s)
        wait_until(
            lambda: (
                not redis_client.exists(*(transport.keys.heartbeat(n) for n in ("dead-idle", "dead-holding")))
            )
        )

    # When: an operator looks (before, the dead names stayed listed forever)
    stats = run_cli("stats", "--json", "-t", transport_name, env=ENV)

    # Then: the consumer holding an entry is listed with it; the one holding nothing is not
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout)["pending_by_consumer"] == {"dead-holding": 1}

    # And a live consumer takes the held entry over, writes it, and forgets the gone consumers
    consumed = run_cli(
        "consume", "--burst", "--name", "live", "-t", transport_name, "--log-dir", "logs", env=ENV
    )
    assert consumed.returncode == 0, consumed.stderr
    assert "for dead-holding" in (tmp_path / "logs" / "info.log").read_text()
    assert transport.pending().keys() <= {"dead-holding"}  # dead-idle is forgotten; live left on exit
    after = run_cli("stats", "--json", "-t", transport_name, env=ENV)
    assert json.loads(after.stdout)["pending_by_consumer"] == {}  # dead-holding holds nothing any more
    transport.close()


def test_notify_forgets_gone_notify_consumers_of_the_alert_stream(
    run_cli: RunCli, make_settings: Callable[..., Settings], redis_client: redis.Redis
) -> None:
    settings = make_settings("streams")
    alerts = create_transport(settings, queue=settings.alerts.as_queue("msgrelay"))
    alerts.send([b'{"service": "db", "status": "UP", "message": "fine"}'])
    alerts.setup()
    [delivery] = alerts.fetch("dead-notifier", 1, 0.0)
    alerts.settle("dead-notifier", [delivery], [], {})
    wait_until(lambda: idle_ms(redis_client, "msgrelay:alerts", "msgrelay-notify")["dead-notifier"] >= 1000)

    notified = run_cli("notify", "--burst", "--name", "live", env=ENV)

    assert notified.returncode == 0, notified.stderr
    assert "dead-notifier" not in idle_ms(redis_client, "msgrelay:alerts", "msgrelay-notify")
    alerts.close()


def test_forgetting_runs_at_most_every_quarter_of_forget_after(
    streams: StreamTransport, redis_client: redis.Redis
) -> None:
    now = [100.0]
    forgetting = ConsumerForgetting(streams, 0.3, keep="me", clock=lambda: now[0])
    crash(streams, "first", holding=False)
    wait_until(lambda: idle_ms(redis_client, "msgrelay:logs", "msgrelay")["first"] >= 300)
    assert forgetting.forget_if_due() == ["first"]
    crash(streams, "second", holding=False)
    wait_until(lambda: idle_ms(redis_client, "msgrelay:logs", "msgrelay")["second"] >= 300)

    assert forgetting.forget_if_due() == []  # not yet due
    now[0] += 0.3 / 4
    assert forgetting.forget_if_due() == ["second"]
    assert ConsumerForgetting(streams, 0.0, keep="me").forget_if_due() == []  # 0: never
    streams.close()


@pytest.mark.parametrize(("forget_after_s", "valid"), [(0, True), (31, True), (30, False), (5, False)])
def test_forget_after_must_exceed_claim_idle_or_be_zero(
    make_settings: Callable[..., Settings], forget_after_s: float, valid: bool
) -> None:
    if valid:
        assert (
            make_settings(consumer={"forget_after_s": forget_after_s}).consumer.forget_after_s
            == forget_after_s
        )
        return
    with pytest.raises(
        ConfigError, match=r"consumer.forget_after_s \(\d+\) must exceed consumer.claim_idle_s \(30\)"
    ):
        make_settings(consumer={"forget_after_s": forget_after_s})
