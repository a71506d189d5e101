"""Worker processes: real ``python -m msgrelay consume`` children (or a script of ours), one per slot.

A slot restarts under a new consumer name each time (``<prefix>-s<slot>-g<generation>``), so the entries a
killed worker held can only come back through crash recovery by *other* consumers.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

STOP_GRACE_S = 10.0
READY_MARK = b" reading "
"""``msgrelay consume`` prints "consumer NAME reading ..." once it is set up, even with --quiet."""


@dataclass(slots=True)
class WorkerSpec:
    """What every worker of a pool runs: a command (``--name NAME`` is appended) and its environment."""

    redis_url: str
    log_dir: Path
    transport: str = "streams"
    batch_size: int = 100
    block_timeout_s: float = 0.5
    env: Mapping[str, str] = field(default_factory=dict)
    script: Path | None = None
    """Run this script instead of ``python -m msgrelay consume`` (same flags and environment)."""
    extra_args: Sequence[str] = ()

    def argv(self, name: str, *, burst: bool = False) -> list[str]:
        head = [sys.executable, str(self.script)] if self.script else [sys.executable, "-m", "msgrelay"]
        return [
            *head,
            "consume",
            "--quiet",
            "--name", name,
            "--log-dir", str(self.log_dir),
            "--redis-url", self.redis_url,
            "--transport", self.transport,
            "--batch-size", str(self.batch_size),
            "--block-timeout", str(self.block_timeout_s),
            *(["--burst"] if burst else []),
            *self.extra_args,
        ]  # fmt: skip

    def environment(self) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("MSGRELAY_")}
        if "MSGRELAY_REDIS_SERVER" in os.environ:
            base["MSGRELAY_REDIS_SERVER"] = os.environ["MSGRELAY_REDIS_SERVER"]
        return {**base, "PYTHONUNBUFFERED": "1", **self.env}


class Worker:
    """One worker child process; its output goes to ``<run_dir>/<name>.out``."""

    def __init__(self, spec: WorkerSpec, name: str, run_dir: Path, *, burst: bool = False) -> None:
        self.spec = spec
        self.name = name
        self.output = run_dir / f"{name}.out"
        with self.output.open("wb") as out:
            self.process = subprocess.Popen(
                spec.argv(name, burst=burst),
                stdout=out,
                stderr=subprocess.STDOUT,
                env=spec.environment(),
                cwd=run_dir,
            )
        self.started = time.monotonic()

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def ready(self) -> bool:
        """The worker said it is reading (its signal handlers are installed by then)."""
        try:
            return READY_MARK in self.output.read_bytes()
        except OSError:
            return False

    def signal(self, signum: signal.Signals) -> None:
        if self.alive():
            os.kill(self.pid, signum)

    def wait(self, timeout_s: float) -> int | None:
        """The exit code, or None if still running after ``timeout_s``."""
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        if self.alive():
            os.kill(self.pid, signal.SIGCONT)
            self.process.kill()
        self.process.wait(timeout=STOP_GRACE_S)

    def tail(self, lines: int = 5) -> str:
        try:
            return "\n".join(self.output.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class WorkerPool:
    """``size`` slots of workers; every restart of a slot uses a new consumer name."""

    def __init__(self, spec: WorkerSpec, size: int, run_dir: Path, prefix: str = "w") -> None:
        self.spec = spec
        self.run_dir = run_dir
        self.prefix = prefix
        self.generation = [0] * size
        self.slots: list[Worker] = []
        self.retired: list[Worker] = []
        for slot in range(size):
            self.slots.append(self._spawn(slot))

    def _spawn(self, slot: int) -> Worker:
        self.generation[slot] += 1
        name = f"{self.prefix}-s{slot}-g{self.generation[slot]}"
        return Worker(self.spec, name, self.run_dir)

    def restart(self, slot: int) -> Worker:
        """Replace the (stopped or dead) worker of ``slot`` by a new one with a new name."""
        old = self.slots[slot]
        if old.alive():
            raise RuntimeError(f"worker {old.name} is still running")
        self.retired.append(old)
        self.slots[slot] = self._spawn(slot)
        return self.slots[slot]

    def kill_and_restart(self, slot: int) -> Worker:
        """SIGKILL the worker of ``slot``, wait for its end, start its replacement; returns the killed one."""
        victim = self.slots[slot]
        victim.signal(signal.SIGKILL)
        victim.wait(5)
        self.restart(slot)
        return victim

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Block until every slot's worker is set up (start-up takes about a second on 2 busy cores)."""
        deadline = time.monotonic() + timeout_s
        while not all(worker.ready() for worker in self.slots):
            dead = [f"{w.name}: {w.tail()}" for w in self.slots if not w.alive()]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(f"workers not ready: {dead or [w.name for w in self.slots]}")
            time.sleep(0.05)

    def ready_slots(self) -> list[int]:
        return [slot for slot, worker in enumerate(self.slots) if worker.alive() and worker.ready()]

    def all_workers(self) -> list[Worker]:
        return [*self.retired, *self.slots]

    def restart_exited(self) -> list[Worker]:
        """Restart every slot whose worker has exited (a crash); returns the workers that had exited."""
        exited = [worker for worker in self.slots if not worker.alive()]
        for worker in exited:
            self.restart(self.slots.index(worker))
        return exited

    def terminate(self, timeout_s: float) -> dict[str, int | None]:
        """SIGTERM every live worker; name -> exit code (None: still running after ``timeout_s``)."""
        for worker in self.slots:
            worker.signal(signal.SIGCONT)
            worker.signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        return {w.name: w.wait(max(0.0, deadline - time.monotonic())) for w in self.slots}

    def kill_all(self) -> None:
        for worker in self.all_workers():
            worker.kill()
