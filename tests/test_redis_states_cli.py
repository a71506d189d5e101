"""The issue's examples end to end, as a user meets them: real ``msgrelay consume`` / ``notify`` / ``monitor``
processes against a real redis-server that is deleted under them, flipped to a replica, restarted into
LOADING, failing its saves or running a busy script; and a SIGTERM while the server is stalled.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from local_servers import listen_tcp
from msgrelay.config import load_settings
from msgrelay.producer import Producer
from msgrelay.redis_server import RedisServer, free_tcp_port
from msgrelay.transport.states import STATES
from redis_states import StateServer, poll


class Background:
    """A long-running ``msgrelay`` command, its stdout and stderr in files we can poll."""

    def __init__(self, cwd: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.out_path, self.err_path = cwd / f"{args[0]}.out", cwd / f"{args[0]}.err"
        with self.out_path.open("wb") as out, self.err_path.open("wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "msgrelay", *args],
                stdout=out,
                stderr=err,
                cwd=cwd,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            )

    @property
    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def wait_for(self, text: str, *, stream: str = "stderr", timeout_s: float = 30.0) -> None:
        def said() -> bool:
            assert self.process.poll() is None, f"exited {self.process.returncode}: {self.stderr}"
            return text in (self.stderr if stream == "stderr" else self.stdout)

        poll(said, timeout_s, what=f"{text!r} on {stream}")

    def terminate(self, timeout_s: float = 20.0) -> tuple[int, float]:
        """SIGTERM; the exit code and how long the exit took."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout_s)
        return code, time.monotonic() - started

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def background(tmp_path: Path) -> Iterator[Callable[..., Background]]:
    started: list[Background] = []

    def start(*args: str, env: dict[str, str] | None = None) -> Background:
        started.append(Background(tmp_path, *args, env=env))
        return started[-1]

    yield start
    for each in started:
        each.kill()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[StateServer]:
    state_server = StateServer(tmp_path / "redis").start()
    yield state_server
    state_server.stop()


def producer_for(url: str, transport: str = "streams") -> Producer:
    return Producer.from_settings(
        load_settings(None, {"redis": {"url": url}, "queue": {"transport": transport}})
    )


def lines_in(log_dir: Path) -> list[str]:
    return [line for path in sorted(log_dir.glob("*.log")) for line in path.read_text().splitlines()]


def consume_args(url: str, transport: str = "streams", *extra: str) -> tuple[str, ...]:
    return ("consume", "-q", "--redis-url", url, "-t", transport, "--log-dir", "logs", "--name", "c1", *extra)


def blocked_clients(client: redis.Redis) -> int:
    return int(client.info("clients")["blocked_clients"])


def assert_clean_exit(process: Background, code: int) -> None:
    assert code == 0, process.stderr
    assert "Traceback" not in process.stderr and "error:" not in process.stderr, process.stderr


# --- the queue deleted under a consumer blocked in its read -----------------------------------------------


@pytest.mark.parametrize("event", ["DEL", "FLUSHALL"])
def test_consume_blocked_in_its_read_goes_on_when_the_stream_is_deleted_or_flushed(
    background: Callable[..., Background],
    redis_url: str,
    redis_client: redis.Redis,
    tmp_path: Path,
    event: str,
) -> None:
    # Given a consumer blocked in XREADGROUP after writing what was queued (lists: tests/chaos T20, T21)
    consumer = background(*consume_args(redis_url))
    consumer.wait_for(" reading ", stream="stdout")
    producer = producer_for(redis_url)
    before = producer.send_many([("info", f"before {i}") for i in range(3)])
    poll(lambda: len(lines_in(tmp_path / "logs")) == 3, what="the first lines")
    poll(lambda: blocked_clients(redis_client) == 1, what="the consumer blocked in its read")

    # When the stream is deleted (Redis answers the blocked read UNBLOCKED on 7.x: exit 5 before the fix)
    if event == "FLUSHALL":
        redis_client.flushall()
    else:
        redis_client.delete("msgrelay:logs")
    after = producer.send_many([("warning", f"after {i}") for i in range(3)])
    producer.close()

    # Then it goes on: what was sent after is written, each line once, and SIGTERM ends it cleanly
    poll(lambda: len(lines_in(tmp_path / "logs")) == 6, what="the lines sent after the deletion")
    code, _ = consumer.terminate()
    assert_clean_exit(consumer, code)
    assert sorted(line.split()[2] for line in lines_in(tmp_path / "logs")) == sorted(before + after)
    # the group was created again, and it said so once
    assert consumer.stderr.count("consumer group 'msgrelay' of stream 'msgrelay:logs' was deleted") == 1


