"""What every command group shares: the consoles, the common options, building settings and transports."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from msgrelay.config import Settings, load_settings
from msgrelay.transport.base import Transport
from msgrelay.transport.connection import create_transport

out = Console(highlight=False, soft_wrap=True)  # one record per line, whatever the width
err = Console(stderr=True, highlight=False)

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="TOML file (default: ./msgrelay.toml).")
]
RedisUrlOpt = Annotated[
    str | None, typer.Option("--redis-url", metavar="URL", help="redis://, rediss:// or unix:// URL.")
]
TransportOpt = Annotated[
    str | None, typer.Option("--transport", "-t", metavar="streams|lists", help="streams (default) or lists.")
]
AlertTransportOpt = Annotated[
    str | None,
    typer.Option(
        "--transport", "-t", metavar="streams|lists", help="streams (default) or lists (tweet_queue)."
    ),
]


def cli_settings(
    config: Path | None, redis_url: str | None, transport: str | None, **sections: dict[str, Any]
) -> Settings:
    """Settings with the command's flags on top (a flag left out is None and does not override)."""
    overrides: dict[str, dict[str, Any]] = {
        "redis": {"url": redis_url},
        "queue": {"transport": transport},
        **sections,
    }
    return load_settings(config, overrides)


def alert_settings(config: Path | None, redis_url: str | None, transport: str | None = None) -> Settings:
    """Settings of the alert commands, whose ``--transport`` is the alert queue's."""
    return load_settings(config, {"redis": {"url": redis_url}, "alerts": {"transport": transport}})


def open_alert_queue(settings: Settings, *, check: bool = True) -> Transport:
    """The alert queue's transport (alerts never share the log messages' queue); ``check``: PING it now."""
    return create_transport(settings, check=check, queue=settings.alerts.as_queue(settings.queue.namespace))


def utc(ts: float) -> str:
    """An epoch time in seconds as ``YYYY-MM-DD HH:MM:SS UTC``."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def write_json(document: object) -> None:
    """Print ``document`` as indented JSON on stdout."""
    # ASCII-only JSON: control characters, bidi overrides and the like in dead letters arrive as \uXXXX.
    text = json.dumps(document, ensure_ascii=True, indent=2).replace("\x7f", "\\u007f")
    sys.stdout.write(text + "\n")
