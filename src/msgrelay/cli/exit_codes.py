"""The exit codes of ``msgrelay``, and which error maps to which.

A script can tell a Redis outage (4: wait and retry) from a bad configuration (3: fix it) without parsing
the error line.
"""

from __future__ import annotations

from enum import IntEnum

from msgrelay.errors import (
    BrokerConnectionError,
    BrokerError,
    BrokerStateError,
    BrokerTimeoutError,
    ConfigError,
    MessageError,
    MsgrelayError,
    SinkError,
    UnsafeRedisError,
)


class ExitCode(IntEnum):
    OK = 0
    FAILURE = 1
    USAGE = 2
    CONFIG_ERROR = 3
    REDIS_UNAVAILABLE = 4
    REDIS_ERROR = 5
    SINK_FAILED = 6
    INVALID_MESSAGE = 7
    UNSAFE_REDIS = 8
    INTERRUPTED = 130


_EXIT_CODES: tuple[tuple[type[MsgrelayError], ExitCode], ...] = (
    (ConfigError, ExitCode.CONFIG_ERROR),
    (UnsafeRedisError, ExitCode.UNSAFE_REDIS),
    (BrokerStateError, ExitCode.REDIS_UNAVAILABLE),  # running, but not serving now: wait and retry
    (BrokerConnectionError, ExitCode.REDIS_UNAVAILABLE),
    (BrokerTimeoutError, ExitCode.REDIS_UNAVAILABLE),
    (BrokerError, ExitCode.REDIS_ERROR),
    (SinkError, ExitCode.SINK_FAILED),
    (MessageError, ExitCode.INVALID_MESSAGE),
)
"""The first class that matches decides (subclasses before their parents)."""


def exit_code_for(error: MsgrelayError) -> ExitCode:
    return next((code for kind, code in _EXIT_CODES if isinstance(error, kind)), ExitCode.FAILURE)


HINTS: dict[ExitCode, str] = {
    ExitCode.REDIS_UNAVAILABLE: "check that Redis is running and --redis-url / MSGRELAY_REDIS__URL",
    ExitCode.CONFIG_ERROR: "see `msgrelay config show` and the README's Configuration section",
}
"""What to look at next, printed after the error line."""

STATE_HINT = "Redis is running but cannot serve this now: try again later (consume, notify and monitor wait)"
"""The hint of a :class:`BrokerStateError` (loading, a read-only replica ...): not "check that it runs"."""


def hint_for(error: MsgrelayError) -> str | None:
    """What to look at next after ``error``'s line, if anything."""
    if isinstance(error, BrokerStateError):
        return STATE_HINT
    return HINTS.get(exit_code_for(error))
