"""``msgrelay produce``: paced, pipelined sending of generated messages with a progress bar."""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from msgrelay.config import ProducerSettings
from msgrelay.errors import BrokerConnectionError
from msgrelay.message import Message
from msgrelay.producer import Producer
from msgrelay.retries import Backoff
from msgrelay.samples import random_messages

BACKLOG_REFRESH_S = 0.5
RESEND_FOR_S = 60.0
"""How long ``msgrelay produce`` keeps resending a chunk while Redis is unreachable before giving up."""


def run_generator(
    producer: Producer,
    settings: ProducerSettings,
    *,
    seed: int | None,
    id_log: Path | None,
    console: Console,
    quiet: bool = False,
) -> int:
    """Send ``max_messages`` generated messages (0: until Ctrl-C) at the set pace; return the count."""
    total = settings.max_messages or None
    interval = _interval_s(settings)
    source = random_messages(seed)
    ledger: TextIO | None = id_log.open("a", encoding="utf-8") if id_log else None
    progress = Progress(
        TextColumn("[bold]producing"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("buffer: {task.fields[backlog]}"),
        console=console,
        disable=quiet,
    )
    sent = 0
    try:
        with progress:
            task = progress.add_task("produce", total=total, backlog="?")
            started = time.monotonic()
            last_backlog = 0.0
            while total is None or sent < total:
                due = _due(sent, total, started, interval, settings.pipeline_size)
                if due == 0:
                    time.sleep(max(0.0, started + sent * interval - time.monotonic()))
                    continue
                chunk = list(itertools.islice(source, due))
                ids = _send_resiliently(producer, producer.build_many(chunk), console)
                if ledger is not None:
                    ledger.writelines(
                        f"{msg_id} {spec[0]}\n" for msg_id, spec in zip(ids, chunk, strict=True)
                    )
                sent += len(ids)
                if time.monotonic() - last_backlog >= BACKLOG_REFRESH_S:
                    progress.update(task, backlog=producer.transport.backlog())
                    last_backlog = time.monotonic()
                progress.update(task, completed=sent)
    except KeyboardInterrupt:
        if total is not None:
            raise
    finally:
        if ledger is not None:
            ledger.close()
    return sent


def _send_resiliently(producer: Producer, messages: list[Message], console: Console) -> list[str]:
    """Send, riding out a Redis restart or a dropped connection: resend what may not be stored, with the
    same ids (duplicates stay recognisable), backing off, for at most ``RESEND_FOR_S``."""
    backoff = Backoff(base_s=0.1, cap_s=2.0)
    give_up_at = time.monotonic() + RESEND_FOR_S
    failures = 0
    while True:
        try:
            return producer.send_many(messages)
        except BrokerConnectionError as exc:
            failures += 1
            if time.monotonic() >= give_up_at:
                raise
            delay = backoff.delay(failures)
            console.print(f"send failed, resending in {delay:.1f}s: {exc}", markup=False)
            time.sleep(delay)


def _interval_s(settings: ProducerSettings) -> float:
    if settings.rate_per_s:
        return 1.0 / settings.rate_per_s
    return settings.delay_between_messages_s


def _due(sent: int, total: int | None, started: float, interval: float, chunk: int) -> int:
    """How many messages are due now: as many as fit the pace, at most one pipeline chunk."""
    remaining = chunk if total is None else min(chunk, total - sent)
    if interval <= 0:
        return remaining
    allowed = int((time.monotonic() - started) / interval) + 1 - sent
    return max(0, min(remaining, allowed))
