"""Shared fixtures. Every test talks to a redis-server that this test session started itself.

The server is our child process on a unix socket in a temp folder; ``RedisServer.start`` checks that
``INFO server`` reports the child's pid before anything else is sent, so FLUSHALL here can only ever hit
our own server. The machine's shared Redis on port 6379 is never used.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from local_servers import Reply, Server
from msgrelay.config import Settings, load_settings
from msgrelay.redis_server import RedisServer
from msgrelay.transport import Transport, create_transport
from sink_helpers import SinkMaker

TRANSPORTS = ("streams", "lists")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """URL of our private server, emptied for this test."""
    client = redis_server.client()
    try:
        assert int(client.info("server")["process_id"]) == redis_server.pid  # never flush someone else's
        client.flushall()
    finally:
        client.close()
    return redis_server.url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No MSGRELAY_* variable or ./msgrelay.toml from the developer's shell leaks into a test."""
    for var in list(os.environ):
        if var.startswith("MSGRELAY_") and var != "MSGRELAY_REDIS_SERVER":
            monkeypatch.delenv(var)
    monkeypatch.chdir(tmp_path)


@pytest.fixture(params=TRANSPORTS)
def transport_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_settings(redis_url: str, tmp_path: Path) -> Callable[..., Settings]:
    """``make_settings("lists", consumer={"batch_size": 10})``: Settings for our server, a temp log dir."""

    def make(transport: str = "streams", **sections: dict[str, Any]) -> Settings:
        consumer = {"log_dir": tmp_path / "logs", **sections.pop("consumer", {})}
        overrides = {"redis": {"url": redis_url}, "queue": {"transport": transport}, "consumer": consumer}
        for section, values in sections.items():
            overrides.setdefault(section, {}).update(values)
        return load_settings(None, overrides)

    return make


@pytest.fixture
def make_transport(
    make_settings: Callable[..., Settings], transport_name: str
) -> Iterator[Callable[..., Transport]]:
    """``make_transport(queue={...}, ...)``: a transport of this test's kind for our server, with settings as
    ``make_settings`` takes them and a client of its own; all are closed at the end."""
    made: list[Transport] = []

    def make(**sections: dict[str, Any]) -> Transport:
        transport = create_transport(make_settings(transport_name, **sections))
        made.append(transport)
        return transport

    yield make
    for transport in made:
        transport.close()


@pytest.fixture
def run_cli(redis_url: str, tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run ``msgrelay ARGS`` as a real process against our server (``--redis-url`` is added unless given)."""

    def run(
        *args: str, env: dict[str, str] | None = None, timeout: float = 60, url: bool = True
    ) -> subprocess.CompletedProcess[str]:
        full_env = {**os.environ, **(env or {})}  # os.environ is already free of MSGRELAY_* settings
        argv = [sys.executable, "-m", "msgrelay", *args]
        if url and "--redis-url" not in args and args and args[0] not in ("--help", "--version"):
            argv += ["--redis-url", redis_url]
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, env=full_env, cwd=tmp_path, check=False
        )

    return run


@pytest.fixture
def spawn_cli(redis_url: str, tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """``spawn_cli(ARGS)``: start ``msgrelay ARGS --redis-url <ours>`` without waiting (``url=False``: no
    URL added); killed at teardown."""
    started: list[subprocess.Popen[str]] = []

    def spawn(*args: str, url: bool = True) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [sys.executable, "-m", "msgrelay", *args, *(["--redis-url", redis_url] if url else [])],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
        )  # fmt: skip
        started.append(process)
        return process

    yield spawn
    for process in started:
        if process.poll() is None:
            process.kill()
        process.communicate()


@pytest.fixture
def serve() -> Iterator[type[Server]]:
    """``serve(Reply(200), Reply(429, ...))``: a real local HTTP server playing them, stopped at the end."""
    started: list[Server] = []

    class Tracked(Server):
        def __init__(self, *replies: Reply) -> None:
            super().__init__(*replies)
            started.append(self)

    yield Tracked
    for server in started:
        server.stop()


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    """The log folder of a test's sinks (created by the sink)."""
    return tmp_path / "logs"


@pytest.fixture
def make_sink(request: pytest.FixtureRequest, log_dir: Path) -> Iterator[SinkMaker]:
    """``make_sink(mode, name, rotation=...)``: log-file sinks on ``log_dir``, closed at the end."""
    maker = SinkMaker(request, log_dir)
    yield maker
    maker.close()
