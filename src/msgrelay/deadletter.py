"""What goes into the dead-letter stream, and how it reads back.

A dead letter keeps everything needed to understand and replay the entry: the reason code (see
:mod:`msgrelay.codec`), a human-readable detail, the raw bytes exactly as read (or, for an oversize entry,
a preview and the size), where it came from (the origin key and its transport: ``streams``, ``lists``, or
``outbox`` for a notification of the notify loop), which consumer gave up on it, and the message type when
the entry decoded but could not be processed (a poison message).
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from typing import Any, Final, NamedTuple, TypeVar

from redis.typing import EncodableT, FieldT

from msgrelay.message import Delivery

OVERSIZE_PREVIEW_BYTES: Final = 1024
"""How much of an oversize entry the dead-letter store keeps; the rest would cost Redis memory for nothing."""

OUTBOX_TRANSPORT: Final = "outbox"
"""The transport recorded on a notification's dead letter: its origin is the notify outbox (a sorted set)."""

N = TypeVar("N", int, float)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A delivery the consumer gave up on, with why. ``msg_type`` is empty when the entry never decoded."""

    delivery: Delivery
    reason: str
    detail: str
    msg_type: str = ""

    def to_fields(self, *, origin: str, transport: str, consumer: str) -> dict[FieldT, EncodableT]:
        """The stream entry's fields. ``origin`` is the queue key, ``transport`` how it is used (``streams``,
        ``lists`` or :data:`OUTBOX_TRANSPORT`): replay puts the entry back the same way, never as another
        type of key."""
        raw = self.delivery.raw
        truncated = self.reason == "oversize" and len(raw) > OVERSIZE_PREVIEW_BYTES
        fields: dict[FieldT, EncodableT] = {
            b"reason": self.reason,
            b"detail": self.detail[:1000],
            b"raw": raw[:OVERSIZE_PREVIEW_BYTES] if truncated else raw,
            b"raw_size": len(raw),
            b"truncated": int(truncated),
            b"origin": origin,
            b"transport": transport,
            b"source_id": self.delivery.source_id,
            b"consumer": consumer,
            b"attempt": self.delivery.attempt,
            b"ts": round(time.time(), 3),
        }
        if self.msg_type:
            fields[b"type"] = self.msg_type
        return fields


@dataclass(frozen=True, slots=True)
class DeadLetterEntry:
    """One entry of the dead-letter stream as read back. ``id`` is its stream id (``<ms>-<seq>``).

    ``raw`` is the entry exactly as the consumer read it, unless ``truncated``: then it is only the first
    :data:`OVERSIZE_PREVIEW_BYTES` of an oversize entry of ``raw_size`` bytes, and cannot be replayed.
    """

    id: str
    reason: str
    detail: str
    raw: bytes
    raw_size: int
    truncated: bool
    origin: str
    source_id: str
    consumer: str
    attempt: int
    ts: float
    msg_type: str = ""
    transport: str = ""
    """How the origin queue is used (``streams``, ``lists``, ``outbox``); empty on dead letters written
    before it was recorded."""

    @classmethod
    def from_fields(cls, entry_id: bytes | str, fields: dict[bytes, bytes]) -> DeadLetterEntry:
        """Read an entry written by :meth:`DeadLetter.to_fields`; missing or garbled fields read as empty."""

        def text(name: bytes) -> str:
            return fields.get(name, b"").decode("utf-8", "replace")

        raw = fields.get(b"raw", b"")
        return cls(
            id=entry_id.decode() if isinstance(entry_id, bytes) else entry_id,
            reason=text(b"reason"),
            detail=text(b"detail"),
            raw=raw,
            raw_size=_number(fields.get(b"raw_size"), int, len(raw)),
            truncated=fields.get(b"truncated") == b"1",
            origin=text(b"origin"),
            source_id=text(b"source_id"),
            consumer=text(b"consumer"),
            attempt=_number(fields.get(b"attempt"), int, 0),
            ts=_number(fields.get(b"ts"), float, 0.0),
            msg_type=text(b"type"),
            transport=text(b"transport"),
        )

    def as_dict(self) -> dict[str, Any]:
        """Plain data for JSON: the raw bytes as base64 (exact) and, when they are UTF-8, as text."""
        try:
            raw_text: str | None = self.raw.decode("utf-8")
        except UnicodeDecodeError:
            raw_text = None
        return {
            "id": self.id,
            "reason": self.reason,
            "detail": self.detail,
            "type": self.msg_type,
            "origin": self.origin,
            "transport": self.transport,
            "source_id": self.source_id,
            "consumer": self.consumer,
            "attempt": self.attempt,
            "ts": self.ts,
            "raw_size": self.raw_size,
            "truncated": self.truncated,
            "raw_base64": base64.b64encode(self.raw).decode("ascii"),
            "raw_text": raw_text,
        }


class DeadLetterHead(NamedTuple):
    """The small fields of a dead letter, all that filters and replay planning look at (no raw bytes)."""

    id: str
    reason: str
    msg_type: str
    origin: str
    truncated: bool
    transport: str = ""


def _number(value: bytes | None, kind: type[N], default: N) -> N:
    """A numeric field, or ``default`` when it is absent or not a number (an entry XADDed by hand)."""
    try:
        return default if value is None else kind(value)
    except ValueError:
        return default
