"""Huey: the task, its producer and how its consumer is started (2 worker processes)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import peer_common
from huey import RedisHuey

CONFIG = "1 consumer, 2 worker processes (blocking BRPOP)"

# blocking=True (the default): workers wait in BRPOP instead of polling with back-off, the fast setting.
huey = RedisHuey("bench", url=peer_common.redis_url(), blocking=True)


@huey.task()  # type: ignore[untyped-decorator]  # huey ships no type hints
def append_line(message: str) -> None:
    peer_common.append_line(message)


def enqueue(messages: Sequence[str]) -> None:
    for message in messages:
        append_line(message)


def worker_commands(bin_dir: Path) -> list[list[str]]:
    # Processes, not threads: the work is CPU-bound Python on 2 cores. -q drops the per-task log lines;
    # -n turns off periodic tasks (there are none).
    return [[str(bin_dir / "huey_consumer"), "huey_app.huey", "-w", "2", "-k", "process", "-q", "-n"]]
