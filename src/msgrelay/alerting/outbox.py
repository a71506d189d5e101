"""What the notify loop keeps in Redis: outbox items (one notification for one notifier) and the services'
states, and how each is written and read back.

Both are read back by any later notify consumer, perhaps of another version: reading never trusts them.
A service state that cannot be read counts as not known; an outbox item that cannot be read is the
caller's to dead-letter (:meth:`OutboxItem.decode` raises).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import orjson

from msgrelay.alerting.model import Alert, Notification, NotificationKind, Status
from msgrelay.alerting.policy import ServiceState

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """One notification for one notifier, with the failed sends so far."""

    notifier: str
    attempt: int
    notification: Notification

    def encode(self) -> bytes:
        """One JSON object, keys sorted (the same item is the same sorted-set member)."""
        note = self.notification
        alerts = [
            {"service": a.service, "status": a.status.value, "message": a.message, "timestamp": a.timestamp,
             "fields": a.fields}
            for a in note.alerts
        ]  # fmt: skip
        record = {
            "notifier": self.notifier, "attempt": self.attempt, "key": note.key, "kind": note.kind.value,
            "text": note.text, "alerts": alerts,
        }  # fmt: skip
        return orjson.dumps(record, option=orjson.OPT_SORT_KEYS)

    @classmethod
    def decode(cls, raw: bytes) -> OutboxItem:
        """The item :meth:`encode` wrote. Raises (``orjson.JSONDecodeError``, ``KeyError``, ``ValueError``,
        ``TypeError`` ...) for anything else: the delivery loop dead-letters such an item."""
        record = orjson.loads(raw)
        alerts = tuple(
            Alert(a["service"], Status(a["status"]), a["message"], float(a["timestamp"]), a["fields"])
            for a in record["alerts"]
        )
        note = Notification(record["key"], NotificationKind(record["kind"]), record["text"], alerts)
        return cls(record["notifier"], int(record["attempt"]), note)


def decode_state(service: str, raw: bytes | None) -> ServiceState | None:
    """A stored state, or None (not known) for none or one that cannot be read: written by an older version,
    or by hand. Its service is then judged afresh (a DOWN is notified) rather than never again."""
    if raw is None:
        return None
    try:
        record = orjson.loads(raw)
        notified = record.get("notified")
        return ServiceState(
            Status(record["status"]),
            float(record["since"]),
            Status(notified) if notified else None,
            float(record.get("notified_at", 0.0)),
        )
    except Exception as exc:  # whatever it holds, it must not stop the loop
        log.warning(
            "the stored state of %r cannot be read (%s: %s); judging it afresh",
            service,
            type(exc).__name__,
            exc,
        )
        return None


def encode_state(state: ServiceState) -> bytes:
    """The JSON object :func:`decode_state` reads."""
    return orjson.dumps(
        {
            "status": state.status.value,
            "since": state.since,
            "notified": state.notified.value if state.notified else None,
            "notified_at": state.notified_at,
        }
    )
