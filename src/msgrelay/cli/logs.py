"""The log-message commands: ``send``, ``produce`` and ``consume``."""

from __future__ import annotations

import gc
import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

from msgrelay.cli.common import ConfigOpt, RedisUrlOpt, TransportOpt, cli_settings, err, out
from msgrelay.config import ConsumerSettings, Settings
from msgrelay.consumer import Consumer, ConsumerHook, default_consumer_name
from msgrelay.dlq import DeadLetterRetention, DeadLetterStore
from msgrelay.errors import BrokerError, ConfigError, UnsafeRedisError
from msgrelay.forgetting import ConsumerForgetting
from msgrelay.outage import OutageLog, wait_until_serving
from msgrelay.producer import Producer, send_with_resends
from msgrelay.reporting import (
    BatchReporter,
    plural,
    print_held_elsewhere,
    print_plain,
    print_totals,
    stamped,
)
from msgrelay.safety import unsafe_settings
from msgrelay.sinks.files import LogFileSink
from msgrelay.sinks.journal import WriteJournal
from msgrelay.sinks.rotation import RotationPolicy
from msgrelay.stopping import BoundedStop
from msgrelay.transport.base import HeldEntries, Transport
from msgrelay.transport.connection import check_ready, create_transport

SEND_RESEND_FOR_S = 5.0
"""How long ``msgrelay send`` resends a message whose outcome is unknown (same id) before giving up."""


def register(app: typer.Typer) -> None:
    app.command()(send)
    app.command()(produce)
    app.command()(consume)


def send(
    text: Annotated[str, typer.Argument(help="The message text.")],
    msg_type: Annotated[
        str, typer.Option("--type", metavar="TYPE", help="INFO, WARNING, ERROR, DEBUG or a synonym.")
    ] = "INFO",
    field: Annotated[
        list[str] | None,
        typer.Option("--field", "-f", metavar="KEY=VALUE", help="An extra field (repeat for more)."),
    ] = None,
    config: ConfigOpt = None,
    redis_url: RedisUrlOpt = None,
    transport: TransportOpt = None,
) -> None:
    """Send one message and print its id."""
    settings = cli_settings(config, redis_url, transport)
    fields = dict(_parse_field(item) for item in field or [])
    with Producer.from_settings(settings) as producer:
        [message] = producer.build_many([(msg_type, text, fields)])
        [msg_id] = send_with_resends(producer, [message], within_s=SEND_RESEND_FOR_S)
    out.print(msg_id, markup=False)


