"""Negative controls: workers that are wrong on purpose. The checker must catch them (lost > 0)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from .conftest import MakeRun
from .harness.ledger import ProducerPlan
from .harness.workers import Worker

pytestmark = pytest.mark.chaos

SCRIPTS = Path(__file__).parent / "scripts"
WORK_BEFORE_KILL_S = 0.8
"""Python start-up plus some batches: a kill during start-up proves nothing."""
CONTROLS = [("streams", "ack_before_write.py"), ("lists", "brpop_worker.py")]


@pytest.mark.parametrize(("transport", "script"), CONTROLS, ids=["ack-before-write", "bare-brpop"])
def test_negative_control_an_unsafe_worker_killed_mid_run_is_caught_losing_messages(
    chaos: MakeRun, transport: str, script: str
) -> None:
    # Given an unsafe worker (acks before it writes / pops before it writes)
    run = chaos(f"NC {script.removesuffix('.py')}", transport)
    spec = run.spec()
    spec.script = SCRIPTS / script
    pool = run.pool(1, spec, prefix="bad")
    producer = run.producer(ProducerPlan(run.scale.small_messages, run.scale.rate_per_s / 4)).start()

    # When it is SIGKILLed repeatedly mid-run (each time after it has been working for a while)
    kills = 0
    while not producer.done:
        time.sleep(0.1)
        victim = pool.slots[0]
        if time.monotonic() - victim.started < WORK_BEFORE_KILL_S:
            continue
        victim.signal(signal.SIGKILL)
        victim.wait(5)
        pool.restart(0)
        kills += 1
    pool.slots[0].kill()
    # ... and a correct worker drains what is left, under each dead worker's name (taking back its entries)
    codes = {}
    for dead in pool.all_workers():
        drain = Worker(run.spec(), dead.name, run.root, burst=True)
        codes[dead.name] = drain.wait(60)
        drain.kill()

    # Then the checker reports the loss
    outcome = run.finish(producer.ledger)
    run.result.kills = kills
    assert set(codes.values()) == {0}, codes
    assert outcome.drained, outcome.explain()
    assert outcome.verdict.lost > 0, f"the checker did not see the unsafe worker's loss: {outcome.explain()}"
