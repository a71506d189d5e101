"""sinks.lines: whatever a message holds, it is written as one line with nothing a terminal obeys."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import given
from hypothesis import settings as examples
from hypothesis import strategies as st

from msgrelay.message import Message
from msgrelay.sinks.lines import FORMATTERS, escape, json_line, text_line

# Everything that may break a line or steer a terminal / bidi renderer (the trailing "\n" aside).
UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff\ud800-\udfff]"
)

HOSTILE = {
    "newline": "first\nFAKE 2026-01-01T00:00:00.000Z ERROR forged line",
    "crlf": "a\r\nb",
    "carriage_return": "visible\rhidden overwrite",
    "nel": "a\x85b",
    "line_separator": "a\u2028b",
    "paragraph_separator": "a\u2029b",
    "vertical_tab_form_feed": "a\x0bb\x0cc",
    "file_group_record_separators": "a\x1cb\x1dc\x1ed",
    "ansi_clear_screen": "\x1b[2J\x1b[H",
    "ansi_colour": "\x1b[31mred\x1b[0m",
    "osc_title": "\x1b]0;owned\x07",
    "c1_csi": "\x9b31m",
    "bidi_override": "invoice \u202egnp.exe",
    "bidi_isolates": "\u2066a\u2067b\u2068c\u2069",
    "marks": "\u200e\u200f\u061c",
    "bom": "\ufeffx",
    "nul": "a\x00b",
    "del": "a\x7fb",
    "backspace": "secret\x08\x08\x08\x08\x08\x08public",
    "tab": "a\tb",
    "lone_high_surrogate": "a\ud800b",
    "lone_low_surrogate": "a\udfffb",
    "everything": "".join(chr(c) for c in range(0x00, 0xA0)) + "\u2028\u2029\u202e\ud800",
}


def make(text: str = "ok", *, msg_id: str = "id-1", fields: dict[str, object] | None = None) -> Message:
    return Message(id=msg_id, type="WARNING", text=text, ts=1_700_000_000.5, fields=dict(fields or {}))


def assert_one_safe_line(line: str) -> None:
    assert line.endswith("\n")
    assert line.count("\n") == 1
    assert len(line.splitlines()) == 1  # str.splitlines knows \r, \x0b, \x1c-\x1e, \x85, \u2028 ...
    assert UNSAFE.search(line[:-1]) is None, repr(line)
    line.encode("utf-8")  # no lone surrogate can reach the file


def parse_json_line(line: str) -> dict[str, object]:
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:  # a written-out lone surrogate is valid JSON that orjson refuses
        record = json.loads(line)
    assert isinstance(record, dict)
    return record


@pytest.mark.parametrize("fmt", sorted(FORMATTERS))
@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_text_is_written_as_one_line_without_control_characters(fmt: str, name: str) -> None:
    assert_one_safe_line(FORMATTERS[fmt](make(HOSTILE[name])))


@pytest.mark.parametrize("fmt", sorted(FORMATTERS))
@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_id_is_written_as_one_line_without_control_characters(fmt: str, name: str) -> None:
    assert_one_safe_line(FORMATTERS[fmt](make(msg_id=HOSTILE[name])))


@pytest.mark.parametrize("fmt", sorted(FORMATTERS))
@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_extra_fields_are_written_as_one_line_without_control_characters(fmt: str, name: str) -> None:
    value = HOSTILE[name]
    fields = {"host": value, value: "key", "nested": {"list": [value, {value: value}]}}
    assert_one_safe_line(FORMATTERS[fmt](make(fields=fields)))


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_json_line_parses_back_to_the_id_type_and_text(name: str) -> None:
    # Given a message full of hostile characters
    value = HOSTILE[name]
    message = make(value, msg_id=f"id-{value}", fields={"host": value})
    # When it is written as a JSON line and read back
    record = parse_json_line(json_line(message))
    # Then the envelope is there; the text comes back exactly unless it held a lone surrogate
    assert record["type"] == "WARNING"
    assert record["ts"] == "2023-11-14T22:13:20.500Z"
    if not re.search("[\ud800-\udfff]", value):
        assert record["id"] == message.id
        assert record["text"] == message.text
        assert record["host"] == value


def test_json_line_of_a_plain_message_has_the_envelope_and_the_extra_fields() -> None:
    message = make("disk full", msg_id="m-7", fields={"host": "web1", "pid": 3})
    line = json_line(message)
    assert_one_safe_line(line)
    assert orjson.loads(line) == {
        "ts": "2023-11-14T22:13:20.500Z",
        "type": "WARNING",
        "id": "m-7",
        "text": "disk full",
        "host": "web1",
        "pid": 3,
    }


def test_extra_fields_cannot_overwrite_the_envelope_in_a_json_line() -> None:
    fields = {"id": "forged", "type": "DEBUG", "text": "forged", "ts": "forged"}
    record = orjson.loads(json_line(make("real", msg_id="real-id", fields=fields)))
    assert (record["id"], record["type"], record["text"]) == ("real-id", "WARNING", "real")
    assert record["ts"] == "2023-11-14T22:13:20.500Z"


def test_text_line_has_time_type_id_text_and_fields_in_order() -> None:
    line = text_line(make("disk full on /var", msg_id="4f1c-1f", fields={"host": "web1"}))
    assert line == '2023-11-14T22:13:20.500Z WARNING 4f1c-1f disk full on /var {"host":"web1"}\n'


def test_text_line_without_fields_ends_with_the_text() -> None:
    assert text_line(make("hello", msg_id="m-1")) == "2023-11-14T22:13:20.500Z WARNING m-1 hello\n"


def test_text_line_contains_the_message_id_even_when_it_is_hostile() -> None:
    line = text_line(make(msg_id="id\nwith\x1b[2Jjunk"))
    assert " id\\nwith\\x1b[2Jjunk " in line


def test_control_characters_are_written_as_visible_escapes() -> None:
    assert escape("a\nb\rc\td") == "a\\nb\\rc\\td"
    assert escape("\x1b[2J\x00\x7f\x85") == "\\x1b[2J\\x00\\x7f\\x85"
    assert escape("\u202e\u2028\u2029\ud800") == "\\u202e\\u2028\\u2029\\ud800"


def test_ordinary_unicode_is_written_as_is() -> None:
    text = "Grüße 世界 🚀 עברית العربية"
    assert escape(text) == text
    assert text in text_line(make(text))
    assert orjson.loads(json_line(make(text)))["text"] == text


@pytest.mark.parametrize("ts", [1e300, -1e300, 253402300800.0, -62135596801.0, float("nan"), float("inf")])
@pytest.mark.parametrize("formatter", [text_line, json_line])
def test_a_time_outside_the_calendar_is_refused_never_printed_as_a_first_field(
    ts: float, formatter: Callable[[Message], str]
) -> None:
    # The first field of a line is an ISO 8601 time, always: a message built by hand with a time no line can
    # show is an error for that message (the sink returns it as a reject), never a line starting "1e+300".
    with pytest.raises(ValueError, match="outside the years 1 to 9999"):
        formatter(Message(id="m", type="INFO", text="x", ts=ts))


@pytest.mark.parametrize("formatter", [text_line, json_line])
def test_times_before_1970_within_the_calendar_print_as_iso_8601(formatter: Callable[[Message], str]) -> None:
    line = formatter(Message(id="m", type="INFO", text="x", ts=-62135596800.0))
    assert "0001-01-01T00:00:00.000Z" in line


@examples(max_examples=3000, deadline=None)
@given(
    ts=st.floats(min_value=0, max_value=253402300798.9, allow_nan=False)
    | st.integers(0, 4_000_000_000).map(lambda s: s + 0.9995)
    | st.integers(0, 4_000_000_000).map(lambda s: s + 0.0005)
)
def test_line_time_is_what_datetime_writes_to_the_millisecond(ts: float) -> None:
    # Lines format the time from a per-second cache (a batch shares a few seconds); the result must be
    # exactly datetime's: microseconds rounded half-even, then cut to milliseconds, carries included.
    expected = datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    line = text_line(Message(id="a", type="INFO", text="x", ts=ts))

    assert line.split(" ", 1)[0] == expected
