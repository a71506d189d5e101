"""The wire message and the in-flight delivery, kept apart.

A :class:`Message` is exactly what travels through Redis: immutable, no delivery state. A
:class:`Delivery` is one receipt of a raw entry by one consumer: the bytes as read, the transport's handle
needed to acknowledge it, and how many times it has been delivered. Decoding a delivery may fail; the
consumer then dead-letters the delivery with the raw bytes intact.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

JSONValue = Any
"""A value that came out of (or goes into) JSON: str, int, float, bool, None, list or dict."""


@dataclass(frozen=True, slots=True)
class Message:
    """One log message as it travels on the wire.

    ``id`` is assigned by the producer and survives every hop, so duplicates can be recognised downstream.
    ``type`` is always one of :data:`msgrelay.levels.LOG_TYPES`. ``fields`` holds any extra JSON fields the
    producer attached (host, service, request id ...); treat it as read-only.
    """

    id: str
    type: str
    text: str
    ts: float
    fields: dict[str, JSONValue] = field(default_factory=dict)


def _message_factory() -> Callable[[str, str, str, float, dict[str, JSONValue]], Message]:
    set_id, set_type, set_text, set_ts, set_fields = (
        getattr(Message, name).__set__ for name in ("id", "type", "text", "ts", "fields")
    )
    allocate = object.__new__

    def new_message(
        msg_id: str, msg_type: str, text: str, ts: float, fields: dict[str, JSONValue]
    ) -> Message:
        message = allocate(Message)
        set_id(message, msg_id)
        set_type(message, msg_type)
        set_text(message, text)
        set_ts(message, ts)
        set_fields(message, fields)
        return message

    return new_message


new_message = _message_factory()
"""``Message(...)`` for the decoder's hot path, twice as fast: it fills the slots directly instead of going
through the frozen dataclass's ``object.__setattr__`` per field. Same object, same checks (none)."""


@dataclass(slots=True)  # not frozen: a frozen dataclass is three times slower to make, per entry
class Delivery:
    """One raw entry handed to a consumer.

    ``handle`` is what the transport needs to acknowledge the entry (a stream entry id, or the exact list
    element). ``source_id`` is a stable transport-side identity used to name messages that arrive without a
    producer id (the stream entry id; empty for lists). ``attempt`` counts deliveries, starting at 1, across
    crashes, take-overs and retries. ``last_error`` is the error of the previous attempt, if it failed.
    ``unreadable`` says why the transport could not read the entry as one message (its fields' layout):
    such a delivery is dead-lettered as it is, never decoded; ``raw`` then holds what it could keep.
    """

    raw: bytes
    handle: bytes
    source_id: str = ""
    attempt: int = 1
    last_error: str = ""
    unreadable: str = ""
