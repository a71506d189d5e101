"""What a new user meets before the first command (issue 10, section 8): ``make demo`` installs only what the
demo needs, building the package prints no deprecation warning, and the README's exit code table is whole."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from msgrelay.cli import ExitCode
from system_tools import require_tool

ROOT = Path(__file__).resolve().parent.parent


def _dry_run(target: str, tmp_path: Path) -> str:
    """``make -n <target>`` in a copy of the project without a .venv: the commands a first run would run."""
    require_tool("make")
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(ROOT / name, tmp_path / name)
    result = subprocess.run(
        ["make", "-n", target], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_make_demo_installs_the_runtime_only(tmp_path: Path) -> None:
    commands = _dry_run("demo", tmp_path)

    assert "pip install --quiet -e '.[server]'" in commands
    assert ".[dev]" not in commands
    assert "msgrelay demo" in commands


def test_make_test_installs_the_development_toolchain(tmp_path: Path) -> None:
    assert "pip install --quiet -e '.[dev]'" in _dry_run("test", tmp_path)


def test_building_the_package_prints_no_deprecation_warning(tmp_path: Path) -> None:
    """A real build, in pip's isolated build environment (the setuptools of pyproject's build-system)."""
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(
        ROOT / "src", tmp_path / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__")
    )

    wheel_dir = tmp_path / "dist"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(wheel_dir), str(tmp_path)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip

    output = build.stdout + build.stderr
    assert build.returncode == 0, output
    assert "deprecat" not in output.lower(), output
    assert list(wheel_dir.glob("msgrelay-*.whl"))


def test_the_readme_exit_code_table_lists_every_exit_code() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Exit codes", 1)[1].split("\n## ", 1)[0]

    rows = re.findall(r"^\| (\d+) \| (\w+) \| (.+) \|$", section, re.MULTILINE)

    assert [(int(code), name) for code, name, _ in rows] == [(code.value, code.name) for code in ExitCode]
    assert all(meaning.strip() for _, _, meaning in rows)
