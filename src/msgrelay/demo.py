"""``msgrelay demo``: the whole pipeline end to end on this machine, in seconds.

1. Use the configured Redis if one is configured and reachable; otherwise start a private redis-server
   (data in ``.msgrelay/demo-redis``), so the demo never touches a server it was not told about.
2. Produce ``count`` realistic messages through the Streams transport, and a set of legacy entries pushed
   the old way (``LPUSH``: hand-written JSON, plain text lines, non-ASCII, and a few bad ones).
3. Consume both queues in batches into ``.msgrelay/demo-logs/<type>.log`` and print where everything went.

The configured Redis may be a production server: of the configuration the demo takes only where Redis is.
Every key it touches is in its own namespace, ``msgrelay-demo:`` (its stream, list, dead-letter stream,
stats ...: :func:`demo_keys`, emptied when it starts), and it writes into its own log folder, never into
``consumer.log_dir``. The configured queues, dead letters and log files are left exactly as they were.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson
from rich.console import Console
from rich.table import Table

from msgrelay.config import ConsumerSettings, QueueSettings, RedisSettings, Settings
from msgrelay.consumer import Consumer, Totals
from msgrelay.errors import BrokerError
from msgrelay.keys import KeySchema
from msgrelay.levels import TYPE_FILES
from msgrelay.monitor import collect_stats
from msgrelay.producer import Producer
from msgrelay.redis_server import RedisServer
from msgrelay.reporting import plural
from msgrelay.samples import random_messages
from msgrelay.sinks.files import LogFileSink
from msgrelay.transport.base import Transport, raw_command, redis_errors
from msgrelay.transport.connection import connect, create_transport
from msgrelay.urls import mask_url

DEMO_REDIS_DIR = Path(".msgrelay/demo-redis")
DEMO_LOG_DIR = Path(".msgrelay/demo-logs")
DEMO_NAMESPACE = "msgrelay-demo"
"""The prefix of every key the demo touches, on whatever server it runs."""
DEMO_CONSUMER = "demo"

LEGACY_ENTRIES: tuple[bytes, ...] = (
    b'{"type": "ERROR", "message": "payment service unreachable"}',
    b'{"level": "warn", "message": "disk 91% full on db-1", "host": "db-1"}',
    '{"type": "info", "message": "commande validée pour Zoë — 42 €"}'.encode(),
    b"ERROR: plain text line from an old cron job",
    b"[notice] nightly backup finished",
    b"a line with no level word at all",
    b'{"severity": "critical", "msg": "replica lag over 60 s", "timestamp": 1642234567}',
    # Bad entries: these end up in the dead-letter stream with a reason, never in a file.
    b'{"type": "ERROR", "message": "truncated json',
    b'{"type": "../../etc/passwd", "message": "path-like type"}',
    b'{"type": "INFO"}',
    b"\xff\xfe not utf-8",
)


def demo_settings(settings: Settings, url: str, transport: str) -> Settings:
    """The demo's own settings: only the Redis URL comes from the user's; queues, namespace and log folder
    are the demo's (``msgrelay-demo:*``, :data:`DEMO_LOG_DIR`)."""
    queue = QueueSettings(
        transport="streams" if transport == "streams" else "lists",
        stream=f"{DEMO_NAMESPACE}:logs",
        group=DEMO_NAMESPACE,
        buffer_key=f"{DEMO_NAMESPACE}:message_buffer",
        namespace=DEMO_NAMESPACE,
    )
    consumer = ConsumerSettings(log_dir=DEMO_LOG_DIR, consumer_name=DEMO_CONSUMER)
    return settings.model_copy(update={"redis": RedisSettings(url=url), "queue": queue, "consumer": consumer})


def demo_keys(settings: Settings) -> list[str]:
    """Every key the demo can write, for either transport: all of them in the ``msgrelay-demo:`` namespace."""
    keys: list[str] = []
    for queue in (settings.queue.stream, settings.queue.buffer_key):
        schema = KeySchema(DEMO_NAMESPACE, queue)
        keys += [queue, schema.stats(), schema.retry(), schema.journal(), schema.deliveries()]
        keys += [schema.consumers(), schema.processing(DEMO_CONSUMER), schema.heartbeat(DEMO_CONSUMER)]
    return [*keys, KeySchema(DEMO_NAMESPACE, "").dead_letters()]


