"""``msgrelay monitor`` and ``msgrelay notify`` end to end: real TCP and HTTP services, a real Redis."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
import redis

from local_servers import Reply, Server, listen_tcp
from msgrelay.alerting.codec import decode_alert
from msgrelay.alerting.model import Alert, Status

RunCli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def monitor_config(tmp_path: Path) -> Iterator[tuple[Path, socket.socket]]:
    service = listen_tcp()
    port = service.getsockname()[1]
    config = tmp_path / "msgrelay.toml"
    config.write_text(
        "[[monitor.checks]]\n"
        'service = "db"\nkind = "tcp"\nhost = "127.0.0.1"\n'
        f"port = {port}\ninterval_s = 0.1\ntimeout_s = 0.5\nfailures_before_down = 2\n"
    )
    yield config, service
    service.close()


def alerts_in(client: redis.Redis, count: int, within_s: float = 20.0) -> list[Alert]:
    """The first ``count`` alerts on the alert stream, waiting for them to be pushed."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        entries = client.xrange("msgrelay:alerts")
        if len(entries) >= count:
            return [decode_alert(fields[b"m"], max_bytes=16384) for _, fields in entries]
        time.sleep(0.05)  # polling Redis for the monitor's push: the event we wait for
    raise AssertionError(f"fewer than {count} alerts after {within_s}s: {client.xrange('msgrelay:alerts')}")


def test_monitor_pushes_down_once_when_a_service_goes_away_and_up_when_it_is_back(
    monitor_config: tuple[Path, socket.socket], redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    config, service = monitor_config
    port = service.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "msgrelay", "monitor", "--config", str(config), "--redis-url", redis_url],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )  # fmt: skip
    try:
        service.close()  # the service goes away: DOWN after two failed checks
        [down] = alerts_in(redis_client, 1)
        again = listen_tcp(port)  # it comes back on the same port: UP
        try:
            _, up = alerts_in(redis_client, 2)
        finally:
            again.close()
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()

    assert process.returncode == 0, stderr
    assert (down.service, down.status, up.service, up.status) == ("db", Status.DOWN, "db", Status.UP)
    assert "refused" in down.message
    assert up.message.startswith("recovered after")
    assert len(redis_client.xrange("msgrelay:alerts")) == 2  # one alert per change, not one per check
    assert stdout.count('"service":"db"') == 2  # it prints what it pushed


def test_monitor_without_checks_says_so_in_one_line(run_cli: RunCli) -> None:
    done = run_cli("monitor")

    assert done.returncode == 3  # ExitCode.CONFIG_ERROR
    assert "[[monitor.checks]]" in done.stderr and "Traceback" not in done.stderr


def test_config_show_masks_the_password_of_a_redis_check(run_cli: RunCli, tmp_path: Path) -> None:
    (tmp_path / "msgrelay.toml").write_text(
        '[[monitor.checks]]\nservice = "cache"\nkind = "redis"\nurl = "redis://:hunter2@cache:6379/0"\n'
    )
    shown = run_cli("config", "show", url=False)

    assert shown.returncode == 0, shown.stderr
    assert "hunter2" not in shown.stdout and "redis://:***@cache:6379/0" in shown.stdout


def test_notify_posts_the_alert_pushed_by_msgrelay_alert_to_a_configured_webhook(
    run_cli: RunCli, serve: type[Server], tmp_path: Path
) -> None:
    server = serve(Reply(200))
    (tmp_path / "msgrelay.toml").write_text(
        f'[[alerts.notifiers]]\nkind = "webhook"\nname = "ops"\nurl = "{server.url()}"\nstyle = "slack"\n\n'
        '[alerts]\ndefault_notifiers = ["ops"]\n'
    )
    pushed = run_cli("alert", "--service", "db", "--status", "DOWN", "connection refused")
    notified = run_cli("notify", "--burst")

    assert (pushed.returncode, notified.returncode) == (0, 0), pushed.stderr + notified.stderr
    assert [orjson.loads(request.body) for request in server.received] == [
        {"text": "🔴 db is DOWN: connection refused"}
    ]
    assert "1 sent" in notified.stderr


def test_notify_prints_what_it_would_tweet_on_the_console_by_default(run_cli: RunCli) -> None:
    run_cli("alert", "--service", "api", "--status", "DOWN", "HTTP 503")
    run_cli("alert", "--service", "api", "--status", "UP", "answers again")
    notified = run_cli("notify", "--burst")

    assert notified.returncode == 0, notified.stderr
    # read together: the DOWN is notified, then resolved (one notification of each kind)
    assert notified.stdout.splitlines() == ["🔴 api is DOWN: HTTP 503", "✅ api is UP again: answers again"]


def test_stats_show_the_alerts_each_verdict_and_what_each_notifier_did(run_cli: RunCli) -> None:
    run_cli("alert", "--service", "db", "--status", "DOWN", "refused")
    run_cli("alert", "--service", "db", "--status", "DOWN", "refused again")  # deduplicated
    run_cli("alert", "--service", "db", "--status", "sideways", "x")  # refused by `alert` itself
    assert run_cli("notify", "--burst").returncode == 0

    shown = run_cli("stats", "--json")
    text = run_cli("stats")

    assert shown.returncode == 0, shown.stderr
    alerts = orjson.loads(shown.stdout)["alerts"]
    assert (alerts["pushed"], alerts["received"], alerts["backlog"], alerts["outbox"]) == (2, 2, 0, 0)
    assert alerts["verdicts"] == {"firing": 1, "deduplicated": 1}
    assert alerts["notifiers"] == {"console": {"sent": 1, "deferred": 0, "retried": 0, "dead_lettered": 0}}
    assert "notifier console" in text.stdout and "sent 1" in text.stdout


