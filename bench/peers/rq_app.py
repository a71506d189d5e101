"""RQ: the job function, its producer and how its workers are started (2 workers, a fork per job)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import peer_common
from redis import Redis
from rq import Queue

CONFIG = "2 workers (rq.Worker, a fork per job)"
WORKERS = 2


def append_line(message: str) -> None:
    peer_common.append_line(message)


def enqueue(messages: Sequence[str]) -> None:
    queue = Queue("default", connection=Redis.from_url(peer_common.redis_url()))
    for message in messages:
        # result_ttl=0: no result is kept (the job returns nothing; msgrelay keeps no results either).
        queue.enqueue(append_line, message, result_ttl=0)


def worker_commands(bin_dir: Path) -> list[list[str]]:
    # One worker runs one job at a time, so one per core; the default Worker class forks a work horse per
    # job, which is how RQ is normally run. --quiet drops the per-job log lines.
    command = [str(bin_dir / "rq"), "worker", "--url", peer_common.redis_url(), "--quiet", "default"]
    return [list(command) for _ in range(WORKERS)]
