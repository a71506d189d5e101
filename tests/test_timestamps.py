"""Times (issue 10, section 4): the first field of every line is an ISO 8601 UTC time, always.

Epoch seconds, milliseconds, microseconds and nanoseconds (told apart by magnitude, as numbers or numeric
strings) and ISO 8601 with any offset are read; anything out of range is an ``invalid_field`` dead letter.
Alerts follow the same rules (one parser: ``msgrelay.ingest.timestamps``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from msgrelay.alerting.codec import decode_alert
from msgrelay.codec import decode
from msgrelay.errors import DecodeError
from msgrelay.ingest.timestamps import EARLIEST_S, LATEST_S, epoch_seconds
from msgrelay.sinks.lines import json_line, text_line

LIMIT = 64 * 1024
ISO_UTC = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")

Reader = Callable[[object], float]


def message_time(value: object) -> float:
    """The decoded time of a log message whose ``ts`` is ``value``."""
    return decode(orjson.dumps({"text": "x", "ts": value}), max_bytes=LIMIT).ts


def alert_time(value: object) -> float:
    """The decoded time of an alert whose ``timestamp`` is ``value``."""
    raw = orjson.dumps({"service": "db", "status": "DOWN", "message": "x", "timestamp": value})
    return decode_alert(raw, max_bytes=LIMIT).timestamp


READERS = pytest.mark.parametrize("read", [message_time, alert_time], ids=["message", "alert"])


def first_field(ts: float) -> str:
    """The first field of the text line of a message at ``ts``."""
    return text_line(decode(orjson.dumps({"text": "x", "ts": ts}), max_bytes=LIMIT)).split(" ", 1)[0]


@READERS
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1732873505, "2024-11-29T09:45:05.000Z"),  # seconds
        (1732873505.123, "2024-11-29T09:45:05.123Z"),
        (1732873505123, "2024-11-29T09:45:05.123Z"),  # the milliseconds (printed 1732873505123.0)
        (1732873505123.0, "2024-11-29T09:45:05.123Z"),
        (1732873505123456, "2024-11-29T09:45:05.123Z"),  # microseconds
        (1732873505123456789, "2024-11-29T09:45:05.123Z"),  # nanoseconds (printed 1.79e+18)
        (1642234567000, "2022-01-15T08:16:07.000Z"),  # the alert timestamp in milliseconds
        ("1732873505", "2024-11-29T09:45:05.000Z"),  # numeric strings, in every unit
        ("1732873505.123", "2024-11-29T09:45:05.123Z"),
        ("1732873505123", "2024-11-29T09:45:05.123Z"),
        ("1732873505123456789", "2024-11-29T09:45:05.123Z"),
        (" 1732873505123 ", "2024-11-29T09:45:05.123Z"),
        ("2024-11-29T09:45:05.123Z", "2024-11-29T09:45:05.123Z"),  # ISO 8601 with any offset
        ("2024-11-29T23:45:05.123+14:00", "2024-11-29T09:45:05.123Z"),
        ("2024-11-28T21:45:05.123-12:00", "2024-11-29T09:45:05.123Z"),
        ("2024-11-29T15:15:05.123+05:30", "2024-11-29T09:45:05.123Z"),
        ("20241129T094505Z", "2024-11-29T09:45:05.000Z"),  # basic format
        ("2024-11-29T09:45:05.123456789Z", "2024-11-29T09:45:05.123Z"),
        ("2024-11-29 09:45:05", "2024-11-29T09:45:05.000Z"),  # no offset: UTC
        (0, "1970-01-01T00:00:00.000Z"),  # the first accepted time
        (99_999_999_999.5, "5138-11-16T09:46:39.500Z"),  # near the last one
    ],
)
def test_accepted_times_print_as_the_right_iso_8601_utc_time(
    read: Reader, value: object, expected: str
) -> None:
    assert first_field(read(value)) == expected


@READERS
@pytest.mark.parametrize(
    "value",
    [
        1e300,  # printed as is before
        -1e18,
        -1,
        -0.001,
        1e20,  # nanoseconds past 5138
        "0001-01-01T00:00:00+14:00",  # year 0 in UTC
        "1969-12-31T23:59:59Z",
        "5138-11-16T09:46:40Z",
        "9999-12-31T23:59:59-14:00",
        "1e300",
        "-5",
        "nan",
        "inf",
        "1_000",
        "",
        "  ",
        "yesterday",
        "2024-13-01T00:00:00Z",
        "1" * 5000,  # no int() of 5000 digits (Python refuses over 4300)
        True,
        [1732873505],
        {"s": 1732873505},
    ],
)
def test_times_out_of_range_or_not_times_are_invalid_field(read: Reader, value: object) -> None:
    with pytest.raises(DecodeError) as refused:
        read(value)
    assert refused.value.reason == "invalid_field"
    assert len(refused.value.detail) < 200


@pytest.mark.parametrize(
    "ts",
    [-0.0, 0.0, -5e-324, 5e-324, LATEST_S, math.nextafter(LATEST_S, 0), math.nextafter(LATEST_S, math.inf)],
)
def test_the_decoders_fast_path_for_float_seconds_keeps_the_one_range(ts: float) -> None:
    # Our producer's float seconds skip the parser (one comparison, with the range written as literals):
    # the result is the parser's all the same (from 1e11 on, milliseconds; below 0, refused)
    raw = orjson.dumps({"text": "x", "ts": ts})
    try:
        expected = epoch_seconds(ts, raw)
    except DecodeError:
        with pytest.raises(DecodeError, match="invalid_field"):
            decode(raw, max_bytes=LIMIT)
        return
    assert decode(raw, max_bytes=LIMIT).ts == expected
    assert (expected == ts) == (EARLIEST_S <= ts < LATEST_S)


def test_a_time_too_large_for_json_doubles_is_malformed_json_not_a_crash() -> None:
    with pytest.raises(DecodeError) as refused:
        decode(b'{"text":"x","ts":1e400}', max_bytes=LIMIT)
    assert refused.value.reason == "malformed_json"


# --- the kind: every accepted time prints as ISO 8601 UTC; every unit reads the same instant ----------------

iso_times = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.timezones() | st.none()
).map(lambda moment: moment.isoformat())
offsets = st.integers(-23 * 60 - 59, 23 * 60 + 59).map(lambda minutes: timezone(timedelta(minutes=minutes)))
any_time = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(min_value=-1, max_value=2e20),
    st.integers(-(2**63), 2**64 - 1),
    st.integers(-(2**63), 2**64 - 1).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    iso_times,
    st.tuples(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)), offsets).map(
        lambda parts: parts[0].replace(tzinfo=parts[1]).isoformat()
    ),
    st.text(st.characters(blacklist_categories=["Cs"]), max_size=30),
)


@settings(max_examples=1500, deadline=None, database=None, derandomize=True)
@given(value=any_time)
def test_any_accepted_time_prints_as_an_iso_8601_utc_first_field(value: object) -> None:
    raw = orjson.dumps({"text": "x", "ts": value})
    try:
        message = decode(raw, max_bytes=LIMIT)
    except DecodeError as refused:
        assert refused.reason == "invalid_field"
        return
    assert EARLIEST_S <= message.ts < LATEST_S
    for line in (text_line(message), orjson.loads(json_line(message))["ts"]):
        first = line.split(" ", 1)[0]
        assert ISO_UTC.fullmatch(first), line
        printed = datetime.fromisoformat(first)
        assert abs(printed.timestamp() - message.ts) < 0.001 + abs(message.ts) * 1e-15
    # Our wire format carries the time on as epoch seconds (a retry, a replay): it reads back the same.
    assert message_time(message.ts) == message.ts


@settings(max_examples=500, deadline=None, database=None, derandomize=True)
@given(millis=st.integers(int(1e11), int(1e14) - 1))
def test_every_unit_of_one_instant_reads_the_same_time(millis: int) -> None:
    # Given one instant from 1973-03-03 (1e8 s) to 5138, where the magnitude rule is unambiguous
    instant = datetime.fromtimestamp(millis // 1000, UTC) + timedelta(milliseconds=millis % 1000)
    forms: list[object] = [
        millis,
        millis * 1000,
        *([millis * 1_000_000] if millis * 1_000_000 < 2**64 else []),  # JSON integers: 64 bits (2554)
        str(millis),
        str(millis * 1_000_000),
        f"{millis // 1000}.{millis % 1000:03d}",
        instant.isoformat(),
        instant.astimezone(timezone(timedelta(hours=-9, minutes=-30))).isoformat(),
    ]

    # Then every form of it, as a message time or an alert time, is the same epoch seconds
    times = {read(value) for value in forms for read in (message_time, alert_time)}
    assert times == {millis / 1000}
    # ... printed to the exact millisecond while a double resolves microseconds (up to 2^33 s, year 2242;
    # later, lines print what datetime prints for that double, which may be a millisecond earlier)
    if millis < 2**33 * 1000:
        assert first_field(millis / 1000) == instant.isoformat(timespec="milliseconds").replace("+00:00", "Z")
