"""Run one task-queue peer (Celery, Dramatiq, Huey, RQ, arq) through the benchmark job; print one JSON line.

Run from the repository root with the peer's benchmark virtualenv (``make bench-venvs`` creates them)::

    bench/.venvs/peers/bin/python bench/peers/run_peer.py --peer dramatiq \
        --redis-url redis://127.0.0.1:PORT/0 --messages 200 --workdir /tmp/peer-dramatiq
    bench/.venvs/arq/bin/python bench/peers/run_peer.py --peer arq ...

Method (the same for every peer, see README.md beside this file):

1. With no worker running, enqueue the messages with the peer's normal task call; Redis ``used_memory``
   after minus before, divided by the count, is the bytes per queued message, and count / enqueue time the
   produce rate.
2. Start the peer's workers as it is normally deployed on 2 cores; the processing rate is count / time from
   starting them until every line is in ``<workdir>/logs/``. The peak summed RSS of the workers' processes
   is sampled meanwhile.

The server at ``--redis-url`` is the caller's (dedicated and empty); this script never flushes it.
Only the standard library is imported at module level, so the benchmark framework can import this file by
path (from the project's virtualenv) to read ``SUGGESTED_MESSAGES``, ``SMOKE_MESSAGES`` and ``venv_python``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import IO

Popen = subprocess.Popen[bytes]

HERE = Path(__file__).resolve().parent
PEERS = ("celery", "dramatiq", "huey", "rq", "arq")

# The virtualenv (relative to the repository root) whose python runs each peer: arq needs redis-py < 6.
PEER_VENVS = {"celery": "bench/.venvs/peers", "dramatiq": "bench/.venvs/peers", "huey": "bench/.venvs/peers",
              "rq": "bench/.venvs/peers", "arq": "bench/.venvs/arq"}  # fmt: skip

# Message counts for a full run of ~15-25 s each (enqueueing plus processing) on 2 cores, from the rates
# measured here (processing / enqueueing, msgs/s): Celery 1.3k / 3.9k, Dramatiq 3.8k / 9.7k, Huey 6.5k / 27k,
# RQ 90 / 6k, arq 2.6k / 3.4k.
SUGGESTED_MESSAGES = {"celery": 20_000, "dramatiq": 60_000, "huey": 100_000, "rq": 1_500, "arq": 30_000}
# A smoke run (CI): a few seconds each.
SMOKE_MESSAGES = {"celery": 300, "dramatiq": 300, "huey": 300, "rq": 50, "arq": 300}

POLL_S = 0.03  # how often completion is checked
RSS_EVERY_S = 0.25  # how often the workers' RSS is sampled (a /proc scan; cheaper less often)
STOP_GRACE_S = 5.0  # how long workers get to stop on SIGTERM before the whole group is killed


def venv_python(peer: str, repo_root: Path) -> Path:
    """The interpreter that runs ``peer`` (for the benchmark framework)."""
    return repo_root / PEER_VENVS[peer] / "bin" / "python"


def log(text: str) -> None:
    print(f"run_peer: {text}", file=sys.stderr, flush=True)


# --- the peer's task module --------------------------------------------------------------------------------


def load_peer(peer: str, redis_url: str, log_dir: Path) -> ModuleType:
    """Import ``<peer>_app`` (task, ``enqueue``, ``worker_commands``, ``CONFIG``) configured for this run."""
    os.environ["PEER_REDIS_URL"] = redis_url
    os.environ["PEER_LOG_DIR"] = str(log_dir)
    sys.path.insert(0, str(HERE))
    return importlib.import_module(f"{peer}_app")


def used_memory(redis_url: str) -> int:
    import redis  # noqa: PLC0415 - only in the peers' virtualenvs, not needed to read the constants above

    client = redis.Redis.from_url(redis_url)
    try:
        return int(client.info("memory")["used_memory"])
    finally:
        client.close()


# --- counting lines as they are written ---------------------------------------------------------------------


@dataclass
class LineCounter:
    """``workload.count_lines`` done incrementally: each poll reads only the bytes added since the last one.

    Re-reading every file every 30 ms would cost a core by the end of a large run and slow the workers.
    """

    log_dir: Path
    offsets: dict[Path, int] = field(default_factory=dict)
    lines: int = 0

    def count(self) -> int:
        for path in self.log_dir.glob("*.log"):
            with path.open("rb") as handle:
                handle.seek(self.offsets.get(path, 0))
                data = handle.read()
            # Count only up to the last newline: a line being written is counted once it is complete.
            complete = data.rfind(b"\n") + 1
            self.lines += data.count(b"\n", 0, complete)
            self.offsets[path] = self.offsets.get(path, 0) + complete
        return self.lines


# --- worker processes ---------------------------------------------------------------------------------------


def _proc_pgrp(pid: str) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Fields after the command name (which may hold spaces or parentheses): state, ppid, pgrp, ...
    return int(stat.rsplit(")", 1)[1].split()[2])


def _proc_rss_kb(pid: str) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0  # a zombie has no VmRSS


def group_rss_mb(pgids: set[int]) -> float:
    """Summed RSS of every process in the workers' process groups (each worker leads its own group, so this
    is its whole tree: pool children, forked work horses)."""
    pids = [pid for pid in os.listdir("/proc") if pid.isdigit() and _proc_pgrp(pid) in pgids]
    total_kb = sum(_proc_rss_kb(pid) for pid in pids)
    return total_kb / 1024


@contextlib.contextmanager
def running_workers(commands: Sequence[Sequence[str]], workdir: Path) -> Iterator[list[Popen]]:
    """Start the workers, each in its own process group, and always stop them (kill if they linger)."""
    # The worker CLIs import the task modules by name, so this directory goes on their import path.
    path = os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, PYTHONPATH=path)
    procs: list[Popen] = []
    logs: list[IO[bytes]] = []
    try:
        for number, command in enumerate(commands):
            logs.append((workdir / f"worker-{number}.log").open("wb"))
            procs.append(
                subprocess.Popen(
                    command, cwd=HERE, env=env, stdin=subprocess.DEVNULL, stdout=logs[-1],
                    stderr=subprocess.STDOUT, start_new_session=True,
                )
            )  # fmt: skip
        yield procs
    finally:
        stop_workers(procs)
        for handle in logs:
            handle.close()


def stop_workers(procs: Sequence[Popen]) -> None:
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)  # each peer's warm shutdown
    deadline = time.monotonic() + STOP_GRACE_S
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    for proc in procs:
        if proc.poll() is None:
            log(f"worker {proc.pid} did not stop within {STOP_GRACE_S:.0f} s; killing its process group")
        # Always: pool children or a work horse may outlive their parent.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def tail(path: Path, lines: int = 20) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


# --- the measurement ----------------------------------------------------------------------------------------


@dataclass
class Progress:
    processed: int = 0
    elapsed_s: float = 0.0
    peak_rss_mb: float = 0.0
    timed_out: bool = False


def wait_for_lines(
    procs: Sequence[Popen], log_dir: Path, messages: int, timeout_s: float, start: float
) -> Progress:
    """Poll until ``messages`` lines are written (or the timeout), sampling the workers' RSS meanwhile."""
    counter = LineCounter(log_dir)
    pgids = {proc.pid for proc in procs}
    progress = Progress()
    next_rss = start
    while True:
        now = time.monotonic()
        if now >= next_rss:
            progress.peak_rss_mb = max(progress.peak_rss_mb, group_rss_mb(pgids))
            next_rss = now + RSS_EVERY_S
        progress.processed = counter.count()
        progress.elapsed_s = time.monotonic() - start
        if progress.processed >= messages or progress.elapsed_s >= timeout_s:
            progress.timed_out = progress.processed < messages
            # One more sample while the workers are still up: a short run may have had only the first one.
            progress.peak_rss_mb = max(progress.peak_rss_mb, group_rss_mb(pgids))
            return progress
        if all(proc.poll() is not None for proc in procs):
            raise RuntimeError("every worker exited before the work was done")
        time.sleep(POLL_S)


