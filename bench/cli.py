"""``python -m bench``: plan the jobs of the chosen scenarios, run each ``--repeat`` times, write the report.

Repeats are interleaved (every job once, then every job again ...) so that a burst of load from elsewhere
on a shared machine spreads over the contestants instead of hitting one of them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from rich.console import Console

from bench import report
from bench.common import REPO_ROOT, BenchError, cores, cpu_model, fresh_redis, redis_version
from bench.peer_runs import LABELS, PEERS, PeerSetup, run_peer, suggested_sizes
from bench.scenarios import (
    PLAIN_LIST,
    PLAIN_STREAMS,
    Contestant,
    Figures,
    end_to_end,
    latency,
    produce_only,
    relay,
)

SCENARIOS = ("e2e", "modes", "produce", "latency", "memory", "scaling", "peers")
LATENCY_RATES = (50_000, 10_000)
SCALE_CONSUMERS = (1, 4)  # and 2: the end-to-end row
SCALE_SIZES = (64, 1024, 64_000)
"""64 KB is 64,000 bytes: msgrelay's envelope must still fit its default 64 KiB message limit."""

# Progress goes to stderr, the tables to stdout; a pipe (CI, a log file) gets wide tables, not 80 columns.
console = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 120)
tables_out = Console(highlight=False, width=None if sys.stdout.isatty() else 120)


@dataclass(frozen=True)
class Sizes:
    """How many messages (or seconds) each kind of job gets."""

    e2e: int
    e2e_fast: int
    e2e_slow: int
    produce: int
    latency_s: float
    long_run: int
    scale: int
    scale_1k: int
    scale_64k: int
    peers: dict[str, int] = field(default_factory=dict)


FULL = Sizes(
    e2e=2_000_000,
    e2e_fast=5_000_000,  # the unreliable list loop does ~1M msgs/s: a run of several seconds
    e2e_slow=1_000_000,
    produce=1_000_000,
    latency_s=10.0,
    long_run=10_000_000,
    scale=1_000_000,
    scale_1k=500_000,
    scale_64k=10_000,
    # used when bench/peers/run_peer.py does not suggest its own (SUGGESTED_MESSAGES / SMOKE_MESSAGES)
    peers={"celery": 20_000, "dramatiq": 60_000, "huey": 100_000, "rq": 1_500, "arq": 30_000},
)
SMOKE = Sizes(
    e2e=5_000,
    e2e_fast=5_000,
    e2e_slow=3_000,
    produce=5_000,
    latency_s=0.25,
    long_run=20_000,
    scale=3_000,
    scale_1k=2_000,
    scale_64k=200,
    peers={"celery": 300, "dramatiq": 300, "huey": 300, "rq": 50, "arq": 300},
)

Outcome = tuple[Figures, str]


@dataclass(frozen=True)
class Job:
    """One measurement, run once per repeat (``repeat=False``: once in all)."""

    key: str
    scenario: str
    label: str
    run: Callable[[Path], Outcome] | None
    repeat: bool = True
    unavailable: str = ""


def _plain(run: Callable[[Path], Figures]) -> Callable[[Path], Outcome]:
    return lambda workdir: (run(workdir), "")


E2E_CONSUMERS = 2
"""Consumer processes of the end-to-end runs: one per core, as the peers run (Celery prefork 2, Dramatiq 2
processes ...). The scaling table shows 1, 2 and 4."""


def e2e_job(who: Contestant, messages: int, scenario: str = "e2e") -> Job:
    run = partial(end_to_end, who=who, messages=messages, consumers=E2E_CONSUMERS)
    return Job(f"e2e:{who.key}", scenario, who.label, _plain(run))


def e2e_jobs(sizes: Sizes) -> list[Job]:
    return [
        e2e_job(relay("streams"), sizes.e2e),
        e2e_job(relay("lists"), sizes.e2e),
        e2e_job(PLAIN_STREAMS, sizes.e2e_slow),
        e2e_job(PLAIN_LIST, sizes.e2e_fast),
    ]


def mode_jobs(sizes: Sizes) -> list[Job]:
    jobs = [e2e_job(relay("streams"), sizes.e2e), e2e_job(relay("lists"), sizes.e2e)]
    for transport in ("streams", "lists"):
        jobs += [
            e2e_job(relay(transport, mode), sizes.e2e_slow, "modes") for mode in ("fsync", "effectively_once")
        ]
    return jobs


