"""The ``msgrelay`` command: parse, call the library, print. Nothing here that a library user would need.

Errors from the library are caught once, in :func:`main`, and printed as one line with a named exit code.
"""

from __future__ import annotations

import gc
import json
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import IntEnum
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console

from msgrelay import __version__
from msgrelay.alerting.codec import decode_alert, encode_alert
from msgrelay.alerting.model import Alert
from msgrelay.alerting.silences import SilenceStore, parse_duration
from msgrelay.config import ConsumerSettings, Settings, load_settings, masked_dump
from msgrelay.consumer import Consumer, ConsumerHook, default_consumer_name
from msgrelay.dlq import (
    ALL,
    DeadLetterFilter,
    DeadLetterRetention,
    DeadLetterStore,
    ReplayResult,
    Selection,
    is_entry_id,
)
from msgrelay.errors import (
    BrokerConnectionError,
    BrokerError,
    BrokerTimeoutError,
    ConfigError,
    MessageError,
    MsgrelayError,
    SinkError,
    UnsafeRedisError,
)
from msgrelay.monitor import collect_alert_stats, collect_stats
from msgrelay.producer import Producer, send_with_resends
from msgrelay.reporting import (
    BatchReporter,
    print_alert_stats,
    print_dead_letter,
    print_dead_letters,
    print_plain,
    print_stats,
    print_totals,
)
from msgrelay.safety import unsafe_settings
from msgrelay.sinks.files import LogFileSink
from msgrelay.sinks.journal import WriteJournal
from msgrelay.transport.base import Transport
from msgrelay.transport.connection import create_transport


class ExitCode(IntEnum):
    OK = 0
    FAILURE = 1
    USAGE = 2
    CONFIG_ERROR = 3
    REDIS_UNAVAILABLE = 4
    REDIS_ERROR = 5
    SINK_FAILED = 6
    INVALID_MESSAGE = 7
    UNSAFE_REDIS = 8
    INTERRUPTED = 130


SEND_RESEND_FOR_S = 5.0
"""How long ``msgrelay send`` resends a message whose outcome is unknown (same id) before giving up."""

app = typer.Typer(
    name="msgrelay",
    help="Reliable, fast message processing on Redis.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
config_app = typer.Typer(help="Inspect the configuration.", no_args_is_help=True)
app.add_typer(config_app, name="config")

out = Console(highlight=False, soft_wrap=True)  # one record per line, whatever the width
err = Console(stderr=True, highlight=False)

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="TOML file (default: ./msgrelay.toml).")
]
RedisUrlOpt = Annotated[str | None, typer.Option("--redis-url", help="redis://, rediss:// or unix:// URL.")]
TransportOpt = Annotated[str | None, typer.Option("--transport", "-t", help="streams (default) or lists.")]


def _settings(
    config: Path | None, redis_url: str | None, transport: str | None, **sections: dict[str, Any]
) -> Settings:
    overrides: dict[str, dict[str, Any]] = {
        "redis": {"url": redis_url},
        "queue": {"transport": transport},
        **sections,
    }
    return load_settings(config, overrides)


@app.command()
def send(
    text: Annotated[str, typer.Argument(help="The message text.")],
    msg_type: Annotated[
        str, typer.Option("--type", help="INFO, WARNING, ERROR, DEBUG or a synonym.")
    ] = "INFO",
    field: Annotated[list[str] | None, typer.Option("--field", "-f", help="Extra field key=value.")] = None,
    config: ConfigOpt = None,
    redis_url: RedisUrlOpt = None,
    transport: TransportOpt = None,
) -> None:
    """Send one message and print its id."""
    settings = _settings(config, redis_url, transport)
    fields = dict(_parse_field(item) for item in field or [])
    with Producer.from_settings(settings) as producer:
        [message] = producer.build_many([(msg_type, text, fields)])
        [msg_id] = send_with_resends(producer, [message], within_s=SEND_RESEND_FOR_S)
    out.print(msg_id, markup=False)


AlertTransportOpt = Annotated[
    str | None, typer.Option("--transport", "-t", help="streams (default) or lists (tweet_queue).")
]


