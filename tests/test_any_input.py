"""Any input, through the real loops (issue 10, section 3): no loop exits, every input is accounted for.

Hypothesis draws batches of entries from the whole JSON space (integers past 64 bits, float edges, nesting
to 300 levels, strings with controls, escaped lone surrogates and bidi marks, odd times, odd field names),
plain text, raw bytes and, for the streams transport, odd stream field layouts; a batch is pushed into a
real redis-server and drained by the real ``Consumer`` (with the real transports and the real log-file
sink) or the real ``NotifyLoop`` (with the real alert-log notifier). Each run must return, and count: every
entry written (one line each, an ISO 8601 UTC time first) or notified, or dead-lettered with a known reason.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from typing import TypeVar

import pytest
import redis
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from msgrelay.alerting.notifiers import AlertLogNotifier
from msgrelay.alerting.notify import NotifyLoop, NotifyPolicy
from msgrelay.alerting.outbox import decode_state
from msgrelay.config import Settings
from msgrelay.consumer import Consumer
from msgrelay.ingest.timestamps import EARLIEST_S, LATEST_S
from msgrelay.levels import TYPE_FILES
from msgrelay.redis_server import RedisServer
from msgrelay.sinks import LogFileSink
from msgrelay.transport import Transport, create_transport

ISO_UTC = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")
MESSAGE_REASONS = {
    "oversize", "invalid_utf8", "malformed_json", "missing_text", "invalid_field", "unknown_type",
    "unreadable_entry", "max_deliveries", "decode_crash", "processing_failed",
}  # fmt: skip
ALERT_REASONS = {
    "oversize", "invalid_utf8", "malformed_json", "missing_service", "missing_status", "invalid_status",
    "missing_message", "invalid_field", "unreadable_entry", "max_deliveries", "decode_crash", "render_crash",
}  # fmt: skip
EXAMPLES = settings(
    max_examples=25,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)

# --- JSON text from the whole space (written by hand: orjson cannot write most of what is drawn) ----------

T = TypeVar("T")
CONTROLS = st.sampled_from("\x00\x1b\n\r\x85\u2028\u202e\ufeff")
SURROGATES = st.integers(0xD800, 0xDFFF).map(chr)


def weighted(*choices: tuple[int, st.SearchStrategy[T]]) -> st.SearchStrategy[T]:
    """One of ``choices`` drawn with the given weights (st.one_of would treat repeats as one)."""
    table = [strategy for weight, strategy in choices for _ in range(weight)]
    return st.sampled_from(table).flatmap(lambda strategy: strategy)


# A lone surrogate (as an escape) dooms a whole JSON entry, so it comes in one text in sixteen.
texts: st.SearchStrategy[str] = weighted(
    (12, st.text(min_size=1, max_size=30)),
    (3, st.text(st.characters() | CONTROLS, min_size=1, max_size=30)),
    (1, st.text(st.characters() | SURROGATES, max_size=30)),
)


def json_string(text: str) -> str:
    """``text`` as a JSON string literal; a lone surrogate becomes its escape (which orjson refuses)."""
    out = []
    for char in text:
        code = ord(char)
        if char in '"\\':
            out.append("\\" + char)
        elif code < 0x20 or 0xD800 <= code <= 0xDFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def mostly(usual: st.SearchStrategy[str], odd: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """``usual`` three times in four: enough good entries get through for the later steps to be driven."""
    return weighted((3, usual), (1, odd))


numbers: st.SearchStrategy[str] = weighted(
    (4, st.integers(-(2**63), 2**64 - 1).map(str)),
    (2, st.floats(allow_nan=False, allow_infinity=False).map(repr)),
    (1, st.integers(-(2**70), 2**70).map(str)),  # past 64 bits both ways
    (1, st.sampled_from(["1e308", "1e309", "-1e400", "5e-324", "-0.0", "1E+2", "0", "-" + "9" * 5000])),
)
good_times = st.one_of(
    st.floats(1e9, 2e9).map(repr),
    st.integers(int(1e12), int(2e12)).map(str),  # milliseconds
    st.integers(int(1e18), int(2e18)).map(str),  # nanoseconds
    st.datetimes(timezones=st.timezones()).map(lambda moment: json_string(moment.isoformat())),
)
odd_times = st.one_of(
    numbers,
    st.sampled_from(["1e300", "-1e18", "-1", "true", "[]", "{}"]),
    st.sampled_from(["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "1e300", "yesterday"]).map(
        json_string
    ),
    st.integers(0, 10**25).map(lambda n: json_string(str(n))),
    texts.map(json_string),
)
strings = texts.map(json_string)
scalars = st.one_of(numbers, strings, st.sampled_from(["true", "false", "null"]))
names = st.one_of(
    st.sampled_from(
        ["text", "message", "msg", "type", "level", "severity", "ts", "time", "id", "", "__proto__"]
    ),
    texts,
).map(json_string)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3).map(lambda items: "[" + ",".join(items) + "]")
        | st.lists(st.tuples(names, inner), max_size=3).map(
            lambda pairs: "{" + ",".join(f"{k}:{v}" for k, v in pairs) + "}"
        )
    ),
    max_leaves=8,
)
deep = st.tuples(st.integers(100, 300), values).map(lambda d: "[" * d[0] + d[1] + "]" * d[0])  # cap: 128


def nested(entry: bytes, value: str) -> bytes:
    """``entry`` (a JSON object) with one more field holding ``value``."""
    return (
        entry[:-1] + b',"nested":' + value.encode("utf-8", "surrogatepass") + b"}"
        if entry[-1:] == b"}"
        else entry
    )


def json_object(known: dict[str, st.SearchStrategy[str]]) -> st.SearchStrategy[bytes]:
    """A JSON object with the ``known`` keys (mostly all of them) and up to two odd extra fields."""
    dropped = weighted((7, st.just(frozenset[str]())), (1, st.frozensets(st.sampled_from(sorted(known)))))
    extra = st.lists(st.tuples(names, values), max_size=2)
    return st.tuples(st.fixed_dictionaries(known), dropped, extra).map(
        lambda parts: (
            "{"
            + ",".join(
                [
                    *(f"{json_string(k)}:{v}" for k, v in parts[0].items() if k not in parts[1]),
                    *(f"{k}:{v}" for k, v in parts[2]),
                ]
            )
            + "}"
        ).encode("utf-8", "surrogatepass")
    )


log_entries: st.SearchStrategy[bytes] = weighted(
    (
        5,
        json_object(
            {
                "text": mostly(strings, values),
                "type": mostly(st.sampled_from(["INFO", "error", "warn", "crit"]).map(json_string), values),
                "ts": mostly(good_times, odd_times),
                "id": mostly(strings, numbers),
            }
        ),
    ),
    (1, st.tuples(st.just(b'{"text":"deep","ts":1.5}'), deep).map(lambda parts: nested(*parts))),
    (2, texts.map(lambda text: text.encode("utf-8", "surrogatepass"))),
    (
        1,
        st.sampled_from([b"\xef\xbb\xbf", b""]).flatmap(
            lambda bom: st.sampled_from(
                [b'{"level":"error","message":"x"}', b"ERROR: x\r\n", b"[warn] y\n"]
            ).map(lambda body: bom + body)
        ),
    ),
    (1, st.binary(max_size=40)),
)
retry_counts = st.sampled_from([b"3", b"0", b"9" * 5000, b"0" * 12, b"-1", b"", b"\xff", b"\xd9\xa3"])
stream_layouts: st.SearchStrategy[list[tuple[bytes, bytes]]] = weighted(
    (  # our retry layout, with any count and error
        1,
        st.tuples(log_entries, retry_counts, st.binary(max_size=8)).map(
            lambda parts: [(b"m", parts[0]), (b"n", parts[1]), (b"e", parts[2])]
        ),
    ),
    (  # anything XADDed by hand: any names (repeated ones too), any values
        2,
        st.lists(
            st.tuples(
                st.sampled_from([b"m", b"n", b"e", b"message", b"level", b"ts", b"", b"\xff"])
                | st.binary(max_size=4),
                log_entries | retry_counts,
            ),
            min_size=1,
            max_size=4,
        ),
    ),
)
alert_entries: st.SearchStrategy[bytes] = weighted(
    (
        6,
        json_object(
            {
                "service": mostly(
                    st.sampled_from(["db", "api", " cache "]).map(json_string),
                    st.sampled_from(["", "x" * 201]).map(json_string) | values,
                ),
                "status": mostly(
                    st.sampled_from(["DOWN", "UP", "down"]), st.sampled_from(["", "sideways"])
                ).map(json_string),
                "message": mostly(strings, values),
                "timestamp": mostly(good_times, odd_times),
            }
        ),
    ),
    (
        1,
        st.tuples(st.just(b'{"service":"deep","status":"DOWN","message":"x"}'), deep).map(
            lambda p: nested(*p)
        ),
    ),
    (1, st.binary(max_size=40)),
)


# --- running the real loops -------------------------------------------------------------------------------


@dataclass
class Bench:
    """Our private redis-server, emptied before each example, and a folder per example."""

    server: RedisServer
    root: Path
    make_settings: Callable[..., Settings]
    example: Iterator[int] = field(default_factory=count)

    def fresh(self) -> tuple[redis.Redis, Path]:
        client = self.server.client()
        assert int(client.info("server")["process_id"]) == self.server.pid  # never flush someone else's
        client.flushall()
        folder = self.root / f"example-{next(self.example)}"
        folder.mkdir()
        return client, folder


@pytest.fixture
def bench(
    redis_server: RedisServer, redis_url: str, tmp_path: Path, make_settings: Callable[..., Settings]
) -> Bench:
    return Bench(redis_server, tmp_path, make_settings)


def push_entries(
    client: redis.Redis, transport: Transport, entries: list[bytes | list[tuple[bytes, bytes]]]
) -> None:
    for entry in entries:
        if isinstance(entry, bytes) and transport.name == "lists":
            client.lpush(transport.keys.queue, entry)
        else:
            pairs = [(b"m", entry)] if isinstance(entry, bytes) else entry
            client.execute_command(
                "XADD", transport.keys.queue, "*", *(part for pair in pairs for part in pair)
            )


def dead_letter_reasons(client: redis.Redis, transport: Transport) -> list[str]:
    return [fields[b"reason"].decode() for _, fields in client.xrange(transport.keys.dead_letters())]


def consume_all(bench: Bench, transport_name: str, entries: list[bytes | list[tuple[bytes, bytes]]]) -> None:
    client, folder = bench.fresh()
    config = bench.make_settings(
        transport_name,
        consumer={
            "log_dir": folder,
            "batch_size": 7,
            "max_deliveries": 2,
            "retry_backoff_s": 0.01,
            "retry_backoff_cap_s": 0.02,
            "consumer_name": "any-input",
        },
        queue={"max_message_bytes": 1 << 20},
    )
    transport = create_transport(config)
    sink = LogFileSink(folder, line_format="text")
    try:
        push_entries(client, transport, entries)
        # When the real consumer drains them: it returns (a crash would raise out of run)
        totals = Consumer(transport, sink, config.consumer, max_message_bytes=1 << 20).run(burst=True)

        # Then every entry is written once or dead-lettered with a known reason, and nothing is left
        lines = [
            line
            for name in TYPE_FILES.values()
            if (folder / name).exists()
            for line in (folder / name).open()
        ]
        reasons = dead_letter_reasons(client, transport)
        assert (len(lines), len(reasons)) == (totals.written, totals.dead_lettered)
        assert totals.written + totals.dead_lettered == len(entries), (totals, reasons)
        assert set(reasons) <= MESSAGE_REASONS, reasons
        for reason in {*reasons, *(["written"] if lines else [])}:
            event(reason)
        assert all(ISO_UTC.fullmatch(line.split(" ", 1)[0]) and line.endswith("\n") for line in lines)
        assert transport.backlog() == 0 and sum(transport.pending().values()) == 0
    finally:
        sink.close()
        transport.close()
        client.close()


def notify_all(bench: Bench, transport_name: str, entries: list[bytes]) -> None:
    client, folder = bench.fresh()
    config = bench.make_settings(transport_name, alerts={"transport": transport_name})
    transport = create_transport(config, queue=config.alerts.as_queue(config.queue.namespace))
    notifier = AlertLogNotifier(folder / "alerts.log", name="log")
    try:
        push_entries(client, transport, list(entries))
        loop = NotifyLoop(
            transport, {"log": notifier}, NotifyPolicy(default_notifiers=("log",)), name="any-input"
        )
        # When the real notify loop delivers them: it returns (a crash would raise out of run)
        totals = loop.run(threading.Event(), burst=True)

        # Then every alert was judged (notified, deduplicated ...) or dead-lettered with a known reason, every
        # notification queued was sent, and no state holds a time out of range
        reasons = dead_letter_reasons(client, transport)
        stats = transport.stats()
        verdicts = sum(
            value for key, value in stats.items() if key.startswith("alerts_") and key != "alerts_received"
        )
        assert totals.received + totals.dead_lettered == len(entries), (totals, reasons)
        assert len(reasons) == totals.dead_lettered and set(reasons) <= ALERT_REASONS, reasons
        for reason in {*reasons, *(["notified"] if totals.sent else [])}:
            event(reason)
        assert verdicts == totals.received == stats.get("alerts_received", 0)
        log_path = folder / "alerts.log"
        sent_lines = len(log_path.read_bytes().splitlines()) if log_path.exists() else 0
        assert totals.sent == totals.queued == sent_lines
        for raw in client.hvals(transport.keys.alert_states()):
            state = decode_state("?", raw)
            assert state is not None and EARLIEST_S <= state.since < LATEST_S
        assert transport.backlog() == 0 and sum(transport.pending().values()) == 0
    finally:
        notifier.close()
        transport.close()
        client.close()


@EXAMPLES
@given(entries=st.lists(log_entries, min_size=10, max_size=30))
def test_any_log_entries_are_written_or_dead_lettered_by_the_real_consumer(
    bench: Bench, transport_name: str, entries: list[bytes]
) -> None:
    consume_all(bench, transport_name, list(entries))


@EXAMPLES
@given(
    entries=st.lists(log_entries.map(lambda raw: [(b"m", raw)]) | stream_layouts, min_size=10, max_size=30)
)
def test_any_stream_field_layouts_are_written_or_dead_lettered_by_the_real_consumer(
    bench: Bench, entries: list[list[tuple[bytes, bytes]]]
) -> None:
    consume_all(bench, "streams", list(entries))


@EXAMPLES
@given(entries=st.lists(alert_entries, min_size=10, max_size=30))
def test_any_alerts_are_notified_or_dead_lettered_by_the_real_notify_loop(
    bench: Bench, transport_name: str, entries: list[bytes]
) -> None:
    notify_all(bench, transport_name, entries)
