"""Chaos fixtures: ``chaos(scenario, transport)`` builds a :class:`ChaosRun`, torn down after the test.

Each run's result row is written to ``$CHAOS_RESULTS`` (JSON lines) with the test's outcome, for the report.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest

from .harness.report import RESULTS_ENV, ScenarioResult, append_result
from .harness.run import ChaosRun
from .harness.scale import current_scale

_RUNS = pytest.StashKey[list[ChaosRun]]()

MakeRun = Callable[[str, str], ChaosRun]
NOTE_CHARS = 1500


@pytest.fixture
def chaos(request: pytest.FixtureRequest) -> Iterator[MakeRun]:
    runs: list[ChaosRun] = []
    request.node.stash[_RUNS] = runs
    roots: list[Path] = []

    def make(scenario: str, transport: str) -> ChaosRun:
        # A short private folder: the redis unix socket path must stay under 108 bytes.
        root = Path(tempfile.mkdtemp(prefix="chaos-"))
        roots.append(root)
        run = ChaosRun(scenario, transport, root, current_scale(), ScenarioResult(scenario, transport))
        runs.append(run)
        return run

    yield make
    for run in runs:
        run.teardown()
    for root in roots:
        shutil.rmtree(root, ignore_errors=True)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, None, None]:
    outcome = yield
    report = outcome.get_result()
    if report.when != "call":
        return
    target = os.environ.get(RESULTS_ENV)
    for run in item.stash.get(_RUNS, []):
        if run.scenario.startswith("harness"):
            continue  # the harness testing itself: not a scenario row
        run.result.outcome = "PASS" if report.passed else "FAIL"
        if report.failed and call.excinfo is not None:
            reason = " | ".join(str(call.excinfo.value).splitlines())
            run.note(f"failed: {reason[:NOTE_CHARS]}")
        if target:
            append_result(Path(target), run.result)
