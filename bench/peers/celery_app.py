"""Celery: the task, its producer and how its worker is started (prefork pool, concurrency 2)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import peer_common
from celery import Celery

CONFIG = "prefork, 2 processes (acks_late, prefetch 4)"

app = Celery("bench_peers", broker=peer_common.redis_url())
app.conf.update(
    # No result backend: the job returns nothing and msgrelay stores no results either.
    task_ignore_result=True,
    # Acknowledge after the line is written, as msgrelay does (Celery's default acks before running the task).
    task_acks_late=True,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=True,
)


@app.task(name="append_line")  # type: ignore[untyped-decorator]  # Celery ships no type hints
def append_line(message: str) -> None:
    peer_common.append_line(message)


def enqueue(messages: Sequence[str]) -> None:
    for message in messages:
        append_line.delay(message)


def worker_commands(bin_dir: Path) -> list[list[str]]:
    # Gossip, mingle and heartbeat only talk to other workers; the usual advice for a Redis broker is to
    # turn them off. WARNING level drops the per-task "received"/"succeeded" lines.
    return [
        [
            str(bin_dir / "celery"), "-A", "celery_app", "worker", "--pool", "prefork", "--concurrency", "2",
            "--loglevel", "WARNING", "--without-gossip", "--without-mingle", "--without-heartbeat",
        ]
    ]  # fmt: skip
