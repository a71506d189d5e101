"""One parser for the time of a log message or an alert: epoch numbers in any unit, or ISO 8601.

Accepted (the value of ``ts`` / ``timestamp`` / ``time``, or an alert's ``timestamp``):

* a JSON number, or a string holding one (``"1732873505.123"``), in epoch seconds, milliseconds,
  microseconds or nanoseconds, told apart by magnitude:

  ==================  ==========================  =======================
  value               unit                        the times it covers
  ==================  ==========================  =======================
  below 1e11          seconds                     1970-01-01 .. 5138-11-16
  1e11 .. below 1e14  milliseconds                1973-03-03 .. 5138-11-16
  1e14 .. below 1e17  microseconds                1973-03-03 .. 5138-11-16
  1e17 .. below 1e20  nanoseconds                 1973-03-03 .. 5138-11-16
  ==================  ==========================  =======================

  Why these thresholds: they are powers of 1,000 apart, so each unit covers the same span of real times,
  and the first, 1e11, is the last power of ten below the end of year 9999 (2.5e11 s), so every accepted
  time prints as a 4-digit year. Any time from 1973-03-03T09:46:40Z (1e8 s) on reads right in every unit;
  the one ambiguity is a millisecond (micro-, nanosecond) time before that, which is read as seconds
  (milliseconds, microseconds). A split at 1e12, also common, would misread every millisecond time before
  2001-09-09 instead. (Nanoseconds as a JSON integer end at 2554-07-21, where they overflow 64 bits and
  the decoder refuses the entry as ``malformed_json``; as a string they go on to 5138.)
* an ISO 8601 / RFC 3339 date-time (:meth:`datetime.fromisoformat`): any UTC offset, ``Z``, basic or extended
  format, fractions of a second; a time without an offset is UTC, never this machine's local time.
* nothing (``null`` or absent): the time it is read.

Everything else is refused: booleans, objects, lists, text that is neither, and any time outside
:data:`EARLIEST_S` .. :data:`LATEST_S` (1970-01-01T00:00:00Z up to, not including, 5138-11-16T09:46:40Z):
negative epochs, ``1e300``, ``"0001-01-01T00:00:00+14:00"`` (year 0 in UTC). One range for every form, so
a time read once reads the same again when our own wire format carries it on as epoch seconds (a retry, a
replay), and every accepted time prints as an ISO 8601 UTC first field of a line.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from typing import Any, Final

from msgrelay.errors import DecodeError

EARLIEST_S: Final = 0.0
"""1970-01-01T00:00:00Z: the earliest accepted time, in epoch seconds (included)."""
LATEST_S: Final = 1e11
"""5138-11-16T09:46:40Z: the end of the accepted times, in epoch seconds (excluded); the first value read as
milliseconds."""
UNIT_DIVISORS: Final = ((1e11, 1), (1e14, 1_000), (1e17, 1_000_000), (1e20, 1_000_000_000))
"""(values below this, divided by this give seconds), smallest unit last: the magnitude rule above."""
MAX_TEXT: Final = 64
"""Longer text is never a time (the longest ISO 8601 form is about 40 characters)."""

_NUMBER: Final = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_ACCEPTED: Final = "times from 1970-01-01T00:00:00Z to 5138-11-16T09:46:40Z are accepted"


def epoch_seconds(value: Any, raw: bytes) -> float:
    """Epoch seconds (``EARLIEST_S <= t < LATEST_S``) of a JSON time value; absent (``None``): now.

    ``raw`` is the entry being decoded, kept by the error. Raises :class:`DecodeError` ``invalid_field``
    for a value that is not a time, or a time out of range (see the module's table)."""
    if value is None:
        return time.time()
    kind = type(value)
    if kind is float or kind is int:
        return _from_number(value, raw)
    if kind is str:
        return _from_text(value, raw)
    raise DecodeError("invalid_field", f"timestamp is a {_json_kind(value)}, not a number or text", raw)


def _from_number(value: float, raw: bytes) -> float:
    for limit, divisor in UNIT_DIVISORS:
        if 0 <= value < limit:
            seconds = value / divisor  # int / int is rounded once, exactly: nanoseconds keep their precision
            if seconds >= EARLIEST_S:
                return float(seconds)
            break
    raise DecodeError("invalid_field", f"timestamp {_shown(value)} is out of range: {_ACCEPTED}", raw)


def _from_text(value: str, raw: bytes) -> float:
    text = value.strip()
    if len(text) > MAX_TEXT:
        raise DecodeError("invalid_field", f"timestamp {_shown(value)} is too long to be a time", raw)
    if _NUMBER.fullmatch(text):
        # Digits only: int() (exact, and within its 4,300-digit limit since the text is short) for the
        # nanoseconds' precision; anything else float().
        number = int(text) if text.lstrip("+-").isdigit() else float(text)
        return _from_number(number, raw)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise DecodeError(
            "invalid_field",
            f"timestamp {_shown(value)} is neither an epoch number (s, ms, us, ns) nor ISO 8601",
            raw,
        ) from None
    seconds = (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()
    if not EARLIEST_S <= seconds < LATEST_S:
        raise DecodeError("invalid_field", f"timestamp {_shown(value)} is out of range: {_ACCEPTED}", raw)
    return seconds


def _shown(value: object) -> str:
    """A short, printable rendering of a refused value for the dead letter's detail."""
    shown = repr(value)  # repr escapes control characters and lone surrogates
    return shown if len(shown) <= 48 else shown[:45] + "..."


def _json_kind(value: object) -> str:
    return {bool: "boolean", dict: "object", list: "list"}.get(type(value), type(value).__name__)
