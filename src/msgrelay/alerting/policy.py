"""What to do with an alert: notify, repeat, resolve, or stay quiet, and to whom. Pure functions, no I/O.

The notify loop keeps one :class:`ServiceState` per service in Redis and asks :func:`judge` about every alert
it reads; :func:`render` and :func:`group` turn the alerts to notify into :class:`Notification` objects, and
:func:`route` names the notifiers of each. Like Alertmanager:

* deduplication: a service notified as DOWN is not notified again for a repeated DOWN until
  ``repeat_interval_s`` has passed since the last notification (then once more, as "still down");
* resolve notices: UP after a notified DOWN sends a "resolved" notification; an UP with nothing to resolve
  sends nothing;
* silences: an alert for a silenced service (a glob such as ``db`` or ``payments-*``) is recorded in the
  service's state but not notified;
* grouping: alerts read together (within the loop's grouping window) become one notification per kind.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from fnmatch import fnmatchcase
from typing import Final

from msgrelay.alerting.model import Alert, Notification, NotificationKind, Status
from msgrelay.ingest.timestamps import EARLIEST_S, LATEST_S

MAX_TEXT: Final = 280
"""Notification texts fit a tweet."""


class Verdict(StrEnum):
    FIRING = "firing"
    """A service went down: notify."""
    REPEAT = "repeat"
    """Still down, and the repeat interval has passed since the last notification: notify again."""
    RESOLVED = "resolved"
    """Up again after a notified DOWN: notify that it is resolved."""
    DEDUPLICATED = "deduplicated"
    """Nothing new to say (a repeated DOWN within the interval, or an UP with nothing to resolve)."""
    SILENCED = "silenced"
    """A silence covers the service: recorded, not notified."""

    @property
    def notifies(self) -> bool:
        return self in (Verdict.FIRING, Verdict.REPEAT, Verdict.RESOLVED)


@dataclass(frozen=True, slots=True)
class ServiceState:
    """What the notify loop remembers of one service."""

    status: Status
    since: float
    """When it entered ``status`` (the alert's timestamp)."""
    notified: Status | None = None
    """The status last notified (None: never)."""
    notified_at: float = 0.0


@dataclass(frozen=True, slots=True)
class Silence:
    """No notification for services matching ``service`` (a glob) until ``until`` (epoch seconds)."""

    id: str
    service: str
    until: float
    comment: str = ""

    def covers(self, service: str, now: float) -> bool:
        return now < self.until and fnmatchcase(service, self.service)


@dataclass(frozen=True, slots=True)
class Route:
    """Send notifications about ``services`` (globs) in ``statuses`` to ``notifiers`` (by name)."""

    notifiers: tuple[str, ...]
    services: tuple[str, ...] = ("*",)
    statuses: frozenset[Status] = field(default_factory=lambda: frozenset(Status))

    def matches(self, alert: Alert) -> bool:
        return alert.status in self.statuses and any(fnmatchcase(alert.service, p) for p in self.services)


def judge(
    alert: Alert,
    state: ServiceState | None,
    silences: Iterable[Silence],
    *,
    now: float,
    repeat_interval_s: float,
) -> tuple[Verdict, ServiceState]:
    """The verdict on one alert, and the service's state after it."""
    changed = state is None or state.status != alert.status
    seen = ServiceState(
        status=alert.status,
        since=alert.timestamp if changed or state is None else state.since,
        notified=None if state is None else state.notified,
        notified_at=0.0 if state is None else state.notified_at,
    )
    verdict = _verdict(alert.status, seen, now=now, repeat_interval_s=repeat_interval_s)
    if verdict.notifies and any(silence.covers(alert.service, now) for silence in silences):
        return Verdict.SILENCED, seen
    if verdict.notifies:
        return verdict, replace(seen, notified=alert.status, notified_at=now)
    return verdict, seen


def _verdict(status: Status, seen: ServiceState, *, now: float, repeat_interval_s: float) -> Verdict:
    if status is Status.UP:
        return Verdict.RESOLVED if seen.notified is Status.DOWN else Verdict.DEDUPLICATED
    if seen.notified is not Status.DOWN:
        return Verdict.FIRING
    if now - seen.notified_at >= repeat_interval_s:
        return Verdict.REPEAT
    return Verdict.DEDUPLICATED


def render(verdict: Verdict, alert: Alert, since: float) -> str:
    """One line about one alert, at most :data:`MAX_TEXT` characters."""
    if verdict is Verdict.RESOLVED:
        text = f"✅ {alert.service} is UP again: {alert.message}"
    elif verdict is Verdict.REPEAT:
        clock = _clock(since)  # None for a time a state left by an older version may hold
        text = f"🔴 {alert.service} is still DOWN{f' (since {clock})' if clock else ''}: {alert.message}"
    else:
        text = f"🔴 {alert.service} is DOWN: {alert.message}"
    return _fit(text)


def group(judged: Sequence[tuple[Verdict, Alert, float]]) -> list[Notification]:
    """Notifications for the alerts to notify, read together: one per kind (firing, resolved), listing every
    service when there are several. ``judged`` holds (verdict, alert, since) in the order read."""
    notifications: list[Notification] = []
    for kind, verdicts in (
        (NotificationKind.FIRING, (Verdict.FIRING, Verdict.REPEAT)),
        (NotificationKind.RESOLVED, (Verdict.RESOLVED,)),
    ):
        members = [(verdict, alert, since) for verdict, alert, since in judged if verdict in verdicts]
        if members:
            notifications.append(_notification(kind, members))
    return notifications


def route(notification: Notification, routes: Sequence[Route], default: Sequence[str]) -> list[str]:
    """The notifiers of a notification: those of every route matching one of its alerts, in route order;
    ``default`` when none matches."""
    names: list[str] = []
    for rule in routes:
        if any(rule.matches(alert) for alert in notification.alerts):
            names += [name for name in rule.notifiers if name not in names]
    return names or list(default)


def notification_key(alerts: Iterable[Alert], kind: NotificationKind) -> str:
    """Stable for the same alerts: a retry, or a second consumer reading them, computes the same key."""
    digest = hashlib.sha1(kind.value.encode(), usedforsecurity=False)
    for alert in alerts:
        digest.update(f"\0{alert.service}\0{alert.status.value}\0{alert.timestamp!r}".encode())
    return digest.hexdigest()


def _notification(kind: NotificationKind, members: list[tuple[Verdict, Alert, float]]) -> Notification:
    alerts = tuple(alert for _, alert, _ in members)
    if len(members) == 1:
        text = render(*members[0])
    else:
        state = "UP again" if kind is NotificationKind.RESOLVED else "DOWN"
        mark = "✅" if kind is NotificationKind.RESOLVED else "🔴"
        listed = "; ".join(f"{alert.service} ({alert.message})" for alert in alerts)
        text = _fit(f"{mark} {len(alerts)} services {state}: {listed}")
    return Notification(key=notification_key(alerts, kind), kind=kind, text=text, alerts=alerts)


def _clock(ts: float) -> str | None:
    """``ts`` as a UTC date and time, or None outside the times the decoders accept (none could print)."""
    if not EARLIEST_S <= ts < LATEST_S:  # also NaN
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _fit(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"
