"""codec.decode / codec.encode: what a producer may push, and the reason code of everything else."""

from __future__ import annotations

import time

import orjson
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from msgrelay.codec import MAX_ID_LENGTH, decode, encode, fallback_id
from msgrelay.errors import DecodeError, MessageError
from msgrelay.levels import LEVEL_ALIASES, LOG_TYPES
from msgrelay.message import Message

LIMIT = 64 * 1024


def ok(raw: bytes, **kwargs: str) -> Message:
    return decode(raw, max_bytes=LIMIT, **kwargs)


def reason_of(raw: bytes, *, max_bytes: int = LIMIT) -> str:
    with pytest.raises(DecodeError) as info:
        decode(raw, max_bytes=max_bytes)
    assert info.value.raw == raw
    return info.value.reason


def as_json(**fields: object) -> bytes:
    return orjson.dumps(fields)


# --- our own wire format ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        Message(id="m-1", type="ERROR", text="disk full on /var", ts=1_700_000_000.123, fields={}),
        Message(id="m-2", type="DEBUG", text="", ts=0.0, fields={"host": "web1", "n": 3, "tags": ["a"]}),
        Message(
            id="m-3", type="WARNING", text="Grüße, 世界 🚀 \u0415RROR", ts=1.5, fields={"ключ": "значение"}
        ),
        Message(
            id="m-4", type="INFO", text="line1\nline2\x1b[2J", ts=2.25, fields={"nested": {"a": [1, None]}}
        ),
    ],
)
def test_encoded_message_decodes_back_to_an_equal_message(message: Message) -> None:
    assert ok(encode(message)) == message


def test_encode_writes_one_compact_json_object_with_the_envelope_and_the_extra_fields() -> None:
    raw = encode(Message(id="m-1", type="INFO", text="hi", ts=1.0, fields={"host": "web1"}))
    assert b"\n" not in raw
    assert orjson.loads(raw) == {"id": "m-1", "type": "INFO", "text": "hi", "ts": 1.0, "host": "web1"}


def test_non_ascii_text_survives_decoding_unchanged() -> None:
    text = "Ünïcödé ✓ 日本語 🙂 \u00e9\u0301"
    assert ok(as_json(text=text)).text == text
    assert ok(text.encode()).text == text


# --- hand-pushed JSON -------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["text", "message", "msg"])
def test_text_is_read_from_any_text_alias(key: str) -> None:
    assert ok(as_json(**{key: "hello"})).text == "hello"


@pytest.mark.parametrize("key", ["type", "level", "severity", "levelname"])
def test_type_is_read_from_any_type_alias(key: str) -> None:
    assert ok(as_json(text="x", **{key: "warning"})).type == "WARNING"


def test_first_alias_present_wins_and_the_other_aliases_stay_as_fields() -> None:
    message = ok(as_json(msg="third", message="second", text="first", severity="error", level="debug"))
    assert message.text == "first"
    assert message.type == "DEBUG"  # "level" comes before "severity"
    assert message.fields == {"message": "second", "msg": "third", "severity": "error"}


def test_json_without_a_type_is_info() -> None:
    assert ok(as_json(text="x")).type == "INFO"
    assert ok(as_json(text="x", type=None)).type == "INFO"


@pytest.mark.parametrize("key", ["ts", "timestamp", "time"])
def test_epoch_seconds_are_read_from_any_time_alias(key: str) -> None:
    assert ok(as_json(text="x", **{key: 1_700_000_000})).ts == 1_700_000_000.0


def test_iso_8601_timestamp_with_offset_is_converted_to_epoch_seconds() -> None:
    assert ok(as_json(text="x", timestamp="2024-01-01T01:00:00+01:00")).ts == 1_704_067_200.0
    assert ok(as_json(text="x", ts="2024-01-01T00:00:00Z")).ts == 1_704_067_200.0


def test_message_without_a_time_is_stamped_with_now() -> None:
    before = time.time()
    message = ok(as_json(text="x"))
    assert before <= message.ts <= time.time()


def test_producer_id_is_kept_and_an_integer_id_becomes_a_string() -> None:
    assert ok(as_json(text="x", id="abc-1")).id == "abc-1"
    assert ok(as_json(text="x", id=42)).id == "42"


