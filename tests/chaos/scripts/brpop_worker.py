"""Negative control: a lists worker with a bare BRPOP (the entry leaves Redis before it is written).

Killed mid-run, it must lose messages; the checker has to report lost > 0.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import decode_all, parse_args

from msgrelay.sinks.files import LogFileSink

BUFFER = "message_buffer"


WORK_S = 0.3
"""Slow work keeps a backlog, so the worker is nearly always between its ack (pop) and its write when
the harness kills it: the control must lose messages every time, not by luck."""


def main() -> None:
    args = parse_args()
    client = redis.Redis.from_url(args.redis_url, socket_timeout=5)
    sink = LogFileSink(args.log_dir)
    while True:
        first = client.brpop([BUFFER], timeout=args.block_timeout)
        if first is None:
            continue
        rest = client.rpop(BUFFER, args.batch_size - 1) or []
        time.sleep(WORK_S)  # the work between taking the batch and writing it: where a kill loses it
        sink.write_batch(decode_all([first[1], *rest]))


if __name__ == "__main__":
    main()
