"""T6: the log folder runs out of space (a small tmpfs), or one file is /dev/full."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import MakeRun
from .harness.checker import read_logs
from .harness.ledger import ProducerPlan
from .harness.run import ChaosRun, sleep_until

pytestmark = pytest.mark.chaos

FREE_BYTES = 64 * 1024


def _mount_tmpfs(run: ChaosRun, size: str) -> bool:
    run.log_dir.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(run.log_dir)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        return False
    run.cleanups.append(lambda: subprocess.run(["umount", "-l", str(run.log_dir)], check=False))
    return True


def _fill(path: Path, leave_free: int) -> None:
    """Fill the file system of ``path`` until only about ``leave_free`` bytes are left."""
    stat = os.statvfs(path.parent)
    size = max(0, stat.f_bavail * stat.f_frsize - leave_free)
    with path.open("wb") as filler:
        filler.write(b"\0" * size)


@pytest.mark.parametrize("transport", ["streams", "lists"])
def test_t6_a_full_disk_acks_nothing_unwritten_and_leaves_no_torn_line(
    chaos: MakeRun, transport: str
) -> None:
    # Given the log folder on a 2 MB tmpfs with 64 KiB left, and two workers
    run = chaos("T6 disk-full (tmpfs)", transport)
    if not _mount_tmpfs(run, "2m"):
        pytest.skip("mount -t tmpfs is not permitted here (the /dev/full variant still runs)")
    filler = run.log_dir / "filler"
    _fill(filler, FREE_BYTES)
    pool = run.pool(2)

    # When more is produced than fits
    producer = run.producer(ProducerPlan(run.scale.small_messages, run.scale.rate_per_s)).start()
    producer.join(60)
    blocked = sleep_until(lambda: not run.state().drained, 5)
    time.sleep(2.0)  # the workers keep failing and backing off while the disk is full
    stuck = run.state()

    # Then, once space returns, everything arrives, and no partial write is left as a torn line
    filler.unlink()
    outcome = run.finish(producer.ledger)
    run.result.kills = 1
    run.note(f"while full: {stuck.summary()}; workers alive: {[w.alive() for w in pool.slots]}")
    v = outcome.verdict
    assert blocked and not stuck.drained, "the disk never filled up: nothing was held back"
    assert outcome.drained, outcome.explain()
    assert (v.lost, v.unexpected, v.torn) == (0, 0, 0), f"{outcome.explain()}; torn: {v.torn_sample[:2]}"


@pytest.mark.parametrize("transport", ["streams", "lists"])
def test_t6_one_unwritable_file_does_not_stop_the_other_types(chaos: MakeRun, transport: str) -> None:
    # Given error.log is a link to /dev/full (every write fails with ENOSPC)
    run = chaos("T6 disk-full (/dev/full error.log)", transport)
    run.log_dir.mkdir(parents=True)
    error_log = run.log_dir / "error.log"
    error_log.symlink_to("/dev/full")
    pool = run.pool(2)

    # When messages of every type are produced
    producer = run.producer(ProducerPlan(run.scale.small_messages, run.scale.rate_per_s)).start()
    producer.join(60)
    ledger = producer.ledger
    others = {i for i in ledger.ok if ledger.types[i] != "ERROR"}

    def others_written() -> bool:
        return others <= set(read_logs(run.log_dir).counts)

    flowing = sleep_until(others_written, run.scale.drain_deadline_s, 0.5)
    missing = len(others - set(read_logs(run.log_dir).counts))

    # Then the other types were written meanwhile; once error.log is writable again, all of it arrives
    error_log.unlink()
    outcome = run.finish(ledger)
    run.result.kills = 1
    run.note(
        f"non-ERROR lines missing while error.log failed: {missing} of {len(others)}; "
        f"workers alive: {[w.alive() for w in pool.slots]}"
    )
    v = outcome.verdict
    assert flowing, f"{missing} of {len(others)} non-ERROR messages stuck behind the failing error.log"
    assert outcome.drained, outcome.explain()
    assert (v.lost, v.unexpected, v.torn) == (0, 0, 0), outcome.explain()
