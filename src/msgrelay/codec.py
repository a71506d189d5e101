"""Bytes <-> :class:`Message`: our JSON wire format, hand-pushed JSON, and plain text lines.

Accepted input, checked in this order (the first failure is the dead-letter reason):

==================  ===============================================================================
``oversize``        the raw entry is longer than ``max_message_bytes`` (checked before any parsing)
``invalid_utf8``    the bytes are not UTF-8
``malformed_json``  starts with ``{`` but is not one JSON object (includes NaN, >64-bit ints, deep nesting)
``missing_text``    a JSON object with none of ``text`` / ``message`` / ``msg``
``invalid_field``   a known field with the wrong JSON type or out of range (text not a string, id too long,
                    a time that is not one or not between 1970 and 5138 ...)
``unknown_type``    a level word that is not in :data:`msgrelay.levels.LEVEL_ALIASES`
==================  ===============================================================================

In a JSON object the text is ``text`` (or ``message``, ``msg``), the type ``type`` (or ``level``,
``severity``, ``levelname``; absent means INFO), the time ``ts`` (or ``timestamp``, ``time``: epoch
seconds, milliseconds, microseconds or nanoseconds, or ISO 8601, from 1970 to 5138: see
:mod:`msgrelay.ingest.timestamps`; absent means now) and the id ``id`` (absent: see :func:`fallback_id`).
The first alias present wins; the others, and every other key, stay as the message's extra fields.

Anything that does not start with ``{`` is a plain text line: an optional leading level word
(``ERROR: ...``, ``[warn] ...``, ``CRITICAL - ...``) gives its type, else it is INFO; one trailing ``\n``
or ``\r\n`` is not part of its text. A UTF-8 byte order mark before either form is skipped.
"""

from __future__ import annotations

import hashlib
import re
import time
from typing import Final

import orjson

from msgrelay.errors import DecodeError
from msgrelay.ingest.timestamps import epoch_seconds
from msgrelay.levels import DEFAULT_TYPE, LOG_TYPES, normalize_level
from msgrelay.message import JSONValue, Message, new_message

TEXT_KEYS: Final = ("text", "message", "msg")
TYPE_KEYS: Final = ("type", "level", "severity", "levelname")
TS_KEYS: Final = ("ts", "timestamp", "time")
ENVELOPE_KEYS: Final = frozenset(("id", "type", "text", "ts"))
"""The keys of our own wire format; a producer's extra fields may not use them."""
UTF8_BOM: Final = b"\xef\xbb\xbf"
MAX_ID_LENGTH: Final = 128
MAX_NESTING: Final = 128
"""Deepest nesting of objects and lists accepted; orjson cannot write back much deeper (254 levels)."""

# A JSON string or number, to find integer literals orjson would silently turn into (lossy) floats.
_STRING_OR_NUMBER = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|(-?\d+)(\.\d+)?([eE][+-]?\d+)?', re.DOTALL)
_INT_RANGE: Final = range(-(2**63), 2**64)  # what orjson keeps as int
_WIDE: Final = float(2**63)
_MAY_HIDE: Final = frozenset((dict, list, float))
_WIDE_DIGITS = re.compile(rb"\d{19}")
_CANONICAL_TYPES: Final = {**{t: t for t in LOG_TYPES}, **{t.lower(): t for t in LOG_TYPES}}
"""Type words that need no normalising (a dict lookup instead of strip, lower and the alias table)."""

# "ERROR: x", "[warn] x", "Critical - x", "ERROR x" (a bare word only when written in capitals).
_TEXT_LEVEL = re.compile(
    r"\s*(?:\[(?P<bracketed>[A-Za-z]{2,13})\]|(?P<word>[A-Za-z]{2,13})\s*(?::|\s-\s)|(?P<upper>[A-Z]{2,13})(?=\s))\s*"
)


def encode(message: Message) -> bytes:
    """Serialise a message to our wire format: one compact JSON object."""
    return orjson.dumps(wire_record(message))


def wire_record(message: Message) -> dict[str, JSONValue]:
    """The JSON object of a message on the wire: the envelope, then the extra fields."""
    return {"id": message.id, "type": message.type, "text": message.text, "ts": message.ts, **message.fields}


