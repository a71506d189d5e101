"""The README's first command: `make demo` runs `msgrelay demo`, which must work with nothing configured."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from msgrelay.levels import TYPE_FILES


def test_demo_starts_a_private_redis_and_writes_every_message_to_its_file(tmp_path: Path) -> None:
    # Given: no Redis configured (the conftest fixture clears MSGRELAY_* and runs in an empty folder)
    # When
    result = subprocess.run(
        [sys.executable, "-m", "msgrelay", "demo", "--count", "500"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, check=False,
    )  # fmt: skip
    # Then: a private server was used and stopped, and every produced message is in a log file
    assert result.returncode == 0, result.stderr
    assert "started a private redis-server" in result.stdout
    assert "private redis-server stopped" in result.stdout
    logs = tmp_path / "application_logs"
    assert sorted(p.name for p in logs.iterdir()) == sorted(TYPE_FILES.values())
    lines = sum(len((logs / name).read_text(encoding="utf-8").splitlines()) for name in TYPE_FILES.values())
    assert lines == 500 + 7  # produced messages + the valid legacy LPUSH entries
    assert "consumed streams: 500 written, 0 dead-lettered" in result.stdout
    assert '"malformed_json":1' in result.stdout.replace("\n", "")


def test_demo_uses_a_configured_reachable_redis_instead(tmp_path: Path, redis_url: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "msgrelay", "demo", "--count", "50", "--redis-url", redis_url],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "using the configured Redis" in result.stdout
    assert "started a private" not in result.stdout
