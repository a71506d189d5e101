"""One chaos run: a private Redis, its workers and producers, and the final check, torn down in one place."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .checker import QueueState, Verdict, judge, queue_state, read_logs, wait_drained
from .ledger import Ledger, LedgerProducer, ProducerPlan
from .proxy import FaultProxy
from .redis_node import RedisNode
from .report import ScenarioResult
from .scale import Scale
from .tracker import RecoveryTracker
from .workers import WorkerPool, WorkerSpec

CLAIM_IDLE_S = 2.0
MAX_DELIVERIES = 3
SOCKET_TIMEOUT_S = 2.0


def worker_env(**overrides: str) -> dict[str, str]:
    """The MSGRELAY_* settings every chaos worker gets (short timeouts so faults resolve in seconds)."""
    return {
        "MSGRELAY_CONSUMER__CLAIM_IDLE_S": str(CLAIM_IDLE_S),
        "MSGRELAY_CONSUMER__MAX_DELIVERIES": str(MAX_DELIVERIES),
        "MSGRELAY_CONSUMER__RETRY_BACKOFF_S": "0.2",
        "MSGRELAY_CONSUMER__RETRY_BACKOFF_CAP_S": "1.0",
        "MSGRELAY_REDIS__SOCKET_TIMEOUT_S": str(SOCKET_TIMEOUT_S),
        "MSGRELAY_REDIS__CONNECT_TIMEOUT_S": "1.0",
        **overrides,
    }


@dataclass(slots=True)
class Outcome:
    """What :meth:`ChaosRun.finish` found."""

    verdict: Verdict
    state: QueueState
    drained: bool
    drain_s: float

    def explain(self) -> str:
        drained = f"drained={self.drained} after {self.drain_s:.1f}s"
        return f"{self.verdict.figures()}; {drained}; {self.state.summary()}"


@dataclass(slots=True)
class ChaosRun:
    scenario: str
    transport: str
    root: Path
    scale: Scale
    result: ScenarioResult
    node: RedisNode | None = None
    proxy: FaultProxy | None = None
    pools: list[WorkerPool] = field(default_factory=list)
    producers: list[LedgerProducer] = field(default_factory=list)
    cleanups: list[Callable[[], None]] = field(default_factory=list)

    @property
    def log_dir(self) -> Path:
        return self.root / "logs"

    def start_redis(
        self, *, tcp: bool = False, appendfsync: str = "everysec", extra: tuple[str, ...] = ()
    ) -> RedisNode:
        self.node = RedisNode(self.root / "redis", tcp=tcp, appendfsync=appendfsync, extra_args=extra).start()
        return self.node

    def redis(self) -> RedisNode:
        if self.node is None:
            self.node = self.start_redis()
        return self.node

    def start_proxy(self) -> FaultProxy:
        node = self.redis()
        assert node.port is not None, "the proxy needs a TCP redis (start_redis(tcp=True))"
        self.proxy = FaultProxy(node.port).start()
        return self.proxy

    def spec(self, *, url: str | None = None, batch_size: int = 100, **env: str) -> WorkerSpec:
        return WorkerSpec(
            redis_url=url or self.redis().url,
            log_dir=self.log_dir,
            transport=self.transport,
            batch_size=batch_size,
            env=worker_env(**env),
        )

    def pool(self, size: int, spec: WorkerSpec | None = None, prefix: str = "w") -> WorkerPool:
        runs = self.root / "workers"
        runs.mkdir(exist_ok=True)
        pool = WorkerPool(spec or self.spec(), size, runs, prefix=prefix)
        self.pools.append(pool)
        pool.wait_ready()
        return pool

    def producer(self, plan: ProducerPlan, *, url: str | None = None) -> LedgerProducer:
        producer = LedgerProducer(url or self.redis().url, self.transport, plan)
        self.producers.append(producer)
        return producer

    def state(self) -> QueueState:
        return queue_state(self.redis(), self.transport)

    def finish(
        self,
        ledger: Ledger,
        *,
        deadline_s: float | None = None,
        expect_absent: set[str] | None = None,
        on_poll: Callable[[], None] | None = None,
        before_check: Callable[[], None] | None = None,
        dropped: frozenset[str] = frozenset(),
    ) -> Outcome:
        """Wait for every producer, then for the queue to drain; read the logs and fill the result row.
        ``before_check`` runs between the two (e.g. stop the workers: no compression while reading)."""
        for producer in self.producers:
            producer.join(120)
        drained, state, waited = wait_drained(
            self.redis(), self.transport, deadline_s or self.scale.drain_deadline_s, on_poll=on_poll
        )
        if before_check is not None:
            before_check()
        verdict = judge(ledger, read_logs(self.log_dir), expect_absent=expect_absent, dropped=dropped)
        self.fill(verdict)
        outcome = Outcome(verdict, state, drained, waited)
        self.note(outcome.explain())
        return outcome

    def fill(self, verdict: Verdict) -> None:
        r = self.result
        r.ok, r.fail, r.unknown, r.lost = verdict.ok, verdict.fail, verdict.unknown, verdict.lost
        r.dropped = verdict.dropped
        r.recovered, r.unexpected, r.dup, r.torn = (
            verdict.recovered,
            verdict.unexpected,
            verdict.dup,
            verdict.torn,
        )

    def note(self, text: str) -> None:
        self.result.notes = f"{self.result.notes}; {text}" if self.result.notes else text

    def teardown(self) -> None:
        for producer in self.producers:
            producer.stop()
        for pool in self.pools:
            pool.kill_all()
        for producer in self.producers:
            producer.join(10)
        if self.proxy is not None:
            self.proxy.stop()
        for cleanup in reversed(self.cleanups):
            cleanup()
        if self.node is not None:
            self.node.stop()


def merged(*ledgers: Ledger) -> Ledger:
    total = Ledger()
    for ledger in ledgers:
        total.ok |= ledger.ok
        total.fail |= ledger.fail
        total.unknown |= ledger.unknown
        total.poison |= ledger.poison
        total.types.update(ledger.types)
        total.errors += ledger.errors
        total.ok_times += ledger.ok_times
    return total


def kill_while_producing(
    pool: WorkerPool,
    producer: LedgerProducer,
    *,
    kills: int,
    seed: int,
    on_turn: Callable[[], None],
    tracker: RecoveryTracker,
) -> int:
    """SIGKILL a random ready worker of ``pool`` (replaced under a new name) every so often, spread over the
    producer's run, until ``kills`` were done and the producer is done. ``on_turn`` runs every 0.1 s turn
    (observe the queue state, restart crashed workers). Returns the kills done."""
    total_s = producer.plan.total / producer.plan.rate_per_s
    interval = total_s / kills
    rng = random.Random(seed)
    done = 0
    next_kill = time.monotonic() + interval / 2
    deadline = time.monotonic() + 3 * total_s + 30
    while (done < kills or not producer.done) and time.monotonic() < deadline:
        on_turn()
        ready = pool.ready_slots()
        if done < kills and time.monotonic() >= next_kill and ready:
            tracker.killed(pool.kill_and_restart(rng.choice(ready)).name)
            done += 1
            next_kill = time.monotonic() + interval
        time.sleep(0.1)
    return done


def sleep_until(predicate: Callable[[], bool], timeout_s: float, step_s: float = 0.05) -> bool:
    """Poll ``predicate`` until true or ``timeout_s`` passes (bounded, never a bare sleep)."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(step_s)
    return True