def test_extra_fields_are_kept_with_their_json_types() -> None:
    extra = {"host": "web1", "pid": 7, "ok": True, "ratio": 0.5, "none": None, "tags": ["a", {"b": 1}]}
    assert ok(as_json(text="x", **extra)).fields == extra


def test_leading_whitespace_before_a_json_object_is_allowed() -> None:
    assert ok(b' \t\n{"text": "x", "type": "error"}').type == "ERROR"


def test_64_bit_integers_at_the_limits_are_kept_exactly() -> None:
    message = ok(b'{"text":"x","big":18446744073709551615,"small":-9223372036854775808}')
    assert message.fields == {"big": 2**64 - 1, "small": -(2**63)}


def test_long_digit_runs_inside_strings_are_not_mistaken_for_integers() -> None:
    text = 'trace 123456789012345678901234567890 " 99999999999999999999999'
    assert ok(as_json(text=text, trace="98765432109876543210987")).text == text


# --- plain text lines -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "msg_type", "text"),
    [
        (b"ERROR: disk full", "ERROR", "disk full"),
        (b"[warn] low memory", "WARNING", "low memory"),
        (b"Critical - core dumped", "ERROR", "core dumped"),
        (b"ERROR disk full", "ERROR", "disk full"),
        (b"  DEBUG: indented", "DEBUG", "indented"),
        (b"info: lower case with a colon", "INFO", "lower case with a colon"),
        (b"Warning - mixed case with a dash", "WARNING", "mixed case with a dash"),
        (b"error disk full", "INFO", "error disk full"),  # a lower-case bare word is just text
        (b"Error disk full", "INFO", "Error disk full"),
        (b"ERROR", "INFO", "ERROR"),  # a level word needs text after it
        (b"http://example.com/x: down", "INFO", "http://example.com/x: down"),
        (b"HELLO world", "INFO", "HELLO world"),  # capitals, but not a level word
        (b"just some text", "INFO", "just some text"),
        (b"", "INFO", ""),
    ],
)
def test_plain_text_line_takes_its_type_from_a_leading_level_word(
    raw: bytes, msg_type: str, text: str
) -> None:
    message = ok(raw)
    assert (message.type, message.text) == (msg_type, text)


def test_plain_text_line_with_a_synonym_keeps_the_original_word_in_the_level_field() -> None:
    assert ok(b"[warn] x").fields == {"level": "warn"}
    assert ok(b"Critical - x").fields == {"level": "critical"}
    assert ok(b"ERROR: x").fields == {}


def test_plain_text_line_keeps_non_ascii_text() -> None:
    message = ok("WARN: température élevée ☀".encode())
    assert (message.type, message.text) == ("WARNING", "température élevée ☀")


# --- every level synonym ------------------------------------------------------------------------------


@pytest.mark.parametrize(("word", "expected"), sorted(LEVEL_ALIASES.items()))
def test_every_level_synonym_in_json_maps_to_its_type_and_keeps_the_word(word: str, expected: str) -> None:
    # Given a JSON message whose type is any documented synonym, in any case
    for spelling in (word, word.upper(), word.title(), f" {word}\t"):
        # When it is decoded
        message = ok(as_json(text="x", type=spelling))
        # Then it is filed under the canonical type, and a word that differs from it stays visible
        assert message.type == expected
        assert message.type in LOG_TYPES
        if word.upper() == expected:
            assert "level" not in message.fields
        else:
            assert message.fields["level"] == word


@pytest.mark.parametrize(("word", "expected"), sorted(LEVEL_ALIASES.items()))
def test_every_level_synonym_at_the_start_of_a_text_line_maps_to_its_type(word: str, expected: str) -> None:
    for line in (f"{word.upper()}: x", f"[{word}] x", f"{word.title()} - x", f"{word.upper()} x"):
        message = ok(line.encode())
        assert (message.type, message.text) == (expected, "x"), line
        if word.upper() != expected:
            assert message.fields == {"level": word}


@pytest.mark.parametrize(
    "word", ["critical", "fatal", "emerg", "emergency", "alert", "crit", "panic", "severe"]
)
def test_severities_above_error_go_to_error_with_the_original_word_kept(word: str) -> None:
    message = ok(as_json(text="x", severity=word.upper()))
    assert message.type == "ERROR"
    assert message.fields == {"level": word}


