"""A real ``msgrelay consume`` process stays within its memory bound when 10 MB and 100 MB entries arrive in
normal traffic (issue 10, part 5).

Before: a batch of 30 entries of 10 MB took 368 MB on streams and 1.29 GB on lists, and one 100 MB entry
was loaded whole to be dead-lettered. Now a batch holds at most ``max_batch_bytes`` of entries (one entry
may be up to ``max_message_bytes``), the consumer needs up to about 7 (streams) or 9 (lists) times that
while it works on a batch (README, Memory), and an oversize entry is dead-lettered on the server, never
loaded. The peak is the process' own high-water mark (``VmHWM`` in ``/proc/<pid>/status``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
import redis

from msgrelay.config import Settings
from msgrelay.deadletter import DeadLetterEntry
from msgrelay.keys import Stat
from msgrelay.transport import Transport, create_transport

MIB = 1024 * 1024
BUDGET = 8 * MIB
LIMIT = 12 * MIB
"""10 MB entries are legal (and each over the budget: a batch of its own), 100 MB entries are oversize."""
GROWTH_FACTOR = {"streams": 7, "lists": 9}
"""What the consumer may grow by over its baseline, in times the largest batch (README, Memory). Measured
for a 10 MB entry: 48 MiB on streams, 86 MiB on lists (which sends each entry back to remove it; the log
file sink also keeps a file's last append for a while, to repair a copytruncate)."""
HUGE = 100_000_000
NORMAL = 2_000
DEADLINE_S = 120.0


def vm_hwm(pid: int) -> int:
    """Peak resident set size of a live process, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for pid {pid}")


def log_message(n: int, size: int = 0) -> bytes:
    text = f"message {n} " + "y" * max(0, size - 60)
    return orjson.dumps({"id": f"m-{n}", "type": "INFO", "text": text})


@pytest.fixture
def queue(make_settings: Callable[..., Settings], transport_name: str) -> Iterator[Transport]:
    transport = create_transport(make_settings(transport_name))
    yield transport
    transport.close()


@pytest.fixture
def consumer(redis_url: str, tmp_path: Path, transport_name: str) -> Iterator[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        "MSGRELAY_CONSUMER__MAX_BATCH_BYTES": str(BUDGET),
        "MSGRELAY_QUEUE__MAX_MESSAGE_BYTES": str(LIMIT),
    }
    argv = [sys.executable, "-m", "msgrelay", "consume", "-q", "--redis-url", redis_url]
    argv += ["-t", transport_name, "--log-dir", str(tmp_path / "logs")]
    process = subprocess.Popen(argv, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    yield process
    if process.poll() is None:
        process.kill()
        process.wait()


def wait_until_accounted(queue: Transport, total: int, process: subprocess.Popen[bytes]) -> None:
    """Every entry sent so far is written or dead-lettered (polling the stats: another process's work)."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[0].decode(errors="replace")
        stats = queue.stats()
        if stats.get(Stat.PROCESSED, 0) + stats.get(Stat.DEAD_LETTERED, 0) >= total:
            return
        time.sleep(0.05)
    raise AssertionError(f"not all {total} entries were accounted for in {DEADLINE_S:.0f}s: {queue.stats()}")


def test_consumer_memory_stays_within_its_bound_with_10_and_100_mb_entries_in_normal_traffic(
    queue: Transport,
    consumer: subprocess.Popen[bytes],
    redis_client: redis.Redis,
    tmp_path: Path,
    transport_name: str,
) -> None:
    # Given a consumer that has been through normal traffic: its baseline
    queue.send([log_message(n) for n in range(NORMAL)])
    wait_until_accounted(queue, NORMAL, consumer)
    baseline = vm_hwm(consumer.pid)

    # When a backlog mixes 10 MB and 100 MB entries into normal messages ...
    backlog = [log_message(NORMAL + 1, 10_000_000)]
    backlog += [log_message(n) for n in range(NORMAL + 2, NORMAL + 300)]
    huge = [log_message(NORMAL + 300, HUGE), log_message(NORMAL + 600, HUGE)]
    backlog += [huge[0], log_message(NORMAL + 301, 10_000_000)]
    backlog += [log_message(n) for n in range(NORMAL + 302, NORMAL + 600)]
    queue.send(backlog)
    wait_until_accounted(queue, NORMAL + len(backlog), consumer)
    # ... and then a 100 MB entry arrives alone on the idle queue (the waiting read is what meets it)
    queue.send([huge[1]])
    queue.send([log_message(NORMAL + 601, 10_000_000), log_message(NORMAL + 602)])
    wait_until_accounted(queue, NORMAL + len(backlog) + 3, consumer)
    peak = vm_hwm(consumer.pid)
    consumer.send_signal(signal.SIGTERM)
    output = consumer.communicate(timeout=30)[0].decode(errors="replace")

    # Then its memory grew by less than its bound, and never by a 100 MB entry ...
    grown = f"grew {(peak - baseline) / MIB:.0f} MiB over {baseline / MIB:.0f} MiB"
    assert peak - baseline <= GROWTH_FACTOR[transport_name] * max(BUDGET, LIMIT), grown
    assert peak - baseline < HUGE, grown
    # ... and everything is accounted for: every legal entry written once, the 100 MB ones dead-lettered
    assert consumer.returncode == 0, output
    lines = (tmp_path / "logs" / "info.log").read_bytes().splitlines()
    assert len(lines) == NORMAL + len(backlog) + 3 - 2
    assert sum(len(line) > 9_000_000 for line in lines) == 3
    entries = redis_client.xrange("msgrelay:dlq")
    letters = [DeadLetterEntry.from_fields(entry_id, fields) for entry_id, fields in entries]  # type: ignore[union-attr]
    assert [(letter.reason, letter.raw_size) for letter in letters] == [("oversize", len(h)) for h in huge]
    assert sum(queue.pending().values()) == 0
    assert queue.backlog() == 0
    assert "2 dead-lettered" in output  # the consumer counts what the server dead-lettered for it