def test_twitter_credentials_from_the_environment_are_never_shown(run_cli: RunCli) -> None:
    secrets = {"consumer_key": "ck-SECRET-1", "consumer_secret": "cs-SECRET-2", "access_token": "at-SECRET-3",
               "access_token_secret": "as-SECRET-4"}  # fmt: skip
    env = {"MSGRELAY_ALERTS__NOTIFIERS": orjson.dumps([{"kind": "twitter", **secrets}]).decode()}
    env["MSGRELAY_ALERTS__DEFAULT_NOTIFIERS"] = '["twitter"]'

    shown = run_cli("config", "show", env=env, url=False)
    notified = run_cli("notify", "--burst", env=env)

    assert shown.returncode == 0 and notified.returncode == 0, shown.stderr + notified.stderr
    assert orjson.loads(shown.stdout)["alerts"]["notifiers"][0]["consumer_key"] == "**********"
    everything = shown.stdout + shown.stderr + notified.stdout + notified.stderr
    assert not any(secret in everything for secret in secrets.values())


def test_a_notify_process_killed_mid_send_leaves_the_notification_to_the_next_one_exactly_once(
    run_cli: RunCli, serve: type[Server], redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    hanging, working = serve(Reply(hang=True)), serve(Reply(200))
    config = tmp_path / "msgrelay.toml"
    settings = (
        '[alerts]\ndefault_notifiers = ["ops"]\nlease_s = 1.0\n\n[[alerts.notifiers]]\nkind = "webhook"\n'
    )
    config.write_text(settings + f'name = "ops"\nurl = "{hanging.url()}"\ntimeout_s = 30\n')
    assert run_cli("alert", "--service", "db", "--status", "DOWN", "refused").returncode == 0
    doomed = subprocess.Popen(
        [sys.executable, "-m", "msgrelay", "notify", "--redis-url", redis_url],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )  # fmt: skip
    try:
        assert hanging.hanging.wait(20), "the first notify never sent"
        doomed.kill()  # SIGKILL in the middle of the send
        doomed.communicate(timeout=20)
    finally:
        if doomed.poll() is None:
            doomed.kill()

    config.write_text(settings + f'name = "ops"\nurl = "{working.url()}"\n')
    deadline = time.monotonic() + 20
    while not working.received and time.monotonic() < deadline:  # the next one, once the lease has run out
        assert run_cli("notify", "--burst").returncode == 0
    assert run_cli("notify", "--burst").returncode == 0  # and again: nothing more to send

    [sent] = working.received
    assert sent.headers["Idempotency-Key"] == hanging.received[0].headers["Idempotency-Key"]
    assert redis_client.zcard("msgrelay:outbox:msgrelay:alerts") == 0


def test_routes_send_each_service_to_its_notifiers_and_the_rest_to_the_default(
    run_cli: RunCli, serve: type[Server], tmp_path: Path
) -> None:
    ops, pager = serve(Reply(200)), serve(Reply(200))
    (tmp_path / "msgrelay.toml").write_text(
        '[alerts]\ndefault_notifiers = ["ops"]\n\n'
        f'[[alerts.notifiers]]\nkind = "webhook"\nname = "ops"\nurl = "{ops.url()}"\n\n'
        f'[[alerts.notifiers]]\nkind = "webhook"\nname = "pager"\nurl = "{pager.url()}"\n\n'
        '[[alerts.routes]]\nservices = ["pay*"]\nstatuses = ["DOWN"]\nnotifiers = ["pager"]\n'
    )
    run_cli("alert", "--service", "payments", "--status", "DOWN", "card processor down")
    assert run_cli("notify", "--burst").returncode == 0
    run_cli("alert", "--service", "db", "--status", "DOWN", "refused")
    run_cli("alert", "--service", "payments", "--status", "UP", "back")
    assert run_cli("notify", "--burst").returncode == 0

    texts = {name: [orjson.loads(r.body)["text"] for r in server.received] for name, server in
             (("ops", ops), ("pager", pager))}  # fmt: skip
    assert texts["pager"] == ["🔴 payments is DOWN: card processor down"]
    assert texts["ops"] == ["🔴 db is DOWN: refused", "✅ payments is UP again: back"]


def test_a_hanging_notifier_never_holds_up_log_messages(
    run_cli: RunCli, serve: type[Server], redis_url: str, tmp_path: Path
) -> None:
    hanging = serve(Reply(hang=True))
    (tmp_path / "msgrelay.toml").write_text(
        '[alerts]\ndefault_notifiers = ["ops"]\n\n'
        f'[[alerts.notifiers]]\nkind = "webhook"\nname = "ops"\nurl = "{hanging.url()}"\ntimeout_s = 60\n'
    )
    run_cli("alert", "--service", "db", "--status", "DOWN", "refused")
    notify = subprocess.Popen(
        [sys.executable, "-m", "msgrelay", "notify", "--redis-url", redis_url],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )  # fmt: skip
    try:
        assert hanging.hanging.wait(20)  # the notifier is stuck in its send ...
        produced = run_cli("produce", "-n", "2000", "--rate", "1e9", "-q")
        consumed = run_cli("consume", "--burst", "-q", "--log-dir", "logs")  # ... and logs flow regardless
    finally:
        notify.kill()
        notify.communicate()

    assert produced.returncode == 0 and consumed.returncode == 0, consumed.stderr
    assert "2000 written" in consumed.stdout
