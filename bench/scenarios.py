"""One measurement each: a fresh private redis-server, the contestant's processes, one dict of figures.

The contestants are the two plain redis-py loops and msgrelay (``msgrelay consume`` for throughput, its
``Consumer`` with a stamping sink for latency; ``Producer.send_many`` always). End to end, the producer and
the consumers run at once and the rate is N / (producer start -> last line on disk).
"""

from __future__ import annotations

import shutil
from array import array
from dataclasses import dataclass
from pathlib import Path

from bench.common import (
    STOP_TIMEOUT_S,
    Child,
    LineWatcher,
    RssTracker,
    fresh_redis,
    msgrelay_argv,
    used_memory,
    wait_for_lines,
    worker_argv,
)

Figures = dict[str, float]
RELAY_BLOCK_S = "0.1"
"""``msgrelay consume --block-timeout``: only bounds how soon an idle consumer notices SIGTERM."""


@dataclass(frozen=True)
class Contestant:
    """Who processes the messages: ``plain`` loops (transport ``list``/``streams``) or msgrelay
    (``streams``/``lists``, with ``msgrelay consume`` flags for its delivery mode)."""

    key: str
    label: str
    family: str
    transport: str
    flags: tuple[str, ...] = ()

    @property
    def mode(self) -> str:
        if "--fsync" in self.flags:
            return "fsync"
        if "effectively_once" in self.flags:
            return "effectively_once"
        return "at_least_once"

    def producer_argv(self, url: str, messages: int, size: int, rate: float = 0.0) -> list[str]:
        role = "plain-producer" if self.family == "plain" else "relay-producer"
        return worker_argv(
            role, "--url", url, "--transport", self.transport,
            "--messages", str(messages), "--size", str(size), "--rate", str(rate),
        )  # fmt: skip

    def consumer_argv(self, url: str, log_dir: Path) -> list[str]:
        if self.family == "plain":
            return worker_argv(
                "plain-consumer", "--url", url, "--transport", self.transport, "--log-dir", str(log_dir)
            )
        return msgrelay_argv(
            "consume", "-q", "--redis-url", url, "-t", self.transport, "--log-dir", str(log_dir),
            "--block-timeout", RELAY_BLOCK_S, *self.flags,
        )  # fmt: skip

    def latency_consumer_argv(self, url: str, log_dir: Path, out: Path) -> list[str]:
        role = "plain-consumer" if self.family == "plain" else "relay-consumer"
        return worker_argv(
            role, "--url", url, "--transport", self.transport, "--log-dir", str(log_dir),
            "--latency-out", str(out),
        )  # fmt: skip


PLAIN_LIST = Contestant("plain-list", "plain list (LPUSH / LPOP count, unreliable)", "plain", "list")
PLAIN_STREAMS = Contestant("plain-streams", "plain streams (XADD / XREADGROUP + XACK)", "plain", "streams")
MODE_FLAGS = {
    "at_least_once": (),
    "fsync": ("--fsync",),
    "effectively_once": ("--delivery", "effectively_once"),
}


def relay(transport: str, mode: str = "at_least_once") -> Contestant:
    suffix = "" if mode == "at_least_once" else f"-{mode}"
    label = f"msgrelay {transport}" + ("" if mode == "at_least_once" else f" ({mode})")
    return Contestant(f"msgrelay-{transport}{suffix}", label, "relay", transport, MODE_FLAGS[mode])


def _scratch(workdir: Path) -> Path:
    """Each run's folder starts empty and is removed afterwards (a full run writes GBs of lines)."""
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    return workdir


def end_to_end(
    workdir: Path, who: Contestant, messages: int, *, size: int = 175, consumers: int = 1
) -> Figures:
    """Producer and consumers at once; msgs/s from the producer's start to the last line on disk."""
    _scratch(workdir)
    log_dir = workdir / "logs"
    try:
        with fresh_redis(workdir) as server:
            kids = [
                Child(who.consumer_argv(server.url, log_dir), workdir, f"consumer-{n}")
                for n in range(consumers)
            ]
            producer = Child(
                who.producer_argv(server.url, messages, size), workdir, "producer", wants_go=True
            )
            try:
                for child in (*kids, producer):
                    child.wait_ready()
                rss = RssTracker([kid.pid for kid in kids])
                producer.go()
                done_at = wait_for_lines(LineWatcher(log_dir), messages, kids, producer, rss)
                made = producer.result(timeout=STOP_TIMEOUT_S)
            finally:
                for child in (producer, *kids):
                    child.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    rate = messages / max(done_at - made["started"], 1e-6)
    return {
        "msgs_s": rate,
        "mb_s": rate * made["payload_bytes"] / 1e6,
        "rss_mb": rss.max_mb,
        "rss_early_mb": rss.early_mb,
        "payload_bytes": made["payload_bytes"],
        "messages": float(messages),
    }


def produce_only(workdir: Path, who: Contestant, messages: int, *, size: int = 175) -> Figures:
    """One producer process, nobody consuming: msgs/s, and Redis memory per queued message."""
    _scratch(workdir)
    try:
        with fresh_redis(workdir) as server:
            before = used_memory(server)
            producer = Child(
                who.producer_argv(server.url, messages, size), workdir, "producer", wants_go=True
            )
            try:
                producer.wait_ready()
                producer.go()
                made = producer.result()
            finally:
                producer.stop()
            after = used_memory(server)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    per_message = (after - before) / messages
    return {
        "msgs_s": messages / max(made["finished"] - made["started"], 1e-6),
        "redis_bytes_per_msg": per_message,
        "payload_bytes": made["payload_bytes"],
        "bytes_ratio": per_message / made["payload_bytes"],
        "messages": float(messages),
    }


def latency(workdir: Path, who: Contestant, rate: float, seconds: float) -> Figures:
    """Offered load ``rate`` msgs/s in 1 ms batches; p50/p99/max from the message's ts to its line."""
    _scratch(workdir)
    log_dir, samples = workdir / "logs", workdir / "latencies.bin"
    messages = max(1, int(rate * seconds))
    try:
        with fresh_redis(workdir) as server:
            consumer = Child(who.latency_consumer_argv(server.url, log_dir, samples), workdir, "consumer")
            producer = Child(
                who.producer_argv(server.url, messages, 175, rate), workdir, "producer", wants_go=True
            )
            try:
                consumer.wait_ready()
                producer.wait_ready()
                producer.go()
                wait_for_lines(LineWatcher(log_dir), messages, [consumer], producer)
                made = producer.result(timeout=STOP_TIMEOUT_S)
            finally:
                producer.stop()
                consumer.stop()  # it writes its latencies on the way out
        values = _read_doubles(samples)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    values.sort()
    return {
        "offered_msgs_s": rate,
        "achieved_msgs_s": messages / max(made["finished"] - made["started"], 1e-6),
        "p50_ms": _percentile(values, 0.50) * 1000,
        "p99_ms": _percentile(values, 0.99) * 1000,
        "max_ms": values[-1] * 1000,
        "messages": float(messages),
    }


def _read_doubles(path: Path) -> list[float]:
    values = array("d")
    values.frombytes(path.read_bytes())
    if not values:
        raise ValueError(f"no latencies recorded in {path}")
    return list(values)


def _percentile(ordered: list[float], share: float) -> float:
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]
