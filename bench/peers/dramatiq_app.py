"""Dramatiq: the actor, its producer and how its workers are started (2 processes x 8 threads)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import dramatiq
import peer_common
from dramatiq.brokers.redis import RedisBroker

CONFIG = "2 processes x 8 threads"

# The default middleware (age and time limits, retries, callbacks, pipelines), as normally deployed.
dramatiq.set_broker(RedisBroker(url=peer_common.redis_url()))  # type: ignore[no-untyped-call]


@dramatiq.actor(queue_name="default")
def append_line(message: str) -> None:
    peer_common.append_line(message)


def enqueue(messages: Sequence[str]) -> None:
    for message in messages:
        append_line.send(message)


def worker_commands(bin_dir: Path) -> list[list[str]]:
    # Dramatiq logs nothing per message below --verbose, so its default logging stays.
    return [[str(bin_dir / "dramatiq"), "dramatiq_app", "--processes", "2", "--threads", "8"]]