def test_explicit_level_field_is_not_overwritten_by_the_synonym() -> None:
    message = ok(as_json(text="x", type="fatal", level="boom"))
    assert message.type == "ERROR"
    assert message.fields == {"level": "boom"}


# --- reason codes -------------------------------------------------------------------------------------


def test_decode_error_is_a_message_error_that_keeps_reason_detail_and_raw_bytes() -> None:
    raw = b'{"text": 1}'
    with pytest.raises(MessageError) as info:
        decode(raw, max_bytes=LIMIT)
    error = info.value
    assert isinstance(error, DecodeError)
    assert (error.reason, error.raw) == ("invalid_field", raw)
    assert error.detail
    assert str(error).startswith("invalid_field: ")


def test_oversize_is_checked_before_any_parsing() -> None:
    # Given an entry that is over the limit AND invalid UTF-8 AND broken JSON
    raw = b"{\xff" + b"x" * 100
    # Then the reason is oversize: the size is checked first
    assert reason_of(raw, max_bytes=50) == "oversize"
    assert reason_of(b"\xff" * 51, max_bytes=50) == "oversize"


def test_entry_exactly_at_the_size_limit_is_accepted() -> None:
    raw = as_json(text="x" * 100)
    assert decode(raw, max_bytes=len(raw)).text == "x" * 100
    assert reason_of(raw, max_bytes=len(raw) - 1) == "oversize"


@pytest.mark.parametrize(
    "raw",
    [
        b'{"text": "caf\xe9"}',  # Latin-1 inside JSON
        b"caf\xe9 ok",
        b"ERROR: \xff\xfe",
        b"\xc3",  # truncated sequence
        b"\xed\xa0\x80 surrogate",  # UTF-8-encoded surrogate
        b"\xf8\x88\x80\x80\x80",  # 5-byte form
        b'{"text": "x", "k\xc0\xaf": 1}',  # overlong "/" in a key
    ],
)
def test_invalid_utf8_is_rejected_in_json_and_in_plain_text(raw: bytes) -> None:
    assert reason_of(raw) == "invalid_utf8"


@pytest.mark.parametrize(
    "raw",
    [
        b'{"text": "x"',  # truncated
        b'{"text": "x", ',
        b"{",
        b'{"text"}',  # a { that is not an object
        b"{}{}",
        b'{"text": "x"} trailing',
        b'{"text": "x", "n": NaN}',
        b'{"text": "x", "n": Infinity}',
        b'{"text": "x", "n": -Infinity}',
        b'{"text": "x", "n": 1e400}',
        b'{"text": "x", "n": 18446744073709551616}',  # > 64-bit int
        b'{"text": "x", "n": -9223372036854775809}',
        b'{"text": "x", "n": 123456789012345678901234567890}',
        b'{"text": "x", "id": 99999999999999999999999}',
        b'{"text": "x", "ts": 99999999999999999999999}',
        b"{'text': 'x'}",  # not JSON quotes
        b'{"text": "\\ud800"}',  # lone surrogate escape
        b'\x0b{"text": "x"}',
    ],
)
def test_broken_json_is_malformed_json(raw: bytes) -> None:
    assert reason_of(raw) == "malformed_json"


def test_100k_deep_nesting_is_malformed_json_not_a_crash() -> None:
    depth, limit = 100_000, 10**7
    assert reason_of(b'{"a":' * depth + b"1" + b"}" * depth, max_bytes=limit) == "malformed_json"
    assert (
        reason_of(b'{"text":"x","a":' + b"[" * depth + b"]" * depth + b"}", max_bytes=limit)
        == "malformed_json"
    )
    assert reason_of(b"{" * depth, max_bytes=limit) == "malformed_json"


@pytest.mark.parametrize("depth", [200, 300, 1000])
def test_nesting_too_deep_to_write_back_is_malformed_json(depth: int) -> None:
    # orjson reads up to 1024 levels but writes only ~254: such a message must not reach a sink.
    assert reason_of(b'{"text":"x","a":' + b"[" * depth + b"]" * depth + b"}") == "malformed_json"