def test_consume_rides_a_flip_to_replica_and_back_saying_it_once(
    background: Callable[..., Background], server: StateServer, tmp_path: Path
) -> None:
    consumer = background(*consume_args(server.url))
    consumer.wait_for(" reading ", stream="stdout")
    poll(lambda: blocked_clients(server.client()) == 1, what="the consumer blocked in its read")

    with server.replica() as port:  # a failover made this server a replica: UNBLOCKED, then READONLY
        consumer.wait_for(f"is a read-only replica of 127.0.0.1:{port}")
    consumer.wait_for("serves again")
    producer = producer_for(server.url)
    sent = producer.send_many([("error", f"after {i}") for i in range(3)])
    producer.close()
    poll(lambda: len(lines_in(tmp_path / "logs")) == 3, what="the lines sent after the flip back")

    code, _ = consumer.terminate()
    assert_clean_exit(consumer, code)
    assert consumer.stderr.count("read-only replica") == 1, consumer.stderr
    assert consumer.stderr.count("serves again") == 1, consumer.stderr
    assert sorted(line.split()[2] for line in lines_in(tmp_path / "logs")) == sorted(sent)


# --- started while Redis cannot serve ---------------------------------------------------------------------


@pytest.fixture
def service() -> Iterator[socket.socket]:
    """A TCP service for ``monitor`` to check (up until the test closes it)."""
    listener = listen_tcp()
    yield listener
    listener.close()


def _command(name: str, url: str, tmp_path: Path, service: socket.socket) -> tuple[tuple[str, ...], str, str]:
    """argv, the stream it says it started on, and what it says once it started."""
    if name == "consume":
        return consume_args(url), "stdout", " reading "
    if name == "notify":
        return ("notify", "--redis-url", url, "--name", "n1"), "stderr", "notifying"
    config = tmp_path / "monitor.toml"
    config.write_text(
        "[[monitor.checks]]\n"
        f'service = "db"\nkind = "tcp"\nhost = "127.0.0.1"\nport = {service.getsockname()[1]}\n'
        "interval_s = 0.2\ntimeout_s = 1.0\nfailures_before_down = 1\n"
    )
    return ("monitor", "--config", str(config), "--redis-url", url), "stdout", "monitoring"


STARTS = [
    ("consume", "LOADING"),
    ("consume", "MISCONF"),
    ("consume", "BUSY"),
    ("consume", "READONLY"),
    ("notify", "LOADING"),
    ("monitor", "MISCONF"),
]


@pytest.mark.parametrize(("command", "state"), STARTS)
def test_a_long_running_command_started_while_redis_cannot_serve_waits_says_why_once_and_starts(
    background: Callable[..., Background],
    server: StateServer,
    service: socket.socket,
    tmp_path: Path,
    command: str,
    state: str,
) -> None:
    argv, stream, started = _command(command, server.url, tmp_path, service)
    said = "is a read-only replica of 127.0.0.1:" if state == "READONLY" else STATES[state]
    if state == "LOADING":
        server.restart_loading()
        process = background(*argv)
        process.wait_for(said)
        server.end_loading()
    else:
        with {"MISCONF": server.misconf, "BUSY": server.busy, "READONLY": server.replica}[state]():
            process = background(*argv)
            process.wait_for(said)  # before the fix: exit 4 at once, "check that Redis is running"
    process.wait_for(started, stream=stream)
    if command == "consume":  # it really works: a message sent now is written
        producer = producer_for(server.url)
        producer.send_many([("info", "hello")])
        producer.close()
        poll(lambda: len(lines_in(tmp_path / "logs")) == 1, what="the line")
    elif command == "monitor":  # it really works: the service's first state is pushed
        poll(lambda: server.client().xlen("msgrelay:alerts") == 1, what="the first state pushed")
    code, _ = process.terminate()
    assert_clean_exit(process, code)
    assert process.stderr.count(said) == 1 and "check that Redis is running" not in process.stderr


