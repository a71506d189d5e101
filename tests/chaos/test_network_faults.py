"""T5: every client (producer and workers) talks to Redis through a fault-injecting TCP proxy."""

from __future__ import annotations

import time

import orjson
import pytest

from .conftest import MakeRun
from .harness.checker import STREAM
from .harness.ledger import ProducerPlan
from .harness.run import ChaosRun

BATCH = 100
"""The workers' batch size (``ChaosRun.spec``'s default)."""

pytestmark = pytest.mark.chaos

FAULTS = [("reset", 0), ("blackhole", 0), ("delay", 200), ("throttle", 10_000), ("cut", 300)]
FAULT_S = 2.0


@pytest.mark.parametrize("transport", ["streams", "lists"])
@pytest.mark.parametrize(("mode", "arg"), FAULTS, ids=[mode for mode, _ in FAULTS])
def test_t5_proxy_faults_lose_nothing_and_duplicate_only_unknown_sends(
    chaos: MakeRun, transport: str, mode: str, arg: int
) -> None:
    # Given Redis on loopback TCP behind the proxy, two workers and a producer through it
    run = chaos(f"T5 proxy-{mode}", transport)
    scale = run.scale
    run.start_redis(tcp=True)
    proxy = run.start_proxy()
    pool = run.pool(2, run.spec(url=proxy.url, MSGRELAY_QUEUE__TRIM_INTERVAL_S="0"))
    messages = scale.small_messages
    producer = run.producer(ProducerPlan(messages, messages / 4.0), url=proxy.url).start()

    # When the proxy injects the fault for a while in the middle of the run
    time.sleep(1.0)
    proxy.set_mode(mode, arg)
    time.sleep(FAULT_S)
    proxy.set_mode("pass")
    healed = time.monotonic()

    # Then nothing acked is lost, and a duplicated id is always one whose send had an unknown outcome
    outcome = run.finish(producer.ledger)
    run.result.kills = proxy.resets
    run.result.recovery = f"drained {time.monotonic() - healed:.1f}s after the fault"
    ledger = producer.ledger
    copies = _stored_copies(run) if transport == "streams" else {}
    stored_twice = {i for i, n in copies.items() if n > 1}
    resent_ok = {i for i in stored_twice if i in ledger.ok}
    run.note(
        f"stored twice in the stream: {len(stored_twice)} (of them ok sends: {len(resent_ok)}); "
        f"workers alive: {[w.alive() for w in pool.slots]}; errors: {ledger.errors[:1]}"
    )
    v = outcome.verdict
    assert outcome.drained, outcome.explain()
    assert (v.lost, v.unexpected, v.torn) == (0, 0, 0), outcome.explain()
    assert not resent_ok, f"ok sends stored twice (a silent resend): {sorted(resent_ok)[:5]}"
    # An ok send can still show up twice in the files when the fault cut a consumer's ack after its write:
    # the at-least-once window, at most one batch per fault (effectively-once mode closes it; see T1).
    faults = max(1, proxy.resets)
    assert v.dup_ok <= faults * BATCH, f"{v.dup_ok} duplicate lines of ok sends: {outcome.explain()}"


def _stored_copies(run: object) -> dict[str, int]:

    assert isinstance(run, ChaosRun)
    counts: dict[str, int] = {}
    with run.redis().admin() as client:
        for _entry_id, fields in client.xrange(STREAM):
            message_id = str(orjson.loads(fields[b"m"])["id"])
            counts[message_id] = counts.get(message_id, 0) + 1
    return counts
