"""Redis faults: SIGKILL of redis-server with AOF (T3), a stalled server (T4), out of memory (T15)."""

from __future__ import annotations

import time

import pytest

from .conftest import MakeRun
from .harness.ledger import LedgerProducer, ProducerPlan
from .harness.report import describe_times
from .harness.run import CLAIM_IDLE_S, SOCKET_TIMEOUT_S, merged, sleep_until

pytestmark = pytest.mark.chaos

EXIT_BOUND_S = 5.0
DOWNTIME_S = 1.0


@pytest.mark.parametrize(
    ("transport", "appendfsync"), [("streams", "everysec"), ("streams", "always"), ("lists", "everysec")]
)
def test_t3_redis_sigkill_with_aof_loses_no_acked_message(
    chaos: MakeRun, transport: str, appendfsync: str
) -> None:
    # Given Redis with AOF, two workers and a producer
    run = chaos(f"T3 redis-kill-aof ({appendfsync})", transport)
    scale = run.scale
    node = run.start_redis(appendfsync=appendfsync)
    pool = run.pool(2)
    rate = scale.rate_per_s / 2
    producer = run.producer(ProducerPlan(scale.t3_messages, rate)).start()
    # Spread the kills (each with DOWNTIME_S of outage) over the producer's run, so each lands mid-run.
    interval = max(0.5, (scale.t3_messages / rate - scale.t3_kills * DOWNTIME_S) / (scale.t3_kills + 1))
    reconnects: list[float | None] = []

    # When redis-server is SIGKILLed mid-run and restarted on the same AOF after 1 s
    for _ in range(scale.t3_kills):
        time.sleep(interval)
        node.sigkill()
        time.sleep(DOWNTIME_S)
        node.restart()
        reconnects.append(_reconnect_time(producer))

    # Then producers and workers carried on by themselves, and every acked message has its line
    outcome = run.finish(producer.ledger)
    run.result.kills = scale.t3_kills
    run.result.recovery = "producer " + describe_times(reconnects)
    exited = [f"{w.name}: {w.tail(12)}" for w in pool.slots if not w.alive()]
    if exited:
        run.note(f"exited workers: {exited}")
    v = outcome.verdict
    assert not exited, f"workers did not survive the redis restarts: {exited}"
    assert outcome.drained, outcome.explain()
    assert (v.lost, v.unexpected, v.torn) == (0, 0, 0), outcome.explain()


@pytest.mark.parametrize("transport", ["streams", "lists"])
def test_t4_a_stalled_redis_hangs_no_worker_and_loses_nothing(chaos: MakeRun, transport: str) -> None:
    # Given workers and a producer (socket timeout 2 s)
    run = chaos("T4 redis-stall", transport)
    scale = run.scale
    node = run.redis()
    pool = run.pool(2)
    producer = run.producer(ProducerPlan(scale.small_messages, scale.rate_per_s / 3)).start()
    stall_s = 2 * CLAIM_IDLE_S if scale.name == "ci" else 10.0

    # When redis-server is SIGSTOPped longer than the socket timeout and the claim idle time
    time.sleep(0.5)
    node.pause()
    time.sleep(stall_s)
    node.resume()
    resumed = time.monotonic()

    # Then work resumes, nothing is lost, and every worker still answers SIGTERM within the bound
    outcome = run.finish(producer.ledger)
    run.result.kills = 1
    run.result.recovery = f"drained {time.monotonic() - resumed:.1f}s after SIGCONT"
    codes = pool.terminate(EXIT_BOUND_S + SOCKET_TIMEOUT_S)
    run.note(f"stall {stall_s:.0f}s; exit codes {codes}")
    v = outcome.verdict
    assert outcome.drained, outcome.explain()
    assert all(code == 0 for code in codes.values()), f"hung or failed workers: {codes}"
    assert (v.lost, v.unexpected, v.torn) == (0, 0, 0), outcome.explain()


@pytest.mark.parametrize("transport", ["streams", "lists"])
def test_t15_redis_out_of_memory_refuses_sends_and_evicts_nothing(chaos: MakeRun, transport: str) -> None:
    # Given Redis with maxmemory 64mb, noeviction, and no consumer running
    run = chaos("T15 redis-oom", transport)
    node = run.start_redis(extra=("--maxmemory", "64mb", "--maxmemory-policy", "noeviction"))
    flood = ProducerPlan(40_000, 1e9, chunk=1, pad=8000, retry_pause_s=0.0, stop_after_failures=50)

    # When producers outpace the (stopped) consumers until Redis refuses writes
    producer = run.producer(flood).start()
    assert producer.join(120)
    refused = producer.ledger
    # ... then workers start and drain, after which sends succeed again
    pool = run.pool(2)

    def drained_or_dead() -> bool:
        return run.state().drained or not any(w.alive() for w in pool.slots)

    sleep_until(drained_or_dead, run.scale.drain_deadline_s, 0.2)
    drained_first = run.state().drained
    after = run.producer(ProducerPlan(100, 1e9, chunk=1, pad=8000)).start()
    assert after.join(60)
    ledger = merged(refused, after.ledger)
    outcome = run.finish(ledger)

    # Then every refusal was recorded as fail (never ok), no key was evicted, nothing acked was lost
    evicted = int(str(node.info("stats")["evicted_keys"]))
    workers = [w.tail(1) if not w.alive() else "alive" for w in pool.slots]
    run.note(
        f"evicted_keys={evicted}; drained before the second producer: {drained_first}; "
        f"first error: {refused.errors[:1]}; workers alive: {workers}"
    )
    v = outcome.verdict
    assert len(refused.fail) > 0, f"Redis never refused a send: {refused.errors[:3]}"
    assert evicted == 0
    assert len(after.ledger.ok) == 100, f"sends did not resume after the drain: {after.ledger.errors[:3]}"
    assert outcome.drained, outcome.explain()
    assert (v.lost, v.unexpected, v.torn, v.fail_seen) == (0, 0, 0, 0), outcome.explain()


def _reconnect_time(producer: LedgerProducer) -> float | None:
    """Seconds from now (a restart) to the producer's next successful send; None if none within 15 s."""
    restarted = time.monotonic()
    if producer.done:
        return None
    sleep_until(lambda: producer.ledger.first_ok_after(restarted) is not None or producer.done, 15)
    first = producer.ledger.first_ok_after(restarted)
    return None if first is None else first - restarted
