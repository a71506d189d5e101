"""A redis-server child with AOF that can be SIGKILLed, stalled and restarted on the same data and port.

Every (re)start goes through :class:`msgrelay.redis_server.RedisServer`, which waits for "ready" and checks
that ``INFO server`` reports the child's pid; :meth:`RedisNode.admin` checks the pid again before it hands
out a client, so an admin command can never reach a server we did not start.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from msgrelay.redis_server import RedisServer, RedisServerError, free_tcp_port


class RedisNode:
    """One private Redis, restartable. ``tcp`` gives it a loopback port (verified free) for the proxy."""

    def __init__(
        self,
        data_dir: Path,
        *,
        tcp: bool = False,
        appendfsync: str = "everysec",
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.data_dir = data_dir
        self.port = free_tcp_port() if tcp else None
        self.args = ("--appendonly", "yes", "--appendfsync", appendfsync, *extra_args)
        self.server: RedisServer | None = None
        self.restarts = 0

    @property
    def url(self) -> str:
        return self._server().url

    def _server(self) -> RedisServer:
        if self.server is None:
            raise RedisServerError("the chaos redis-server was never started")
        return self.server

    def start(self, *, extra: tuple[str, ...] = (), loaded: bool = True) -> RedisNode:
        """Start (on the same data dir and port); ``extra`` arguments for this start only; ``loaded=False``
        returns once it answers, possibly still loading its dataset (answering LOADING)."""
        server = RedisServer(self.data_dir, tcp_port=self.port, extra_args=(*self.args, *extra))
        self.server = server.start(loaded=loaded)
        return self

    def alive(self) -> bool:
        server = self.server
        return server is not None and server.process is not None and server.process.poll() is None

    def sigkill(self) -> None:
        """SIGKILL the server and reap it (the page cache survives: this proves write-before-reply)."""
        server = self._server()
        if self.alive():
            os.kill(server.pid, signal.SIGKILL)
        assert server.process is not None
        server.process.wait(timeout=10)

    def restart(self, *, extra: tuple[str, ...] = (), loaded: bool = True) -> None:
        """Start again on the same data dir and port; RedisServer re-verifies the new pid."""
        if self.alive():
            raise RedisServerError("restart() of a running server")
        self.start(extra=extra, loaded=loaded)
        self.restarts += 1

    def pause(self) -> None:
        os.kill(self._server().pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self._server().pid, signal.SIGCONT)

    @contextmanager
    def admin(self, timeout_s: float = 10.0) -> Iterator[redis.Redis]:
        """A client to our own server, after checking its pid once more."""
        server = self._server()
        client = redis.Redis.from_url(server.url, socket_timeout=timeout_s)
        try:
            reported = int(client.info("server")["process_id"])
            if reported != server.pid:
                raise RedisServerError(f"{server.url} reports pid {reported}, not our child {server.pid}")
            yield client
        finally:
            client.close()

    def info(self, section: str) -> dict[str, object]:
        with self.admin() as client:
            return dict(client.info(section))

    def stop(self) -> None:
        """Teardown: resume a paused server, then stop it (SIGTERM, SIGKILL after 10 s)."""
        if self.alive():
            self.resume()
            self._server().stop()

    def wait_ready(self, deadline_s: float = 10.0) -> None:
        """After a restart the AOF is loaded before "ready"; wait until a PING answers all the same."""
        deadline = time.monotonic() + deadline_s
        while True:
            try:
                with self.admin(timeout_s=1.0) as client:
                    client.ping()
                    return
            except redis.exceptions.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
