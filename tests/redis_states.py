"""Putting a real redis-server of the test's own into each state that makes it refuse commands, and out again.

Every state is the server's own doing, reached the way operators reach it: ``REPLICAOF`` (a read-only
replica; with ``replica-serve-stale-data no`` and no primary, MASTERDOWN), a failed RDB save (MISCONF), a
script that runs past ``busy-reply-threshold`` (BUSY), ``min-replicas-to-write`` (NOREPLICAS), ``maxmemory``
(OOM), and a restart on a dataset that loads slowly (``key-load-delay``: LOADING, ended on demand with
``CONFIG SET key-load-delay 0``). Nothing is mocked; each helper checks the server really answers with the
state before it yields, and undoes it afterwards.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import redis

from msgrelay.redis_server import RedisServer, free_tcp_port

STATE_ARGS = ("--enable-protected-configs", "yes")
"""MISCONF needs ``CONFIG SET dir`` (a protected config since Redis 7)."""
LOADING_KEYS = 20_000
LOADING_DELAY_US = 1000
"""Up to 20 s of LOADING (20,000 keys x 1 ms), ended by the test as soon as it has seen what it needs."""


def poll(predicate: Callable[[], bool], timeout_s: float = 20.0, what: str = "condition") -> None:
    """Wait for ``predicate`` with a deadline (an event, not a sleep); fail naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(0.02)


def refuses_with(client: redis.Redis, code: str, *command: object) -> bool:
    """Whether ``command`` is refused with an error reply starting with ``code`` right now."""
    try:
        client.execute_command(*(command or ("PING",)))
    except redis.exceptions.RedisError as exc:
        return (exc.status_code or str(exc).split(" ", 1)[0]) == code or str(exc).startswith(code)
    return False


class StateServer:
    """A private redis-server that the helpers below drive into a state and back."""

    def __init__(self, data_dir: Path, *, binary: str | None = None) -> None:
        self.server = RedisServer(data_dir, extra_args=STATE_ARGS, binary=binary)
        self.admin: redis.Redis | None = None

    def start(self) -> StateServer:
        self.server.start()
        self.admin = self.server.client()
        return self

    @property
    def url(self) -> str:
        return self.server.url

    def client(self) -> redis.Redis:
        assert self.admin is not None
        return self.admin

    def stop(self) -> None:
        if self.admin is not None:
            self.admin.close()
        self.server.stop()

    @contextmanager
    def replica(self, *, stale_data: bool = True) -> Iterator[int]:
        """A replica of a primary that is not there (its data stays as it is): READONLY for writes; with
        ``stale_data=False``, MASTERDOWN for nearly everything. Yields the primary's port."""
        admin = self.client()
        port = free_tcp_port()
        admin.config_set("replica-serve-stale-data", "yes" if stale_data else "no")
        admin.execute_command("REPLICAOF", "127.0.0.1", port)
        try:
            yield port
        finally:
            admin.execute_command("REPLICAOF", "NO", "ONE")
            admin.config_set("replica-serve-stale-data", "yes")

    @contextmanager
    def misconf(self) -> Iterator[None]:
        """The last RDB save failed (its folder vanished): writes and PING answer MISCONF."""
        admin = self.client()
        broken = self.server.data_dir / "vanishing"
        broken.mkdir()
        admin.config_set("save", "3600 1")
        admin.config_set("dir", str(broken))
        broken.rmdir()
        admin.bgsave()
        poll(lambda: refuses_with(admin, "MISCONF"), what="MISCONF")
        try:
            yield
        finally:
            admin.config_set("dir", str(self.server.data_dir))
            admin.bgsave()
            poll(lambda: not refuses_with(admin, "MISCONF"), what="the end of MISCONF")
            admin.config_set("save", "")

    @contextmanager
    def busy(self) -> Iterator[None]:
        """A script that loops until killed: every command answers BUSY after 50 ms."""
        admin = self.client()
        admin.config_set("busy-reply-threshold", "50")
        looper = self.server.client()

        def loop() -> None:
            try:
                looper.eval("while true do end", 0)
            except redis.exceptions.ResponseError:
                pass  # killed: the end of the state
            finally:
                looper.close()

        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        poll(lambda: refuses_with(admin, "BUSY"), what="BUSY")
        try:
            yield
        finally:
            admin.script_kill()
            thread.join(10)
            admin.config_set("busy-reply-threshold", "5000")

    @contextmanager
    def configured(self, name: str, value: str, back: str) -> Iterator[None]:
        """``CONFIG SET name value`` for the body, then ``back``."""
        admin = self.client()
        admin.config_set(name, value)
        try:
            yield
        finally:
            admin.config_set(name, back)

    def noreplicas(self) -> AbstractContextManager[None]:
        """``min-replicas-to-write 1`` and no replica: writes answer NOREPLICAS."""
        return self.configured("min-replicas-to-write", "1", "0")

    def oom(self) -> AbstractContextManager[None]:
        """Over ``maxmemory`` (noeviction): commands that may grow memory answer OOM."""
        return self.configured("maxmemory", "1", "0")

    def restart_loading(self) -> None:
        """Restart on a saved dataset that loads slowly: the server answers LOADING until ``end_loading``."""
        admin = self.client()
        pipe = admin.pipeline(transaction=False)
        for i in range(LOADING_KEYS):
            pipe.set(f"padding:{i}", "x")
        pipe.execute()
        admin.save()
        admin.close()
        self.server.stop()
        self.server.extra_args = (
            *STATE_ARGS,
            "--key-load-delay", str(LOADING_DELAY_US),
            "--loading-process-events-interval-bytes", "1024",
        )  # fmt: skip
        self.server.start(loaded=False)
        self.admin = self.server.client()

    def end_loading(self) -> None:
        """Let the dataset load at full speed, and wait until it is loaded."""
        admin = self.client()
        admin.config_set("key-load-delay", "0")
        poll(lambda: not refuses_with(admin, "LOADING"), what="the end of LOADING")
        admin.delete(*(f"padding:{i}" for i in range(LOADING_KEYS)))
