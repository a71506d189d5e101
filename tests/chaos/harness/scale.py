"""How big a chaos run is: ``CHAOS_SCALE=ci`` (default, about 100k messages in all) or ``full``."""

from __future__ import annotations

import os
from dataclasses import dataclass

SCALE_ENV = "CHAOS_SCALE"


@dataclass(frozen=True, slots=True)
class Scale:
    name: str
    t1_messages: int
    t1_kills: int
    t2_messages: int
    t2_terms: int
    t3_messages: int
    t3_kills: int
    small_messages: int
    """T4, T5 (per mode), T6, T7, T10, negative controls."""
    poison: int
    rotation_messages: int
    """R1-R3: messages sent while files are rotated."""
    rotations: int
    """R1/R2: logrotate runs while messages flow."""
    rotation_kills: int
    """R3: workers SIGKILLed (the built-in rotation rotates as often as max_bytes says)."""
    states_messages: int
    """Each Redis state change (T20-T24): FLUSHALL, DEL, XGROUP DESTROY, a failover and back, LOADING."""
    drain_deadline_s: float
    rate_per_s: float
    """Target produce rate, so that faults land while messages are flowing."""


CI = Scale(
    name="ci",
    t1_messages=15_000,
    t1_kills=6,
    t2_messages=10_000,
    t2_terms=5,
    t3_messages=10_000,
    t3_kills=3,
    small_messages=3_000,
    poison=10,
    rotation_messages=6_000,
    rotations=6,
    rotation_kills=4,
    states_messages=1_000,
    drain_deadline_s=12.0,
    rate_per_s=2_500.0,
)

FULL = Scale(
    name="full",
    t1_messages=1_000_000,
    t1_kills=20,
    t2_messages=200_000,
    t2_terms=20,
    t3_messages=200_000,
    t3_kills=5,
    small_messages=20_000,
    poison=100,
    rotation_messages=200_000,
    rotations=20,
    rotation_kills=20,
    states_messages=100_000,
    drain_deadline_s=120.0,
    rate_per_s=20_000.0,
)


def current_scale() -> Scale:
    return FULL if os.environ.get(SCALE_ENV, "ci").lower() == "full" else CI
