"""Log rotation under load (issue 10 §1): the real logrotate, and the built-in rotation with workers killed.

R1 logrotate ``create`` (+ ``compress``) and R2 ``copytruncate`` (+ ``compress``, ``delaycompress``) are
forced (``-f``, its own state file) again and again while workers write under a producer's steady load.
R3 is T1 with the built-in rotation on a small ``max_bytes`` (hundreds of rotations, gzip on) and workers
SIGKILLed at random, on both transports and in both delivery modes. The checker reads every file, rotated
and gzipped ones included: every acknowledged id must be there, none torn, none twice where the mode says.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from system_tools import require_tool

from .conftest import MakeRun
from .harness.checker import log_files
from .harness.ledger import ProducerPlan
from .harness.report import describe_times
from .harness.run import CLAIM_IDLE_S, ChaosRun, Outcome, kill_while_producing
from .harness.tracker import RecoveryTracker
from .harness.workers import WorkerPool

pytestmark = pytest.mark.chaos

TRANSPORTS = ("streams", "lists")
MODES = ("at_least_once", "effectively_once")
BATCH = 100
SCRIPTS = Path(__file__).parent / "scripts"
MAX_BYTES = 16 * 1024
STOP_S = 15.0


def logrotate_config(run: ChaosRun, mode: str) -> Path:
    """A logrotate configuration of our own for the run's log folder. ``create`` compresses the rotated file
    at once (gzip reads it, then deletes it: a consumer still writing to it would lose those lines);
    ``copytruncate`` with ``delaycompress``, as its manual advises."""
    compression = "compress" if mode == "create" else "compress\n    delaycompress"
    config = run.root / "logrotate.conf"
    config.write_text(
        f"{run.log_dir}/*.log {{\n"
        "    rotate 1000\n    missingok\n    notifempty\n    nomail\n"
        f"    {compression}\n    {mode}\n}}\n"
    )
    return config


def force_rotation(logrotate: str, config: Path, state: Path) -> None:
    done = subprocess.run(
        [logrotate, "-f", "-s", str(state), str(config)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, f"logrotate failed ({done.returncode}): {done.stderr}"


def stop_workers(pool: WorkerPool) -> None:
    """SIGTERM every worker and wait: nothing is written, rotated or compressed while the checker reads."""
    pool.wait_ready()  # one restarted after a kill may still be starting: it has no handler yet
    codes = pool.terminate(STOP_S)
    assert all(code == 0 for code in codes.values()), f"workers did not stop cleanly: {codes}"


def files_note(run: ChaosRun) -> str:
    names = [path.name for path, _ in log_files(run.log_dir)]
    gzipped = sum(name.endswith(".gz") for name in names)
    return f"{len(names)} log files ({gzipped} gzipped)"


def check(outcome: Outcome, *, dup_allowed: int) -> None:
    v = outcome.verdict
    assert outcome.drained, outcome.explain()
    assert (v.lost, v.unexpected, v.torn) == (0, 0, 0), outcome.explain()
    assert v.dup <= dup_allowed, outcome.explain()


@pytest.mark.parametrize(
    ("mode", "delivery"),
    [("create", "at_least_once"), ("copytruncate", "at_least_once"), ("copytruncate", "effectively_once")],
)
def test_r1_r2_logrotate_under_load_loses_duplicates_and_tears_nothing(
    chaos: MakeRun, mode: str, delivery: str
) -> None:
    # Given two workers under a producer's steady load, and logrotate with a state file of its own
    logrotate = require_tool("logrotate")
    number = "R1" if mode == "create" else "R2"
    suffix = "" if delivery == "at_least_once" else f" ({delivery})"
    run = chaos(f"{number} logrotate {mode}{suffix}", "streams")
    scale = run.scale
    pool = run.pool(2, run.spec(batch_size=BATCH, MSGRELAY_CONSUMER__DELIVERY=delivery))
    producer = run.producer(ProducerPlan(scale.rotation_messages, scale.rate_per_s)).start()
    config, state = logrotate_config(run, mode), run.root / "logrotate.state"
    interval = scale.rotation_messages / scale.rate_per_s / (scale.rotations + 1)

    # When logrotate is forced every interval while messages flow
    rotations = 0
    while rotations < scale.rotations and not producer.done:
        time.sleep(interval)
        if run.log_dir.is_dir():
            force_rotation(logrotate, config, state)
            rotations += 1

    # Then every acknowledged id is in exactly one line of the union of current and rotated files
    outcome = run.finish(producer.ledger, before_check=lambda: stop_workers(pool))
    run.result.kills = rotations
    run.note(f"{rotations} logrotate runs; {files_note(run)}")
    assert rotations >= scale.rotations // 2, f"only {rotations} rotations while messages flowed"
    check(outcome, dup_allowed=0)


@pytest.mark.parametrize("delivery", MODES)
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_r3_builtin_rotation_with_sigkilled_workers_loses_and_tears_nothing(
    chaos: MakeRun, transport: str, delivery: str
) -> None:
    # Given three workers rotating at 16 KiB (gzip on, every rotated file kept) and a steady producer
    suffix = "" if delivery == "at_least_once" else f" ({delivery})"
    run = chaos(f"R3 built-in rotation + worker-sigkill{suffix}", transport)
    scale = run.scale
    spec = run.spec(
        batch_size=BATCH,
        MSGRELAY_CONSUMER__DELIVERY=delivery,
        MSGRELAY_CONSUMER__ROTATION__MAX_BYTES=str(MAX_BYTES),
        MSGRELAY_CONSUMER__ROTATION__KEEP="100000",
        MSGRELAY_CONSUMER__ROTATION__COMPRESS="true",
    )
    if delivery == "effectively_once":
        spec.script = SCRIPTS / "die_after_write.py"  # also dies between a write and its ack, now and then
    pool = run.pool(3, spec)
    producer = run.producer(ProducerPlan(scale.rotation_messages, scale.rate_per_s)).start()
    tracker = RecoveryTracker()
    deaths: list[str] = []

    def supervise() -> None:
        for worker in pool.restart_exited():
            deaths.append(worker.name)
            tracker.killed(worker.name)
        tracker.observe(run.state())

    # When a random worker is SIGKILLed every interval (mid-write, mid-rotation, mid-compression: anywhere)
    kills = kill_while_producing(
        pool, producer, kills=scale.rotation_kills, seed=7, on_turn=supervise, tracker=tracker
    )

    # Then nothing is lost or torn across hundreds of rotations, and no line is doubled in effectively-once
    outcome = run.finish(
        producer.ledger,
        deadline_s=scale.drain_deadline_s + CLAIM_IDLE_S,
        on_poll=supervise,
        before_check=lambda: stop_workers(pool),
    )
    run.result.kills = kills + len(deaths)
    run.result.recovery = describe_times(tracker.times())
    run.note(f"{kills} SIGKILLs, {len(deaths)} deaths between a write and its ack; {files_note(run)}")
    check(outcome, dup_allowed=kills * BATCH if delivery == "at_least_once" else 0)
    assert len(log_files(run.log_dir)) > 20, files_note(run)