def produce_jobs(sizes: Sizes) -> list[Job]:
    return [
        Job(
            f"produce:{who.key}",
            "produce",
            who.label,
            _plain(partial(produce_only, who=who, messages=sizes.produce)),
        )
        for who in (relay("streams"), relay("lists"), PLAIN_STREAMS, PLAIN_LIST)
    ]


def latency_jobs(sizes: Sizes) -> list[Job]:
    return [
        Job(
            f"latency:{who.key}@{rate}",
            "latency",
            who.label,
            _plain(partial(latency, who=who, rate=rate, seconds=sizes.latency_s)),
        )
        for rate in LATENCY_RATES
        for who in (relay("streams"), relay("lists"), PLAIN_STREAMS, PLAIN_LIST)
    ]


def memory_jobs(sizes: Sizes) -> list[Job]:
    """Redis bytes per message come from the produce-only runs; consumer RSS from one long run."""
    who = relay("streams")
    long_run = Job(
        "rss:long",
        "memory",
        f"{who.label} consumer, {sizes.long_run:,} messages",
        _plain(partial(end_to_end, who=who, messages=sizes.long_run)),
        repeat=False,
    )
    return [*produce_jobs(sizes), long_run]


def scaling_jobs(sizes: Sizes) -> list[Job]:
    who = relay("streams")
    jobs = [e2e_job(who, sizes.e2e)]
    for consumers in SCALE_CONSUMERS:
        run = _plain(partial(end_to_end, who=who, messages=sizes.scale, consumers=consumers))
        jobs.append(Job(f"scale:consumers-{consumers}", "scaling", f"{consumers} consumers, 175 B", run))
    for size in SCALE_SIZES:
        count = {64: sizes.scale, 1024: sizes.scale_1k}.get(size, sizes.scale_64k)
        run = _plain(partial(end_to_end, who=who, messages=count, size=size, consumers=E2E_CONSUMERS))
        jobs.append(Job(f"scale:size-{size}", "scaling", f"{E2E_CONSUMERS} consumers, {size:,} B", run))
    return jobs


def peer_jobs(sizes: Sizes, setup: PeerSetup, skip: bool) -> list[Job]:
    jobs = []
    counts = {**sizes.peers, **({} if skip else suggested_sizes(setup, smoke=sizes is SMOKE))}
    for peer in PEERS:
        reason = "not run (--skip-peers)" if skip else setup.missing(peer)
        messages = counts[peer]
        run = None if reason else partial(run_peer, setup=setup, peer=peer, messages=messages)
        jobs.append(Job(f"peer:{peer}", "peers", LABELS[peer], run, unavailable=reason or ""))
    return jobs


def plan(sizes: Sizes, only: Sequence[str], setup: PeerSetup, skip_peers: bool) -> list[Job]:
    """The jobs of the chosen scenarios, each once (scenarios share some: the default e2e rows ...)."""
    builders: dict[str, Callable[[], list[Job]]] = {
        "e2e": lambda: e2e_jobs(sizes),
        "modes": lambda: mode_jobs(sizes),
        "produce": lambda: produce_jobs(sizes),
        "latency": lambda: latency_jobs(sizes),
        "memory": lambda: memory_jobs(sizes),
        "scaling": lambda: scaling_jobs(sizes),
        "peers": lambda: peer_jobs(sizes, setup, skip_peers),
    }
    jobs: dict[str, Job] = {}
    for scenario in SCENARIOS:
        if scenario in only:
            for job in builders[scenario]():
                jobs.setdefault(job.key, job)
    return list(jobs.values())


def run_jobs(jobs: Sequence[Job], repeat: int, scratch: Path) -> dict[str, dict[str, Any]]:
    """Every job once per turn; a failed run is recorded (and printed) and the others go on."""
    results = {job.key: _entry(job) for job in jobs}
    _announce_unavailable(jobs)
    todo = [(turn, job) for turn in range(repeat) for job in jobs if job.run and (job.repeat or turn == 0)]
    for number, (turn, job) in enumerate(todo, 1):
        prefix = f"[{number}/{len(todo)}] {job.key} run {turn + 1}:"
        _run_one(job, results[job.key], scratch / job.key.replace(":", "_").replace("@", "_"), prefix)
    return results


