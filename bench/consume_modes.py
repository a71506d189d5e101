"""End-to-end cost of each delivery mode: ``msgrelay consume --burst`` draining N produced messages.

    python bench/consume_modes.py --messages 200000 --batch-size 500

A private redis-server (AOF on, unix socket) is started for the run; for each transport the queue is
filled with ``msgrelay produce``, then drained by one ``msgrelay consume --burst`` process per mode
(``at_least_once``, ``fsync``, ``effectively_once``), and the consumer's own msgs/s figure is printed with
its ratio to ``at_least_once`` of the same run.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from msgrelay.redis_server import RedisServer

MODES: dict[str, tuple[str, ...]] = {
    "at_least_once": (),
    "fsync": ("--fsync",),
    "effectively_once": ("--delivery", "effectively_once"),
}
RATE = re.compile(r"\(([\d,]+) msgs/s\)")


def msgrelay(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "msgrelay", *args], check=True, capture_output=True, text=True
    )
    return done.stdout


def drain_rate(
    server: RedisServer, workdir: Path, transport: str, mode: str, *, messages: int, batch: int
) -> float:
    client = server.client()
    try:
        client.flushall()  # our own child server (pid verified by RedisServer.start)
    finally:
        client.close()
    common = ("--redis-url", server.url, "-t", transport)
    msgrelay("produce", "-n", str(messages), "--rate", "1e9", "-q", *common)
    logs = workdir / f"logs-{transport}-{mode}"
    out = msgrelay(
        "consume", "--burst", "-q", "-b", str(batch), "--log-dir", str(logs), *MODES[mode], *common
    )
    found = RATE.search(out)
    if found is None:
        raise SystemExit(f"no rate in consumer output: {out!r}")
    return float(found.group(1).replace(",", ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--batch-size", type=int, default=500)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as tmp,
        RedisServer(Path(tmp) / "redis", extra_args=("--appendonly", "yes")) as server,
    ):
        print(f"{args.messages} messages, batches of {args.batch_size}, AOF everysec, unix socket")
        for transport in ("streams", "lists"):
            rates = {
                mode: drain_rate(
                    server, Path(tmp), transport, mode, messages=args.messages, batch=args.batch_size
                )
                for mode in MODES
            }
            for mode, rate in rates.items():
                ratio = rate / rates["at_least_once"]
                print(f"  {transport:8} {mode:17} {rate:>10,.0f} msgs/s   ({ratio:.2f}x at_least_once)")


if __name__ == "__main__":
    main()
