"""How one stream entry reads as a :class:`~msgrelay.message.Delivery`, whatever its fields hold.

Our producers add each message as one field ``m``; a retry adds two more, ``n`` (deliveries so far) and ``e``
(the last error); each name once. An entry ``XADD``ed by hand with other fields reads as the JSON object of
its fields. Reading never raises: an entry that cannot be read comes back marked ``unreadable``, for the
consumer to dead-letter (:mod:`msgrelay.barriers`). The fetch scripts size an entry by the same layout
(``fetch_scripts``: ``measure``).
"""

from __future__ import annotations

from typing import Any

import orjson

from msgrelay.keys import STREAM_PAYLOAD_FIELD
from msgrelay.message import Delivery

StreamEntry = list[Any]
"""An entry as hiredis parses it: ``[id, [field, value, field, value ...]]``."""

_RETRY_FIELDS = frozenset((STREAM_PAYLOAD_FIELD, b"n", b"e"))
MAX_COUNT_DIGITS = 9
"""A retry count (field ``n``) has at most this many digits; longer is not ours (the promote script writes
counts up to ``max_deliveries``)."""
UNREADABLE_KEEP_BYTES = 64 * 1024


def redeliveries(entries: list[StreamEntry], times: list[int]) -> list[Delivery]:
    """Deliveries of pending entries handed out again, each with its delivery counter from the PEL."""
    return [
        entry_delivery(entry_id, fields, int(n)) for (entry_id, fields), n in zip(entries, times, strict=True)
    ]


def entry_delivery(entry_id: bytes, flat_fields: list[bytes], times_delivered: int) -> Delivery:
    """The delivery of one entry, whatever its fields hold: never raises.

    One entry must never crash a fetch, a recovery or a take-over, nor keep its batch-mates pending: an entry
    that cannot be read (an error reading its fields included) comes back marked ``unreadable`` with the
    error, for the consumer to dead-letter (see :mod:`msgrelay.barriers`)."""
    try:
        return _read_entry(entry_id, flat_fields, times_delivered)
    except Exception as exc:
        return Delivery(
            _fields_as_text(flat_fields),
            entry_id,
            entry_id.decode("ascii", "replace"),
            times_delivered,
            unreadable=f"{type(exc).__name__}: {exc}",
        )


def _read_entry(entry_id: bytes, flat_fields: list[bytes], times_delivered: int) -> Delivery:
    names, values = flat_fields[::2], flat_fields[1::2]
    fields = dict(zip(names, values, strict=True))
    ours = len(fields) == len(names) and STREAM_PAYLOAD_FIELD in fields and fields.keys() <= _RETRY_FIELDS
    if ours:  # our layout: the payload, and for a retry its count so far and last error
        return _retried(entry_id, fields, times_delivered)
    return Delivery(_payload(names, values), entry_id, entry_id.decode(), times_delivered)


def _retried(entry_id: bytes, fields: dict[bytes, bytes], times_delivered: int) -> Delivery:
    """An entry in our layout. Its retry count is range-checked: a count that is not a delivery count (a
    5000-digit one, which ``int()`` refuses) makes it unreadable, its message kept whole for a replay."""
    payload, count = fields[STREAM_PAYLOAD_FIELD], fields.get(b"n", b"0")
    if not (count.isdigit() and len(count) <= MAX_COUNT_DIGITS):
        shown = repr(count[:20])[1:] + ("..." if len(count) > 20 else "")
        detail = f"retry count n={shown} ({len(count)} characters) is not a delivery count"
        return Delivery(payload, entry_id, entry_id.decode(), times_delivered, unreadable=detail)
    last_error = fields.get(b"e", b"").decode("utf-8", "replace")
    return Delivery(payload, entry_id, entry_id.decode(), int(count) + times_delivered, last_error)


def _payload(names: list[bytes], values: list[bytes]) -> bytes:
    """An entry XADDed by hand with fields other than ours reads as one JSON object of its fields. A name
    given more than once (Redis keeps every pair) holds the list of its values, so none is dropped."""
    record: dict[str, Any] = {}
    for name, value in zip(names, values, strict=True):
        key, text = name.decode("utf-8", "replace"), value.decode("utf-8", "replace")
        if key not in record:
            record[key] = text
        elif isinstance(record[key], list):
            record[key].append(text)
        else:
            record[key] = [record[key], text]
    return orjson.dumps(record)


def _fields_as_text(flat_fields: object) -> bytes:
    """What an unreadable entry's dead letter keeps of it: its fields as text (last resort, never raises)."""
    return repr(flat_fields).encode("utf-8", "backslashreplace")[:UNREADABLE_KEEP_BYTES]