def test_moderate_nesting_is_accepted_and_kept() -> None:
    message = ok(b'{"text":"x","a":' + b"[" * 100 + b"]" * 100 + b"}")
    inner = message.fields["a"]
    for _ in range(99):
        inner = inner[0]
    assert inner == []


def test_text_starting_with_a_bracket_is_a_plain_text_line_not_json() -> None:
    assert ok(b'["text", "x"]').text == '["text", "x"]'
    assert ok(b"[" * 60_000).type == "INFO"


@pytest.mark.parametrize(
    "raw",
    [
        b"{}",
        as_json(type="ERROR"),
        as_json(id="a", body="x"),
        as_json(text=None),
        as_json(Text="x", MESSAGE="y"),
    ],
)
def test_json_object_without_text_is_missing_text(raw: bytes) -> None:
    assert reason_of(raw) == "missing_text"


@pytest.mark.parametrize(
    "raw",
    [
        as_json(text=1),
        as_json(text=["x"]),
        as_json(text={"a": "x"}),
        as_json(text=True),
        as_json(message=1.5),
        as_json(text="x", type=3),
        as_json(text="x", level=["error"]),
        as_json(text="x", id="a" * (MAX_ID_LENGTH + 1)),
        as_json(text="x", id=""),
        as_json(text="x", id=True),
        as_json(text="x", id=1.5),
        as_json(text="x", id=["a"]),
        as_json(text="x", ts="yesterday"),
        as_json(text="x", ts="2026-13-01T00:00:00"),  # there is no month 13
        as_json(text="x", timestamp=True),
        as_json(text="x", time=[1]),
        as_json(text="x", ts={"s": 1}),
        as_json(text="x", ts=""),
    ],
)
def test_known_field_of_the_wrong_kind_is_invalid_field(raw: bytes) -> None:
    assert reason_of(raw) == "invalid_field"


def test_id_of_exactly_the_maximum_length_is_accepted() -> None:
    assert ok(as_json(text="x", id="a" * MAX_ID_LENGTH)).id == "a" * MAX_ID_LENGTH


@pytest.mark.parametrize(
    "msg_type",
    [
        "../../etc/passwd",
        "/etc/passwd",
        "..\\..\\windows\\win.ini",
        "error.log",
        "ERROR\0",
        "ERR\0OR",
        "\u0415RROR",  # Cyrillic capital IE, looks like ERROR
        "\u0130NFO",  # Turkish dotted I
        "\u212anfo",  # Kelvin sign K
        "\uff25\uff32\uff32\uff2f\uff32",  # fullwidth ERROR
        "CON",
        "NUL",
        "",
        "   ",
        "E" * 10_000,
        "error" * 2_000,
        "ERROR\x1b[2J",
        "err or",
        "INFO2",
        "*",
        "%s",
    ],
)
def test_unknown_level_word_is_unknown_type(msg_type: str) -> None:
    assert reason_of(as_json(text="x", type=msg_type)) == "unknown_type"


def test_unknown_type_detail_is_short_even_for_a_huge_type() -> None:
    with pytest.raises(DecodeError) as info:
        decode(as_json(text="x", type="E" * 10_000), max_bytes=LIMIT)
    assert len(info.value.detail) < 200


def test_reasons_are_reported_in_the_documented_order() -> None:
    # missing text wins over a bad type; a wrong text type wins over an unknown type
    assert reason_of(as_json(type="../../x")) == "missing_text"
    assert reason_of(as_json(text=1, type="../../x")) == "invalid_field"
    assert reason_of(as_json(text="x", type="../../x", ts="bad")) == "unknown_type"


# --- ids of messages pushed without one ---------------------------------------------------------------


def test_message_without_id_from_a_stream_is_named_after_the_entry_id() -> None:
    assert fallback_id(b"whatever", "1700000000000-3") == "x-1700000000000-3"
    assert ok(b"plain line", source_id="1-0").id == "x-1-0"
    assert ok(as_json(text="x"), source_id="5-1").id == "x-5-1"


def test_message_without_id_from_a_list_gets_a_stable_digest_of_its_bytes() -> None:
    first = ok(b"same line").id
    assert first.startswith("h-")
    assert ok(b"same line").id == first == fallback_id(b"same line", "")
    assert ok(b"other line").id != first