def _alert_settings(config: Path | None, redis_url: str | None, transport: str | None = None) -> Settings:
    return load_settings(config, {"redis": {"url": redis_url}, "alerts": {"transport": transport}})


def _alert_transport(settings: Settings) -> Transport:
    """The alert queue's transport (alerts never share the log messages' queue)."""
    return create_transport(settings, queue=settings.alerts.as_queue(settings.queue.namespace))


@app.command()
def alert(
    message: Annotated[str, typer.Argument(help="What happened, e.g. 'connection refused'.")],
    service: Annotated[str, typer.Option("--service", "-s", help="The service the alert is about.")],
    status: Annotated[str, typer.Option("--status", help="DOWN or UP.")] = "DOWN",
    config: ConfigOpt = None,
    redis_url: RedisUrlOpt = None,
    transport: AlertTransportOpt = None,
) -> None:
    """Push one alert by hand onto the alert queue; prints it as pushed."""
    settings = _alert_settings(config, redis_url, transport)
    record = {"service": service, "status": status, "message": message, "timestamp": time.time()}
    # The same check notify applies: what it would dead-letter is refused here, with the same reason.
    payload = encode_alert(decode_alert(orjson.dumps(record), max_bytes=settings.alerts.max_message_bytes))
    alert_transport = _alert_transport(settings)
    try:
        alert_transport.send([payload])
    finally:
        alert_transport.close()
    out.print(payload.decode(), markup=False)


@app.command()
def monitor(
    config: ConfigOpt = None,
    redis_url: RedisUrlOpt = None,
    transport: AlertTransportOpt = None,
) -> None:
    """Check the services of [[monitor.checks]]; push an alert when one goes DOWN or comes back UP."""
    from msgrelay.alerting.health import Monitor  # noqa: PLC0415 - httpx: only for the commands that use it

    settings = _alert_settings(config, redis_url, transport)
    if not settings.monitor.checks:
        raise ConfigError("no services to check: add [[monitor.checks]] tables to the config (see README)")
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    alert_transport = _alert_transport(settings)

    def push(alert: Alert) -> None:
        payload = encode_alert(alert)
        alert_transport.send([payload])  # a failure is raised: the monitor keeps the alert and retries
        out.print(payload.decode(), markup=False)

    services = ", ".join(check.service for check in settings.monitor.checks)
    out.print(
        f"monitoring {services} into {alert_transport.name} {alert_transport.keys.queue!r}", markup=False
    )
    try:
        Monitor.from_settings(list(settings.monitor.checks)).run(push, stop)
    finally:
        alert_transport.close()


@app.command()
def notify(
    burst: Annotated[
        bool, typer.Option("--burst", help="Deliver what is queued and due, then exit.")
    ] = False,
    name: Annotated[str | None, typer.Option("--name", help="Consumer name (default host-pid).")] = None,
    config: ConfigOpt = None,
    redis_url: RedisUrlOpt = None,
    transport: AlertTransportOpt = None,
) -> None:
    """Deliver alerts to the notifiers of [alerts]: deduplicated, grouped, silenced, retried, never twice."""
    # httpx and tweepy (the notifiers) only for the command that uses them
    from msgrelay.alerting.notifiers import build_notifier  # noqa: PLC0415
    from msgrelay.alerting.notify import NotifyLoop, NotifyPolicy  # noqa: PLC0415
    from msgrelay.alerting.settings import notifier_name  # noqa: PLC0415

    settings = _alert_settings(config, redis_url, transport)
    alerts = settings.alerts
    notifiers = {notifier_name(each): build_notifier(each) for each in alerts.notifiers}
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    alert_transport = _alert_transport(settings)
    loop = NotifyLoop(
        alert_transport,
        notifiers,
        NotifyPolicy.from_settings(alerts),
        name=name or default_consumer_name(),
        batch_size=alerts.batch_size,
        max_message_bytes=alerts.max_message_bytes,
        claim_idle_s=settings.consumer.claim_idle_s,
        group_wait_s=0.0 if burst else alerts.group_wait_s,
    )
    source = f"{alert_transport.name} {alert_transport.keys.queue!r}"
    err.print(f"notifying {', '.join(notifiers)} of alerts from {source}", markup=False)
    try:
        totals = loop.run(stop, block_s=alerts.block_timeout_s, burst=burst)
    finally:
        for notifier in notifiers.values():
            notifier.close()
        alert_transport.close()
    err.print(
        f"done: {totals.received} alerts read, {totals.dead_lettered} dead-lettered; {totals.queued} "
        f"notifications queued, {totals.sent} sent, {totals.deferred} deferred, {totals.retried} retried, "
        f"{totals.failed} failed for good",
        markup=False,
    )


