"""The benchmark (issue 4) at smoke size, so `make bench` never rots: every scenario runs, against private
redis-servers only, and the page, its JSON and its chart come out with a figure in every row."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SMOKE_TIMEOUT_S = 100  # the run takes ~20 s on two busy cores; the budget is "well under a minute"

NUMBER = re.compile(r"\d[\d,]*(\.\d+)?")
RATIO = re.compile(r"\d+(\.\d+)?\u00d7")  # 2.50 and the multiplication sign

# Table -> rows that must carry a number in every cell after the label.
MEASURED_ROWS = {
    "End to end": [
        "msgrelay streams",
        "msgrelay lists",
        "msgrelay streams (fsync)",
        "msgrelay streams (effectively_once)",
        "msgrelay lists (fsync)",
        "msgrelay lists (effectively_once)",
        "plain streams loop (XREADGROUP + XACK)",
        "plain list loop (LPOP count, unreliable)",
    ],
    "Produce": ["msgrelay streams", "msgrelay lists", "plain streams", "plain list"],
    "Latency": ["msgrelay streams", "msgrelay lists", "plain streams", "plain list"],
    "Memory": ["msgrelay streams", "msgrelay lists", "plain streams", "plain list"],
    "Scaling": [
        "1 consumer, 175 B",
        "2 consumers, 175 B",
        "4 consumers, 175 B",
        "2 consumers, 64 B",
        "2 consumers, 1 KB",
        "2 consumers, 64 KB",
    ],
}
PEERS = ("Celery", "Dramatiq", "Huey", "RQ", "arq")


def tables(page: str) -> dict[str, list[list[str]]]:
    """The page's Markdown tables by their ``## title``: rows of cells (the header and rule dropped)."""
    found: dict[str, list[list[str]]] = {}
    title = ""
    for line in page.splitlines():
        if line.startswith("## "):
            title = line[3:].strip()
        elif line.startswith("|") and title and not line.startswith("|---"):
            found.setdefault(title, []).append([cell.strip() for cell in line.strip("|").split(" | ")])
    return {name: rows[1:] for name, rows in found.items()}


def rows_named(rows: list[list[str]], label: str) -> list[list[str]]:
    return [row for row in rows if row[0].startswith(label)]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench") / "benchmarks.md"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--skip-peers", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=SMOKE_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, textwrap.shorten(done.stderr[-3000:], 3000)
    return out


@pytest.mark.slow
def test_every_measurement_ran(smoke: Path) -> None:
    data = json.loads(smoke.with_suffix(".json").read_text())
    assert data["meta"]["smoke"] and data["meta"]["redis"]
    for key, entry in data["jobs"].items():
        if key.startswith("peer:"):
            assert entry["note"] == "not run (--skip-peers)" and not entry["runs"]
        else:
            assert entry["runs"] and not entry["errors"], key


@pytest.mark.slow
def test_page_has_every_row_with_figures(smoke: Path) -> None:
    page = smoke.read_text()
    found = tables(page)
    for title, labels in MEASURED_ROWS.items():
        for label in labels:
            rows = rows_named(found[title], label)
            assert rows, f"{title}: no row {label!r}"
            for row in rows:
                for cell in row[1:]:
                    assert NUMBER.search(cell) or cell in ("", "—"), f"{title} / {label}: {row}"
    for label in ("plain streams loop", "plain list loop"):
        (row,) = rows_named(found["Ratios"], label)
        assert all(RATIO.fullmatch(cell) for cell in row[1:]), row
    for peer in PEERS:
        (row,) = rows_named(found["Ratios"], peer)
        assert row[1:] == ["not run", "not run"]
        assert rows_named(found["Peers"], peer)
    assert len(found["Goals"]) == 11
    assert all(row[3] in ("yes", "no", "—") for row in found["Goals"])
    assert all(RATIO.search(row[3]) for row in found["Delivery modes"])
    assert "## Appendix" in page  # the hand-written sink/consume mode figures are kept


@pytest.mark.slow
def test_chart_is_a_png(smoke: Path) -> None:
    chart = smoke.with_suffix(".png")
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"]({chart.name})" in smoke.read_text()