@dataclass(frozen=True)
class RunSpec:
    peer: str
    redis_url: str
    messages: int
    workdir: Path
    size: int = 175
    timeout_s: float = 300.0

    @property
    def log_dir(self) -> Path:
        return self.workdir / "logs"


@dataclass(frozen=True)
class Queued:
    produce_s: float
    redis_bytes: int


def enqueue_phase(spec: RunSpec, app: ModuleType, payloads: Sequence[str]) -> Queued:
    """Enqueue everything with no worker running: the produce rate and the Redis memory the queue takes."""
    before = used_memory(spec.redis_url)
    started = time.perf_counter()
    app.enqueue(payloads)
    queued = Queued(time.perf_counter() - started, used_memory(spec.redis_url) - before)
    log(
        f"{spec.peer}: enqueued {spec.messages} in {queued.produce_s:.2f} s, "
        f"{queued.redis_bytes / spec.messages:.0f} B/msg in Redis"
    )
    return queued


def process_phase(spec: RunSpec, app: ModuleType) -> Progress:
    """Start the workers on the full queue and wait until every line is written (or the timeout)."""
    start = time.monotonic()  # the clock includes the workers' start-up, as a deployment's would
    with running_workers(app.worker_commands(Path(sys.executable).parent), spec.workdir) as procs:
        try:
            progress = wait_for_lines(procs, spec.log_dir, spec.messages, spec.timeout_s, start)
        except RuntimeError:
            for number in range(len(procs)):
                log(f"worker-{number}.log:\n{tail(spec.workdir / f'worker-{number}.log')}")
            raise
    outcome = "timed out" if progress.timed_out else "done"
    log(
        f"{spec.peer}: {outcome}, {progress.processed}/{spec.messages} lines in {progress.elapsed_s:.2f} s, "
        f"peak worker RSS {progress.peak_rss_mb:.1f} MB"
    )
    return progress


