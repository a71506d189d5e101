"""Health checks against real local servers, the flap-damping state machine, and the concurrent monitor.

HTTP is a stdlib ``http.server`` on 127.0.0.1 port 0 (a hanging endpoint waits on an event released at
teardown); TCP is a real listening socket that is closed and opened again; Redis is this session's private
``redis-server``; commands are real processes.
"""

from __future__ import annotations

import os
import select
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis
from pydantic import ValidationError

from local_servers import listen_tcp
from msgrelay.alerting.health import (
    CheckSettings,
    CommandCheck,
    HttpCheck,
    Monitor,
    ProbeResult,
    RedisPingCheck,
    ServiceTracker,
    TcpCheck,
    build_check,
    format_duration,
)
from msgrelay.alerting.model import Alert, Status
from msgrelay.errors import ConfigError
from msgrelay.redis_server import free_tcp_port

MARGIN_S = 1.5
"""Slack for a loaded 2-core machine on top of a timeout, when asserting a probe ended 'within' it."""


# --- real servers ----------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    release: threading.Event  # set on the server class by the fixture

    def do_GET(self) -> None:
        if self.path == "/hang":
            # Answer only when the test is over: the client must give up on its own timeout.
            type(self).release.wait(30)
        status, body = {"/ok": (200, b"status: healthy"), "/fail": (503, b"maintenance")}.get(
            self.path, (200, b"ok")
        )
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep pytest's output for failures


