"""The processes a benchmark run starts, one per role (``python -m bench.workers ROLE ...``).

Every worker prints ``ready`` once set up (connected, message pool built, imports done). Producers then wait
for ``go`` on stdin, so the consumers and the producer can start up at once and the clock starts only when
messages flow; they print one JSON line with their own start and end time. Consumers run until SIGTERM,
then write the latencies they recorded (``--latency-out``: doubles, seconds from the message's ``ts`` to
its line being written) and exit.

Roles:

* ``plain-producer`` / ``plain-consumer``: the plain redis-py + hiredis + orjson loops the issue measures
  against, on a list (``LPUSH`` 1000 values per command / ``LPOP key 500``, unreliable) or a stream
  (``XADD`` one per message pipelined by 1000 / ``XREADGROUP COUNT 500 BLOCK`` + write + flush + ``XACK``).
* ``relay-producer``: msgrelay's public ``Producer.send_many``.
* ``relay-consumer``: msgrelay's ``Consumer`` with its ``LogFileSink``, wrapped to record latencies (the
  throughput runs use the real ``msgrelay consume`` command instead).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import sys
import time
from array import array
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, cast

import orjson
import redis

from bench.workload import TYPES, log_path, message_dicts

LIST_KEY = "plain:list"
STREAM_KEY = "plain:stream"
GROUP = "plain"
CHUNK = 1000
"""Messages per round trip of the plain producers (and what the issue's anchors used)."""
READ_COUNT = 500
BLOCK_MS = 100
"""How long a plain consumer's read waits: it also bounds how late it notices SIGTERM."""
RELAY_CHUNK = 10_000
"""Messages per ``send_many`` call (the producer pipelines them by its own ``pipeline_size``)."""
TICK_S = 0.001
"""A paced producer sends a small batch this often (the latency scenario)."""
POOL_BYTES = 32_000_000
CHUNK_BYTES = 8_000_000
"""At most this much payload per round trip / ``send_many`` call: 64 KB messages come 125 at a time."""


def pool_size(total: int, size: int) -> int:
    """Distinct messages kept in memory; a long run cycles through them (10M messages would not fit)."""
    return max(1, min(total, 100_000, max(256, POOL_BYTES // size)))


def bounded(chunk: int, size: int) -> int:
    return max(1, min(chunk, CHUNK_BYTES // size))


def cycle_chunks(pool: Sequence[Any], total: int, chunk: int) -> Iterator[list[Any]]:
    source = itertools.cycle(pool)
    for start in range(0, total, chunk):
        yield list(itertools.islice(source, min(chunk, total - start)))


def emit(result: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


def ready_then_go() -> None:
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    sys.stdin.readline()


def ready() -> None:
    sys.stdout.write("ready\n")
    sys.stdout.flush()


# --- producers ----------------------------------------------------------------------------------------


def paced(chunks: Iterator[list[Any]], rate: float, send: Callable[[list[Any]], object]) -> None:
    """Send chunk after chunk so that the offered load is ``rate`` msgs/s (late chunks go at once)."""
    due = time.perf_counter()
    for chunk in chunks:
        send(chunk)
        due += len(chunk) / rate
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)  # pacing the offered load, not synchronising with anyone


def plain_producer(args: argparse.Namespace) -> None:
    client = redis.Redis.from_url(args.url)
    client.ping()
    dicts = list(message_dicts(pool_size(args.messages, args.size), size=args.size))
    pool = [orjson.dumps(message) for message in dicts]
    chunk = max(1, round(args.rate * TICK_S)) if args.rate else bounded(CHUNK, args.size)
    sender = _plain_list_sender(client) if args.transport == "list" else _plain_stream_sender(client)
    ready_then_go()
    started = time.time()
    if args.rate:

        def stamped(messages: list[dict[str, object]]) -> None:
            now = time.time()  # the latency clock starts when the message is made, as msgrelay's does
            sender([orjson.dumps({**message, "ts": now}) for message in messages])

        paced(cycle_chunks(dicts, args.messages, chunk), args.rate, stamped)
    else:
        for payloads in cycle_chunks(pool, args.messages, chunk):
            sender(payloads)
    finished = time.time()
    payload = sum(len(item) for item in pool) / len(pool)
    emit({"started": started, "finished": finished, "messages": args.messages, "payload_bytes": payload})


def _plain_list_sender(client: redis.Redis) -> Callable[[list[bytes]], None]:
    def send(payloads: list[bytes]) -> None:
        client.lpush(LIST_KEY, *payloads)

    return send


def _plain_stream_sender(client: redis.Redis) -> Callable[[list[bytes]], None]:
    def send(payloads: list[bytes]) -> None:
        pipe = client.pipeline(transaction=False)
        for payload in payloads:
            pipe.xadd(STREAM_KEY, {"m": payload})
        pipe.execute()

    return send


def relay_producer(args: argparse.Namespace) -> None:
    from msgrelay.codec import encode  # noqa: PLC0415 - only this role needs msgrelay
    from msgrelay.config import load_settings  # noqa: PLC0415
    from msgrelay.producer import Producer  # noqa: PLC0415

    settings = load_settings(None, {"redis": {"url": args.url}, "queue": {"transport": args.transport}})
    specs = [_spec(message) for message in message_dicts(pool_size(args.messages, args.size), size=args.size)]
    chunk = max(1, round(args.rate * TICK_S)) if args.rate else bounded(RELAY_CHUNK, args.size)
    with Producer.from_settings(settings) as producer:
        sample = producer.build_many(specs[:1000])
        payload = sum(len(encode(message)) for message in sample) / len(sample)
        ready_then_go()
        started = time.time()
        if args.rate:
            paced(cycle_chunks(specs, args.messages, chunk), args.rate, producer.send_many)
        else:
            for part in cycle_chunks(specs, args.messages, chunk):
                producer.send_many(part)
        finished = time.time()
    emit({"started": started, "finished": finished, "messages": args.messages, "payload_bytes": payload})


def _spec(message: dict[str, object]) -> tuple[str, str, dict[str, object]]:
    """The same log message as msgrelay's ``(type, text, fields)`` (its producer adds id and ts)."""
    fields = {key: value for key, value in message.items() if key not in ("id", "type", "text", "ts")}
    return str(message["type"]), str(message["text"]), fields


# --- consumers ----------------------------------------------------------------------------------------


class Latencies:
    """Seconds from each message's ``ts`` to its line being written, kept as doubles (cheap per message)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.values = array("d")

    def record(self, stamps: Sequence[float]) -> None:
        if self.path is not None:
            now = time.time()
            self.values.extend(now - stamp for stamp in stamps)

    def save(self) -> None:
        if self.path is not None:
            with self.path.open("wb") as out:
                self.values.tofile(out)


class TypeFiles:
    """The four per-type files, opened once, appended to with one write and one flush per batch."""

    def __init__(self, log_dir: Path) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        self.files: dict[str, IO[bytes]] = {kind: log_path(log_dir, kind).open("ab") for kind in TYPES}

    def write(self, raws: Sequence[bytes]) -> list[float]:
        """Append each message as a text line to its type's file; returns the messages' ``ts``.

        The line is the one ``msgrelay consume`` writes (ISO time, type, id, text, extra fields as JSON),
        made the plain way: what msgrelay adds on top (validation, aliases, escaping) is not done."""
        by_type: dict[str, list[str]] = {}
        stamps = []
        for raw in raws:
            message = orjson.loads(raw)
            ts, kind = message.pop("ts"), message.pop("type")
            msg_id, text = message.pop("id"), message.pop("text")
            when = datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            extra = f" {orjson.dumps(message).decode()}" if message else ""
            by_type.setdefault(kind, []).append(f"{when} {kind} {msg_id} {text}{extra}\n")
            stamps.append(ts)
        for kind, lines in by_type.items():
            handle = self.files[kind]
            handle.write("".join(lines).encode())
            handle.flush()
        return stamps


def plain_consumer(args: argparse.Namespace) -> None:
    client = redis.Redis.from_url(args.url, socket_timeout=30)
    name = f"plain-{os.getpid()}"
    if args.transport == "streams":
        try:
            client.xgroup_create(STREAM_KEY, GROUP, id="0", mkstream=True)
        except redis.exceptions.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):  # the other consumer made it first
                raise
    files = TypeFiles(args.log_dir)
    latencies = Latencies(args.latency_out)
    stopping: list[bool] = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    read = _list_reader(client) if args.transport == "list" else _stream_reader(client, name)
    done = 0
    ready()
    while not stopping:
        raws, settle = read()
        if raws:
            latencies.record(files.write(raws))
            settle()
            done += len(raws)
    latencies.save()
    emit({"messages": done})


Reader = Callable[[], tuple[list[bytes], Callable[[], None]]]


def _list_reader(client: redis.Redis) -> Reader:
    def read() -> tuple[list[bytes], Callable[[], None]]:
        raws = cast("list[bytes] | None", client.lpop(LIST_KEY, READ_COUNT))
        if not raws:  # empty: block for the next one instead of spinning
            popped = cast("list[bytes] | None", client.blpop([LIST_KEY], timeout=BLOCK_MS / 1000))
            raws = [popped[1]] if popped else []
        return raws, lambda: None

    return read


def _stream_reader(client: redis.Redis, name: str) -> Reader:
    def read() -> tuple[list[bytes], Callable[[], None]]:
        reply = cast(
            "list[Any]", client.xreadgroup(GROUP, name, {STREAM_KEY: ">"}, count=READ_COUNT, block=BLOCK_MS)
        )
        entries: list[tuple[bytes, dict[bytes, bytes]]] = reply[0][1] if reply else []
        ids = [entry_id for entry_id, _ in entries]

        def settle() -> None:
            client.xack(STREAM_KEY, GROUP, *ids)

        return [fields[b"m"] for _, fields in entries], settle

    return read


def relay_consumer(args: argparse.Namespace) -> None:
    """msgrelay's consumer loop as ``msgrelay consume`` builds it (at-least-once, default batch), with the
    sink wrapped to stamp each message when its batch has been written."""
    from msgrelay.config import load_settings  # noqa: PLC0415 - only this role needs msgrelay
    from msgrelay.consumer import Consumer, default_consumer_name  # noqa: PLC0415
    from msgrelay.message import Message  # noqa: PLC0415
    from msgrelay.sinks import LogFileSink, Reject  # noqa: PLC0415
    from msgrelay.transport.connection import create_transport  # noqa: PLC0415

    latencies = Latencies(args.latency_out)

    class StampingSink(LogFileSink):
        def write_batch(self, messages: Sequence[Message], handles: Sequence[bytes] = ()) -> list[Reject]:
            rejects = super().write_batch(messages, handles)
            latencies.record([message.ts for message in messages])
            return rejects

    overrides = {
        "redis": {"url": args.url},
        "queue": {"transport": args.transport},
        "consumer": {"log_dir": args.log_dir, "block_timeout_s": BLOCK_MS / 1000},
    }
    settings = load_settings(None, overrides)
    cs = settings.consumer.model_copy(update={"consumer_name": default_consumer_name()})
    transport = create_transport(settings)
    sink = StampingSink(cs.log_dir, line_format=cs.line_format)
    consumer = Consumer(
        transport,
        sink,
        cs,
        max_message_bytes=settings.queue.max_message_bytes,
        trim_interval_s=settings.queue.trim_interval_s,
    )
    signal.signal(signal.SIGTERM, lambda *_: consumer.stop())
    ready()
    totals = consumer.run()
    sink.close()
    transport.close()
    latencies.save()
    emit({"messages": totals.written})


# --- command line -------------------------------------------------------------------------------------

ROLES: dict[str, Callable[[argparse.Namespace], None]] = {
    "plain-producer": plain_producer,
    "plain-consumer": plain_consumer,
    "relay-producer": relay_producer,
    "relay-consumer": relay_consumer,
}


def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.workers", description=__doc__.splitlines()[0])
    parser.add_argument("role", choices=sorted(ROLES))
    parser.add_argument("--url", required=True)
    parser.add_argument("--transport", required=True, choices=("list", "streams", "lists"))
    parser.add_argument("--messages", type=int, default=0)
    parser.add_argument("--size", type=int, default=175)
    parser.add_argument("--rate", type=float, default=0.0, help="offered load in msgs/s (0: flat out)")
    parser.add_argument("--log-dir", type=Path, default=Path("application_logs"))
    parser.add_argument("--latency-out", type=Path, default=None)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse(sys.argv[1:] if argv is None else argv)
    ROLES[args.role](args)


if __name__ == "__main__":
    main()
