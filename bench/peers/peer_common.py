"""What every peer's task does, shared by the task modules (``*_app.py``) that the peers' workers import.

Workers are started with this directory on ``PYTHONPATH`` and learn where to connect and write from two
environment variables that ``run_peer.py`` sets, because each peer's worker CLI imports the task module by
name and takes no arguments of ours.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from types import ModuleType

REDIS_URL_ENV = "PEER_REDIS_URL"
LOG_DIR_ENV = "PEER_LOG_DIR"


def _load_workload() -> ModuleType:
    # bench/workload.py is loaded by path: the benchmark virtualenvs do not install the msgrelay package.
    path = Path(__file__).resolve().parent.parent / "workload.py"
    spec = importlib.util.spec_from_file_location("bench_workload", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


workload = _load_workload()


def redis_url() -> str:
    return os.environ[REDIS_URL_ENV]


def log_dir() -> Path:
    return Path(os.environ[LOG_DIR_ENV])


def append_line(message: str) -> None:
    """The job: append the message as one line to its per-type file, then close it (the write is flushed).

    One short write on an O_APPEND file, so concurrent workers never interleave lines.
    """
    msg_type = json.loads(message)["type"]
    with workload.log_path(log_dir(), msg_type).open("a", encoding="utf-8") as handle:
        handle.write(message + "\n")
