"""Redis state changes under load (issue 10, section 2): T20 FLUSHALL, T21 DEL of the queue, T22 XGROUP
DESTROY, T23 a failover to a replica and back (two redis-server children, ``FAILOVER``), T24 a restart into
LOADING (a padded dataset loaded slowly with ``key-load-delay``, sped up once every worker said it waits).

Workers are real ``msgrelay consume`` processes; none may exit. Each event lands while messages flow: a
steady producer, plus a burst sent just before it (so the queue holds entries and the workers hold batches at
that instant). Where Redis itself deletes queued messages (FLUSHALL, DEL) the queue is read in the same
transaction as the deletion, and those ids are counted as ``dropped by Redis``, never as lost: everything
else sent ``ok`` must be written, and a producer started after the event must get every send through and
every line written.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import redis

from .conftest import MakeRun
from .harness.checker import BUFFER, GROUP, STREAM, ids_in_queue, read_logs
from .harness.ledger import Ledger, LedgerProducer, ProducerPlan
from .harness.redis_node import RedisNode
from .harness.run import ChaosRun, Outcome, merged, sleep_until
from .harness.workers import WorkerPool

pytestmark = pytest.mark.chaos

TRANSPORTS = ("streams", "lists")
BATCH = 50
WORKERS = 2
IN_FLIGHT = WORKERS * BATCH
"""The most entries in the workers' hands at one instant: what a deletion of the group may deliver twice."""
PADDING_KEYS = 50_000
"""T24: keys added before the restart so the load takes seconds (x ``key-load-delay``)."""
BURST = 600
AFTER = 300


def _start(run: ChaosRun, **env: str) -> tuple[WorkerPool, LedgerProducer]:
    scale = run.scale
    pool = run.pool(WORKERS, run.spec(batch_size=BATCH, **env))
    producer = run.producer(ProducerPlan(scale.states_messages, scale.rate_per_s / 2)).start()
    return pool, producer


def _burst(run: ChaosRun) -> Ledger:
    """``BURST`` messages in one send, returned from just now: the queue holds most of them."""
    burst = run.producer(ProducerPlan(BURST, 1e9, chunk=BURST)).start()
    assert burst.join(30)
    return burst.ledger


def _finish(run: ChaosRun, *ledgers: Ledger, dropped: frozenset[str] = frozenset()) -> Outcome:
    """After the event: a producer whose every send must go through and be written, then the verdict."""
    after = run.producer(ProducerPlan(AFTER, run.scale.rate_per_s / 2)).start()
    assert all(producer.join(120) for producer in run.producers), "a producer did not finish"
    outcome = run.finish(merged(*ledgers, after.ledger), dropped=dropped)
    written = set(read_logs(run.log_dir).counts)
    assert len(after.ledger.ok) == AFTER, f"sends after the event failed: {after.ledger.errors[:3]}"
    assert after.ledger.ok <= written, f"{len(after.ledger.ok - written)} lines sent after the event missing"
    return outcome


