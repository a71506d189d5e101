"""Worker faults: SIGKILL (T1), SIGTERM drain (T2), a paused zombie (T7), poison messages (T10).

The lists rows of T1, T2 and T10 are T18 (lists parity). Every worker is a real process; the checker reads
every line written.
"""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path

import pytest

from .conftest import MakeRun
from .harness.ledger import ProducerPlan
from .harness.report import describe_times
from .harness.run import CLAIM_IDLE_S, MAX_DELIVERIES, kill_while_producing, sleep_until
from .harness.tracker import RecoveryTracker

pytestmark = pytest.mark.chaos

TRANSPORTS = ("streams", "lists")
BATCH = 100
SCRIPTS = Path(__file__).parent / "scripts"


@pytest.mark.parametrize("delivery", ["at_least_once", "effectively_once"])
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_t1_sigkilled_workers_lose_nothing_and_other_consumers_recover_their_batches(
    chaos: MakeRun, transport: str, delivery: str
) -> None:
    # Given W workers (in the given delivery mode) and a producer at a steady rate
    run = chaos("T1 worker-sigkill" + ("" if delivery == "at_least_once" else f" ({delivery})"), transport)
    scale = run.scale
    pool = run.pool(4, run.spec(batch_size=BATCH, MSGRELAY_CONSUMER__DELIVERY=delivery))
    producer = run.producer(ProducerPlan(scale.t1_messages, scale.rate_per_s)).start()
    tracker = RecoveryTracker()

    # When a random worker is SIGKILLed every interval and replaced under a new name
    kills = kill_while_producing(
        pool, producer, kills=scale.t1_kills, seed=1, on_turn=lambda: tracker.observe(run.state()),
        tracker=tracker,
    )  # fmt: skip

    # Then every ok message is in its file, the killed consumers' entries were taken over, nothing is held
    outcome = run.finish(
        producer.ledger,
        deadline_s=scale.drain_deadline_s + CLAIM_IDLE_S,
        on_poll=lambda: tracker.observe(run.state()),
    )
    run.result.kills = kills
    run.result.recovery = describe_times(tracker.times())
    v = outcome.verdict
    assert outcome.drained, f"not drained (no crash recovery by other consumers?): {outcome.explain()}"
    assert not tracker.unrecovered(), f"killed consumers still hold entries: {tracker.unrecovered()}"
    assert (v.lost, v.unexpected, v.torn) == (0, 0, 0), outcome.explain()
    assert v.dup <= (kills * BATCH if delivery == "at_least_once" else 0), outcome.explain()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_t2_sigterm_drains_the_batch_in_flight_without_a_duplicate(chaos: MakeRun, transport: str) -> None:
    # Given W workers and a producer
    run = chaos("T2 worker-sigterm-drain", transport)
    scale = run.scale
    pool = run.pool(3, run.spec(batch_size=BATCH))
    producer = run.producer(ProducerPlan(scale.t2_messages, scale.rate_per_s)).start()
    interval = scale.t2_messages / scale.rate_per_s / scale.t2_terms
    rng = random.Random(2)
    exit_times: list[float | None] = []
    problems: list[str] = []

    # When a random worker gets SIGTERM every interval
    terms = 0
    deadline = time.monotonic() + 3 * scale.t2_messages / scale.rate_per_s + 30
    while terms < scale.t2_terms and time.monotonic() < deadline:
        time.sleep(interval)
        if not sleep_until(lambda: bool(pool.ready_slots()), 10):
            problems.append("no worker became ready")
            break
        slot = rng.choice(pool.ready_slots())
        victim = pool.slots[slot]
        sent = time.monotonic()
        victim.signal(signal.SIGTERM)
        code = victim.wait(5.0)
        exit_times.append(None if code is None else time.monotonic() - sent)
        if code != 0:
            problems.append(f"{victim.name} exit={code}: {victim.tail()}")
            victim.kill()
        left = run.state().held_by.get(victim.name, 0)
        if left:
            problems.append(f"{victim.name} left {left} entries pending")
        pool.restart(slot)
        terms += 1

    # Then each exits 0 within the bound, leaves nothing pending, and nothing is written twice
    outcome = run.finish(producer.ledger)
    run.result.kills = terms
    run.result.recovery = "exit " + describe_times(exit_times)
    v = outcome.verdict
    assert not problems, problems
    assert outcome.drained, outcome.explain()
    assert (v.lost, v.unexpected, v.torn, v.dup) == (0, 0, 0, 0), outcome.explain()


