"""The one job every contestant of the benchmark does, in plain Python (stdlib only).

Every system under test (msgrelay, the plain redis-py loops, Celery, Dramatiq, Huey, RQ, arq) is fed the same
deterministic log messages and does the same work with each: append it as one line to the file of its type
(``<log_dir>/info.log``, ``warning.log`` ...). This module has no third-party imports, so the peers'
separate virtualenvs can load it by path.

A message is a compact JSON object of about ``size`` bytes (175 by default, the size the issue measures)::

    {"id":"b-0000000001","type":"INFO","text":"GET /api/v1/orders 200 in 12 ms xxx","ts":1764050000.123,
     "host":"web-1","app":"shop"}

Below 110 bytes the ``host``/``app`` fields are left out and ``ts`` is whole seconds (64 bytes is the least).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from pathlib import Path

TYPES = ("INFO", "WARNING", "ERROR", "DEBUG")
WEIGHTS = (60, 15, 10, 15)
DEFAULT_SIZE = 175

_WORDS = (
    "GET /api/v1/orders 200 in 12 ms",
    "user alice logged in from 10.1.2.3",
    "cache miss for key session:4711",
    "slow response from billing: 812 ms",
    "database connection to postgres refused",
    "job job-77 finished in 93 ms",
)


def message_dicts(count: int, *, size: int = DEFAULT_SIZE, seed: int = 7) -> Iterator[dict[str, object]]:
    """``count`` log messages as dicts whose compact JSON is ``size`` bytes (at least 64)."""
    rng = random.Random(seed)  # noqa: S311 - sample data
    now = time.time()
    for number in range(count):
        msg_type = rng.choices(TYPES, WEIGHTS)[0]
        message: dict[str, object] = {
            "id": f"b-{number:010d}",
            "type": msg_type,
            "text": "",
            "ts": round(now + number * 1e-6, 6),
        }
        if size >= 110:
            message["host"] = f"web-{number % 8}"
            message["app"] = "shop"
        else:
            message["ts"] = int(now)
        base = len(json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode())
        want = max(1, size - base)
        seedtext = rng.choice(_WORDS)
        message["text"] = (seedtext + " " + "x" * want)[:want]
        yield message


def encoded(count: int, *, size: int = DEFAULT_SIZE, seed: int = 7) -> list[bytes]:
    """The same messages as compact JSON bytes (what a plain producer would LPUSH or XADD)."""
    return [
        json.dumps(m, separators=(",", ":"), ensure_ascii=False).encode()
        for m in message_dicts(count, size=size, seed=seed)
    ]


def log_path(log_dir: Path, msg_type: str) -> Path:
    """The per-type file a message of ``msg_type`` is appended to."""
    return log_dir / f"{msg_type.lower()}.log"


def count_lines(log_dir: Path) -> int:
    """How many lines all per-type files in ``log_dir`` hold (the number of messages processed)."""
    total = 0
    for path in log_dir.glob("*.log"):
        with path.open("rb") as handle:
            total += sum(chunk.count(b"\n") for chunk in iter(lambda h=handle: h.read(1 << 20), b""))
    return total