def _parse_field(item: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise typer.BadParameter(f"expected key=value, got {item!r}", param_hint="--field")
    return key, value


@app.command()
def produce(
    count: Annotated[
        int | None, typer.Option("--count", "-n", help="Messages to send; 0 = until Ctrl-C. [max_messages]")
    ] = None,
    delay: Annotated[float | None, typer.Option("--delay", help="Seconds between messages.")] = None,
    rate: Annotated[
        float | None, typer.Option("--rate", help="Messages per second (overrides --delay).")
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed for reproducible messages.")] = None,
    id_log: Annotated[
        Path | None, typer.Option("--id-log", help="Append 'id type' of every sent message here.")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    config: ConfigOpt = None,
    redis_url: RedisUrlOpt = None,
    transport: TransportOpt = None,
) -> None:
    """Generate realistic random system messages (INFO/WARNING/ERROR/DEBUG) and send them."""
    from msgrelay.generate import run_generator  # noqa: PLC0415 - keeps `msgrelay --help` fast

    producer_flags = {"max_messages": count, "delay_between_messages_s": delay, "rate_per_s": rate}
    settings = _settings(config, redis_url, transport, producer=producer_flags)
    with Producer.from_settings(settings) as producer:
        sent = run_generator(producer, settings.producer, seed=seed, id_log=id_log, console=err, quiet=quiet)
    out.print(
        f"sent {sent} messages to {producer.transport.name} queue {producer.transport.keys.queue!r}",
        markup=False,
    )


YOUNG_GC_THRESHOLD = 20_000
"""Container allocations between young-generation collections in ``consume`` (Python's default: 700)."""


def _collect_garbage_per_batch() -> None:
    """Let a batch's objects die young. A batch allocates a few thousand dicts and objects that all live
    until it is settled; at the default threshold several collections run during each batch, and every
    survivor is promoted and scanned again later (about 8 % of a consumer's time). A process setting, so
    the command sets it and the library does not."""
    gc.set_threshold(YOUNG_GC_THRESHOLD, *gc.get_threshold()[1:])


@app.command()
def consume(
    batch_size: Annotated[int | None, typer.Option("--batch-size", "-b")] = None,
    batch_wait: Annotated[
        float | None, typer.Option("--batch-wait", help="Seconds to wait to fill a batch.")
    ] = None,
    processing_delay: Annotated[
        float | None, typer.Option("--processing-delay", help="Pause after each batch (s).")
    ] = None,
    block_timeout: Annotated[
        float | None, typer.Option("--block-timeout", help="Seconds one read waits.")
    ] = None,
    log_dir: Annotated[
        Path | None, typer.Option("--log-dir", help="Folder of the per-type log files.")
    ] = None,
    fsync: Annotated[bool | None, typer.Option("--fsync/--no-fsync", help="fsync before each ack.")] = None,
    line_format: Annotated[str | None, typer.Option("--format", help="text or json lines.")] = None,
    name: Annotated[str | None, typer.Option("--name", help="Consumer name (default host-pid).")] = None,
    claim_idle: Annotated[
        float | None,
        typer.Option("--claim-idle", help="Seconds before a silent consumer's entries are taken over."),
    ] = None,
    max_deliveries: Annotated[
        int | None, typer.Option("--max-deliveries", help="Deliveries before an entry is dead-lettered.")
    ] = None,
    delivery: Annotated[
        str | None,
        typer.Option("--delivery", help="at_least_once (default) or effectively_once (no duplicate line)."),
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
    stop_requested = threading.Event()  # a signal during start-up: stop before taking any work
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop_requested.set())
    settings = _settings(config, redis_url, transport, consumer=consumer_flags)
    _check_timeouts(settings)
    queue_transport = create_transport(settings)
    _check_server(queue_transport, settings)
    name = settings.consumer.consumer_name or default_consumer_name()  # the sink's journal needs it too
    cs = settings.consumer.model_copy(update={"consumer_name": name})
    sink = _log_file_sink(cs, name, queue_transport)
    reporter = None if quiet else BatchReporter(out)
    retention = DeadLetterRetention(DeadLetterStore.from_transport(queue_transport), settings.deadletter)
    hooks: list[ConsumerHook] = [retention] if reporter is None else [retention, reporter]
    consumer = Consumer(
        queue_transport,
        sink,
        cs,
        max_message_bytes=settings.queue.max_message_bytes,
        hooks=hooks,
        trim_interval_s=settings.queue.trim_interval_s,
    )
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: consumer.stop())
    if stop_requested.is_set():
        consumer.stop()
    out.print(
        f"consumer {consumer.name} reading {queue_transport.name} queue {queue_transport.keys.queue!r} "
        f"into {sink.log_dir}" + (" (burst)" if burst else ""),
        markup=False,  # names and paths are data: "w[/x]" must print as typed, not crash
    )
    _collect_garbage_per_batch()
    try:
        totals = consumer.run(burst=burst)
    finally:
        sink.close()
        queue_transport.close()
    if reporter is not None:
        reporter.finish(totals)  # the last, coalesced batches of the run
    print_totals(out, totals, stopped_by_signal=consumer.stopping)


def _log_file_sink(cs: ConsumerSettings, name: str, queue_transport: Transport) -> LogFileSink:
    journal = None
    if cs.delivery == "effectively_once":
        journal = WriteJournal(queue_transport.client, queue_transport.keys, name, url=queue_transport.url)
    return LogFileSink(cs.log_dir, fsync=cs.fsync, line_format=cs.line_format, journal=journal)


def _check_timeouts(settings: Settings) -> None:
    cs = settings.consumer
    if settings.redis.socket_timeout_s <= cs.block_timeout_s:
        raise ConfigError("redis.socket_timeout_s must be larger than consumer.block_timeout_s")
    if cs.claim_idle_s <= cs.block_timeout_s:
        raise ConfigError(
            "consumer.claim_idle_s must be larger than consumer.block_timeout_s, or live consumers "
            "would look dead to each other"
        )


def _check_server(queue_transport: Transport, settings: Settings) -> None:
    """Warn loudly (or refuse) when Redis may evict or forget queue data."""
    problems = unsafe_settings(queue_transport.client, queue_transport.url)
    if not problems:
        return
    if settings.consumer.unsafe_redis == "refuse":
        queue_transport.close()
        raise UnsafeRedisError("unsafe Redis settings: " + "; ".join(problems))
    for problem in problems:
        err.print(f"WARNING: {problem}", markup=False, soft_wrap=True)


@app.command()
def stats(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    config: ConfigOpt = None,
    redis_url: RedisUrlOpt = None,
    transport: TransportOpt = None,
) -> None:
    """Produced, backlog, processed, dead-lettered, pending, Redis memory; alerts and each notifier."""
    settings = _settings(config, redis_url, transport)
    queue_transport = create_transport(settings)
    alert_transport = _alert_transport(settings)
    try:
        report = collect_stats(queue_transport)
        alerts = collect_alert_stats(alert_transport)
    finally:
        queue_transport.close()
        alert_transport.close()
    if as_json:
        data = {**report.as_dict(), "alerts": alerts.as_dict()}
        sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print_stats(out, report)
        print_alert_stats(out, alerts)


# --------------------------------------------------------------------------------------------------- dlq

silence_app = typer.Typer(
    help="Silence alerts of a service for a while; list and expire silences.", no_args_is_help=True
)
app.add_typer(silence_app, name="silence")


@contextmanager
def _silence_store(config: Path | None, redis_url: str | None) -> Iterator[SilenceStore]:
    settings = _alert_settings(config, redis_url)
    alert_transport = _alert_transport(settings)
    try:
        yield SilenceStore.from_transport(alert_transport)
    finally:
        alert_transport.close()


@silence_app.command("add")
def silence_add(
    service: Annotated[str, typer.Option("--service", "-s", help="A service name or a glob ('payments-*').")],
    duration: Annotated[str, typer.Option("--for", help="How long: 90s, 30m, 2h, 1d, 1h30m.")],
    comment: Annotated[str, typer.Option("--comment", help="Why (shown by list).")] = "",
    config: ConfigOpt = None,
    redis_url: RedisUrlOpt = None,
) -> None:
    """Silence a service's alerts for a while; prints the silence's id."""
    try:
        seconds = parse_duration(duration)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--for") from None
    if not service.strip():
        raise typer.BadParameter("name a service, or a glob such as 'payments-*'", param_hint="--service")
    with _silence_store(config, redis_url) as store:
        silence = store.add(service, time.time() + seconds, comment)
    out.print(f"{silence.id}  {silence.service}  until {_utc(silence.until)}", markup=False)


@silence_app.command("list")
def silence_list(
    everything: Annotated[bool, typer.Option("--all", help="Expired silences too (kept a week).")] = False,
    config: ConfigOpt = None,
    redis_url: RedisUrlOpt = None,
) -> None:
    """Active silences (with --all, the recently expired ones too): id, service, end, comment."""
    now = time.time()
    with _silence_store(config, redis_url) as store:
        silences = store.all(now) if everything else store.active(now)
    for silence in silences:
        state = "until" if silence.until > now else "expired"
        line = f"{silence.id}  {silence.service}  {state} {_utc(silence.until)}  {silence.comment}"
        out.print(line.rstrip(), markup=False)
    if not silences:
        err.print("no silences", markup=False)


@silence_app.command("expire")
def silence_expire(
    silence_id: Annotated[str, typer.Argument(metavar="ID", help="The id that `silence add` printed.")],
    config: ConfigOpt = None,
    redis_url: RedisUrlOpt = None,
) -> None:
    """End a silence now."""
    with _silence_store(config, redis_url) as store:
        found = store.expire(silence_id, time.time())
    if not found:
        err.print(f"error: no silence {silence_id!r} (see `msgrelay silence list --all`)", markup=False)
        raise typer.Exit(ExitCode.FAILURE)
    out.print(f"expired {silence_id}", markup=False)


def _utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


dlq_app = typer.Typer(help="Inspect, replay and purge the dead-letter store.", no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")

ReasonOpt = Annotated[str | None, typer.Option("--reason", help="Only this reason (oversize, ...).")]
TypeFilterOpt = Annotated[
    str | None, typer.Option("--type", help="Only this message type (dead letters that decoded).")
]
EntryIdsArg = Annotated[
    list[str] | None,
    typer.Argument(metavar="ID", help="Dead-letter ids (<ms>-<seq>).", show_default=False),
]
AllOpt = Annotated[bool, typer.Option("--all", help="Every dead letter.")]


@contextmanager
def _dead_letter_store(
    config: Path | None, redis_url: str | None, transport: str | None
) -> Iterator[DeadLetterStore]:
    """The store, with the retention of ``[deadletter]`` applied first: every dlq command enforces it."""
    settings = _settings(config, redis_url, transport)
    queue_transport = create_transport(settings)
    try:
        store = DeadLetterStore.from_transport(queue_transport)
        retention = settings.deadletter
        trimmed = store.apply_retention(retention.retention_s, retention.max_entries)
        if trimmed:
            print_plain(err, f"retention: trimmed {_dead_letters(trimmed)} ([deadletter] settings)")
        yield store
    finally:
        queue_transport.close()


def _entry_ids(ids: list[str] | None) -> list[str]:
    bad = [entry_id for entry_id in ids or [] if not is_entry_id(entry_id)]
    if bad:
        raise typer.BadParameter(f"not a dead-letter id (<ms>-<seq>): {bad[0]!r}", param_hint="ID")
    return list(ids or [])


def _selection(ids: list[str] | None, everything: bool, where: DeadLetterFilter, choices: str) -> Selection:
    """Exactly one way of choosing entries: ids, --all, or filters (which combine)."""
    entry_ids = _entry_ids(ids)
    given = [bool(entry_ids), everything, where != ALL]
    if given.count(True) != 1:
        raise typer.BadParameter(f"choose the dead letters with exactly one of: {choices}")
    return entry_ids or where


@dlq_app.command("list")
def dlq_list(
    reason: ReasonOpt = None,
    msg_type: TypeFilterOpt = None,
    origin: Annotated[str | None, typer.Option("--origin", help="Only from this queue key.")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="At most this many.")] = 100,
    after: Annotated[str | None, typer.Option("--after", help="Start after this id (next page).")] = None,
    raw: Annotated[bool, typer.Option("--raw", help="The whole raw entry, not a preview.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    config: ConfigOpt = None,
    redis_url: RedisUrlOpt = None,
    transport: TransportOpt = None,
) -> None:
    """Dead letters, oldest first; raw entries are shown escaped."""
    if after is not None:
        _entry_ids([after])
    with _dead_letter_store(config, redis_url, transport) as store:
        entries = store.list(reason, msg_type, origin, limit=limit, after=after)
        total = store.count()
    if as_json:
        document = {"entries": [entry.as_dict() for entry in entries], "shown": len(entries), "total": total}
        _write_json(document)
        return
    print_dead_letters(out, entries, full_raw=raw)
    more = f" (next page: --after {entries[-1].id})" if len(entries) == limit else ""
    print_plain(out, f"{_dead_letters(len(entries))} shown, {total} in {store.key}{more}")


@dlq_app.command("show")
def dlq_show(
    entry_id: Annotated[str, typer.Argument(metavar="ID", help="Dead-letter id (<ms>-<seq>).")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    config: ConfigOpt = None,
    redis_url: RedisUrlOpt = None,
    transport: TransportOpt = None,
) -> None:
    """Every field of one dead letter, with its whole raw entry (escaped)."""
    _entry_ids([entry_id])
    with _dead_letter_store(config, redis_url, transport) as store:
        entry = store.get(entry_id)
    if entry is None:
        print_plain(err, f"error: no dead letter {entry_id} in {store.key}")
        raise typer.Exit(ExitCode.FAILURE)
    if as_json:
        _write_json(entry.as_dict())
    else:
        print_dead_letter(out, entry)


@dlq_app.command("replay")
def dlq_replay(
    ids: EntryIdsArg = None,
    everything: AllOpt = False,
    reason: ReasonOpt = None,
    msg_type: TypeFilterOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only say what would be replayed.")] = False,
    config: ConfigOpt = None,
    redis_url: RedisUrlOpt = None,
    transport: TransportOpt = None,
) -> None:
    """Put dead letters back on their queues (each leaves the store atomically); truncated ones are refused.

    Exits 1 when ids were named and not all of them could be replayed.
    """
    where = DeadLetterFilter(reason=reason, msg_type=msg_type)
    selection = _selection(ids, everything, where, "ID..., --all, --reason/--type")
    with _dead_letter_store(config, redis_url, transport) as store:
        result = store.replay(selection, dry_run=dry_run)
    print_plain(out, _replay_summary(result))
    if result.skipped and not isinstance(selection, DeadLetterFilter):
        raise typer.Exit(ExitCode.FAILURE)


def _replay_summary(result: ReplayResult) -> str:
    verb = "dry run: would replay" if result.dry_run else "replayed"
    summary = f"{verb} {_dead_letters(result.replayed)} onto their queues"
    skipped = [
        (result.truncated, "truncated (oversize: only a preview was kept, the message is lost; purge them)"),
        (result.missing, "not found"),
        (result.bad_origin, "with no stream or list to go back to"),
    ]
    reasons = [f"{count} {why}" for count, why in skipped if count]
    return summary + (f"; skipped {result.skipped}: " + ", ".join(reasons) if reasons else "")


@dlq_app.command("purge")
def dlq_purge(
    ids: EntryIdsArg = None,
    everything: AllOpt = False,
    reason: ReasonOpt = None,
    older_than: Annotated[
        float | None,
        typer.Option("--older-than", min=0, metavar="SECONDS", help="Only dead letters older than SECONDS."),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    config: ConfigOpt = None,
    redis_url: RedisUrlOpt = None,
    transport: TransportOpt = None,
) -> None:
    """Delete dead letters for good. Asks first on a terminal; elsewhere needs --yes."""
    where = DeadLetterFilter(reason=reason, older_than_s=older_than)
    selection = _selection(ids, everything, where, "ID..., --all, --reason/--older-than")
    if not yes and not sys.stdin.isatty():
        print_plain(err, "error: purge deletes dead letters for good: add --yes (no terminal to confirm on)")
        raise typer.Exit(ExitCode.USAGE)
    with _dead_letter_store(config, redis_url, transport) as store:
        if not yes:
            matching = store.count(selection)
            question = f"Purge {_dead_letters(matching)} from {store.key} for good?"
            if not typer.confirm(question, default=False):
                print_plain(out, "purge cancelled: nothing deleted")
                raise typer.Exit(ExitCode.FAILURE)
        purged = store.purge(selection)
    print_plain(out, f"purged {_dead_letters(purged)} from {store.key}")


def _dead_letters(count: int) -> str:
    return f"{count} dead letter" + ("" if count == 1 else "s")


def _write_json(document: object) -> None:
    # ASCII-only JSON: control characters, bidi overrides and the like in dead letters arrive as \uXXXX.
    text = json.dumps(document, ensure_ascii=True, indent=2).replace("\x7f", "\\u007f")
    sys.stdout.write(text + "\n")


@config_app.command("show")
def config_show(
    config: ConfigOpt = None,
    redis_url: RedisUrlOpt = None,
    transport: TransportOpt = None,
) -> None:
    """Print the effective configuration (flags > env > file > defaults), secrets masked."""
    settings = _settings(config, redis_url, transport)
    sys.stdout.write(orjson.dumps(masked_dump(settings), option=orjson.OPT_INDENT_2).decode() + "\n")


@app.command()
def demo(
    count: Annotated[int, typer.Option("--count", "-n", help="Messages to produce.")] = 4000,
    config: ConfigOpt = None,
    redis_url: RedisUrlOpt = None,
) -> None:
    """Run the whole pipeline end to end (starts a private Redis unless one is configured and reachable)."""
    from msgrelay.demo import run_demo  # noqa: PLC0415 - keeps `msgrelay --help` fast

    settings = _settings(config, redis_url, None)
    run_demo(settings, count=count, console=out)


def _version(value: bool) -> None:
    if value:
        out.print(f"msgrelay {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Reliable, fast message processing on Redis."""


_EXIT_CODES: tuple[tuple[type[MsgrelayError], ExitCode], ...] = (
    (ConfigError, ExitCode.CONFIG_ERROR),
    (UnsafeRedisError, ExitCode.UNSAFE_REDIS),
    (BrokerConnectionError, ExitCode.REDIS_UNAVAILABLE),
    (BrokerTimeoutError, ExitCode.REDIS_UNAVAILABLE),
    (BrokerError, ExitCode.REDIS_ERROR),
    (SinkError, ExitCode.SINK_FAILED),
    (MessageError, ExitCode.INVALID_MESSAGE),
)
"""The first class that matches decides (subclasses before their parents)."""


def exit_code_for(error: MsgrelayError) -> ExitCode:
    return next((code for kind, code in _EXIT_CODES if isinstance(error, kind)), ExitCode.FAILURE)


_HINTS: dict[ExitCode, str] = {
    ExitCode.REDIS_UNAVAILABLE: "check that Redis is running and --redis-url / MSGRELAY_REDIS__URL",
    ExitCode.CONFIG_ERROR: "see `msgrelay config show` and the README's Configuration section",
}


def main() -> None:
    """Console entry point: run the app, turn every msgrelay error into one line and an exit code."""
    try:
        app(prog_name="msgrelay")  # usage errors (exit 2) and Ctrl-C are handled by Typer itself
    except MsgrelayError as exc:
        code = exit_code_for(exc)
        hint = _HINTS.get(code)
        err.print(f"error: {exc}" + (f"; {hint}" if hint else ""), markup=False, soft_wrap=True)
        sys.exit(code)
