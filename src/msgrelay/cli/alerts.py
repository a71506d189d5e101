"""The alert commands: ``alert``, ``monitor``, ``notify`` and ``silence add/list/expire``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import orjson
import typer

from msgrelay.alerting.codec import decode_alert, encode_alert
from msgrelay.alerting.model import Alert
from msgrelay.alerting.silences import SilenceStore, parse_duration
from msgrelay.batch import default_consumer_name
from msgrelay.cli.common import (
    AlertTransportOpt,
    ConfigOpt,
    RedisUrlOpt,
    alert_settings,
    err,
    open_alert_queue,
    out,
    utc,
)
from msgrelay.cli.exit_codes import ExitCode
from msgrelay.codec import visible_surrogates
from msgrelay.errors import BrokerError, ConfigError
from msgrelay.forgetting import ConsumerForgetting
from msgrelay.outage import OutageLog, wait_until_serving
from msgrelay.reporting import plural, print_columns, print_plain, stamped
from msgrelay.sinks.lines import escape as visible
from msgrelay.stopping import BoundedStop
from msgrelay.transport.connection import check_ready

silence_app = typer.Typer(
    help="Silence alerts of a service for a while; list and expire silences.", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    app.command()(alert)
    app.command()(monitor)
    app.command()(notify)


def alert(
    message: Annotated[
        str, typer.Argument(metavar="MESSAGE", help="What happened, e.g. 'connection refused'.")
    ],
    service: Annotated[
        str, typer.Option("--service", "-s", metavar="SERVICE", help="The service the alert is about.")
    ],
    status: Annotated[str, typer.Option("--status", metavar="DOWN|UP", help="DOWN or UP.")] = "DOWN",
    config: ConfigOpt = None,
    redis_url: RedisUrlOpt = None,
    transport: AlertTransportOpt = None,
) -> None:
    """Push one alert by hand onto the alert queue; prints it as pushed."""
    settings = alert_settings(config, redis_url, transport)
    record = {"service": service, "status": status, "message": message, "timestamp": time.time()}
    # The same check notify applies: what it would dead-letter is refused here, with the same reason. An
    # argument that is not UTF-8 (a lone surrogate from the shell) is sent as a visible escape, as by send.
    raw = orjson.dumps(visible_surrogates(record))
    payload = encode_alert(decode_alert(raw, max_bytes=settings.alerts.max_message_bytes))
    alert_transport = open_alert_queue(settings)
    try:
        alert_transport.send([payload])
    finally:
        alert_transport.close()
    out.print(payload.decode(), markup=False)


def monitor(
    config: ConfigOpt = None,
    redis_url: RedisUrlOpt = None,
    transport: AlertTransportOpt = None,
) -> None:
    """Check the services of [[monitor.checks]]; push an alert when one goes DOWN or comes back UP."""
    from msgrelay.alerting.health import Monitor  # noqa: PLC0415 - httpx: only for the commands that use it

    stop = BoundedStop()
    stop.install()
    settings = alert_settings(config, redis_url, transport)
    stop.timeout_s = settings.redis.stop_timeout_s
    if not settings.monitor.checks:
        raise ConfigError("no services to check: add [[monitor.checks]] tables to the config (see README)")
    alert_transport = open_alert_queue(settings, check=False)
    outage = OutageLog(say=stamped(err), primary=alert_transport.primary)

    def push(alert: Alert) -> None:
        payload = encode_alert(alert)
        try:
            alert_transport.send([payload])  # a failure is raised: the monitor keeps the alert and retries
        except BrokerError as exc:
            outage.failed(exc)
            raise
        outage.recovered()
        out.print(payload.decode(), markup=False)

    services = ", ".join(check.service for check in settings.monitor.checks)
    try:
        with stop.bounding(alert_transport.abort):
            if not wait_until_serving(lambda: check_ready(alert_transport), stop.requested, outage):
                return
            out.print(
                f"monitoring {services} into {alert_transport.name} {alert_transport.keys.queue!r}",
                markup=False,
            )
            Monitor.from_settings(list(settings.monitor.checks)).run(push, stop.requested)
    finally:
        alert_transport.close()


def notify(
    burst: Annotated[
        bool, typer.Option("--burst", help="Deliver what is queued and due, then exit.")
    ] = False,
    name: Annotated[
        str | None, typer.Option("--name", metavar="NAME", help="Consumer name (default host-pid).")
    ] = None,
    config: ConfigOpt = None,
    redis_url: RedisUrlOpt = None,
    transport: AlertTransportOpt = None,
) -> None:
    """Deliver alerts to the notifiers of [alerts]: deduplicated, grouped, silenced, retried, never twice."""
    # httpx and tweepy (the notifiers) only for the command that uses them
    from msgrelay.alerting.notifiers import build_notifier  # noqa: PLC0415
    from msgrelay.alerting.notify import NotifyLoop, NotifyPolicy  # noqa: PLC0415
    from msgrelay.alerting.settings import notifier_name  # noqa: PLC0415

    stop = BoundedStop()
    stop.install()
    settings = alert_settings(config, redis_url, transport)
    settings.check_blocking_reads("alerts")
    stop.timeout_s = settings.redis.stop_timeout_s
    alerts = settings.alerts
    notifiers = {notifier_name(each): build_notifier(each) for each in alerts.notifiers}
    alert_transport = open_alert_queue(settings, check=False)
    outage = OutageLog(say=stamped(err), primary=alert_transport.primary)
    name = name or default_consumer_name()
    forgetting = ConsumerForgetting(alert_transport, settings.consumer.forget_after_s, keep=name)
    loop = NotifyLoop(
        alert_transport,
        notifiers,
        NotifyPolicy.from_settings(alerts),
        name=name,
        batch_size=alerts.batch_size,
        max_message_bytes=alerts.max_message_bytes,
        claim_idle_s=settings.consumer.claim_idle_s,
        max_deliveries=settings.consumer.max_deliveries,
        group_wait_s=0.0 if burst else alerts.group_wait_s,
        housekeeping=forgetting.forget_if_due,
        outage=outage,
    )
    source = f"{alert_transport.name} {alert_transport.keys.queue!r}"
    try:
        with stop.bounding(alert_transport.abort):
            if burst:  # a burst fails fast, as it does while running
                check_ready(alert_transport)
            elif not wait_until_serving(lambda: check_ready(alert_transport), stop.requested, outage):
                return
            err.print(f"notifying {', '.join(notifiers)} of alerts from {source}", markup=False)
            totals = loop.run(stop.requested, block_s=alerts.block_timeout_s, burst=burst)
    finally:
        for notifier in notifiers.values():
            notifier.close()
        alert_transport.close()
    print_plain(
        err,
        f"done: {plural(totals.received, 'alert')} read, {totals.dead_lettered} dead-lettered; "
        f"{plural(totals.queued, 'notification')} queued, {totals.sent} sent, {totals.deferred} deferred, "
        f"{totals.retried} retried, {totals.failed} failed for good",
    )


@contextmanager
def _silence_store(config: Path | None, redis_url: str | None) -> Iterator[SilenceStore]:
    settings = alert_settings(config, redis_url)
    alert_transport = open_alert_queue(settings)
    try:
        yield SilenceStore.from_transport(alert_transport)
    finally:
        alert_transport.close()


@silence_app.command("add")
def silence_add(
    service: Annotated[
        str,
        typer.Option("--service", "-s", metavar="SERVICE", help="A service name or a glob ('payments-*')."),
    ],
    duration: Annotated[
        str, typer.Option("--for", metavar="DURATION", help="How long: 90s, 30m, 2h, 1d, 1h30m.")
    ],
    comment: Annotated[str, typer.Option("--comment", metavar="TEXT", help="Why (shown by list).")] = "",
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
    out.print(f"{silence.id}  {silence.service}  until {utc(silence.until)}", markup=False)


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
    rows = [
        (s.id, visible(s.service), "active" if s.until > now else "expired", utc(s.until), visible(s.comment))
        for s in silences
    ]
    if rows:
        print_columns(out, ("ID", "SERVICE", "STATE", "UNTIL", "COMMENT"), rows)
    else:
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
