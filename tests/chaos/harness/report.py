"""One result row per scenario run, the table ``python -m tests.chaos`` prints, and docs/reliability.md."""

from __future__ import annotations

import dataclasses
import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

RESULTS_ENV = "CHAOS_RESULTS"
COLUMNS = (
    ("scenario", "scenario"),
    ("transport", "transport"),
    ("outcome", "result"),
    ("ok", "ok"),
    ("fail", "fail"),
    ("unknown", "unknown"),
    ("lost", "lost"),
    ("dropped", "dropped by Redis"),
    ("recovered", "recovered"),
    ("unexpected", "unexpected"),
    ("dup", "dup"),
    ("torn", "torn"),
    ("kills", "kills"),
    ("recovery", "recovery"),
)


@dataclass(slots=True)
class ScenarioResult:
    scenario: str
    transport: str
    ok: int = 0
    fail: int = 0
    unknown: int = 0
    lost: int = 0
    dropped: int = 0
    recovered: int = 0
    unexpected: int = 0
    dup: int = 0
    torn: int = 0
    kills: int = 0
    recovery: str = "-"
    outcome: str = "?"
    notes: str = ""

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, line: str) -> ScenarioResult:
        return cls(**json.loads(line))


def describe_times(times: Sequence[float | None]) -> str:
    """``p50/max`` of recovery times in seconds; ``never`` counts the ones that did not recover."""
    done = sorted(t for t in times if t is not None)
    never = len(times) - len(done)
    if not done:
        return f"never x{never}" if never else "-"
    text = f"p50 {statistics.median(done):.2f}s / max {done[-1]:.2f}s"
    return text + (f" (never x{never})" if never else "")


def append_result(path: Path, result: ScenarioResult) -> None:
    with path.open("a", encoding="utf-8") as out:
        out.write(result.to_json() + "\n")


def load_results(path: Path) -> list[ScenarioResult]:
    if not path.is_file():
        return []
    return [ScenarioResult.from_json(line) for line in path.read_text().splitlines() if line.strip()]


def _cells(result: ScenarioResult) -> list[str]:
    return [str(getattr(result, attr)) for attr, _ in COLUMNS]


def text_table(results: Sequence[ScenarioResult]) -> str:
    rows = [[title for _, title in COLUMNS], *(_cells(r) for r in results)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows)


def markdown_table(results: Sequence[ScenarioResult]) -> str:
    head = "| " + " | ".join(title for _, title in COLUMNS) + " |"
    rule = "|" + "---|" * len(COLUMNS)
    body = ["| " + " | ".join(_cells(r)) + " |" for r in results]
    return "\n".join([head, rule, *body])


def reliability_page(results: Sequence[ScenarioResult], *, command: str, date: str, scale: str) -> str:
    notes = [f"- **{r.scenario} / {r.transport}**: {r.notes}" for r in results if r.notes]
    return "\n".join(
        [
            "# Reliability: chaos suite figures",
            "",
            f"Command: `{command}` (scale `{scale}`), run {date} on this machine.",
            "",
            "Columns: produced `ok` / `fail` / `unknown` (from the producer's ledger), `lost` = ok ids",
            "with no line (must be 0), `dropped by Redis` = ok ids that Redis itself deleted before any",
            "consumer took them (FLUSHALL, DEL of the queue: read in the same transaction as the deletion,",
            "never counted as lost), `recovered` = unknown sends that did arrive, `unexpected` = lines",
            "whose id was never sent, `dup` = extra copies of a line, `torn` = lines that are not exactly",
            "one whole message, `kills` = faults injected, `recovery` = time for the work to come back.",
            "",
            markdown_table(results),
            "",
            "Notes per run (figures the table has no column for, and why a failed run failed):",
            "",
            *notes,
            "",
            "Caveat: the redis-server kills in T3 are SIGKILLs of the process; the kernel page cache",
            "survives them, so T3 proves that Redis wrote the AOF before replying (write-before-reply),",
            "not that it fsynced it. A power loss with `appendfsync everysec` can still lose about one",
            "second of acked writes.",
            "",
        ]
    )
