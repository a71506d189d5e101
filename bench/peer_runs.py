"""The peers (Celery, Dramatiq, Huey, RQ, arq) doing the same job, each in its benchmark virtualenv.

Their adapters live in ``bench/peers/run_peer.py`` (``make bench-venvs`` creates the virtualenvs; arq needs
redis-py < 6 and gets its own). The script is run once per measurement against a fresh private
redis-server on loopback TCP and prints one JSON line::

    {"peer": str, "messages": int, "process_msgs_s": float, "produce_msgs_s": float,
     "redis_bytes_per_msg": float, "worker_rss_mb": float, "config": str}
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.common import REPO_ROOT, BenchError, fresh_redis

PEERS = ("celery", "dramatiq", "huey", "rq", "arq")
LABELS = {"celery": "Celery", "dramatiq": "Dramatiq", "huey": "Huey", "rq": "RQ", "arq": "arq"}
DEFAULT_SCRIPT = REPO_ROOT / "bench" / "peers" / "run_peer.py"
DEFAULT_VENVS = REPO_ROOT / "bench" / ".venvs"
FIGURES = ("messages", "process_msgs_s", "produce_msgs_s", "redis_bytes_per_msg", "worker_rss_mb")


@dataclass(frozen=True)
class PeerSetup:
    """Where the adapters script and the virtualenvs are (options, so a stub can stand in for tests)."""

    script: Path = DEFAULT_SCRIPT
    venvs: Path = DEFAULT_VENVS

    def python(self, peer: str) -> Path:
        return self.venvs / ("arq" if peer == "arq" else "peers") / "bin" / "python"

    def missing(self, peer: str) -> str | None:
        """Why this peer cannot run here (one line), or None."""
        if not self.script.is_file():
            return f"{self.script} not found"
        if not self.python(peer).is_file():
            return f"no virtualenv at {self.python(peer).parent.parent} (run `make bench-venvs`)"
        return None


def suggested_sizes(setup: PeerSetup, *, smoke: bool) -> dict[str, int]:
    """The adapters' own message counts (``SUGGESTED_MESSAGES``: a run of 15-25 s each, ``SMOKE_MESSAGES``:
    seconds), read from the script, which imports only the standard library at module level. Empty when
    the script is missing or has none: the caller falls back to its own."""
    if not setup.script.is_file():
        return {}
    spec = importlib.util.spec_from_file_location("bench_peers_run_peer", setup.script)
    if spec is None or spec.loader is None:
        return {}
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there while it loads
    try:
        spec.loader.exec_module(module)
    except Exception:  # a broken script shows up, with its traceback, when its runs fail
        return {}
    finally:
        sys.modules.pop(spec.name, None)
    sizes = getattr(module, "SMOKE_MESSAGES" if smoke else "SUGGESTED_MESSAGES", {})
    return {peer: int(count) for peer, count in sizes.items() if peer in PEERS}


def run_peer(workdir: Path, setup: PeerSetup, peer: str, messages: int) -> tuple[dict[str, float], str]:
    """One run of one peer: its figures, and its one-line description of how it was set up."""
    shutil.rmtree(workdir, ignore_errors=True)
    (workdir / "peer").mkdir(parents=True)
    try:
        with fresh_redis(workdir) as server:
            argv = [
                str(setup.python(peer)), str(setup.script), "--peer", peer, "--redis-url", server.url,
                "--messages", str(messages), "--workdir", str(workdir / "peer"), "--size", "175",
            ]  # fmt: skip
            done = subprocess.run(
                argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900 + messages, check=False
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if done.returncode != 0:
        raise BenchError(f"{peer} exited with {done.returncode}: {done.stderr.strip()[-1500:]}")
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise BenchError(f"{peer} printed no JSON line: {done.stdout[-500:]!r}")
    reply = json.loads(lines[-1])
    config = str(reply.get("config", ""))
    if reply.get("timed_out"):  # the adapter gave up waiting: its rate is what it did in its time limit
        config += f" (timed out: {reply.get('processed', '?')} of {reply['messages']} processed)"
    return {name: float(reply[name]) for name in FIGURES}, config
