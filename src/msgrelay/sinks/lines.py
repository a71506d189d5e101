"""One message -> one log line that cannot be forged into more than one line.

Every character that could break a line or fool a terminal (C0/C1 controls, DEL, U+2028/U+2029, NEL,
bidirectional overrides, lone surrogates) is written as a visible escape: ``\\n``, ``\\x1b``, ``\\u202e``.

Text format (default; ``level`` appears in the fields when the producer's word differs from the type)::

    2026-11-24T10:00:00.123Z ERROR 4f1c9a2be0d1-1f disk full on /var {"host":"web1"}

JSON format: one object per line, with ``ts`` (ISO 8601), ``type``, ``id``, ``text`` and the extra fields.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Final

import orjson

from msgrelay.codec import visible_surrogates
from msgrelay.message import Message

_UNSAFE: Final = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff\ud800-\udfff]"
)
_NAMED: Final = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _escape_json_char(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def escape(text: str) -> str:
    """``text`` with every line-breaking or terminal-controlling character made visible."""
    if text.isascii() and text.isprintable():  # the usual case, settled by two C loops: nothing to escape
        return text
    return _UNSAFE.sub(_escape_char, text)


_YEAR_9999: Final = 253402300799.0
_SECONDS_CACHE_MAX: Final = 4096
_MILLIS: Final = tuple(f"{ms:03d}" for ms in range(1000))
_seconds_text: dict[int, str] = {}
"""Whole second -> its ISO 8601 text: a batch's messages share a few seconds, formatted once each."""


def _iso(ts: float) -> str:
    """``ts`` as ISO 8601 UTC with milliseconds, exactly as ``datetime.isoformat`` writes it."""
    if not 0 <= ts < _YEAR_9999:
        return _iso_slow(ts)
    # Split as datetime.fromtimestamp does: microseconds rounded half-even, then truncated to ms.
    second = int(ts)
    micros = round((ts - second) * 1e6)
    if micros >= 1_000_000:
        second, micros = second + 1, micros - 1_000_000
    text = _seconds_text.get(second)
    if text is None:
        if len(_seconds_text) >= _SECONDS_CACHE_MAX:
            _seconds_text.clear()
        text = _seconds_text[second] = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{_MILLIS[micros // 1000]}Z"


def _iso_slow(ts: float) -> str:
    """Times before 1970 (and the calendar's ends): what datetime prints. A time outside years 1..9999
    raises ``ValueError``: the first field of a line is an ISO 8601 time, always, so such a message is a
    reject of the sink, never a line (the decoder never lets one through: see ingest.timestamps)."""
    try:
        return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    except (OverflowError, OSError, ValueError):
        raise ValueError(f"time {ts!r} is outside the years 1 to 9999 a line can show") from None


def _safe_json(value: object) -> str:
    # orjson escapes C0 controls itself; the rest of the unsafe set becomes \uXXXX, which stays valid JSON.
    try:
        dumped = orjson.dumps(value)
    except orjson.JSONEncodeError:  # lone surrogates, which orjson refuses to write
        dumped = orjson.dumps(visible_surrogates(value))
    if dumped.isascii() and b"\x7f" not in dumped:  # orjson escaped every other unsafe ASCII character
        return dumped.decode()
    return _UNSAFE.sub(_escape_json_char, dumped.decode())


def text_line(message: Message) -> str:
    extra = f" {_safe_json(message.fields)}" if message.fields else ""
    msg_id, text = message.id, message.text
    if not (text.isascii() and text.isprintable() and msg_id.isascii() and msg_id.isprintable()):
        msg_id, text = escape(msg_id), escape(text)  # the usual case needs no escaping (see escape)
    return f"{_iso(message.ts)} {message.type} {msg_id} {text}{extra}\n"


def json_line(message: Message) -> str:
    record = {"ts": _iso(message.ts), "type": message.type, "id": message.id, "text": message.text}
    return _safe_json({**message.fields, **record}) + "\n"


FORMATTERS: Final[dict[str, Callable[[Message], str]]] = {"text": text_line, "json": json_line}