def decode(raw: bytes, *, source_id: str = "", max_bytes: int) -> Message:
    """Parse one raw entry into a :class:`Message`, or raise :class:`DecodeError` with a reason code.

    ``source_id`` names a message that carries no producer id (see :func:`fallback_id`).
    """
    if len(raw) > max_bytes:
        raise DecodeError("oversize", f"{len(raw)} bytes, over the {max_bytes}-byte limit", raw)
    if raw[:1] == b"{":  # our producer's entries: settled by one comparison
        return _decode_object(raw, source_id)
    if raw[:3] == UTF8_BOM:
        return _without_bom(raw, source_id)
    if raw.lstrip()[:1] == b"{":  # lstrip copies: only for what does not start with {
        return _decode_object(raw, source_id)
    return _decode_text_line(raw, source_id)


def _without_bom(raw: bytes, source_id: str) -> Message:
    """An entry behind a UTF-8 byte order mark (what some Windows tools write first): decoded without it,
    as RFC 8259 section 8.1 allows a JSON parser to do, so ``{"level":"error"...}`` stays an ERROR; a
    refusal keeps the whole raw entry."""
    body = raw[3:]  # one mark only: a second one is content (and an entry of marks no recursion)
    try:
        if body.lstrip()[:1] == b"{":
            return _decode_object(body, source_id)
        return _decode_text_line(body, source_id)
    except DecodeError as exc:
        raise DecodeError(exc.reason, exc.detail, raw) from None


def visible_surrogates(value: JSONValue) -> JSONValue:
    """``value`` with every lone surrogate in its strings (keys too) written as the visible text ``\\udcXX``.

    A lone surrogate is what ``os.fsdecode`` makes of a file name that is not UTF-8; UTF-8, hence JSON on the
    wire, cannot carry one. Written this way it shows in the line exactly as the line writer escapes one."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {visible_surrogates(key): visible_surrogates(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [visible_surrogates(item) for item in value]
    return value


def fallback_id(raw: bytes, source_id: str) -> str:
    """The id of a message pushed without one: the stream entry id, else a digest of the raw bytes.

    Identical id-less list entries therefore share an id; producers that care about telling them apart
    must send an ``id`` (our producer always does).
    """
    if source_id:
        return f"x-{source_id}"
    return "h-" + hashlib.blake2b(raw, digest_size=12).hexdigest()


def load_json_object(raw: bytes) -> dict[str, JSONValue]:
    """The JSON object in ``raw``, or :class:`DecodeError` ``invalid_utf8`` / ``malformed_json``."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        reason = "invalid_utf8" if "utf-8" in str(exc).lower() else "malformed_json"
        raise DecodeError(reason, str(exc), raw) from None
    except RecursionError:  # pragma: no cover - orjson limits depth itself; belt and braces
        raise DecodeError("malformed_json", "nesting too deep", raw) from None
    if type(obj) is not dict:
        raise DecodeError("malformed_json", "not a JSON object", raw)
    return obj


def _decode_object(raw: bytes, source_id: str) -> Message:
    fields = load_json_object(raw)
    # The first alias present wins. The first of each list is our own wire format's key, so our own
    # messages take the first branch of each lookup.
    pop = fields.pop
    msg_id = pop("id", None)
    text = pop("text") if "text" in fields else _pop_first(fields, TEXT_KEYS)
    type_word = pop("type") if "type" in fields else _pop_first(fields, TYPE_KEYS)
    ts = pop("ts") if "ts" in fields else _pop_first(fields, TS_KEYS)
    if (
        (fields and not _MAY_HIDE.isdisjoint(map(type, fields.values())) and _may_hide_wide_ints(fields))
        or type(msg_id) is float
        or (type(ts) is float and not -_WIDE < ts < _WIDE)
    ):
        refuse_unwritable(raw, {**fields, "id": msg_id, "text": text, "type": type_word, "ts": ts})
    if text is None:
        raise DecodeError("missing_text", "no 'text', 'message' or 'msg' field", raw)
    if type(text) is not str:
        raise DecodeError("invalid_field", "message text is not a string", raw)
    msg_type = _CANONICAL_TYPES.get(type_word) if type(type_word) is str else None
    if msg_type is None:
        msg_type = _decode_type(type_word, fields, raw)
    if type(msg_id) is not str or not 0 < len(msg_id) <= MAX_ID_LENGTH:
        msg_id = _decode_id(msg_id, raw, source_id)
    # Our producer's time (float epoch seconds, in range) is settled by one comparison; the rest is parsed.
    # 0.0 and 1e11 are ingest.timestamps' EARLIEST_S and LATEST_S, as literals: two global lookups cost more
    # here than the comparison (tests/test_timestamps.py checks that both paths keep one range).
    ts = ts if type(ts) is float and 0.0 <= ts < 1e11 else epoch_seconds(ts, raw)
    return new_message(msg_id, msg_type, text, ts, fields)


