"""The operator commands: ``stats``, ``config show`` and ``demo``."""

from __future__ import annotations

import sys
from typing import Annotated

import orjson
import typer

from msgrelay.cli.common import (
    ConfigOpt,
    RedisUrlOpt,
    TransportOpt,
    cli_settings,
    open_alert_queue,
    out,
)
from msgrelay.config import masked_dump
from msgrelay.monitor import collect_alert_stats, collect_stats
from msgrelay.reporting import print_alert_stats, print_stats
from msgrelay.transport.connection import create_transport

config_app = typer.Typer(help="Inspect the configuration.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command()(stats)
    app.command()(demo)


def stats(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    config: ConfigOpt = None,
    redis_url: RedisUrlOpt = None,
    transport: TransportOpt = None,
) -> None:
    """Produced, backlog, processed, dead-lettered, pending, Redis memory; alerts and each notifier."""
    settings = cli_settings(config, redis_url, transport)
    queue_transport = create_transport(settings)
    alert_transport = open_alert_queue(settings)
    try:
        forget_after_s = settings.consumer.forget_after_s  # consumers gone that long are not shown
        report = collect_stats(queue_transport, forget_after_s=forget_after_s)
        alerts = collect_alert_stats(alert_transport, forget_after_s=forget_after_s)
    finally:
        queue_transport.close()
        alert_transport.close()
    if as_json:
        data = {**report.as_dict(), "alerts": alerts.as_dict()}
        sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print_stats(out, report)
        print_alert_stats(out, alerts)


@config_app.command("show")
def config_show(
    config: ConfigOpt = None,
    redis_url: RedisUrlOpt = None,
    transport: TransportOpt = None,
) -> None:
    """Print the effective configuration (flags > env > file > defaults), secrets masked."""
    settings = cli_settings(config, redis_url, transport)
    sys.stdout.write(orjson.dumps(masked_dump(settings), option=orjson.OPT_INDENT_2).decode() + "\n")


def demo(
    count: Annotated[int, typer.Option("--count", "-n", metavar="N", help="Messages to produce.")] = 4000,
    config: ConfigOpt = None,
    redis_url: RedisUrlOpt = None,
) -> None:
    """Run the whole pipeline end to end (starts a private Redis unless one is configured and reachable)."""
    from msgrelay.demo import run_demo  # noqa: PLC0415 - keeps `msgrelay --help` fast

    settings = cli_settings(config, redis_url, None)
    run_demo(settings, count=count, console=out)
