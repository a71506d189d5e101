"""An alert as it travels, and a notification as notifiers receive it.

An :class:`Alert` is what the monitor (or ``redis-cli LPUSH tweet_queue '{...}'``) pushes: a service, its
status, a message and a timestamp, the format the existing tweet bot reads. A :class:`Notification` is what
the notify loop hands to each notifier: one or more alerts (grouped), already rendered as text, under an
idempotency key that is the same however often it is retried.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

JSONValue = Any


class Status(StrEnum):
    DOWN = "DOWN"
    UP = "UP"


class NotificationKind(StrEnum):
    FIRING = "firing"
    """A service went down (or is still down after the repeat interval)."""
    RESOLVED = "resolved"
    """A service that was notified as down is up again."""


@dataclass(frozen=True, slots=True)
class Alert:
    """One state report of one service. ``status`` is a :class:`Status` value; ``fields`` keeps any other
    keys of the pushed JSON."""

    service: str
    status: Status
    message: str
    timestamp: float
    fields: dict[str, JSONValue] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Notification:
    """What a notifier sends. ``key`` is unique per notification and stable across retries (notifiers that
    can, pass it on as an idempotency key); ``text`` is the rendered message (at most 280 characters, so it
    can be posted as is); ``alerts`` are the alerts it reports, oldest first."""

    key: str
    kind: NotificationKind
    text: str
    alerts: tuple[Alert, ...]