def _halfway(producer: LedgerProducer, total: int) -> None:
    """Wait until about half the messages were sent: the event lands while messages flow."""
    assert sleep_until(lambda: producer.sent >= total // 2 or producer.done, 60), "the producer stalled"


def _all_said(pool: WorkerPool, text: str, timeout_s: float = 30.0) -> bool:
    return sleep_until(
        lambda: all(text in w.output.read_text(errors="replace") for w in pool.slots), timeout_s
    )


def _judge(run: ChaosRun, pool: WorkerPool, outcome: Outcome, *, events: int, dup_at_most: int) -> None:
    """No worker exited or printed a traceback, each stops cleanly on SIGTERM; the queue drained, nothing
    acknowledged is lost (``dropped`` apart), nothing torn or unexpected, at most ``dup_at_most`` twice."""
    run.result.kills = events
    exited = [f"{w.name}: {w.tail(8)}" for w in pool.slots if not w.alive()]
    tracebacks = [w.name for w in pool.slots if "Traceback" in w.output.read_text(errors="replace")]
    codes = pool.terminate(10.0)
    run.note(f"exit codes {codes}")
    v = outcome.verdict
    assert not exited, f"workers exited: {exited}"
    assert not tracebacks, f"tracebacks in {tracebacks}"
    assert all(code == 0 for code in codes.values()), codes
    assert outcome.drained, outcome.explain()
    assert (v.lost, v.unexpected, v.torn) == (0, 0, 0), outcome.explain()
    assert v.dup <= dup_at_most, outcome.explain()


def _deletion_scenario(run: ChaosRun, deletion: Callable[[redis.Redis], tuple[object, ...]]) -> None:
    """Workers and a producer; halfway, ``deletion`` runs in one transaction with a read of the queue."""
    node = run.redis()
    pool, producer = _start(run)
    _halfway(producer, run.scale.states_messages)
    burst = _burst(run)
    with node.admin() as client:
        dropped = ids_in_queue(client, run.transport, *deletion(client))
    outcome = _finish(run, producer.ledger, burst, dropped=dropped)
    _judge(run, pool, outcome, events=1, dup_at_most=0)
    # Redis dropped what was queued (entries a worker held were read with the queue, but written)
    assert 0 < outcome.verdict.dropped <= len(dropped), outcome.explain()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_t20_flushall_under_load_stops_no_worker_and_loses_only_what_redis_deleted(
    chaos: MakeRun, transport: str
) -> None:
    _deletion_scenario(chaos("T20 flushall", transport), lambda _client: ("FLUSHALL",))


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_t21_del_of_the_queue_stops_no_worker_and_loses_only_what_redis_deleted(
    chaos: MakeRun, transport: str
) -> None:
    def queue_keys(client: redis.Redis) -> tuple[object, ...]:
        if transport == "streams":
            return ("DEL", STREAM)
        held = [key.decode() for key in client.keys("msgrelay:processing:*")]  # the workers' too
        return ("DEL", BUFFER, *held)

    _deletion_scenario(chaos("T21 del-queue", transport), queue_keys)


def test_t22_xgroup_destroy_under_load_rewrites_no_settled_line_and_loses_nothing(chaos: MakeRun) -> None:
    # Given workers whose trim lags behind (here never trims: the worst case, as when a dead consumer's
    # pending entry holds XTRIM MINID back for claim_idle_s), under load
    run = chaos("T22 xgroup-destroy", "streams")
    node = run.redis()
    pool, producer = _start(run, MSGRELAY_QUEUE__TRIM_INTERVAL_S="0")
    _halfway(producer, run.scale.states_messages)
    burst = _burst(run)

    # When the group is destroyed (before the fix: everything settled and not trimmed was written again)
    with node.admin() as client:
        client.xgroup_destroy(STREAM, GROUP)

    # Then only entries in a worker's hands at the instant of the DESTROY may be written twice
    _judge(run, pool, _finish(run, producer.ledger, burst), events=1, dup_at_most=IN_FLIGHT)


def _role(node: RedisNode) -> str:
    with node.admin() as client:
        return str(client.info("replication")["role"])


def _failover(primary: RedisNode, replica: RedisNode, *, linked: bool = True) -> None:
    """``FAILOVER TO`` the replica (writes paused until it caught up, so nothing is lost) and wait for the
    swap, and (``linked``) for the new replica's link to be up, so that the way back can start."""
    assert replica.port is not None
    with primary.admin() as client:
        client.execute_command("FAILOVER", "TO", "127.0.0.1", replica.port, "TIMEOUT", 10_000)

    def swapped() -> bool:
        if _role(primary) != "slave" or _role(replica) != "master":
            return False
        return not linked or str(primary.info("replication").get("master_link_status")) == "up"

    assert sleep_until(swapped, 30), "the failover did not complete"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_t23_a_failover_to_a_replica_and_back_stops_no_worker_and_loses_nothing(
    chaos: MakeRun, transport: str
) -> None:
    # Given a primary with a replica in sync, workers and a producer on the primary
    run = chaos("T23 replicaof-flip", transport)
    # (no diskless-sync delay: a full sync would wait 5 s for more replicas to join it)
    primary = run.start_redis(tcp=True, extra=("--repl-diskless-sync-delay", "0"))
    replica = RedisNode(run.root / "redis-b", tcp=True).start()
    run.cleanups.append(replica.stop)
    with replica.admin() as client:
        client.execute_command("REPLICAOF", "127.0.0.1", primary.port)
    assert sleep_until(lambda: replica.info("replication").get("master_link_status") == "up", 30)
    pool, producer = _start(run)
    _halfway(producer, run.scale.states_messages)
    burst = _burst(run)

    # When the primary is made a replica (every worker says so), then the primary again
    _failover(primary, replica)
    said = _all_said(pool, "is a read-only replica")
    _failover(replica, primary, linked=False)

    # Then no worker exited, nothing acknowledged is lost, and batches refused mid-settle were kept
    _judge(run, pool, _finish(run, producer.ledger, burst), events=2, dup_at_most=IN_FLIGHT)
    assert said, "not every worker said the server became a replica"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_t24_a_restart_into_loading_stops_no_worker_and_loses_nothing(chaos: MakeRun, transport: str) -> None:
    # Given a padded dataset (so that loading it takes a while), workers and a producer
    run = chaos("T24 restart-loading", transport)
    node = run.redis()
    with node.admin() as client:
        pipe = client.pipeline(transaction=False)
        for i in range(PADDING_KEYS):
            pipe.set(f"padding:{i}", "x")
        pipe.execute()
    pool, producer = _start(run)
    _halfway(producer, run.scale.states_messages)
    burst = _burst(run)

    # When Redis restarts and loads its AOF slowly, until every worker said it waits for the load
    node.stop()
    started = time.monotonic()
    node.restart(extra=("--key-load-delay", "200"), loaded=False)
    said = _all_said(pool, "is loading its dataset")
    with node.admin(timeout_s=30) as client:
        client.config_set("key-load-delay", "0")
    node.wait_ready(30)
    run.result.recovery = f"loading held {time.monotonic() - started:.1f}s"

    # Then no worker exited and nothing acknowledged is lost
    _judge(run, pool, _finish(run, producer.ledger, burst), events=1, dup_at_most=IN_FLIGHT)
    assert said, "not every worker said Redis was loading"
