"""What every notifier is, and the pieces the HTTP notifiers share (Retry-After, URLs safe to show)."""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime
from typing import Final, Protocol, runtime_checkable
from urllib.parse import urlsplit

from msgrelay.alerting.model import Alert, Notification
from msgrelay.sinks.lines import escape

DEFAULT_RETRY_AFTER_S: Final = 30.0
"""A 429 without a usable ``Retry-After``: wait this long rather than hammer a rate-limited receiver."""
MAX_RETRY_AFTER_S: Final = 3600.0
"""A receiver asking for more than an hour is capped, so a bogus header cannot park an alert for days."""


@runtime_checkable
class Notifier(Protocol):
    """Delivers notifications somewhere. ``send`` returns once delivered, or raises exactly one of
    :class:`~msgrelay.errors.NotifyDeferred` (come back after ``retry_after_s``, no attempt used),
    :class:`~msgrelay.errors.NotifyTransientError` (retry with backoff) or
    :class:`~msgrelay.errors.NotifyPermanentError` (never works: dead-letter it). ``name`` identifies the
    notifier in stats, routing and errors (``"console"``, ``"webhook:ops"``); it never holds a secret."""

    name: str

    def send(self, notification: Notification) -> None: ...

    def close(self) -> None: ...


def retry_after_s(value: str | None, *, now: float | None = None) -> float:
    """Seconds to wait from a ``Retry-After`` value (delay-seconds or HTTP-date), within [0, 1 hour].

    Absent or unparsable: :data:`DEFAULT_RETRY_AFTER_S`. A date in the past means "now" (0)."""
    if value is None:
        return DEFAULT_RETRY_AFTER_S
    value = value.strip()
    if value.isascii() and value.isdigit():
        return min(float(value), MAX_RETRY_AFTER_S)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return DEFAULT_RETRY_AFTER_S
    delay = when.timestamp() - (time.time() if now is None else now)
    return clamp_delay(delay)


def clamp_delay(delay_s: float) -> float:
    return min(max(delay_s, 0.0), MAX_RETRY_AFTER_S)


def redact_url(url: str) -> str:
    """``url`` as ``scheme://host[:port]/…``: webhook tokens live in paths, queries and user-info."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:  # a malformed URL (bad port, broken IPv6 literal): show nothing of it
        return "<invalid URL>"
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port is None else f"{host}:{port}"
    return f"{escape(parts.scheme)}://{escape(netloc)}/…"


def alert_record(alert: Alert) -> dict[str, object]:
    """The alert's fields a receiver or a reader of the alert log needs."""
    return {
        "service": alert.service,
        "status": str(alert.status),
        "message": alert.message,
        "timestamp": alert.timestamp,
    }
