"""The README's first command: `make demo` runs `msgrelay demo`, which must work with nothing configured."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import redis

from msgrelay.config import load_settings
from msgrelay.demo import DEMO_NAMESPACE, demo_keys, demo_settings
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
    logs = tmp_path / ".msgrelay" / "demo-logs"
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


def snapshot(client: redis.Redis) -> dict[bytes, tuple[bytes, bytes | None, bool]]:
    """Every key outside the demo's namespace: its type, its exact serialized value, whether it expires."""
    return {
        key: (client.type(key), client.dump(key), client.pttl(key) > 0)
        for key in client.keys("*")
        if not key.startswith(DEMO_NAMESPACE.encode() + b":")
    }


def test_demo_on_a_configured_server_touches_only_its_own_keys_and_log_folder(
    tmp_path: Path, redis_url: str, redis_client: redis.Redis
) -> None:
    # Given: a server with real work on it: a queue with a consumer holding an entry, a legacy list, dead
    # letters, stats, alerts, an application's keys; and a configured log folder with real lines
    redis_client.xadd("msgrelay:logs", {"m": b'{"type": "ERROR", "text": "real 1"}'})
    redis_client.xgroup_create("msgrelay:logs", "msgrelay", id="0")
    redis_client.xreadgroup("msgrelay", "prod-1", {"msgrelay:logs": ">"}, count=1)
    redis_client.xadd("msgrelay:logs", {"m": b'{"type": "INFO", "text": "real 2"}'})
    redis_client.lpush("message_buffer", b"ERROR: real legacy entry", b'{"type": "INFO"}')
    redis_client.xadd("msgrelay:dlq", {"reason": "malformed_json", "raw": b"{", "origin": "message_buffer"})
    redis_client.hset("msgrelay:stats:msgrelay:logs", mapping={"produced": 2, "processed": 0})
    redis_client.lpush("tweet_queue", b'{"service": "db", "status": "DOWN", "message": "x"}')
    redis_client.set("app:session:1", "alice", ex=3600)
    before = snapshot(redis_client)
    real_logs = tmp_path / "var-log"
    real_logs.mkdir()
    (real_logs / "error.log").write_text("a real line\n")
    env = {**os.environ, "MSGRELAY_REDIS__URL": redis_url, "MSGRELAY_CONSUMER__LOG_DIR": str(real_logs)}

    # When: `make demo` with MSGRELAY_REDIS__URL set (twice: a second run starts from its own empty keys)
    for _ in range(2):
        result = subprocess.run(
            [sys.executable, "-m", "msgrelay", "demo", "--count", "200"],
            capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr

    # Then: every key outside msgrelay-demo:* is byte-identical, the real log folder is untouched
    assert "using the configured Redis" in result.stdout
    assert "consumed streams: 200 written, 0 dead-lettered" in result.stdout  # only the demo's own queue
    assert snapshot(redis_client) == before
    assert [p.name for p in real_logs.iterdir()] == ["error.log"]
    assert (real_logs / "error.log").read_text() == "a real line\n"
    demo_logs = tmp_path / ".msgrelay" / "demo-logs"
    assert sum(len((demo_logs / n).read_text().splitlines()) for n in TYPE_FILES.values()) == 2 * (200 + 7)
    # And the demo's dead letters are in its own store: its 4 bad legacy entries, this run's only
    assert redis_client.xlen(f"{DEMO_NAMESPACE}:dlq") == 4


def test_every_key_the_demo_can_write_is_in_its_namespace() -> None:
    settings = demo_settings(load_settings(None), "redis://localhost:1/0", "lists")
    assert all(key.startswith(f"{DEMO_NAMESPACE}:") for key in demo_keys(settings))
    assert settings.consumer.log_dir == Path(".msgrelay/demo-logs")