def _entry(job: Job) -> dict[str, Any]:
    return {"scenario": job.scenario, "label": job.label, "runs": [], "note": job.unavailable, "errors": []}


def _announce_unavailable(jobs: Sequence[Job]) -> None:
    reasons: dict[str, list[str]] = {}
    for job in jobs:
        if job.unavailable:
            reasons.setdefault(job.unavailable, []).append(job.label)
    for reason, labels in reasons.items():  # one line per reason, not one per peer
        console.print(f"{', '.join(labels)}: {reason}", markup=False)


def _run_one(job: Job, entry: dict[str, Any], workdir: Path, prefix: str) -> None:
    assert job.run is not None
    started = time.monotonic()
    try:
        figures, note = job.run(workdir)
    except (BenchError, OSError, ValueError, subprocess.SubprocessError) as exc:
        entry["errors"].append(str(exc))
        console.print(f"{prefix} FAILED {exc}", markup=False)
        return
    entry["runs"].append(figures)
    entry["note"] = note or entry["note"]
    took = time.monotonic() - started
    console.print(f"{prefix} {report.headline(figures)} ({took:.1f}s)", markup=False)


def machine_facts(args: argparse.Namespace, sizes: Sizes, scratch: Path) -> dict[str, Any]:
    with fresh_redis(scratch / "version") as server:
        version = redis_version(server)
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python -m bench " + " ".join(args.argv),
        "cores": cores(),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "redis": version,
        "kernel": platform.release(),
        "load_average": list(os.getloadavg()),
        "commit": _git_commit(),
        "smoke": args.smoke,
        "repeat": args.repeat,
        "sizes": asdict(sizes),
    }


def _git_commit() -> str:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError:
        return "unknown"
    return done.stdout.strip() or "unknown"


def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="msgrelay vs plain redis-py loops vs the task-queue peers (issue 4); writes the report.",
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, 1 repeat: seconds (what CI runs)")
    parser.add_argument("--repeat", type=int, default=None, help="runs per measurement (default 3; smoke 1)")
    parser.add_argument(
        "--skip-peers", action="store_true", help="do not run Celery, Dramatiq, Huey, RQ, arq"
    )
    parser.add_argument("--only", nargs="+", choices=SCENARIOS, default=list(SCENARIOS), metavar="NAME",
                        help=f"only these scenarios: {', '.join(SCENARIOS)}")  # fmt: skip
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "benchmarks.md",
                        help="the Markdown page; .json and .png are written next to it")  # fmt: skip
    parser.add_argument("--from-json", type=Path, default=None, help="re-render the page from a results JSON")
    parser.add_argument("--peers-script", type=Path, default=PeerSetup.script,
                        help="the peers' adapter script (default bench/peers/run_peer.py)")  # fmt: skip
    parser.add_argument("--peers-venvs", type=Path, default=PeerSetup.venvs,
                        help="where the peers/ and arq/ virtualenvs are (default bench/.venvs)")  # fmt: skip
    args = parser.parse_args(argv)
    args.argv = list(argv)
    if args.repeat is None:
        args.repeat = 1 if args.smoke else 3
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse(sys.argv[1:] if argv is None else argv)
    if args.from_json is not None:
        results = json.loads(args.from_json.read_text())
        report.write(results, args.out, tables_out)
        return
    sizes = SMOKE if args.smoke else FULL
    setup = PeerSetup(args.peers_script.resolve(), args.peers_venvs.resolve())
    jobs = plan(sizes, args.only, setup, args.skip_peers)
    with tempfile.TemporaryDirectory(prefix="msgrelay-bench-") as tmp:
        scratch = Path(tmp)
        results = {"meta": machine_facts(args, sizes, scratch), "jobs": run_jobs(jobs, args.repeat, scratch)}
    report.write(results, args.out, tables_out)
    failed = [key for key, entry in results["jobs"].items() if entry["errors"]]
    if failed:
        console.print(f"failed runs: {', '.join(failed)}", markup=False)
        raise SystemExit(1)
