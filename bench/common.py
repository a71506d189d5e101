"""Plumbing shared by the scenarios: private Redis servers, child processes, line counting, RSS, medians."""

from __future__ import annotations

import json
import os
import select
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from msgrelay.redis_server import RedisServer, free_tcp_port

REPO_ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
POLL_S = 0.03
"""Completion polling interval: short enough to time a 1 s run well, long enough not to eat a core."""
STALL_S = 60.0
"""A run whose line count does not move for this long has failed (a dead or wedged consumer)."""
STOP_TIMEOUT_S = 15.0
READY_TIMEOUT_S = 60.0
"""A child that has not set up in this long is wedged (``msgrelay consume`` prints its first line at once)."""


class BenchError(Exception):
    """A measurement could not be taken (a child failed, a run stalled)."""


@contextmanager
def fresh_redis(workdir: Path) -> Iterator[RedisServer]:
    """A new private redis-server on loopback TCP (the peers connect over TCP too), stopped afterwards."""
    with RedisServer(workdir / "redis", tcp_port=free_tcp_port()) as server:
        yield server


def used_memory(server: RedisServer) -> int:
    client = server.client()
    try:
        return int(client.info("memory")["used_memory"])
    finally:
        client.close()


def redis_version(server: RedisServer) -> str:
    client = server.client()
    try:
        return str(client.info("server")["redis_version"])
    finally:
        client.close()


class Child:
    """A benchmark child process. Its stderr goes to a file (a chatty child never blocks on a full pipe);
    stdout carries one ``ready`` line (after set-up) and, for producers and workers, one JSON result line."""

    def __init__(self, argv: Sequence[str], workdir: Path, name: str, *, wants_go: bool = False) -> None:
        self.name = name
        self.stderr_path = workdir / f"{name}.stderr"
        self._finished = False
        self._stderr: IO[bytes] = self.stderr_path.open("wb")
        self.proc = subprocess.Popen(
            list(argv),
            cwd=REPO_ROOT,
            stdin=subprocess.PIPE if wants_go else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self) -> None:
        """Wait for the child's first line (it is set up), or fail with its stderr."""
        assert self.proc.stdout is not None
        readable, _, _ = select.select([self.proc.stdout], [], [], READY_TIMEOUT_S)
        if not readable:
            raise BenchError(f"{self.name} printed nothing in {READY_TIMEOUT_S:.0f}s: {self.errors()}")
        if not self.proc.stdout.readline():
            self.proc.wait()
            raise BenchError(f"{self.name} exited with {self.proc.returncode} before ready: {self.errors()}")

    def go(self) -> None:
        """Producers wait for this after set-up, so all children start their imports at once."""
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def result(self, timeout: float | None = None) -> dict[str, Any]:
        """Wait for the child to exit; its last stdout line is its JSON result."""
        out, _ = self.proc.communicate(timeout=timeout)
        self._finished = True
        self._stderr.close()
        if self.proc.returncode != 0:
            raise BenchError(f"{self.name} exited with {self.proc.returncode}: {self.errors()}")
        lines = [line for line in out.splitlines() if line.startswith("{")]
        if not lines:
            raise BenchError(f"{self.name} printed no result: {out[-500:]!r} {self.errors()}")
        parsed: dict[str, Any] = json.loads(lines[-1])
        return parsed

    def stop(self) -> None:
        """SIGTERM (consumers finish their batch and exit), SIGKILL if that takes too long."""
        if self._finished:
            return
        self._finished = True
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.communicate(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
        self._stderr.close()

    def errors(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace").strip()[-1500:]
        except OSError:
            return ""


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """Resident memory of a live process from /proc (``VmHWM``: its peak so far); 0.0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class LineWatcher:
    """Counts the lines of the ``*.log`` files in a folder, reading only what was appended since the last
    poll (a full run writes hundreds of MB: re-reading it every poll would eat the core we measure)."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.lines = 0
        self._offsets: dict[Path, int] = {}

    def poll(self) -> int:
        for path in self.log_dir.glob("*.log"):
            size = path.stat().st_size
            done = self._offsets.get(path, 0)
            if size > done:
                self.lines += _count_newlines(path, done, size)
                self._offsets[path] = size
        return self.lines

    def last_write(self) -> float:
        """When the last line landed: the newest mtime (better than the poll that noticed it)."""
        return max((path.stat().st_mtime for path in self._offsets), default=time.time())


def _count_newlines(path: Path, start: int, end: int) -> int:
    count = 0
    with path.open("rb") as handle:
        handle.seek(start)
        remaining = end - start
        while remaining > 0:
            chunk = handle.read(min(remaining, 1 << 22))
            if not chunk:
                break
            count += chunk.count(b"\n")
            remaining -= len(chunk)
    return count


class RssTracker:
    """The highest RSS seen of some processes, sampled at most every ``every_s``; and the RSS once a tenth
    of the work is done (warmed up), so a long run shows whether memory stays flat."""

    EARLY = 0.1

    def __init__(self, pids: Sequence[int], every_s: float = 0.2) -> None:
        self.pids = list(pids)
        self.every_s = every_s
        self.max_mb = 0.0
        self.early_mb = 0.0
        self._next = 0.0

    def sample(self, progress: float, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self._next:
            return
        self._next = now + self.every_s
        current = max(rss_mb(pid) for pid in self.pids)
        if not self.early_mb and progress >= self.EARLY:
            self.early_mb = current
        for pid in self.pids:
            # VmHWM is the kernel's own peak: it catches a spike between two samples.
            self.max_mb = max(self.max_mb, rss_mb(pid), rss_mb(pid, "VmHWM"))


def wait_for_lines(
    watcher: LineWatcher,
    total: int,
    consumers: Sequence[Child],
    producer: Child,
    rss: RssTracker | None = None,
) -> float:
    """Poll until ``total`` lines are on disk; returns when the last one was written. Fails if a consumer
    dies, the producer fails, or nothing moves for ``STALL_S``."""
    last_count, last_move = -1, time.monotonic()
    while True:
        count = watcher.poll()
        if rss is not None:
            rss.sample(count / total)
        if count >= total:
            if rss is not None:
                rss.sample(1.0, force=True)
            return watcher.last_write()
        _check_children(consumers, producer, f"{count}/{total} lines")
        if count != last_count:
            last_count, last_move = count, time.monotonic()
        elif time.monotonic() - last_move > STALL_S:
            raise BenchError(f"stalled at {count}/{total} lines for {STALL_S:.0f}s")
        time.sleep(POLL_S)  # polling file sizes: there is no event to await across these processes


def _check_children(consumers: Sequence[Child], producer: Child, where: str) -> None:
    for child in consumers:
        if not child.alive():
            raise BenchError(f"{child.name} died at {where}: {child.errors()}")
    if producer.proc.poll() not in (None, 0):
        raise BenchError(f"{producer.name} failed at {where}: {producer.errors()}")


def worker_argv(*args: str) -> list[str]:
    return [PYTHON, "-m", "bench.workers", *args]


def msgrelay_argv(*args: str) -> list[str]:
    return [PYTHON, "-m", "msgrelay", *args]


def spread(values: Sequence[float]) -> tuple[float, float, float]:
    """Median, min and max of the repeats."""
    return statistics.median(values), min(values), max(values)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def cores() -> int:
    return len(os.sched_getaffinity(0))
