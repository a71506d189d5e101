"""What each file-sink delivery mode costs: msgs/s for N messages written in batches.

    python bench/sink_modes.py --messages 200000 --batch-size 100

Modes: ``at_least_once`` (flock + one write per file per batch), ``fsync`` (the same, fsynced before each
ack), ``effectively_once`` (journaled in a private redis-server on a unix socket: one Lua round trip before
the write and one HDEL after the ack, as the consumer would call ``settled``), and ``effectively_once+fsync``.
Messages are spread over the four types like a real mix; each mode runs ``--repeat`` times and the best
run is shown (a shared machine is noisy). Files go to a temporary folder (``--dir`` to
choose the disk being measured).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from msgrelay.keys import KeySchema
from msgrelay.message import Message
from msgrelay.redis_server import RedisServer
from msgrelay.sinks import LogFileSink
from msgrelay.sinks.journal import WriteJournal

TYPES = ("INFO", "INFO", "INFO", "WARNING", "ERROR", "DEBUG")


def make_batches(total: int, size: int) -> list[tuple[list[Message], list[bytes]]]:
    batches = []
    for first in range(0, total, size):
        numbers = range(first, min(first + size, total))
        messages = [
            Message(
                f"bench-{n}",
                TYPES[n % len(TYPES)],
                f"request {n} served in {n % 97} ms",
                1.7e9,
                {"host": "web-1"},
            )
            for n in numbers
        ]
        batches.append((messages, [f"1700000000000-{n}".encode() for n in numbers]))
    return batches


def measure(sink: LogFileSink, batches: list[tuple[list[Message], list[bytes]]]) -> float:
    started = time.perf_counter()
    for messages, handles in batches:
        sink.write_batch(messages, handles)
        sink.settled()
    elapsed = time.perf_counter() - started
    sink.close()
    return sum(len(messages) for messages, _ in batches) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3, help="runs per mode; the best one is shown")
    parser.add_argument("--dir", type=Path, default=None, help="where the log files go (default: a temp dir)")
    args = parser.parse_args()
    batches = make_batches(args.messages, args.batch_size)
    with tempfile.TemporaryDirectory(dir=args.dir) as scratch, RedisServer(Path(scratch) / "redis") as server:
        client = server.client()
        keys = KeySchema("bench", "bench:logs")

        def journaled(folder: Path, fsync: bool) -> LogFileSink:
            journal = WriteJournal(client, keys, "bench-1", url=server.url)
            return LogFileSink(folder, fsync=fsync, journal=journal)

        modes: dict[str, Callable[[Path], LogFileSink]] = {
            "at_least_once": LogFileSink,
            "fsync": lambda folder: LogFileSink(folder, fsync=True),
            "effectively_once": lambda folder: journaled(folder, False),
            "effectively_once+fsync": lambda folder: journaled(folder, True),
        }
        print(f"{args.messages} messages in batches of {args.batch_size}, files in {scratch}")
        baseline = 0.0
        for mode, build in modes.items():
            rate = max(measure(build(Path(scratch) / f"{mode}-{run}"), batches) for run in range(args.repeat))
            baseline = baseline or rate
            print(f"  {mode:<24} {rate:>12,.0f} msgs/s   ({rate / baseline:.2f}x at_least_once)")
        client.close()


if __name__ == "__main__":
    main()
