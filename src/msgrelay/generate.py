"""``msgrelay produce``: paced, pipelined sending of generated messages, with progress.

Progress is a bar on a terminal; when the console is not one (piped, redirected to a file, under systemd or
docker), a plain line every ``PLAIN_PROGRESS_INTERVAL_S`` instead, since a bar would print nothing there.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from msgrelay.config import ProducerSettings
from msgrelay.producer import Producer, send_with_resends
from msgrelay.reporting import plural, print_plain
from msgrelay.samples import random_messages

BACKLOG_REFRESH_S = 0.5
PLAIN_PROGRESS_INTERVAL_S = 2.0
"""How often ``produce`` prints a progress line when its console is not a terminal."""
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
    stop: threading.Event | None = None,
) -> int:
    """Send ``max_messages`` generated messages (0: until ``stop`` is set) at the set pace; return the count.

    ``stop`` (set by SIGTERM/SIGINT in ``msgrelay produce``) ends the run between chunks: the chunk in flight
    is sent and written to ``id_log`` whole, never cut, so the id log holds exactly what was sent."""
    stop = stop or threading.Event()
    total = settings.max_messages or None
    interval = _interval_s(settings)
    source = random_messages(seed)
    sent = 0
    with _id_ledger(id_log) as ledger, _progress(console, total, quiet=quiet) as progress:
        started = time.monotonic()
        while (total is None or sent < total) and not stop.is_set():
            due = _due(sent, total, started, interval, settings.pipeline_size)
            if due == 0:
                stop.wait(max(0.0, started + sent * interval - time.monotonic()))
                continue
            chunk = list(itertools.islice(source, due))
            ids = send_with_resends(
                producer, producer.build_many(chunk), within_s=RESEND_FOR_S, report=_report_to(console)
            )
            if ledger is not None:
                ledger.writelines(f"{msg_id} {spec[0]}\n" for msg_id, spec in zip(ids, chunk, strict=True))
            sent += len(ids)
            progress(sent, producer)
    return sent


ProgressUpdate = Callable[[int, Producer], None]
"""``update(sent, producer)`` after each chunk."""


@contextmanager
def _id_ledger(path: Path | None) -> Iterator[TextIO | None]:
    if path is None:
        yield None
        return
    with path.open("a", encoding="utf-8") as ledger:
        yield ledger


@contextmanager
def _progress(console: Console, total: int | None, *, quiet: bool) -> Iterator[ProgressUpdate]:
    """A bar on a terminal, plain lines elsewhere, nothing with ``quiet``."""
    if quiet:
        yield lambda sent, producer: None
    elif console.is_terminal:
        with _bar(console, total) as update:
            yield update
    else:
        yield _PlainProgress(console, total).update


@contextmanager
def _bar(console: Console, total: int | None) -> Iterator[ProgressUpdate]:
    progress = Progress(
        TextColumn("[bold]producing"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("buffer: {task.fields[backlog]}"),
        console=console,
    )
    task = progress.add_task("produce", total=total, backlog="?")
    last_backlog = -BACKLOG_REFRESH_S

    def update(sent: int, producer: Producer) -> None:
        nonlocal last_backlog
        if time.monotonic() - last_backlog >= BACKLOG_REFRESH_S:
            progress.update(task, backlog=producer.transport.backlog())
            last_backlog = time.monotonic()
        progress.update(task, completed=sent)

    with progress:
        yield update


class _PlainProgress:
    """``produced 2000/10000 messages (1000 msgs/s), backlog 1500`` every ``PLAIN_PROGRESS_INTERVAL_S``."""

    def __init__(self, console: Console, total: int | None) -> None:
        self.console = console
        self.total = total
        self.started = time.monotonic()
        self.next_line = self.started + PLAIN_PROGRESS_INTERVAL_S

    def update(self, sent: int, producer: Producer) -> None:
        now = time.monotonic()
        if now < self.next_line:
            return
        self.next_line = now + PLAIN_PROGRESS_INTERVAL_S
        count = plural(sent, "message") if self.total is None else f"{sent}/{plural(self.total, 'message')}"
        rate = sent / (now - self.started)
        print_plain(
            self.console, f"produced {count} ({rate:,.0f} msgs/s), backlog {producer.transport.backlog()}"
        )


def _report_to(console: Console) -> Callable[[Exception, float], None]:
    def report(error: Exception, delay_s: float) -> None:
        print_plain(console, f"send failed, resending in {delay_s:.1f}s: {error}")

    return report


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