def run(spec: RunSpec) -> dict[str, object]:
    spec.log_dir.mkdir(parents=True, exist_ok=True)
    if any(spec.log_dir.iterdir()):
        raise SystemExit(f"run_peer: {spec.log_dir} is not empty; give each run a fresh --workdir")
    app = load_peer(spec.peer, spec.redis_url, spec.log_dir)
    from peer_common import workload  # noqa: PLC0415 - importable only once load_peer has set sys.path

    payloads = [message.decode() for message in workload.encoded(spec.messages, size=spec.size)]
    queued = enqueue_phase(spec, app, payloads)
    progress = process_phase(spec, app)
    final = workload.count_lines(spec.log_dir)
    if final != progress.processed:
        log(f"{spec.peer}: {final} lines after the workers stopped ({progress.processed} when measured)")
    return {
        "peer": spec.peer,
        "messages": spec.messages,
        "processed": progress.processed,
        "process_msgs_s": round(progress.processed / progress.elapsed_s, 1),
        "produce_msgs_s": round(spec.messages / queued.produce_s, 1),
        "redis_bytes_per_msg": round(queued.redis_bytes / spec.messages, 1),
        "worker_rss_mb": round(progress.peak_rss_mb, 1),
        "config": app.CONFIG,
        "timed_out": progress.timed_out,
    }


def parse_args(argv: Sequence[str] | None = None) -> RunSpec:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--peer", required=True, choices=PEERS)
    parser.add_argument("--redis-url", required=True, help="a dedicated, empty server (never flushed here)")
    parser.add_argument("--messages", type=int, help="how many messages (default: SUGGESTED_MESSAGES[peer])")
    parser.add_argument("--workdir", type=Path, required=True, help="the lines go to <workdir>/logs/")
    parser.add_argument("--size", type=int, default=175, help="bytes of JSON per message (default: 175)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds of processing before giving up")
    args = parser.parse_args(argv)
    messages = args.messages or SUGGESTED_MESSAGES[args.peer]
    return RunSpec(args.peer, args.redis_url, messages, args.workdir.resolve(), args.size, args.timeout)


def exit_on_sigterm(signum: int, frame: object) -> None:
    # The workers run in sessions of their own, out of reach of a signal to ours: turn a SIGTERM (a caller
    # giving up on us) into an exception, so that running_workers' cleanup still stops them.
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    print(json.dumps(run(parse_args(argv))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