def run_demo(settings: Settings, *, count: int, console: Console) -> None:
    with _demo_redis(settings, console) as url:
        streams = demo_settings(settings, url, "streams")
        lists = demo_settings(settings, url, "lists")
        log_dir = DEMO_LOG_DIR
        _start_empty(streams, console)
        before = _line_counts(log_dir)

        with Producer.from_settings(streams) as producer:
            producer.send_many(itertools.islice(random_messages(seed=None), count))
        console.print(f"produced {plural(count, 'message')} with the producer library (Redis Streams)")
        legacy = create_transport(lists)
        legacy.client.lpush(lists.queue.buffer_key, *LEGACY_ENTRIES)
        legacy.close()
        console.print(f"pushed {len(LEGACY_ENTRIES)} legacy entries with LPUSH {lists.queue.buffer_key}")

        for phase in (streams, lists):
            transport = create_transport(phase)
            totals = _consume(phase, transport)
            console.print(
                f"consumed {phase.queue.transport}: {totals.written} written, {totals.dead_lettered} "
                f"dead-lettered, in {plural(totals.batches, 'batch', 'batches')} ({totals.elapsed_s:.2f}s)"
            )
            transport.close()
        _print_files(console, log_dir, before)
        _print_dead_letters(console, create_transport(lists))


def _start_empty(settings: Settings, console: Console) -> None:
    """Empty the demo's own keys (what an earlier demo left), and nothing else."""
    keys = demo_keys(settings)
    client = connect(settings)
    try:
        with redis_errors(mask_url(settings.redis.effective_url())):
            client.delete(*keys)
    finally:
        client.close()
    console.print(f"the demo's keys are {DEMO_NAMESPACE}:* (emptied first); no other key is touched")


@contextmanager
def _demo_redis(settings: Settings, console: Console) -> Iterator[str]:
    """The configured Redis if configured and reachable, else a private one for the demo's duration."""
    if settings.redis.model_fields_set:
        url = settings.redis.effective_url()
        try:
            connect(settings).close()
        except BrokerError as exc:
            console.print(f"configured Redis not reachable ({exc}); starting a private one", markup=False)
        else:
            console.print(f"using the configured Redis at {mask_url(url)}")
            yield url
            return
    with RedisServer(DEMO_REDIS_DIR) as server:
        console.print(f"started a private redis-server (pid {server.pid}) at {server.url}")
        yield server.url
    console.print("private redis-server stopped")


def _consume(settings: Settings, transport: Transport) -> Totals:
    cs = settings.consumer
    sink = LogFileSink(cs.log_dir, fsync=cs.fsync, line_format=cs.line_format)
    try:
        consumer = Consumer(transport, sink, cs, max_message_bytes=settings.queue.max_message_bytes)
        return consumer.run(burst=True)
    finally:
        sink.close()


def _line_counts(log_dir: Path) -> dict[str, int]:
    counts = {}
    for name in TYPE_FILES.values():
        path = log_dir / name
        counts[name] = sum(1 for _ in path.open("rb")) if path.is_file() else 0
    return counts


def _print_files(console: Console, log_dir: Path, before: dict[str, int]) -> None:
    after = _line_counts(log_dir)
    table = Table(title=f"log files in {log_dir.resolve()}")
    table.add_column("file")
    table.add_column("lines added", justify="right")
    table.add_column("lines in file", justify="right")
    for name, lines in after.items():
        table.add_row(str(log_dir / name), f"{lines - before[name]:,}", f"{lines:,}")
    console.print(table)
    console.print(f"look at one: tail -3 {log_dir / 'error.log'}")


def _print_dead_letters(console: Console, transport: Transport) -> None:
    stats = collect_stats(transport)
    entries: list[tuple[bytes, dict[bytes, bytes]]] = raw_command(
        transport.client, "XRANGE", transport.keys.dead_letters(), "-", "+"
    )
    reasons = Counter(fields[b"reason"].decode() for _, fields in entries)
    console.print(
        f"dead-letter stream {transport.keys.dead_letters()!r}: {plural(len(entries), 'entry', 'entries')} "
        f"{orjson.dumps(dict(reasons)).decode()}; redis memory {stats.redis_used_memory_human}",
        markup=False,
    )
    transport.close()