# --- SIGTERM while Redis is stalled -----------------------------------------------------------------------


@pytest.fixture
def stallable(tmp_path: Path) -> Iterator[RedisServer]:
    """A server on loopback TCP (so a request waiting at the stalled server shows in /proc/net/tcp)."""
    with RedisServer(tmp_path / "stalled", tcp_port=free_tcp_port()) as server:
        yield server
        os.kill(server.pid, signal.SIGCONT)  # never leave a stopped process behind


def unread_by_server(port: int) -> int:
    """Bytes clients sent to the server on ``port`` that it has not read (its sockets' rx queues)."""
    unread = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port = int(fields[1].rsplit(":", 1)[1], 16)
        if local_port == port and fields[3] == "01":  # established
            unread += int(fields[4].split(":")[1], 16)
    return unread


def test_sigterm_while_redis_is_stalled_exits_within_the_stop_timeout_and_loses_nothing(
    background: Callable[..., Background], stallable: RedisServer, tmp_path: Path
) -> None:
    # Given a consumer that wrote what was queued, then Redis stalls (SIGSTOP) with the consumer waiting on it
    producer = producer_for(stallable.url)
    sent = producer.send_many([("info", f"m{i}") for i in range(50)])
    consumer = background(
        *consume_args(stallable.url, "streams", "--batch-size", "10"),
        env={"MSGRELAY_REDIS__STOP_TIMEOUT_S": "1"},
    )
    poll(lambda: len(lines_in(tmp_path / "logs")) == 50, what="the lines")
    os.kill(stallable.pid, signal.SIGSTOP)

    # When it gets SIGTERM: before the fix it waited out the socket timeout (10 s) and more (15-20 s in all)
    code, took = consumer.terminate()

    # Then it exits 0 within stop_timeout_s (1 s here; 5 s by default) plus slack, and says why
    assert_clean_exit(consumer, code)
    assert took < 1.0 + 2.5, f"took {took:.1f}s"
    assert "did not answer within stop_timeout_s = 1s" in consumer.stderr
    # ... and nothing is lost: once Redis is back, everything sent is written (at least once)
    os.kill(stallable.pid, signal.SIGCONT)
    more = producer.send_many([("info", "after")])
    producer.close()
    drain = background(*consume_args(stallable.url, "streams", "--burst"))
    assert drain.process.wait(30) == 0, drain.stderr
    assert set(sent + more) <= {line.split()[2] for line in lines_in(tmp_path / "logs")}


def test_the_default_stop_timeout_fits_a_containers_grace_period() -> None:
    # Docker and Kubernetes send SIGKILL 10 s after SIGTERM by default
    assert load_settings().redis.stop_timeout_s == 5.0


@pytest.mark.parametrize("command", ["notify", "monitor"])
def test_notify_and_monitor_stop_within_the_stop_timeout_while_redis_is_stalled(
    background: Callable[..., Background],
    stallable: RedisServer,
    service: socket.socket,
    tmp_path: Path,
    command: str,
) -> None:
    # Given notify (always reading alerts) or monitor (pushing an alert) waiting on a stalled Redis
    argv, stream, started = _command(command, stallable.url, tmp_path, service)
    process = background(*argv, env={"MSGRELAY_REDIS__STOP_TIMEOUT_S": "1"})
    process.wait_for(started, stream=stream)
    assert stallable.tcp_port is not None
    if command == "monitor":
        process.wait_for('"status":"UP"', stream="stdout")  # its first push went through
    os.kill(stallable.pid, signal.SIGSTOP)
    if command == "monitor":
        service.close()  # the service goes down: the monitor pushes DOWN, into the stalled server
        poll(lambda: unread_by_server(stallable.tcp_port or 0) > 0, what="the push waiting at the server")

    # When it gets SIGTERM, then it exits 0 within stop_timeout_s (1 s here) plus start-up slack
    code, took = process.terminate()
    assert code == 0, process.stderr
    assert took < 1.0 + 2.5, f"took {took:.1f}s"
