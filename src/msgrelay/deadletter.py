"""What goes into the dead-letter stream, and how it reads back.

A dead letter keeps everything needed to understand and replay the entry: the reason code (see
:mod:`msgrelay.codec`), a human-readable detail, the raw bytes exactly as read (or, for an oversize entry,
a preview and the size), where it came from and which consumer gave up on it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Final

from redis.typing import EncodableT, FieldT

from msgrelay.message import Delivery

OVERSIZE_PREVIEW_BYTES: Final = 1024
"""How much of an oversize entry the dead-letter store keeps; the rest would cost Redis memory for nothing."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A delivery the consumer gave up on, with why."""

    delivery: Delivery
    reason: str
    detail: str

    def to_fields(self, *, origin: str, consumer: str) -> dict[FieldT, EncodableT]:
        raw = self.delivery.raw
        truncated = self.reason == "oversize" and len(raw) > OVERSIZE_PREVIEW_BYTES
        return {
            b"reason": self.reason,
            b"detail": self.detail[:1000],
            b"raw": raw[:OVERSIZE_PREVIEW_BYTES] if truncated else raw,
            b"raw_size": len(raw),
            b"truncated": int(truncated),
            b"origin": origin,
            b"source_id": self.delivery.source_id,
            b"consumer": consumer,
            b"attempt": self.delivery.attempt,
            b"ts": round(time.time(), 3),
        }
