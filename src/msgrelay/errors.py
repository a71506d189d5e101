"""Every error msgrelay raises, under one root.

    MsgrelayError
    ├── ConfigError                 bad or unknown setting, unreadable config file
    │   └── UnsupportedRedisError   the configured server is of a kind not supported yet (Redis Cluster)
    ├── UnsafeRedisError            the server may evict or forget queue data, and we were told to refuse
    ├── BrokerError                 anything that went wrong talking to Redis
    │   ├── BrokerConnectionError   cannot reach the server, or the connection dropped
    │   │   └── ProduceOutcomeUnknown   the connection failed after messages were sent: stored or not?
    │   ├── BrokerTimeoutError      the server did not answer in time
    │   └── BrokerResponseError     the server answered with an error (NOPERM, WRONGTYPE ...)
    │       └── BrokerStateError    ... about its state, not our request: loading, a read-only replica,
    │                               persistence failing, a busy script, out of memory: wait it out
    ├── MessageError                a message that cannot be sent or processed
    │   ├── MessageTooLarge         over ``max_message_bytes``
    │   └── DecodeError             raw entry that is not a valid message; keeps the raw bytes
    └── SinkError                   a sink could not durably write a batch (disk full, EIO ...)

Redis' own exceptions are translated into the ``Broker*`` family at exactly one boundary,
:func:`msgrelay.transport.redis_errors`; nothing above the transport layer sees a ``redis`` exception.
"""

from __future__ import annotations


class MsgrelayError(Exception):
    """Root of every error raised by msgrelay."""


class ConfigError(MsgrelayError):
    """A setting is unknown, invalid, or the configuration file cannot be read."""


class UnsupportedRedisError(ConfigError):
    """The configured server is of a kind msgrelay does not support yet (a Redis Cluster node): point
    ``redis.url`` elsewhere. Raised at connect, before any key is touched (exit code 3)."""


class UnsafeRedisError(MsgrelayError):
    """Redis may evict or forget queue data, and ``consumer.unsafe_redis = "refuse"`` says not to run."""


class BrokerError(MsgrelayError):
    """Talking to Redis failed. ``url`` is the server's URL with any password masked."""

    def __init__(self, message: str, *, url: str = "") -> None:
        super().__init__(message)
        self.url = url


class BrokerConnectionError(BrokerError):
    """Redis cannot be reached, or the connection was lost."""


class ProduceOutcomeUnknown(BrokerConnectionError):
    """A send failed after its messages may have reached Redis: they may or may not be stored.

    Never report these as sent, nor as lost: resending them is safe (the consumer's lines carry the ids,
    so a duplicate is recognisable). ``unknown_ids`` are the messages in that state; ``stored_ids`` were
    confirmed before the failure; ``unsent_ids`` were never sent.
    """

    def __init__(
        self,
        message: str,
        *,
        url: str = "",
        unknown_ids: list[str] | None = None,
        stored_ids: list[str] | None = None,
        unsent_ids: list[str] | None = None,
    ) -> None:
        super().__init__(message, url=url)
        self.unknown_ids = unknown_ids or []
        self.stored_ids = stored_ids or []
        self.unsent_ids = unsent_ids or []


class BrokerTimeoutError(BrokerError):
    """Redis did not answer within the socket timeout."""


class BrokerResponseError(BrokerError):
    """Redis answered with an error reply (out of memory, no permission, wrong type ...).

    ``transient`` errors (out of memory, a failover, a busy script) go away on their own: a consumer backs
    off and tries again instead of exiting."""

    def __init__(self, message: str, *, url: str = "", transient: bool = False) -> None:
        super().__init__(message, url=url)
        self.transient = transient


class BrokerStateError(BrokerResponseError):
    """Redis is running but its state, not our request, makes it refuse the command right now.

    ``state`` is the error code of the reply (``LOADING``, ``READONLY``, ``MASTERDOWN``, ``MISCONF``,
    ``BUSY``, ``NOREPLICAS``, ``OOM``, ``UNBLOCKED``, ``NOGROUP`` ...; the list and its sources are in
    :mod:`msgrelay.transport.states`). Always transient: long-running commands wait it out with backoff and
    resume; the message names the state in words ("Redis at ... is loading its dataset")."""

    def __init__(self, message: str, *, url: str = "", state: str) -> None:
        super().__init__(message, url=url, transient=True)
        self.state = state


class MessageError(MsgrelayError):
    """A message cannot be sent or processed."""


class MessageTooLarge(MessageError):
    """The encoded message is larger than ``max_message_bytes``."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"message is {size} bytes, over the {limit}-byte limit")
        self.size = size
        self.limit = limit


class DecodeError(MessageError):
    """A raw entry is not a valid message.

    ``reason`` is a short machine-readable code (see :mod:`msgrelay.codec`); ``raw`` keeps the bytes that
    failed, so the dead-letter store can hold them for inspection and replay.
    """

    def __init__(self, reason: str, detail: str, raw: bytes) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.raw = raw


class SinkError(MsgrelayError):
    """A sink could not durably write (part of) a batch; those messages must not be acknowledged.

    ``failed_types`` names the message types whose lines are not durably written; empty means the whole
    batch. Lines of every other type were written and may be acknowledged.
    """

    def __init__(self, message: str, *, failed_types: frozenset[str] = frozenset()) -> None:
        super().__init__(message)
        self.failed_types = failed_types


class NotifyError(MsgrelayError):
    """A notifier could not deliver a notification."""


class NotifyDeferred(NotifyError):
    """The receiver asked us to come back later (HTTP 429, ``Retry-After``): no failure, no attempt used."""

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class NotifyTransientError(NotifyError):
    """May work when tried again (5xx, a timeout, a dropped connection): retried with backoff, in budget."""


class NotifyPermanentError(NotifyError):
    """Will not work however often it is tried (401, 404, a payload the receiver refuses): dead-lettered."""
