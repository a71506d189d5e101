"""A Redis that cannot serve us, waited out and told once: one line when an episode starts, one when it ends.

Long-running commands (``consume``, ``notify``, ``monitor``) wait out every Redis failure that goes away on
its own: a lost connection, a timeout, and the states of :mod:`msgrelay.transport.states` (loading, a
read-only replica, a failed save, a busy script ...). Each failed attempt is not news: a restart into
LOADING is seconds to minutes of them. :class:`OutageLog` turns the attempts into an episode: one line
naming the state when it starts (and when the state changes, e.g. refused -> loading), one line when Redis
serves again, nothing in between and never a traceback.

:func:`wait_until_serving` is the start-up side: a command started while Redis is loading or a replica
waits instead of exiting with a "cannot connect" hint, but a server that is not there at all on the first
attempt (a wrong URL, Redis not started) still fails at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from msgrelay.errors import (
    BrokerConnectionError,
    BrokerError,
    BrokerResponseError,
    BrokerStateError,
    BrokerTimeoutError,
)
from msgrelay.retries import Backoff
from msgrelay.transport.states import REPLICA_STATES, STATES

log = logging.getLogger(__name__)

NEWS_LATER: frozenset[str] = frozenset({"UNBLOCKED"})
"""States that are not news by themselves: an ended blocking read is followed by what ended it (the next
command hits the replica's READONLY, or finds the stream gone and creates the group again)."""

START_BACKOFF = Backoff(base_s=0.1, cap_s=2.0)
"""Between start-up attempts while Redis cannot serve (loading takes seconds to minutes)."""


def waitable(error: BrokerError) -> bool:
    """Whether a long-running command should wait ``error`` out: it goes away on its own (a lost
    connection, a timeout, a state of the server), unlike a refusal of our request (NOPERM, WRONGTYPE)."""
    if isinstance(error, BrokerResponseError):
        return error.transient
    return isinstance(error, BrokerConnectionError | BrokerTimeoutError)


def _kind(error: BrokerError) -> str:
    """What an episode is about: a change of kind is news (refused -> loading), a repeat is not. A replica
    answers writes READONLY and the rest MASTERDOWN when it lost its primary: one kind, "a replica"."""
    if isinstance(error, BrokerStateError):
        return "replica" if error.state in REPLICA_STATES else error.state
    return type(error).__name__ if not isinstance(error, BrokerResponseError) else str(error)


@dataclass(slots=True)
class OutageLog:
    """Says once that Redis cannot serve us (and why), and once that it serves again.

    ``say`` gets each line (default: a warning on the ``msgrelay.outage`` logger, which the CLI prints on
    stderr); ``primary`` names the primary when the server turned out to be a replica (``Transport.primary``:
    one ``ROLE`` per episode, never on the hot path)."""

    say: Callable[[str], None] = log.warning
    primary: Callable[[], str | None] = lambda: None
    clock: Callable[[], float] = time.monotonic
    _started: float | None = field(default=None, init=False)
    _kind: str | None = field(default=None, init=False)
    _url: str = field(default="", init=False)

    @property
    def ongoing(self) -> bool:
        return self._started is not None

    def failed(self, error: BrokerError) -> None:
        """One more failed attempt: a line if it starts an episode or changes what the episode is about."""
        kind = _kind(error)
        if kind == self._kind or kind in NEWS_LATER:
            return
        if self._started is None:
            self._started = self.clock()
        self._kind = kind
        self._url = error.url
        self.say(f"{self._describe(error)}; waiting for it, msgrelay resumes by itself")

    def recovered(self) -> None:
        """A command went through: ends the episode (one line), if there was one. Cheap when there was not."""
        if self._started is None:
            return
        took = self.clock() - self._started
        self._started = self._kind = None
        self.say(f"Redis at {self._url} serves again, after {took:.1f}s; resuming")

    def _describe(self, error: BrokerError) -> str:
        if isinstance(error, BrokerStateError) and error.state in REPLICA_STATES:
            primary = self.primary()
            if primary:  # "a read-only replica of h:p", "a replica of h:p that lost its primary ..."
                said = STATES[error.state]
                named = said.replace("replica", f"replica of {primary}", 1)
                return str(error).replace(said, named, 1)
        return str(error)


def wait_until_serving(
    check: Callable[[], object],
    stop: threading.Event,
    outage: OutageLog,
    *,
    backoff: Backoff = START_BACKOFF,
) -> bool:
    """``check()`` (a PING, the start-up checks) until it goes through: True; False if ``stop`` was set
    while waiting.

    Redis states and, once Redis was seen, lost connections and timeouts are waited out with ``backoff``
    and told through ``outage``. Raised at once: a connection failure or a timeout on the first attempt
    (nothing answers at that URL) and refusals of our request (:func:`waitable` is false)."""
    failures = 0
    while not stop.is_set():
        try:
            check()
        except BrokerError as exc:
            if stop.is_set():
                return False  # a stop cut the attempt short (see msgrelay.stopping): not a failure
            if not waitable(exc) or (failures == 0 and not isinstance(exc, BrokerStateError)):
                raise
            failures += 1
            outage.failed(exc)
            stop.wait(backoff.delay(failures))
            continue
        outage.recovered()
        return True
    return False
