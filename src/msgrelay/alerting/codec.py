"""Bytes <-> :class:`Alert`: the JSON object the tweet bot has always read.

What producers push (the monitor, ``msgrelay alert``, or by hand)::

    redis-cli LPUSH tweet_queue \
        '{"service":"db","status":"DOWN","message":"connection refused","timestamp":1642234567}'

``status`` is ``DOWN`` or ``UP`` in any case; ``timestamp`` is a time as for log messages (epoch seconds,
milliseconds, microseconds or nanoseconds, or ISO 8601; absent: the time it is read); other keys are kept as
the alert's fields. What cannot be an alert is refused with a reason, checked in this order (the dead-letter
reason):

==================  ===============================================================================
``oversize``        the raw entry is longer than ``max_bytes``
``invalid_utf8``    the bytes are not UTF-8
``malformed_json``  not one JSON object, or nested deeper than 128 levels, or an integer over 64 bits
``missing_service`` no ``service``, or not a non-empty string of at most 200 characters
``missing_status``  no ``status``
``invalid_status``  a status other than DOWN or UP
``missing_message`` no ``message``, or not a string, or an empty or blank one
``invalid_field``   a ``timestamp`` that is not a time, or out of range (:mod:`msgrelay.ingest.timestamps`)
==================  ===============================================================================
"""

from __future__ import annotations

from typing import Final

import orjson

from msgrelay.alerting.model import Alert, JSONValue, Status
from msgrelay.codec import load_json_object, refuse_unwritable
from msgrelay.errors import DecodeError
from msgrelay.ingest.timestamps import epoch_seconds

MAX_SERVICE_LENGTH: Final = 200
ALERT_KEYS: Final = frozenset(("service", "status", "message", "timestamp"))


def encode_alert(alert: Alert) -> bytes:
    """The wire form: one compact JSON object, the four keys first, then the extra fields."""
    record: dict[str, JSONValue] = {
        "service": alert.service,
        "status": alert.status.value,
        "message": alert.message,
        "timestamp": alert.timestamp,
        **alert.fields,
    }
    return orjson.dumps(record)


def decode_alert(raw: bytes, *, max_bytes: int) -> Alert:
    """Parse one raw entry, or raise :class:`DecodeError` with one of the reasons above."""
    if len(raw) > max_bytes:
        raise DecodeError("oversize", f"{len(raw)} bytes, over the {max_bytes}-byte limit", raw)
    fields = load_json_object(raw)
    # As for log messages (one cap for both): an alert nested deeper could not be written to the outbox
    refuse_unwritable(raw, fields)
    service, status, message = (
        fields.pop("service", None),
        fields.pop("status", None),
        fields.pop("message", None),
    )
    if not isinstance(service, str) or not 0 < len(service.strip()) <= MAX_SERVICE_LENGTH:
        raise DecodeError(
            "missing_service", f"'service' must name the service (1 to {MAX_SERVICE_LENGTH} characters)", raw
        )
    return Alert(
        service=service.strip(),
        status=_status(status, raw),
        message=_message(message, raw),
        timestamp=epoch_seconds(fields.pop("timestamp", None), raw),
        fields=fields,
    )


def _status(value: JSONValue, raw: bytes) -> Status:
    if value is None:
        raise DecodeError("missing_status", "no 'status' (DOWN or UP)", raw)
    word = value.strip().upper() if isinstance(value, str) else ""
    if word not in Status.__members__:
        raise DecodeError("invalid_status", f"status must be DOWN or UP, not {str(value)[:40]!r}", raw)
    return Status(word)


def _message(value: JSONValue, raw: bytes) -> str:
    # An empty or blank text says no more than a missing one: refused the same way (and `msgrelay alert -s db
    # ""` with it, since the command applies this check before pushing).
    if not isinstance(value, str) or not value.strip():
        raise DecodeError("missing_message", "no 'message' text: an alert must say what happened", raw)
    return value