def test_t7_a_paused_zombie_worker_makes_duplicates_never_a_loss(chaos: MakeRun) -> None:
    # Given two workers under load
    run = chaos("T7 worker-pause-zombie", "streams")
    scale = run.scale
    # batch_wait: a worker holds a partial batch while it waits to fill it, so a SIGSTOP catches one held
    pool = run.pool(2, run.spec(batch_size=10 * BATCH, MSGRELAY_CONSUMER__BATCH_WAIT_S="0.3"))
    producer = run.producer(ProducerPlan(scale.small_messages, scale.rate_per_s / 3)).start()
    held_total = 0
    rounds: list[str] = []

    # When a worker holding a batch is SIGSTOPped for 2 x claim_idle_s, then resumed
    for _ in range(2):
        zombie = pool.slots[0]
        held = 0
        for _attempt in range(100):  # stop it at a moment it holds entries
            zombie.signal(signal.SIGSTOP)
            held = run.state().held_by.get(zombie.name, 0)
            if held:
                break
            zombie.signal(signal.SIGCONT)
            time.sleep(0.03)
        stopped = time.monotonic()
        taken_over = False
        while time.monotonic() - stopped < 2 * CLAIM_IDLE_S:
            # A read it sent before the stop can still be served while it sleeps (the server adds those
            # entries to its pending list): they are held too, so the most it is seen holding counts.
            holding = run.state().held_by.get(zombie.name, 0)
            held = max(held, holding)
            taken_over = taken_over or holding == 0
            time.sleep(0.1)
        zombie.signal(signal.SIGCONT)
        held_total += held
        rounds.append(f"held={held} taken_over={taken_over}")

    # Then others took its batch over while it slept; its late write gives duplicates only
    outcome = run.finish(producer.ledger)
    run.result.kills = len(rounds)
    run.note("zombie rounds: " + ", ".join(rounds))
    v = outcome.verdict
    assert held_total > 0, "never caught the worker holding a batch"
    assert all("taken_over=True" in r for r in rounds), (
        f"entries of a paused worker never reclaimed: {rounds}"
    )
    assert outcome.drained, outcome.explain()
    assert (v.lost, v.unexpected, v.torn) == (0, 0, 0), outcome.explain()
    assert v.dup <= held_total, outcome.explain()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_t10_poison_messages_reach_the_dead_letters_after_max_deliveries(
    chaos: MakeRun, transport: str
) -> None:
    # Given workers whose sink kills the process on POISON-EXIT, restarted (new name) whenever one dies
    run = chaos("T10 poison", transport)
    scale = run.scale
    spec = run.spec(batch_size=20)
    spec.script = SCRIPTS / "poison_worker.py"
    pool = run.pool(2, spec, prefix="p")
    every = max(2, scale.small_messages // scale.poison)
    producer = run.producer(
        ProducerPlan(scale.small_messages, scale.rate_per_s / 2, poison_every=every)
    ).start()
    crashes = 0

    def supervise() -> None:
        nonlocal crashes
        crashes += len(pool.restart_exited())

    # When poison messages arrive among good ones
    while not producer.done:
        supervise()
        time.sleep(0.1)
    poison = producer.ledger.poison
    outcome = run.finish(
        producer.ledger,
        deadline_s=scale.drain_deadline_s + 2 * MAX_DELIVERIES * CLAIM_IDLE_S,
        expect_absent=poison,
        on_poll=supervise,
    )

    # Then each poison id is dead-lettered after exactly max_deliveries, and every good message is written
    run.result.kills = crashes
    # The DLQ record carries the delivery that gave up: the (max_deliveries + 1)-th, after max that crashed
    crashed_deliveries = sorted({n - 1 for i, n in outcome.state.dlq_attempts.items() if i in poison})
    run.note(f"poison={len(poison)} crashes={crashes} crashing deliveries per poison={crashed_deliveries}")
    v = outcome.verdict
    assert outcome.drained, outcome.explain()
    assert set(outcome.state.dlq_ids) == poison, (
        f"DLQ has {len(outcome.state.dlq_ids)} ids, {len(poison & outcome.state.dlq_ids)} of the "
        f"{len(poison)} poison; {outcome.explain()}"
    )
    assert crashed_deliveries == [MAX_DELIVERIES], f"deliveries before the DLQ: {crashed_deliveries}"
    assert (v.lost, v.unexpected, v.torn) == (0, 0, 0), outcome.explain()
