"""arq: the job coroutine, its producer and how its worker is started (1 asyncio worker)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import peer_common
from arq import create_pool
from arq.connections import RedisSettings

CONFIG = "1 worker, max_jobs 10, poll_delay 10 ms"


async def append_line(ctx: dict[str, Any], message: str) -> None:
    # A plain blocking append, as the other peers and msgrelay do: it takes far less than a round trip.
    peer_common.append_line(message)


async def quiet_logging(ctx: dict[str, Any]) -> None:
    # arq's CLI logs every job start and finish at INFO and has no option below that; keep warnings only.
    logging.getLogger("arq").setLevel(logging.WARNING)


class WorkerSettings:
    functions: ClassVar[list[Any]] = [append_line]
    redis_settings = RedisSettings.from_dsn(peer_common.redis_url())
    on_startup = quiet_logging
    # No stored results: the job returns nothing and msgrelay keeps no results either.
    keep_result = 0
    # arq starts at most max_jobs (10) jobs per poll of its queue; the default poll_delay of 0.5 s caps it
    # near 200 jobs/s here, 10 ms lets it run at its speed (~2.5k/s; 5 ms or max_jobs 50 gain nothing).
    poll_delay = 0.01


async def _enqueue(messages: Sequence[str]) -> None:
    pool = await create_pool(RedisSettings.from_dsn(peer_common.redis_url()))
    try:
        for message in messages:
            await pool.enqueue_job("append_line", message)
    finally:
        await pool.aclose()


def enqueue(messages: Sequence[str]) -> None:
    asyncio.run(_enqueue(messages))


def worker_commands(bin_dir: Path) -> list[list[str]]:
    return [[str(bin_dir / "arq"), "arq_app.WorkerSettings"]]
