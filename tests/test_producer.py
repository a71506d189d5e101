"""The producer library against a real Redis, for both transports."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as examples
from hypothesis import strategies as st

from msgrelay.codec import ENVELOPE_KEYS, decode, encode, visible_surrogates
from msgrelay.config import Settings, load_settings
from msgrelay.errors import BrokerConnectionError, MessageError, MessageTooLarge
from msgrelay.keys import Stat
from msgrelay.message import Message
from msgrelay.producer import CHUNK_BYTES, MessageSpec, Producer
from msgrelay.redis_server import free_tcp_port
from msgrelay.transport import Transport, create_transport


@pytest.fixture
def settings(make_settings: Callable[..., Settings], transport_name: str) -> Settings:
    return make_settings(transport_name, producer={"pipeline_size": 7}, queue={"max_message_bytes": 2048})


@pytest.fixture
def producer(settings: Settings) -> Iterator[Producer]:
    with Producer.from_settings(settings) as producer:
        yield producer


@pytest.fixture
def reader(settings: Settings) -> Iterator[Transport]:
    """A separate connection reading what the producer stored."""
    transport = create_transport(settings)
    yield transport
    transport.close()


def stored(reader: Transport) -> list[dict[str, Any]]:
    """Every stored message, oldest first, as the JSON object on the wire."""
    return [orjson.loads(d.raw) for d in reader.fetch("reader", 10_000, 0)]


def assert_nothing_sent(reader: Transport) -> None:
    assert reader.backlog() == 0
    assert Stat.PRODUCED not in reader.stats()


def test_send_stores_the_message_and_returns_its_id(producer: Producer, reader: Transport) -> None:
    msg_id = producer.send("error", "disk full", host="web1", code=28)

    (wire,) = stored(reader)
    assert wire["id"] == msg_id
    assert (wire["type"], wire["text"], wire["host"], wire["code"]) == ("ERROR", "disk full", "web1", 28)
    assert isinstance(wire["ts"], float)
    assert reader.stats()[Stat.PRODUCED] == 1


def test_send_returns_a_unique_id_per_message_even_across_producers(
    producer: Producer, settings: Settings, reader: Transport
) -> None:
    with Producer.from_settings(settings) as other:
        ids = [producer.send("info", "same text") for _ in range(30)]
        ids += [other.send("info", "same text") for _ in range(30)]

    assert len(set(ids)) == 60
    assert [m["id"] for m in stored(reader)] == ids


def test_send_many_pipelines_in_chunks_and_keeps_order(producer: Producer, reader: Transport) -> None:
    chunks: list[int] = []
    real_send = producer.transport.send

    def counting_send(payloads: Sequence[bytes]) -> None:
        chunks.append(len(payloads))
        real_send(payloads)

    producer.transport.send = counting_send  # type: ignore[method-assign]  # a spy; Redis is real

    ids = producer.send_many([("info", f"message {i}", {"n": i}) for i in range(50)])

    assert chunks == [7] * 7 + [1]  # one round trip per pipeline_size messages
    assert len(ids) == len(set(ids)) == 50
    wire = stored(reader)
    assert [m["id"] for m in wire] == ids
    assert [m["n"] for m in wire] == list(range(50))
    assert reader.stats()[Stat.PRODUCED] == 50


def test_send_many_accepts_ready_messages_and_two_tuples(producer: Producer, reader: Transport) -> None:
    ready = Message(id="my-own-id", type="DEBUG", text="prebuilt", ts=1.5, fields={"k": "v"})

    ids = producer.send_many([ready, ("warning", "pair")])

    assert ids[0] == "my-own-id"
    wire = stored(reader)
    assert wire[0] == {"id": "my-own-id", "type": "DEBUG", "text": "prebuilt", "ts": 1.5, "k": "v"}
    assert (wire[1]["id"], wire[1]["type"], wire[1]["text"]) == (ids[1], "WARNING", "pair")


def test_unknown_type_raises_before_anything_is_sent(producer: Producer, reader: Transport) -> None:
    with pytest.raises(MessageError, match="nonsense"):
        producer.send_many([("info", "fine"), *[("info", "x")] * 20, ("nonsense", "bad")])

    assert_nothing_sent(reader)


@pytest.mark.parametrize("reserved", ["id", "ts", "type"])
def test_field_named_like_the_envelope_raises_and_sends_nothing(
    producer: Producer, reader: Transport, reserved: str
) -> None:
    with pytest.raises(MessageError, match=reserved):
        producer.send("info", "x", **{reserved: "mine"})

    assert_nothing_sent(reader)


def test_text_field_clash_raises(producer: Producer, reader: Transport) -> None:
    with pytest.raises(MessageError, match="text"):
        producer.send_many([("info", "x", {"text": "other"})])

    assert_nothing_sent(reader)


@pytest.mark.parametrize("value", [object(), {1, 2}, b"bytes", complex(1, 2)])
def test_field_that_is_not_json_serialisable_raises_message_error(
    producer: Producer, reader: Transport, value: object
) -> None:
    with pytest.raises(MessageError, match="not JSON-serialisable"):
        producer.send_many([("info", "ok"), ("info", "x", {"payload": value})])

    assert_nothing_sent(reader)


def test_non_string_text_raises_message_error(producer: Producer, reader: Transport) -> None:
    with pytest.raises(MessageError):
        producer.send("info", 42)  # type: ignore[arg-type]

    assert_nothing_sent(reader)


def test_oversize_message_raises_message_too_large_and_sends_nothing(
    producer: Producer, reader: Transport
) -> None:
    with pytest.raises(MessageTooLarge) as caught:
        producer.send_many([("info", "small"), ("info", "x" * 5000)])

    assert caught.value.limit == 2048
    assert caught.value.size > 5000
    assert isinstance(caught.value, MessageError)  # one except clause catches every bad message
    assert_nothing_sent(reader)


def test_message_just_under_the_limit_is_sent(producer: Producer, reader: Transport) -> None:
    producer.send("info", "x" * 1500)
    assert len(stored(reader)) == 1


@pytest.mark.parametrize(
    ("word", "canonical", "level"),
    [
        ("warn", "WARNING", "warn"),
        ("critical", "ERROR", "critical"),
        ("Fatal", "ERROR", "fatal"),
        ("trace", "DEBUG", "trace"),
        ("WARNING", "WARNING", None),
        ("info", "INFO", None),
    ],
)
def test_level_synonyms_are_sent_as_the_canonical_type_with_the_word_kept(
    producer: Producer, reader: Transport, word: str, canonical: str, level: str | None
) -> None:
    producer.send(word, "x")

    (wire,) = stored(reader)
    assert wire["type"] == canonical
    assert wire.get("level") == level


def test_explicit_level_field_is_not_overwritten_by_the_synonym(
    producer: Producer, reader: Transport
) -> None:
    producer.send("crit", "x", level="sev2")

    (wire,) = stored(reader)
    assert (wire["type"], wire["level"]) == ("ERROR", "sev2")


def test_from_settings_against_an_unreachable_server_raises_with_the_password_masked() -> None:
    port = free_tcp_port()  # nobody listens there
    settings = load_settings(
        overrides={"redis": {"url": f"redis://:s3cret-pw@127.0.0.1:{port}/0", "connect_timeout_s": 1.0}}
    )

    with pytest.raises(BrokerConnectionError) as caught:
        Producer.from_settings(settings)

    message = str(caught.value)
    assert "s3cret-pw" not in message
    assert f"redis://:***@127.0.0.1:{port}/0" in message
    assert "s3cret-pw" not in caught.value.url


# The JSON a producer may attach as fields: every plain value, and the containers and integers that take
# orjson's path (see Producer._encode_all).
json_scalars = st.none() | st.booleans() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
json_values = st.recursive(
    json_scalars | st.integers(-(2**63), 2**63 - 1),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
field_names = st.text(min_size=1, max_size=8).filter(lambda name: name not in ("id", "type", "text", "ts"))


@examples(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    text=st.text(max_size=40),
    fields=st.dictionaries(field_names, json_scalars | json_values, max_size=4),
)
def test_payloads_are_the_compact_json_of_the_message_whichever_encoder_wrote_them(
    producer: Producer, reader: Transport, text: str, fields: dict[str, Any]
) -> None:
    # Plain fields are written by msgspec, the rest by orjson: on the wire both must be the same bytes,
    # the envelope first, then the fields in the order given.
    sent = producer.build("info", text, fields)
    producer.send_many([("info", text, fields), sent])

    first, second = (d.raw for d in reader.fetch("reader", 10, 0))
    for raw in (first, second):
        record = orjson.loads(raw)
        assert raw == orjson.dumps(record)
        assert list(record)[:4] == ["id", "type", "text", "ts"]
        assert (record["text"], {k: v for k, v in record.items() if k not in ENVELOPE_KEYS}) == (text, fields)
    assert second == encode(sent)


@pytest.mark.parametrize("transport_name", ["streams", "lists"])
def test_big_messages_go_out_in_chunks_of_bounded_bytes(
    make_settings: Callable[..., Settings], redis_client: Any, transport_name: str
) -> None:
    settings = make_settings(transport_name, queue={"max_message_bytes": 2 * CHUNK_BYTES})
    big = "x" * (CHUNK_BYTES // 3)  # three fit in a chunk only if nothing else were in it: two per chunk
    redis_client.config_resetstat()
    with Producer.from_settings(settings) as producer:
        ids = producer.send_many([("info", big)] * 5)

    commands = redis_client.info("commandstats")
    sent_with = commands.get("cmdstat_evalsha") or commands.get("cmdstat_lpush")
    assert len(ids) == 5
    assert sent_with["calls"] == 3  # 2 + 2 + 1, not one 5-message command


# --- a lone surrogate (a file name from os.fsdecode) is sent as a visible escape (issue 10, section 7) ------

NOT_UTF8_NAME = os.fsdecode(b"report-caf\xe9.txt")  # 'report-caf\udce9.txt': what a log call gets handed
ANY_CHAR = st.characters() | st.integers(0xD800, 0xDFFF).map(chr)  # st.characters() never makes surrogates


@pytest.mark.parametrize(
    "spec",
    [
        ("info", NOT_UTF8_NAME),
        ("info", "saved", {"file": NOT_UTF8_NAME}),  # string fields: the msgspec path
        ("info", "saved", {"file": NOT_UTF8_NAME, "bytes": 12}),  # the orjson path
        ("info", "saved", {NOT_UTF8_NAME: 1.5}),
        Message("m-1", "INFO", NOT_UTF8_NAME, 1.5, {"file": [NOT_UTF8_NAME]}),
    ],
)
def test_a_lone_surrogate_is_sent_as_the_visible_escape_lines_show(
    producer: Producer, reader: Transport, spec: MessageSpec
) -> None:
    # Before: MessageError "not JSON-serialisable" (send) or UnicodeEncodeError: a log call failed on one byte
    [msg_id] = producer.send_many([spec])

    [wire] = stored(reader)
    assert wire["id"] == msg_id
    shown = orjson.dumps(wire).decode()
    assert "report-caf\\\\udce9.txt" in shown  # the six visible characters \udce9, JSON-escaped
    assert "\\udce9" not in shown.replace("\\\\udce9", "")


@examples(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(ANY_CHAR), value=st.text(ANY_CHAR, max_size=8), key=st.text(ANY_CHAR, max_size=8))
def test_any_text_is_sent_and_reads_back_with_its_surrogates_visible(
    producer: Producer, reader: Transport, text: str, value: str, key: str
) -> None:
    # Any str a caller holds, surrogates included, is sent; what is not UTF-8 arrives as visible text
    if key in ENVELOPE_KEYS:
        return
    producer.send_many([("info", text, {key: value})])

    [delivery] = reader.fetch("reader", 10, 0)
    message = decode(delivery.raw, max_bytes=1 << 20)
    assert message.text == visible_surrogates(text)
    assert message.fields == {visible_surrogates(key): visible_surrogates(value)}


def test_msgrelay_send_writes_a_file_name_that_is_not_utf8_as_a_visible_escape(
    run_cli: Callable[..., subprocess.CompletedProcess[str]], transport_name: str, tmp_path: Path
) -> None:
    sent = run_cli("send", "--type", "ERROR", f"cannot open {NOT_UTF8_NAME}", "-t", transport_name)
    assert sent.returncode == 0, sent.stderr

    consumed = run_cli("consume", "--burst", "--log-dir", "logs", "-t", transport_name)

    assert consumed.returncode == 0, consumed.stderr
    line = (tmp_path / "logs" / "error.log").read_text("utf-8")
    assert line.endswith(f" ERROR {sent.stdout.strip()} cannot open report-caf\\udce9.txt\n")
