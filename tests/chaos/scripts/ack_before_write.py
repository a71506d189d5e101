"""Negative control: a streams worker that acks BEFORE it writes. Killed mid-run, it must lose messages.

XREADGROUP, XACK, then a short pause (the work), then the write. The checker has to report lost > 0.
"""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import decode_all, parse_args

from msgrelay.sinks.files import LogFileSink

STREAM, GROUP = "msgrelay:logs", "msgrelay"


WORK_S = 0.3
"""Slow work keeps a backlog, so the worker is nearly always between its ack (pop) and its write when
the harness kills it: the control must lose messages every time, not by luck."""


def main() -> None:
    args = parse_args()
    client = redis.Redis.from_url(args.redis_url, socket_timeout=5)
    with contextlib.suppress(redis.exceptions.ResponseError):  # BUSYGROUP
        client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    sink = LogFileSink(args.log_dir)
    while True:
        reply = client.xreadgroup(
            GROUP, args.name, {STREAM: ">"}, count=args.batch_size, block=int(args.block_timeout * 1000)
        )
        if not reply:
            continue
        entries = reply[0][1]
        client.xack(STREAM, GROUP, *[entry_id for entry_id, _ in entries])  # the bug: ack first
        time.sleep(WORK_S)  # the work between taking the batch and writing it: where a kill loses it
        sink.write_batch(decode_all([fields[b"m"] for _, fields in entries]))


if __name__ == "__main__":
    main()
