"""``python -m tests.chaos [--full]``: run the chaos suite, print the figures, write docs/reliability.md.

The scenarios run under pytest in a child process (``CHAOS_SCALE`` picks the size); each one appends its
result row to a JSON-lines file, which this command turns into a table and the reliability page.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from .harness.report import RESULTS_ENV, load_results, reliability_page, text_table
from .harness.scale import SCALE_ENV

ROOT = Path(__file__).resolve().parents[2]
FULL_TIMEOUT_S = 3600


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    parser.add_argument("--full", action="store_true", help="1M messages and 20 kills (about an hour)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "reliability.md")
    parser.add_argument("pytest_args", nargs="*", help="passed to pytest (e.g. -k t1)")
    args = parser.parse_args(argv)
    scale = "full" if args.full else "ci"
    with tempfile.TemporaryDirectory(prefix="chaos-results-") as folder:
        results_file = Path(folder) / "results.jsonl"
        env = {**os.environ, SCALE_ENV: scale, RESULTS_ENV: str(results_file)}
        timeout = ["--timeout", str(FULL_TIMEOUT_S)] if args.full else []
        command = [sys.executable, "-m", "pytest", "tests/chaos", "-m", "chaos", "-p", "no:cacheprovider"]
        code = subprocess.run(
            [*command, *timeout, *args.pytest_args], cwd=ROOT, env=env, check=False
        ).returncode
        results = load_results(results_file)
    print()
    print(text_table(results))
    shown = "python -m tests.chaos" + (" --full" if args.full else "")
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(reliability_page(results, command=shown, date=date, scale=scale))
    print(f"\nwrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")
    return code


if __name__ == "__main__":
    sys.exit(main())
