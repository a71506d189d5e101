"""Hostile entries pushed straight into Redis, past our producer, on both transports.

Whatever is pushed, the consumer must: write every good message once to the right file, dead-letter every
bad one with its reason and raw bytes, leave nothing pending, never crash, and never create a file other
than the four log files.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from msgrelay.codec import decode, encode
from msgrelay.config import Settings
from msgrelay.consumer import Consumer, Totals
from msgrelay.deadletter import OVERSIZE_PREVIEW_BYTES
from msgrelay.errors import DecodeError
from msgrelay.levels import LEVEL_ALIASES, LOG_TYPES, TYPE_FILES
from msgrelay.sinks import LogFileSink
from msgrelay.sinks.lines import json_line, text_line
from msgrelay.transport import Transport, create_transport

REASONS = {"oversize", "invalid_utf8", "malformed_json", "missing_text", "invalid_field", "unknown_type"}
UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff\ud800-\udfff]"
)
CONSUMER = "hostile-test"


@dataclass(frozen=True)
class Good:
    raw: bytes
    msg_type: str
    marker: str
    """A string that appears in exactly one line of exactly the expected file."""


@dataclass(frozen=True)
class Bad:
    raw: bytes
    reason: str


@dataclass
class Outcome:
    totals: Totals
    dead_letters: list[dict[bytes, bytes]]


def good_json(marker: str, msg_type: str = "INFO", text: str = "", **extra: Any) -> Good:
    return Good(orjson.dumps({"text": f"{marker} {text}", "type": msg_type, **extra}), msg_type, marker)


def stored_preview(item: Bad) -> tuple[bytes, int]:
    """What the dead-letter stream keeps of an entry: the raw bytes (a preview if oversize) and the size."""
    truncated = item.reason == "oversize" and len(item.raw) > OVERSIZE_PREVIEW_BYTES
    return (item.raw[:OVERSIZE_PREVIEW_BYTES] if truncated else item.raw), len(item.raw)


def push(client: redis.Redis, config: Settings, raws: Sequence[bytes]) -> None:
    for raw in raws:
        if config.queue.transport == "streams":
            client.xadd(config.queue.stream, {b"m": raw})
        else:
            client.lpush(config.queue.buffer_key, raw)


def assert_drained(transport: Transport, client: redis.Redis, config: Settings) -> None:
    assert transport.backlog() == 0
    assert all(count == 0 for count in transport.pending().values()), transport.pending()
    if config.queue.transport == "streams":
        assert client.xpending(config.queue.stream, config.queue.group)["pending"] == 0
    else:
        assert client.llen(config.queue.buffer_key) == 0
        assert client.llen(transport.keys.processing(CONSUMER)) == 0


def all_paths(root: Path) -> set[str]:
    return {path.relative_to(root).as_posix() for path in root.rglob("*")}


@pytest.fixture
def scenario(
    transport_name: str,
    make_settings: Callable[..., Settings],
    redis_client: redis.Redis,
    tmp_path: Path,
) -> Iterator[Callable[..., Outcome]]:
    """``scenario(good, bad, **settings)``: push both interleaved, drain with a burst consumer, check all."""
    transports: list[Transport] = []

    def run(good: Sequence[Good], bad: Sequence[Bad], **sections: dict[str, Any]) -> Outcome:
        # Given hostile entries interleaved with good ones, pushed raw into the queue
        consumer_section = {"consumer_name": CONSUMER, "batch_size": 4, **sections.pop("consumer", {})}
        config = make_settings(transport_name, consumer=consumer_section, **sections)
        entries: list[bytes] = []
        for n in range(max(len(good), len(bad))):
            entries += [item.raw for item in [*good[n : n + 1], *bad[n : n + 1]]]
        push(redis_client, config, entries)

        # When a consumer built like `msgrelay consume --burst` drains the queue
        transport = create_transport(config)
        transports.append(transport)
        cs = config.consumer
        sink = LogFileSink(cs.log_dir, fsync=cs.fsync, line_format=cs.line_format)
        consumer = Consumer(transport, sink, cs, max_message_bytes=config.queue.max_message_bytes)
        try:
            totals = consumer.run(burst=True)
        finally:
            sink.close()

        # Then nothing crashed and every entry was settled one way or the other
        assert (totals.fetched, totals.written, totals.dead_lettered) == (len(entries), len(good), len(bad))
        assert_drained(transport, redis_client, config)

        # ... every good message is in its file exactly once, and each file has one line per message
        log_dir = cs.log_dir
        contents = {
            name: (log_dir / name).read_text("utf-8")
            for name in TYPE_FILES.values()
            if (log_dir / name).exists()
        }
        for item in good:
            expected = TYPE_FILES[item.msg_type]
            assert contents[expected].count(item.marker) == 1, (item, contents)
            assert all(item.marker not in text for name, text in contents.items() if name != expected)
        for msg_type, name in TYPE_FILES.items():
            count = sum(item.msg_type == msg_type for item in good)
            assert len(contents.get(name, "").splitlines()) == count
            assert contents.get(name, "").count("\n") == count
            assert UNSAFE.search(contents.get(name, "").replace("\n", "")) is None

        # ... every bad entry is a dead letter with its reason and its raw bytes
        letters = [fields for _, fields in redis_client.xrange(transport.keys.dead_letters())]
        expected = {stored_preview(item): item for item in bad}
        assert len(expected) == len(bad) == len(letters)
        for letter in letters:
            item = expected.pop((letter[b"raw"], int(letter[b"raw_size"])))  # KeyError: raw bytes not kept
            assert letter[b"reason"].decode() == item.reason, (letter, item)
            assert letter[b"truncated"] == (b"1" if len(letter[b"raw"]) < len(item.raw) else b"0")
            assert letter[b"origin"].decode() == transport.keys.queue
            assert letter[b"consumer"].decode() == CONSUMER
            assert bool(letter[b"source_id"]) == (transport_name == "streams")
            assert letter[b"detail"]

        # ... and the only files anywhere under the test folder are the log files
        expected_files = {f"logs/{TYPE_FILES[t]}" for t in {item.msg_type for item in good}}
        assert all_paths(log_dir.parent) == {"logs", *expected_files}
        return Outcome(totals, letters)

    yield run
    for transport in transports:
        transport.close()


def test_path_like_types_are_dead_lettered_and_never_become_files(scenario: Callable[..., Outcome]) -> None:
    bad = [
        Bad(orjson.dumps({"text": f"pwn {n}", "type": t}), "unknown_type")
        for n, t in enumerate(
            [
                "../../etc/passwd",
                "/etc/passwd",
                "../../../../tmp/pwned",
                "..\\..\\windows\\win.ini",
                "logs/../../escape",
                "error.log",
                "./info",
                "~/x",
                "CON",
                "NUL",
                "",
                "E" * 10_000,
            ]
        )
    ]
    good = [
        good_json("good-info"),
        good_json("good-error", "ERROR"),
        Good(b"../../etc/passwd: looks like a path but is just text good-path", "INFO", "good-path"),
        Good(b"[warn] /etc/shadow mentioned good-warn", "WARNING", "good-warn"),
    ]
    scenario(good, bad)


def test_nul_bytes_never_reach_a_file_name_and_are_escaped_in_lines(scenario: Callable[..., Outcome]) -> None:
    bad = [
        Bad(b'{"text": "x", "type": "ERROR\\u0000"}', "unknown_type"),
        Bad(b'{"text": "x", "type": "\\u0000"}', "unknown_type"),
        Bad(b'{"text": "x", "type": "info\\u0000.log"}', "unknown_type"),
    ]
    good = [
        Good(b"ERROR: nul\x00inside good-nul-plain", "ERROR", "good-nul-plain"),
        Good(b'{"text": "a\\u0000b good-nul-json", "id": "id\\u0000x"}', "INFO", "good-nul-json"),
        Good(b"\x00\x00 good-leading-nul", "INFO", "good-leading-nul"),
    ]
    scenario(good, bad)


@pytest.mark.parametrize("line_format", ["text", "json"])
def test_newline_and_ansi_injection_cannot_forge_extra_lines(
    scenario: Callable[..., Outcome], line_format: str
) -> None:
    forged = "\n2026-01-01T00:00:00.000Z ERROR forged-id admin logged in\r\n"
    injections = [
        forged,
        "\x1b[2J\x1b[H\x1b[31mscreen cleared",
        "\r" + " " * 40 + "\roverwritten",
        "\x85nel\u2028ls\u2029ps\x0bvt\x0cff\x1crs",
        "\u202eevil\u2066isolate",
        "\x9b2J c1 csi",
    ]
    good = [
        good_json(f"inj-{n}", "ERROR", text=text, host=text, id=f"id{text}{n}")
        for n, text in enumerate(injections)
    ]
    good += [
        Good(f"ERROR: plain-{n} {text}".encode(), "ERROR", f"plain-{n}") for n, text in enumerate(injections)
    ]
    scenario(good, [], consumer={"line_format": line_format})


def test_invalid_utf8_is_dead_lettered_with_the_exact_bytes(scenario: Callable[..., Outcome]) -> None:
    bad = [
        Bad(b"\xff\xfe\xfd", "invalid_utf8"),
        Bad(b"ERROR: caf\xe9", "invalid_utf8"),
        Bad(b'{"text": "caf\xe9"}', "invalid_utf8"),
        Bad(b'{"text": "x", "k\xc0\xaf": 1}', "invalid_utf8"),
        Bad(b"\xed\xa0\x80 encoded surrogate", "invalid_utf8"),
        Bad(b"truncated \xe2\x82", "invalid_utf8"),
    ]
    good = [
        good_json("good-utf8 caf\u00e9 \u4e16\u754c \U0001f680"),
        Good("WARN: ok é good-w".encode(), "WARNING", "good-w"),
    ]
    scenario(good, bad)


def test_deep_nesting_is_dead_lettered_without_stopping_the_consumer(
    scenario: Callable[..., Outcome],
) -> None:
    # A message nested a few hundred levels deep parses, but cannot be written back: it must not become a
    # poison pill that crashes every consumer that fetches it.
    bad = [
        Bad(b'{"text":"x","a":' + b"[" * depth + b"]" * depth + b"}", "malformed_json")
        for depth in (200, 300, 1000, 30_000)
    ]
    bad.append(Bad(b'{"a":' * 30_000 + b"1" + b"}" * 30_000, "malformed_json"))
    good = [
        Good(b'{"text":"good-nested","a":' + b"[" * 100 + b"]" * 100 + b"}", "INFO", "good-nested"),
        Good(b"[" * 1000 + b" good-brackets", "INFO", "good-brackets"),  # not JSON: a text line
        good_json("good-after", "DEBUG"),
    ]
    scenario(good, bad, queue={"max_message_bytes": 1 << 20})


def test_oversize_entries_are_dead_lettered_with_a_preview_and_their_size(
    scenario: Callable[..., Outcome],
) -> None:
    limit = 1024
    prefix, suffix = b'{"text":"good-at-limit ', b'"}'
    at_limit = prefix + b"y" * (limit - len(prefix) - len(suffix)) + suffix
    bad = [
        Bad(b"x" * (limit + 1), "oversize"),
        Bad(orjson.dumps({"text": "big " + "z" * 5000, "type": "ERROR"}), "oversize"),
        Bad(b"\xff" * 3000, "oversize"),  # size is checked before anything else
        Bad(b"{" * 100_000, "oversize"),
    ]
    good = [Good(at_limit, "INFO", "good-at-limit"), good_json("good-small", "WARNING")]
    outcome = scenario(good, bad, queue={"max_message_bytes": limit})
    assert all(len(letter[b"raw"]) <= OVERSIZE_PREVIEW_BYTES for letter in outcome.dead_letters)


def test_json_without_usable_text_is_dead_lettered(scenario: Callable[..., Outcome]) -> None:
    bad = [
        Bad(b"{}", "missing_text"),
        Bad(b'{"type": "ERROR", "host": "web1"}', "missing_text"),
        Bad(b'{"text": null}', "missing_text"),
        Bad(b'{"body": "wrong key"}', "missing_text"),
        Bad(b'{"text": 42}', "invalid_field"),
        Bad(b'{"text": ["a"]}', "invalid_field"),
        Bad(b'{"text": "x", "id": ""}', "invalid_field"),
        Bad(b'{"text": "x", "ts": "not a time"}', "invalid_field"),
        Bad(b'{"text": "x", "n": NaN}', "malformed_json"),
        Bad(b'{"text": "x", "n": 123456789012345678901234567890}', "malformed_json"),
        Bad(b'{"text": "trunc', "malformed_json"),
    ]
    good = [good_json("good-a"), Good(b'{"msg": "good-b", "severity": "fatal"}', "ERROR", "good-b")]
    scenario(good, bad)


def test_mixed_hostile_batch_on_both_transports(scenario: Callable[..., Outcome]) -> None:
    # Every kind at once, in small batches: the bad ones must not take the good ones of their batch down.
    bad = [
        Bad(b'{"text":"x","type":"../x"}', "unknown_type"),
        Bad(b"\xff", "invalid_utf8"),
        Bad(b'{"text":"x","a":' + b"[" * 500 + b"]" * 500 + b"}", "malformed_json"),
        Bad(b"{}", "missing_text"),
        Bad(b'{"text":"x","id":' + b'"' + b"a" * 200 + b'"}', "invalid_field"),
        Bad(b"o" * 5000, "oversize"),
    ]
    good = [good_json(f"mixed-{n:02d}", LOG_TYPES[n % 4]) for n in range(12)]
    outcome = scenario(good, bad, queue={"max_message_bytes": 4096}, consumer={"batch_size": 3})
    assert outcome.totals.batches >= 6


# --- in-process property test: decode + format never yields more than one safe line ----------------------

MAX_BYTES = 4096
json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=12,
)
level_words = st.sampled_from(sorted(LEVEL_ALIASES)).flatmap(
    lambda w: st.sampled_from([w, w.upper(), w.title(), f" {w} "])
)
json_objects = st.builds(
    lambda known, extra, depth: {
        **extra,
        **known,
        **({"deep": json.loads("[" * depth + "]" * depth)} if depth else {}),
    },
    st.fixed_dictionaries(
        {},
        optional={
            "text": st.text() | json_values,
            "message": st.text(),
            "type": level_words | st.text(max_size=12) | json_values,
            "severity": level_words,
            "id": st.text(max_size=140) | st.integers(),
            "ts": st.floats(allow_nan=False) | st.integers() | st.text(max_size=30),
        },
    ),
    st.dictionaries(st.text(max_size=8), json_values, max_size=4),
    st.integers(0, 140) | st.just(0),
)
raw_entries = st.one_of(
    st.binary(max_size=300),
    st.integers(MAX_BYTES - 2, MAX_BYTES + 2).map(lambda size: b'{"text": "' + b"x" * (size - 12) + b'"}'),
    st.text(max_size=200).map(str.encode),
    st.tuples(
        st.sampled_from(["", "ERROR: ", "[warn] ", "Critical - ", "WARN ", "{", " {"]), st.text(max_size=100)
    ).map(lambda parts: "".join(parts).encode()),
    st.tuples(json_objects, st.booleans()).map(
        lambda args: json.dumps(args[0], ensure_ascii=args[1]).encode("utf-8", "surrogatepass")
    ),
)


def assert_one_safe_line(line: str) -> None:
    assert line.endswith("\n")
    assert len(line.splitlines()) == 1
    assert UNSAFE.search(line[:-1]) is None, repr(line)


@settings(
    derandomize=True,
    database=None,
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(raw=raw_entries, source_id=st.sampled_from(["", "1700000000000-0"]))
def test_any_input_is_a_documented_dead_letter_or_exactly_one_safe_line(raw: bytes, source_id: str) -> None:
    try:
        message = decode(raw, source_id=source_id, max_bytes=MAX_BYTES)
    except DecodeError as error:
        assert error.reason in REASONS
        assert error.raw == raw
        event(error.reason)
        return
    event("decoded")
    assert message.type in LOG_TYPES
    assert isinstance(message.text, str)
    assert 0 < len(message.id) <= 128
    text, record = text_line(message), json_line(message)
    assert_one_safe_line(text)
    assert_one_safe_line(record)
    parsed = orjson.loads(record)
    assert (parsed["id"], parsed["type"], parsed["text"]) == (message.id, message.type, message.text)
    # a decoded message can always be re-encoded (for replay) and reads back the same
    assert decode(encode(message), max_bytes=1 << 20) == message