def test_producer_id_wins_over_the_transport_fallback() -> None:
    assert ok(as_json(text="x", id="p-1"), source_id="1-0").id == "p-1"


def test_iso_timestamp_without_offset_is_utc_not_local_time() -> None:
    message = decode(as_json(text="x", ts="2022-01-15T08:16:07"), max_bytes=LIMIT)
    assert message.ts == 1642234567.0


# --- what producers' tools add around an entry: a byte order mark, a line end (issue 10, section 7) -------

BOM = b"\xef\xbb\xbf"


def test_a_utf8_bom_before_json_is_skipped_and_the_level_kept() -> None:
    # Written by Windows tools (PowerShell's Out-File, Notepad); today the entry became INFO plain text.
    message = ok(BOM + b'{"level":"error","message":"disk full","ts":1732873505}')
    assert (message.type, message.text, message.ts) == ("ERROR", "disk full", 1732873505.0)


def test_a_utf8_bom_before_a_plain_text_line_is_skipped() -> None:
    assert (ok(BOM + b"ERROR: disk full").type, ok(BOM + b"ERROR: disk full").text) == ("ERROR", "disk full")


def test_an_entry_behind_a_bom_that_is_refused_keeps_its_whole_raw_bytes() -> None:
    raw = BOM + b'{"level":"error"}'
    with pytest.raises(DecodeError) as refused:
        ok(raw)
    assert (refused.value.reason, refused.value.raw) == ("missing_text", raw)


def test_only_one_bom_is_skipped_and_an_entry_of_marks_is_no_recursion() -> None:
    assert ok(BOM + BOM + b"ERROR: x").text == "\ufeffERROR: x"  # a second mark is content
    assert ok(BOM * 20_000).type == "INFO"


entries = st.one_of(
    st.builds(
        lambda text, level, host: orjson.dumps({"text": text, "level": level, "host": host, "ts": 1.5}),
        st.text(st.characters(blacklist_categories=["Cs"])),
        st.sampled_from(sorted(LEVEL_ALIASES)),
        st.text(st.characters(blacklist_categories=["Cs"]), max_size=5),
    ),
    st.text(st.characters(blacklist_categories=["Cs"])).map(str.encode),
    st.binary(max_size=40),
)


@example(raw=BOM)
@example(raw=b"")
@given(raw=entries)
def test_any_entry_behind_a_bom_reads_as_the_entry_alone(raw: bytes) -> None:
    if raw.startswith(BOM):
        return  # a second mark is content (see above)
    try:
        alone = ok(raw)
    except DecodeError as refused:
        assert reason_of(BOM + raw) == refused.reason
        return
    behind = ok(BOM + raw)
    assert (behind.id, behind.type, behind.text, behind.fields) == (
        alone.id,
        alone.type,
        alone.text,
        alone.fields,
    )


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        (b"ERROR: disk full\n", "disk full"),  # redis-cli -x LPUSH message_buffer < file
        (b"ERROR: disk full\r\n", "disk full"),
        (b"disk full\n\n", "disk full\n"),  # one line end only: the rest is the text's
        (b"disk full\r", "disk full\r"),
        (b"\n", ""),
        (b'{"text":"disk full\\n"}', "disk full\n"),  # a JSON text is exactly what it says
    ],
)
def test_one_trailing_line_end_of_a_plain_text_entry_is_not_part_of_its_text(raw: bytes, text: str) -> None:
    assert ok(raw).text == text


@given(text=st.text(st.characters(blacklist_categories=["Cs"])), end=st.sampled_from(["\n", "\r\n"]))
def test_any_plain_text_entry_reads_the_same_with_one_line_end(text: str, end: str) -> None:
    try:
        alone = ok(text.encode())
    except DecodeError:
        return  # JSON that is not a message: not a plain text entry
    if text.lstrip().startswith(("{", "\ufeff")) or text.endswith(("\r", "\n")):
        return  # JSON, or a text that ends a line itself (the table above has those)
    with_end = ok((text + end).encode())
    assert (with_end.type, with_end.text, with_end.fields) == (alone.type, alone.text, alone.fields)