def _may_hide_wide_ints(fields: dict[str, JSONValue]) -> bool:
    """Whether extra fields with floats, objects or lists need the costly checks for deep nesting and
    integers over 64 bits (orjson turns such an integer into a float of at least 2**63 in size).

    Flat fields of strings, small numbers, booleans and nulls can neither nest nor hide one: that is (almost)
    every log message, settled before this is called by one C-level pass over the value types."""
    return any(
        type(value) is not float or not -_WIDE < value < _WIDE
        for value in fields.values()
        if type(value) in _MAY_HIDE
    )


def refuse_unwritable(raw: bytes, obj: dict[str, JSONValue]) -> None:
    """Refuse (``malformed_json``) what we could not write back faithfully: nesting deeper than
    :data:`MAX_NESTING` (orjson writes at most 254 levels), or an integer over 64 bits (read as a float)."""
    if raw.count(b"[") + raw.count(b"{") > MAX_NESTING and _too_deep(obj):
        raise DecodeError("malformed_json", f"nested deeper than {MAX_NESTING} levels", raw)
    if _WIDE_DIGITS.search(raw) and _has_wide_int(raw):
        raise DecodeError("malformed_json", "integer does not fit in 64 bits", raw)


def _too_deep(obj: JSONValue) -> bool:
    """Whether objects and lists nest more than :data:`MAX_NESTING` levels (the message itself is level 1)."""
    stack: list[tuple[JSONValue, int]] = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_NESTING:
            return True
        children = value.values() if isinstance(value, dict) else value
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def _has_wide_int(raw: bytes) -> bool:
    """Whether the (valid) JSON holds an integer literal outside 64 bits (orjson reads it as a float)."""
    for match in _STRING_OR_NUMBER.finditer(raw):
        digits, fraction, exponent = match.groups()
        if (
            digits is not None
            and not fraction
            and not exponent
            and (len(digits) > 21 or int(digits) not in _INT_RANGE)
        ):
            return True
    return False


def _pop_first(fields: dict[str, JSONValue], keys: tuple[str, ...]) -> JSONValue:
    """Remove and return the first of ``keys`` present; the other aliases stay as ordinary fields."""
    for key in keys:
        if key in fields:
            return fields.pop(key)
    return None


def _decode_type(value: JSONValue, fields: dict[str, JSONValue], raw: bytes) -> str:
    if value is None:
        return DEFAULT_TYPE
    if not isinstance(value, str):
        raise DecodeError("invalid_field", "type is not a string", raw)
    msg_type = normalize_level(value)
    if msg_type is None:
        raise DecodeError("unknown_type", f"unknown message type {value[:40]!r}", raw)
    if value.strip().upper() != msg_type and "level" not in fields:
        fields["level"] = value.strip().lower()  # keep "critical" visible when it is filed under ERROR
    return msg_type


def _decode_id(value: JSONValue, raw: bytes, source_id: str) -> str:
    if value is None:
        return fallback_id(raw, source_id)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not 0 < len(value) <= MAX_ID_LENGTH:
        raise DecodeError("invalid_field", f"id must be a string of 1 to {MAX_ID_LENGTH} characters", raw)
    return value


def _decode_text_line(raw: bytes, source_id: str) -> Message:
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError("invalid_utf8", str(exc), raw) from None
    if line[-1:] == "\n":  # one line end, as `redis-cli -x` or `echo ... |` sends it, is not part of the text
        line = line[:-2] if line[-2:] == "\r\n" else line[:-1]
    msg_type, text, fields = DEFAULT_TYPE, line, {}
    match = _TEXT_LEVEL.match(line)
    if match:
        word = match.group("bracketed") or match.group("word") or match.group("upper")
        level = normalize_level(word)
        if level is not None:
            msg_type, text = level, line[match.end() :]
            if word.upper() != level:
                fields["level"] = word.lower()
    return Message(id=fallback_id(raw, source_id), type=msg_type, text=text, ts=time.time(), fields=fields)
