"""Retrying a message whose processing failed: when, how often, and how the retry travels.

A failed message is acknowledged and, in the same script, scheduled in the retry sorted set
(:meth:`msgrelay.keys.KeySchema.retry`) with the time of its next attempt; when that time comes a consumer
puts it back on the queue carrying its attempt count, so the count survives every hop and a message that
keeps failing reaches the dead-letter store after ``max_deliveries`` attempts instead of looping forever.
"""

from __future__ import annotations

import random
import secrets
from dataclasses import dataclass
from typing import Final

from msgrelay.message import Delivery

MAX_ERROR_CHARS: Final = 300
"""How much of the last error travels with a retry (and into the dead-letter store)."""


@dataclass(frozen=True, slots=True)
class Backoff:
    """Capped exponential backoff, pure: ``delay(n)`` for the n-th consecutive failure (n >= 1)."""

    base_s: float = 0.1
    cap_s: float = 5.0

    def delay(self, failures: int) -> float:
        return float(min(self.cap_s, self.base_s * 2 ** min(failures - 1, 64)))


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Capped exponential backoff with full jitter on the upper half, pure: no clock, no sleeping.

    ``delay_s(n)`` is the wait after the n-th failed attempt (n >= 1): between half and all of
    ``min(cap_s, base_s * 2 ** (n - 1))``, so retries of many messages that failed together spread out.
    """

    base_s: float = 1.0
    cap_s: float = 60.0
    max_deliveries: int = 5

    def ceiling_s(self, attempt: int) -> float:
        return float(min(self.cap_s, self.base_s * 2 ** min(attempt - 1, 64)))

    def delay_s(self, attempt: int, rng: random.Random | None = None) -> float:
        ceiling = self.ceiling_s(attempt)
        return ceiling / 2 + (rng or _RNG).random() * ceiling / 2

    def exhausted(self, attempt: int) -> bool:
        """Whether a message that failed on ``attempt`` has used up its deliveries."""
        return attempt >= self.max_deliveries


_RNG = random.Random()  # noqa: S311 - jitter, not cryptography


@dataclass(frozen=True, slots=True)
class RetryRecord:
    """One scheduled retry: the delivery whose attempt failed, why, and when to try again (epoch ms)."""

    delivery: Delivery
    error: str
    due_ms: int

    @property
    def handle(self) -> bytes:
        return self.delivery.handle

    def encode(self) -> bytes:
        """The sorted-set member ``<token> <attempt> <error>\\n<raw>``; tokens keep equal entries apart."""
        error = " ".join(self.error.split())[:MAX_ERROR_CHARS]
        header = f"{secrets.token_hex(8)} {self.delivery.attempt} {error}"
        return header.encode("utf-8", "backslashreplace") + b"\n" + self.delivery.raw
