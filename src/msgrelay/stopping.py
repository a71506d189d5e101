"""A stop that a stalled Redis cannot hold up: SIGTERM / Ctrl-C end a long-running command in bounded time.

A command that was asked to stop finishes its batch, settles it and returns, which takes milliseconds while
Redis answers. A stalled server (``kill -STOP``, a frozen VM, a network that drops packets) answers nothing,
and a command waiting on it would only notice after ``socket_timeout_s`` (then once more for each command
on the way out): 15 s and more, past a container's grace period (10 s by default in Docker and Kubernetes)
and into its SIGKILL. :class:`BoundedStop` gives the command ``stop_timeout_s`` (default 5 s) after the
signal, then cuts its Redis connections (again every 50 ms until it returned): the command waiting on Redis
fails at once and the loop, seeing the stop, returns.

Nothing is lost by the cut: a batch written but not acknowledged stays pending under the consumer's name
(streams) or in its processing list (lists) and is delivered again, after ``claim_idle_s`` or when the same
name starts again: a possible duplicate line, never a lost one (none at all with
``delivery = "effectively_once"``, whose journal confirms the write). The file writes themselves are never
interrupted: only Redis I/O is cut.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

DEFAULT_STOP_TIMEOUT_S = 5.0
"""``[redis] stop_timeout_s`` when not set: half of a container's default grace period."""
CUT_EVERY_S = 0.05
"""Once the bound has passed, the connections are cut again this often until the command returned."""


class BoundedStop:
    """The stop request of one command (``requested``), and the bound on how long honouring it may take."""

    def __init__(self, timeout_s: float = DEFAULT_STOP_TIMEOUT_S) -> None:
        self.timeout_s = timeout_s
        self.requested = threading.Event()
        self.forced = False
        """Whether the bound passed and Redis connections had to be cut."""
        self._callbacks: list[Callable[[], None]] = []
        self._watchers: list[threading.Event] = []

    def install(self) -> None:
        """SIGINT and SIGTERM request the stop (from now on: a signal during start-up counts too)."""
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: self.request())

    def request(self) -> None:
        """Ask the command to stop (safe from a signal handler): runs the ``on_request`` callbacks."""
        self.requested.set()
        for wake in list(self._watchers):
            wake.set()
        for callback in list(self._callbacks):
            callback()

    def on_request(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` when the stop is requested (now, if it already was)."""
        self._callbacks.append(callback)
        if self.requested.is_set():
            callback()

    @contextmanager
    def bounding(self, abort: Callable[[], None]) -> Iterator[None]:
        """While the body runs, a requested stop that has not ended it within ``timeout_s`` calls ``abort``
        (``Transport.abort``: cut the Redis connections) every ``CUT_EVERY_S`` until the body returned."""
        done, wake = threading.Event(), threading.Event()
        self._watchers.append(wake)
        if self.requested.is_set():
            wake.set()
        watcher = threading.Thread(
            target=self._watch, args=(done, wake, abort), name="msgrelay-stop", daemon=True
        )
        watcher.start()
        try:
            yield
        finally:
            done.set()
            wake.set()
            watcher.join()
            self._watchers.remove(wake)

    def _watch(self, done: threading.Event, wake: threading.Event, abort: Callable[[], None]) -> None:
        wake.wait()
        if done.wait(self.timeout_s):
            return
        self.forced = True
        while not done.is_set():
            abort()
            done.wait(CUT_EVERY_S)