@pytest.fixture
def http_base() -> Iterator[str]:
    release = threading.Event()
    handler = type("Handler", (_Handler,), {"release": release})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    release.set()
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture
def https_base(tmp_path: Path) -> Iterator[str]:
    """An HTTPS server with a self-signed certificate, which a client must refuse."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a self-signed certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    handler = type("Handler", (_Handler,), {"release": threading.Event()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(5)


# --- HTTP ------------------------------------------------------------------------------------------------


def test_http_200_is_up(http_base: str) -> None:
    result = HttpCheck("api", f"{http_base}/ok", body_contains="healthy").probe()
    assert result.ok
    assert result.detail == f"HTTP 200 from {http_base}/ok"


def test_http_503_is_down_and_says_so(http_base: str) -> None:
    result = HttpCheck("api", f"{http_base}/fail").probe()
    assert not result.ok
    assert result.detail == f"HTTP 503 from {http_base}/fail"


def test_http_expected_status_can_be_chosen(http_base: str) -> None:
    assert HttpCheck("api", f"{http_base}/fail", expect_status={503}).probe().ok
    assert not HttpCheck("api", f"{http_base}/ok", expect_status={204}).probe().ok


def test_http_wrong_body_is_down(http_base: str) -> None:
    result = HttpCheck("api", f"{http_base}/ok", body_contains="all systems go").probe()
    assert not result.ok
    assert "body does not contain 'all systems go'" in result.detail


def test_http_hanging_server_is_down_within_the_timeout(http_base: str) -> None:
    started = time.monotonic()
    result = HttpCheck("api", f"{http_base}/hang", timeout_s=0.5).probe()
    assert not result.ok
    assert result.detail.startswith("timed out after 0.5 s")
    assert time.monotonic() - started < 0.5 + MARGIN_S


def test_http_nobody_listening_is_connection_refused() -> None:
    url = f"http://127.0.0.1:{free_tcp_port()}/health"
    result = HttpCheck("api", url, timeout_s=2).probe()
    assert not result.ok
    assert result.detail == f"connection refused to {url}"


def test_http_password_in_url_is_masked(http_base: str) -> None:
    url = http_base.replace("http://", "http://monitor:hunter2-secret@") + "/fail"
    result = HttpCheck("api", url).probe()
    assert not result.ok
    assert "hunter2-secret" not in result.detail
    assert "monitor:***@" in result.detail


def test_https_self_signed_certificate_is_a_clear_failure(https_base: str) -> None:
    result = HttpCheck("api", f"{https_base}/ok", timeout_s=5).probe()
    assert not result.ok
    assert result.detail.startswith(f"TLS certificate of {https_base}/ok not accepted")
    assert "self-signed" in result.detail or "self signed" in result.detail


# --- TCP -------------------------------------------------------------------------------------------------


def test_tcp_listener_up_then_closed_down_then_listening_again_up() -> None:
    listener = listen_tcp()
    port = listener.getsockname()[1]
    settings = CheckSettings(service="db", kind="tcp", host="127.0.0.1", port=port, failures_before_down=1)
    monitor = Monitor([(TcpCheck("db", "127.0.0.1", port, timeout_s=2), settings)])
    try:
        [first] = monitor.run_once(0.0)  # first success: UP, reported (it may resolve an old DOWN)
        assert (first.status, first.message) == (Status.UP, "up")
        assert monitor.trackers()["db"].status is Status.UP

        listener.close()
        [down] = monitor.run_once(30.0)
        assert (down.service, down.status) == ("db", Status.DOWN)
        assert down.message == f"connection refused to 127.0.0.1:{port}"

        listener = listen_tcp(port)
        [up] = monitor.run_once(60.0)
        assert (up.service, up.status) == ("db", Status.UP)
        assert up.message == "recovered after 30s"
    finally:
        listener.close()
        monitor.close()


# --- Redis PING ------------------------------------------------------------------------------------------


def test_redis_ping_against_our_server_is_up(redis_url: str) -> None:
    result = RedisPingCheck("cache", redis_url, timeout_s=2).probe()
    assert result.ok, result.detail


def test_redis_nobody_listening_is_down() -> None:
    url = f"redis://127.0.0.1:{free_tcp_port()}/0"
    result = RedisPingCheck("cache", url, timeout_s=2).probe()
    assert not result.ok
    assert result.detail == f"connection refused to {url}"


def test_redis_password_never_shown(redis_url: str, redis_client: redis.Redis) -> None:
    unreachable = RedisPingCheck("cache", f"redis://:pw-s3cret@127.0.0.1:{free_tcp_port()}/0", 2).probe()
    assert not unreachable.ok
    assert "pw-s3cret" not in unreachable.detail
    assert ":***@" in unreachable.detail

    redis_client.config_set("requirepass", "right-pw")
    try:
        wrong = RedisPingCheck("cache", f"{redis_url}&password=pw-s3cret", timeout_s=2).probe()
        right = RedisPingCheck("cache", f"{redis_url}&password=right-pw", timeout_s=2).probe()
    finally:
        restore = redis.Redis.from_url(f"{redis_url}&password=right-pw")
        restore.config_set("requirepass", "")
        restore.close()
    assert not wrong.ok
    assert wrong.detail.startswith("authentication failed at")
    assert "pw-s3cret" not in wrong.detail
    assert right.ok, right.detail
    assert "right-pw" not in right.detail


# --- command ---------------------------------------------------------------------------------------------


def test_command_exit_status_decides() -> None:
    assert CommandCheck("job", "true", timeout_s=5).probe().ok
    assert CommandCheck("job", ["sh", "-c", "exit 0"], timeout_s=5).probe().ok
    failed = CommandCheck("job", "false", timeout_s=5).probe()
    assert (failed.ok, failed.detail) == (False, "exit status 1")


def test_command_failure_shows_first_line_of_stderr() -> None:
    result = CommandCheck("job", "echo 'disk full' >&2; echo more >&2; exit 3", timeout_s=5).probe()
    assert (result.ok, result.detail) == (False, "exit status 3: disk full")


def test_command_list_runs_without_a_shell(tmp_path: Path) -> None:
    # Through a shell this would expand; without one, the literal argument reaches the program.
    result = CommandCheck("job", ["test", "$HOME", "=", "$HOME"], timeout_s=5).probe()
    assert result.ok
    missing = CommandCheck("job", [str(tmp_path / "no-such-program")], timeout_s=5).probe()
    assert not missing.ok
    assert missing.detail.startswith("cannot run")


def test_command_outliving_its_timeout_is_killed_with_its_process_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    command = f"sleep 60 & echo $! > {pid_file}; wait"
    started = time.monotonic()
    result = CommandCheck("job", command, timeout_s=0.5).probe()
    assert time.monotonic() - started < 0.5 + MARGIN_S
    assert not result.ok
    assert result.detail.startswith("timed out after 0.5 s (killed)")
    # The shell's background child is in the killed group too: its pidfd turns readable when it has died.
    pidfd = os.pidfd_open(int(pid_file.read_text()))
    try:
        readable, _, _ = select.select([pidfd], [], [], 5)
        assert readable, "the command's child outlived the kill"
    finally:
        os.close(pidfd)


# --- ServiceTracker --------------------------------------------------------------------------------------

UP_RESULT = ProbeResult(True, "HTTP 200 from http://api/health", 0.01)


def _down(detail: str = "HTTP 503 from http://api/health") -> ProbeResult:
    return ProbeResult(False, detail, 0.01)


def test_exactly_one_down_alert_after_n_failures() -> None:
    tracker = ServiceTracker("api", failures_before_down=3)
    assert tracker.observe(UP_RESULT, 0) is not None  # the first success reports UP (see below)
    alerts = [tracker.observe(_down(f"failure {i}"), 10.0 * i, timestamp=1e9 + i) for i in range(1, 7)]
    assert alerts[:2] == [None, None]
    assert alerts[3:] == [None, None, None]  # still down: said once
    down = alerts[2]
    assert down is not None
    assert (down.service, down.status, down.message, down.timestamp) == (
        "api",
        Status.DOWN,
        "failure 3",
        1e9 + 3,
    )


def test_n_minus_one_failures_then_a_success_is_damped() -> None:
    tracker = ServiceTracker("api", failures_before_down=3)
    tracker.observe(UP_RESULT, 0)
    for round_ in range(3):  # flapping, again and again, never N in a row
        assert tracker.observe(_down(), 1 + round_ * 3) is None
        assert tracker.observe(_down(), 2 + round_ * 3) is None
        assert tracker.observe(UP_RESULT, 3 + round_ * 3) is None
    assert tracker.status is Status.UP


def test_one_up_alert_after_recovery_with_the_outage_duration() -> None:
    tracker = ServiceTracker("api", failures_before_down=2, successes_before_up=2)
    tracker.observe(UP_RESULT, 0)
    tracker.observe(_down(), 100)  # the outage starts here
    assert tracker.observe(_down(), 130) is not None
    assert tracker.observe(UP_RESULT, 200) is None  # one success is not enough
    assert tracker.observe(_down(), 230) is None  # and the count starts over
    assert tracker.observe(UP_RESULT, 260) is None
    up = tracker.observe(UP_RESULT, 292)
    assert up is not None
    assert (up.status, up.message) == (Status.UP, "recovered after 3m12s")
    assert tracker.observe(UP_RESULT, 320) is None


def test_a_service_down_when_monitoring_starts_is_reported() -> None:
    tracker = ServiceTracker("db", failures_before_down=2)
    assert tracker.status is None
    assert tracker.observe(_down("connection refused to db:5432"), 0) is None
    down = tracker.observe(_down("connection refused to db:5432"), 30)
    assert down is not None
    assert (down.status, down.message) == (Status.DOWN, "connection refused to db:5432")


def test_first_success_reports_up_once_so_an_outage_during_a_restart_is_resolved() -> None:
    tracker = ServiceTracker("db", successes_before_up=3)
    first = tracker.observe(UP_RESULT, 0)
    assert first is not None and (first.status, first.message) == (Status.UP, "up")
    assert tracker.status is Status.UP
    assert tracker.observe(UP_RESULT, 30) is None  # then only changes


def test_durations_read_like_a_human_wrote_them() -> None:
    assert [format_duration(s) for s in (7, 192, 3725, 90061)] == ["7s", "3m12s", "1h02m05s", "1d1h01m"]


# --- settings --------------------------------------------------------------------------------------------


def test_settings_build_each_kind_of_check() -> None:
    http = build_check(CheckSettings(service="api", kind="http", url="https://x/h", expect_status={200}))
    assert isinstance(http, HttpCheck)
    assert http.expect_status == {200}
    assert isinstance(build_check(CheckSettings(service="db", kind="tcp", host="db", port=5432)), TcpCheck)
    assert isinstance(build_check(CheckSettings(service="r", kind="redis", url="redis://r")), RedisPingCheck)
    command = build_check(CheckSettings(service="job", kind="command", command=["true"], timeout_s=2))
    assert isinstance(command, CommandCheck)
    assert command.timeout_s == 2
    defaults = CheckSettings(service="api", kind="http", url="http://x")
    assert (defaults.interval_s, defaults.failures_before_down, defaults.successes_before_up) == (30, 3, 1)
    assert list(build_check(defaults).expect_status) == list(range(200, 400))  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"kind": "http"}, "a http check needs url"),
        ({"kind": "tcp", "host": "db"}, "a tcp check needs port"),
        ({"kind": "http", "url": "http://x", "host": "x"}, "host is not a setting of a http check"),
        ({"kind": "smtp"}, "kind"),
        ({"kind": "tcp", "host": "db", "port": 5432, "intervall_s": 5}, "intervall_s"),
    ],
)
def test_settings_mistakes_are_named(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        CheckSettings(service="svc", **fields)


# --- Monitor ---------------------------------------------------------------------------------------------


def test_a_hanging_check_does_not_hold_up_the_others(http_base: str) -> None:
    hang = CheckSettings(
        service="slow", kind="http", url=f"{http_base}/hang", timeout_s=1, failures_before_down=1
    )
    fast = CheckSettings(
        service="db", kind="tcp", host="127.0.0.1", port=free_tcp_port(), failures_before_down=1
    )
    monitor = Monitor.from_settings([hang, hang.model_copy(update={"service": "slow2"}), fast])
    try:
        started = time.monotonic()
        alerts = monitor.run_once()
        elapsed = time.monotonic() - started
    finally:
        monitor.close()
    # Two 1 s hangs run side by side: the round takes one timeout, not the sum of them.
    assert elapsed < 1 + MARGIN_S
    assert {(a.service, a.status) for a in alerts} == {
        ("slow", Status.DOWN),
        ("slow2", Status.DOWN),
        ("db", Status.DOWN),
    }
    assert next(a for a in alerts if a.service == "db").message.startswith("connection refused")


def test_checks_run_when_their_interval_is_due(tmp_path: Path) -> None:
    ran = tmp_path / "ran"
    every_10 = CheckSettings(service="a", kind="command", command=f"echo a >> {ran}", interval_s=10)
    every_25 = CheckSettings(service="b", kind="command", command=f"echo b >> {ran}", interval_s=25)
    monitor = Monitor.from_settings([every_10, every_25])
    try:
        for now in (0, 5, 10, 20, 25, 30):
            monitor.run_once(now)
    finally:
        monitor.close()
    # a at 0, 10, 20, 30; b at 0, 25.
    assert sorted(ran.read_text().split()) == ["a"] * 4 + ["b"] * 2
    assert monitor.next_due() == 40


def test_duplicate_service_names_are_refused() -> None:
    settings = CheckSettings(service="db", kind="command", command="true")
    with pytest.raises(ConfigError, match="'db' is monitored twice"):
        Monitor.from_settings([settings, settings])


def test_run_pushes_each_state_change_and_retries_a_failed_push() -> None:
    settings = CheckSettings(
        service="job", kind="command", command="false", interval_s=0.05, failures_before_down=2
    )
    monitor = Monitor.from_settings([settings])
    stop = threading.Event()
    pushed: list[Alert] = []
    attempts: list[Alert] = []

    def push(alert: Alert) -> None:
        attempts.append(alert)
        if len(attempts) == 1:
            raise ConnectionError("redis is away")  # the first push fails: the alert must not be lost
        pushed.append(alert)
        stop.set()

    runner = threading.Thread(target=monitor.run, args=(push, stop), kwargs={"retry_push_s": 0.05})
    runner.start()
    assert stop.wait(30), "no alert pushed"
    runner.join(10)
    assert not runner.is_alive()
    assert [(a.service, a.status, a.message) for a in pushed] == [("job", Status.DOWN, "exit status 1")]
    assert attempts == [pushed[0], pushed[0]]
