"""``python -m bench.big_entries``: the peak memory of a real ``msgrelay consume`` fed large entries.

Issue 10, part 5: "a batch of 30 entries of 10 MB takes 368 MB on streams and 1.29 GB on lists". This
queues ``--count`` entries of ``--size`` bytes (our JSON, plain ASCII text) on a fresh private redis-server,
starts ``msgrelay consume`` (default settings unless ``MSGRELAY_*`` variables say otherwise), waits until
every entry is written or dead-lettered, and prints the consumer's peak resident set size (``VmHWM`` from
``/proc/<pid>/status``, Linux). Run it with ``PYTHONPATH=<another checkout>/src`` to measure other code.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

from msgrelay.redis_server import RedisServer

DEADLINE_S = 300.0
POLL_S = 0.05
"""How often the ledger is read: another process's work has no event to await."""
QUEUES = {"streams": "msgrelay:logs", "lists": "message_buffer"}


def vm_hwm_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for pid {pid}")


def queue_entries(client: redis.Redis, transport: str, count: int, size: int) -> None:
    for n in range(count):
        entry = b'{"type":"INFO","text":"entry %d ' % n + b"x" * max(0, size - 40) + b'"}'
        if transport == "streams":
            client.xadd(QUEUES[transport], {"m": entry})
        else:
            client.lpush(QUEUES[transport], entry)


def accounted(client: redis.Redis, transport: str) -> int:
    processed = client.hget(f"msgrelay:stats:{QUEUES[transport]}", "processed")
    return int(client.xlen("msgrelay:dlq")) + int(processed or 0)


def measure(transport: str, count: int, size: int) -> float:
    """Peak RSS (MiB) of a consumer that processed ``count`` entries of ``size`` bytes."""
    with tempfile.TemporaryDirectory() as scratch, RedisServer(Path(scratch) / "redis") as server:
        client = server.client()
        queue_entries(client, transport, count, size)
        argv = [sys.executable, "-m", "msgrelay", "consume", "-q", "--redis-url", server.url]
        argv += ["-t", transport, "--log-dir", f"{scratch}/logs"]
        consumer = subprocess.Popen(argv, cwd=scratch, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + DEADLINE_S
            while accounted(client, transport) < count:
                if consumer.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"consumer did not finish: {consumer.communicate()[1].decode()}")
                time.sleep(POLL_S)
            return vm_hwm_mib(consumer.pid)
        finally:
            consumer.terminate()
            consumer.wait()
            client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transport", choices=sorted(QUEUES), action="append")
    parser.add_argument("--count", type=int, default=30)
    parser.add_argument("--size", type=float, default=10e6, help="bytes per entry (10e6: 10 MB)")
    args = parser.parse_args()
    for transport in args.transport or sorted(QUEUES, reverse=True):
        peak = measure(transport, args.count, int(args.size))
        entries = f"{args.count} entries of {args.size / 1e6:g} MB"
        print(f"{transport}: {entries}: consumer peak RSS {peak:,.0f} MiB")
    if os.environ.get("PYTHONPATH"):
        print(f"(msgrelay from PYTHONPATH={os.environ['PYTHONPATH']})")


if __name__ == "__main__":
    main()