def _parse_field(item: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise typer.BadParameter(f"expected key=value, got {item!r}", param_hint="--field")
    return key, value


def produce(
    count: Annotated[
        int | None,
        typer.Option(
            "--count", "-n", metavar="N", help="Messages to send; 0 = until stopped. [producer.max_messages]"
        ),
    ] = None,
    delay: Annotated[
        float | None,
        typer.Option(
            "--delay", metavar="SECONDS", help="Pause between messages. [producer.delay_between_messages_s]"
        ),
    ] = None,
    rate: Annotated[
        float | None,
        typer.Option(
            "--rate", metavar="N", help="Messages per second (overrides --delay). [producer.rate_per_s]"
        ),
    ] = None,
    seed: Annotated[
        int | None, typer.Option("--seed", metavar="N", help="Seed for reproducible messages.")
    ] = None,
    id_log: Annotated[
        Path | None,
        typer.Option("--id-log", metavar="PATH", help="Append 'id type' of every sent message here."),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    config: ConfigOpt = None,
    redis_url: RedisUrlOpt = None,
    transport: TransportOpt = None,
) -> None:
    """Generate realistic random system messages (INFO/WARNING/ERROR/DEBUG) and send them."""
    from msgrelay.generate import run_generator  # noqa: PLC0415 - keeps `msgrelay --help` fast

    stop = threading.Event()  # SIGTERM as SIGINT: finish the chunk in flight, log its ids, exit 0
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    producer_flags = {"max_messages": count, "delay_between_messages_s": delay, "rate_per_s": rate}
    settings = cli_settings(config, redis_url, transport, producer=producer_flags)
    with Producer.from_settings(settings) as producer:
        sent = run_generator(
            producer, settings.producer, seed=seed, id_log=id_log, console=err, quiet=quiet, stop=stop
        )
    how = "stopped by signal: " if stop.is_set() else ""
    queue = f"{producer.transport.name} queue {producer.transport.keys.queue!r}"
    print_plain(out, f"{how}sent {plural(sent, 'message')} to {queue}")


YOUNG_GC_THRESHOLD = 20_000
"""Container allocations between young-generation collections in ``consume`` (Python's default: 700)."""


def _collect_garbage_per_batch() -> None:
    """Let a batch's objects die young. A batch allocates a few thousand dicts and objects that all live
    until it is settled; at the default threshold several collections run during each batch, and every
    survivor is promoted and scanned again later (about 8 % of a consumer's time). A process setting, so
    the command sets it and the library does not."""
    gc.set_threshold(YOUNG_GC_THRESHOLD, *gc.get_threshold()[1:])


def consume(
    batch_size: Annotated[
        int | None,
        typer.Option(
            "--batch-size",
            "-b",
            metavar="N",
            help="Most entries per batch (default 500). [consumer.batch_size]",
        ),
    ] = None,
    batch_wait: Annotated[
        float | None,
        typer.Option("--batch-wait", metavar="SECONDS", help="Wait to fill a batch. [consumer.batch_wait_s]"),
    ] = None,
    processing_delay: Annotated[
        float | None,
        typer.Option(
            "--processing-delay",
            metavar="SECONDS",
            help="Pause after each batch. [consumer.processing_delay_s]",
        ),
    ] = None,
    block_timeout: Annotated[
        float | None,
        typer.Option(
            "--block-timeout", metavar="SECONDS", help="How long one read waits. [consumer.block_timeout_s]"
        ),
    ] = None,
    log_dir: Annotated[
        Path | None,
        typer.Option(
            "--log-dir", metavar="PATH", help="Folder of the per-type log files. [consumer.log_dir]"
        ),
    ] = None,
    fsync: Annotated[bool | None, typer.Option("--fsync/--no-fsync", help="fsync before each ack.")] = None,
    line_format: Annotated[
        str | None, typer.Option("--format", metavar="text|json", help="Log line format.")
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", metavar="NAME", help="Consumer name (default host-pid).")
    ] = None,
    claim_idle: Annotated[
        float | None,
        typer.Option(
            "--claim-idle",
            metavar="SECONDS",
            help="Idle time after which a silent consumer's entries are taken over. [consumer.claim_idle_s]",
        ),
    ] = None,
    max_deliveries: Annotated[
        int | None,
        typer.Option("--max-deliveries", metavar="N", help="Deliveries before an entry is dead-lettered."),
    ] = None,
    delivery: Annotated[
        str | None,
        typer.Option(
            "--delivery",
            metavar="MODE",
            help="at_least_once (default) or effectively_once (no duplicate line).",
        ),
    ] = None,
    burst: Annotated[bool, typer.Option("--burst", help="Drain what is queued, then exit.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only print the totals.")] = False,
    config: ConfigOpt = None,
    redis_url: RedisUrlOpt = None,
    transport: TransportOpt = None,
) -> None:
    """Process messages in batches into one log file per type; ack each batch only once it is written."""
    consumer_flags = {
        "batch_size": batch_size,
        "batch_wait_s": batch_wait,
        "processing_delay_s": processing_delay,
        "block_timeout_s": block_timeout,
        "log_dir": log_dir,
        "fsync": fsync,
        "line_format": line_format,
        "consumer_name": name,
        "claim_idle_s": claim_idle,
        "max_deliveries": max_deliveries,
        "delivery": delivery,
    }
    stop = BoundedStop()  # a signal during start-up: stop before taking any work
    stop.install()
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # nothing is open yet to reopen; never die of it
    settings = cli_settings(config, redis_url, transport, consumer=consumer_flags)
    stop.timeout_s = settings.redis.stop_timeout_s
    _check_timeouts(settings)
    queue_transport = create_transport(settings, check=False)
    outage = OutageLog(say=stamped(err), primary=queue_transport.primary)
    try:
        with stop.bounding(queue_transport.abort):
            _consume(queue_transport, settings, stop, outage, burst=burst, quiet=quiet)
    finally:
        queue_transport.close()


def _consume(
    queue_transport: Transport,
    settings: Settings,
    stop: BoundedStop,
    outage: OutageLog,
    *,
    burst: bool,
    quiet: bool,
) -> None:
    """``consume`` once its transport exists: wait until Redis serves (unless ``burst``), then run."""
    if burst:  # a drain fails fast, as it does while running
        _check_server(queue_transport, settings)
    elif not wait_until_serving(lambda: _check_server(queue_transport, settings), stop.requested, outage):
        return  # stopped before Redis could serve
    name = settings.consumer.consumer_name or default_consumer_name()  # the sink's journal needs it too
    cs = settings.consumer.model_copy(update={"consumer_name": name})
    sink = _log_file_sink(cs, name, queue_transport)
    reporter = None if quiet else BatchReporter(out)
    retention = DeadLetterRetention(DeadLetterStore.from_transport(queue_transport), settings.deadletter)
    forgetting = ConsumerForgetting(queue_transport, cs.forget_after_s, keep=name)
    hooks: list[ConsumerHook] = [retention, forgetting, SinkUpkeep(sink)]
    if reporter is not None:
        hooks.append(reporter)
    consumer = Consumer(
        queue_transport,
        sink,
        cs,
        max_message_bytes=settings.queue.max_message_bytes,
        hooks=hooks,
        trim_interval_s=settings.queue.trim_interval_s,
        outage=outage,
    )
    stop.on_request(consumer.stop)
    signal.signal(signal.SIGHUP, lambda *_: sink.request_reopen())  # logrotate's postrotate `kill -HUP`
    out.print(
        f"consumer {consumer.name} reading {queue_transport.name} queue {queue_transport.keys.queue!r} "
        f"into {sink.log_dir}" + (" (burst)" if burst else ""),
        markup=False,  # names and paths are data: "w[/x]" must print as typed, not crash
    )
    _collect_garbage_per_batch()
    try:
        totals = consumer.run(burst=burst)
        held = _held_elsewhere(queue_transport, name, cs.claim_idle_s) if burst else []
    finally:
        sink.close()
    if reporter is not None:
        reporter.finish(totals)  # the last, coalesced batches of the run
    if stop.forced:
        err.print(_FORCED_STOP.format(stop.timeout_s), markup=False, soft_wrap=True)
    print_totals(out, totals, stopped_by_signal=consumer.stopping)
    print_held_elsewhere(out, held, cs.claim_idle_s)


def _held_elsewhere(queue_transport: Transport, name: str, claim_idle_s: float) -> list[HeldEntries]:
    """A burst ends when nothing is left that it may take: what other consumers still hold, and until when.
    Only a notice: a Redis failure here must not fail a run that did its work."""
    try:
        return queue_transport.held_elsewhere(name, claim_idle_s)
    except BrokerError:
        return []


_FORCED_STOP = (
    "Redis did not answer within stop_timeout_s = {:g}s of the stop: connections cut; what was not "
    "acknowledged is delivered again (to this name on restart, or to another consumer after claim_idle_s)"
)


def _log_file_sink(cs: ConsumerSettings, name: str, queue_transport: Transport) -> LogFileSink:
    journal = None
    if cs.delivery == "effectively_once":
        journal = WriteJournal(queue_transport.client, queue_transport.keys, name, url=queue_transport.url)
    rotation = RotationPolicy(**cs.rotation.model_dump())
    return LogFileSink(
        cs.log_dir, fsync=cs.fsync, line_format=cs.line_format, journal=journal, rotation=rotation
    )


class SinkUpkeep(ConsumerHook):
    """The sink's housekeeping on the consumer's maintenance turn: a reopen asked by SIGHUP, rotation of
    idle files at midnight, compression of rotated files."""

    def __init__(self, sink: LogFileSink) -> None:
        self.sink = sink

    def on_maintenance(self) -> None:
        self.sink.maintain()


def _check_timeouts(settings: Settings) -> None:
    cs = settings.consumer
    settings.check_blocking_reads("consumer")
    # A consumer renews its liveness between reads and pauses, never during one.
    for key, seconds in (
        ("block_timeout_s", cs.block_timeout_s),
        ("processing_delay_s", cs.processing_delay_s),
    ):
        if cs.claim_idle_s <= seconds:
            raise ConfigError(
                f"consumer.claim_idle_s = {cs.claim_idle_s:g} must be larger than consumer.{key} = "
                f"{seconds:g}, or live consumers would look dead to each other"
            )


def _check_server(queue_transport: Transport, settings: Settings) -> None:
    """Redis serves; warn loudly (or refuse) when it may evict or forget queue data."""
    check_ready(queue_transport)
    problems = unsafe_settings(queue_transport.client, queue_transport.url)
    if not problems:
        return
    if settings.consumer.unsafe_redis == "refuse":
        queue_transport.close()
        raise UnsafeRedisError("unsafe Redis settings: " + "; ".join(problems))
    for problem in problems:
        err.print(f"WARNING: {problem}", markup=False, soft_wrap=True)
