"""Redis Cluster is not supported yet: every command refuses a cluster node at connect, with one clear line.

The cluster is a real ``redis-server --cluster-enabled yes`` child of this test, one node owning every hash
slot (``CLUSTER ADDSLOTSRANGE 0 16383``): enough for what broke before the check, a producer's ``LPUSH``
succeeding while the consumer's multi-key scripts get ``CROSSSLOT``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from msgrelay.cli import ExitCode
from msgrelay.config import load_settings
from msgrelay.errors import UnsupportedRedisError
from msgrelay.producer import Producer
from msgrelay.redis_server import RedisServer
from msgrelay.transport import create_transport

CONFIG = """
[[monitor.checks]]
service = "db"
kind = "tcp"
host = "127.0.0.1"
port = 9
"""

COMMANDS: dict[str, tuple[str, ...]] = {
    "send": ("send", "disk full"),
    "send (lists)": ("send", "disk full", "-t", "lists"),
    "produce": ("produce", "--count", "10", "--quiet"),
    "consume": ("consume", "--burst"),
    "consume (lists)": ("consume", "--burst", "-t", "lists"),
    "alert": ("alert", "-s", "db", "connection refused"),
    "alert (lists)": ("alert", "-s", "db", "connection refused", "-t", "lists"),
    "monitor": ("monitor",),
    "notify": ("notify", "--burst"),
    "stats": ("stats",),
    "dlq list": ("dlq", "list"),
    "dlq show": ("dlq", "show", "1-1"),
    "dlq replay": ("dlq", "replay", "--all"),
    "dlq purge": ("dlq", "purge", "--all", "--yes"),
    "silence add": ("silence", "add", "-s", "db", "--for", "1h"),
    "silence list": ("silence", "list"),
    "silence expire": ("silence", "expire", "x"),
    "demo": ("demo", "--count", "10"),
}


@pytest.fixture(scope="module")
def cluster_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A one-node Redis Cluster owning all 16384 slots."""
    folder = tmp_path_factory.mktemp("cluster")
    args = ("--cluster-enabled", "yes", "--cluster-config-file", str(folder / "nodes.conf"))
    with RedisServer(folder, extra_args=args) as server:
        client = server.client()
        try:
            client.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
        finally:
            client.close()
        yield server


@pytest.fixture
def cluster_client(cluster_node: RedisServer) -> Iterator[redis.Redis]:
    client = cluster_node.client()
    assert int(client.info("server")["process_id"]) == cluster_node.pid  # only ever our own child
    client.flushall()
    yield client
    client.close()


def msgrelay(tmp_path: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "msgrelay.toml").write_text(CONFIG)
    return subprocess.run(
        [sys.executable, "-m", "msgrelay", *args, "--redis-url", url],
        capture_output=True, text=True, timeout=60, cwd=tmp_path, env=os.environ, check=False,
    )  # fmt: skip


@pytest.mark.parametrize("command", COMMANDS.values(), ids=COMMANDS.keys())
def test_every_command_refuses_a_cluster_node_in_one_line_and_touches_nothing(
    tmp_path: Path, cluster_node: RedisServer, cluster_client: redis.Redis, command: tuple[str, ...]
) -> None:
    # Given: a Redis Cluster node (before the check, `send -t lists` stored a message no consumer could drain)
    # When
    result = msgrelay(tmp_path, cluster_node.url, *command)

    # Then: exit 3 and one line that says why and what to use instead; no key was written
    assert result.returncode == ExitCode.CONFIG_ERROR, result.stdout + result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: Redis at {cluster_node.url} is a Redis Cluster node: ")
    assert "does not support Redis Cluster yet (support is planned)" in line
    assert "standalone Redis server" in line
    assert cluster_client.dbsize() == 0


def test_the_producer_library_refuses_a_cluster_node(
    cluster_node: RedisServer, cluster_client: redis.Redis
) -> None:
    settings = load_settings(None, {"redis": {"url": cluster_node.url}, "queue": {"transport": "lists"}})

    with pytest.raises(UnsupportedRedisError, match="is a Redis Cluster node"):
        Producer.from_settings(settings)

    assert cluster_client.dbsize() == 0


def test_a_server_that_forbids_info_is_taken_as_not_a_cluster(
    redis_url: str, redis_client: redis.Redis
) -> None:
    # Given: an ACL user that may use every command but INFO (cannot tell: not known to be a cluster)
    redis_client.acl_setuser(
        "producer",
        enabled=True,
        passwords=["+s3cret"],
        keys=["*"],
        channels=["*"],
        commands=["+@all", "-info"],
    )
    url = redis_url.replace("unix://", "unix://producer:s3cret@")
    settings = load_settings(None, {"redis": {"url": url}})

    # When: it connects and sends
    with Producer.from_settings(settings) as producer:
        producer.send("ERROR", "disk full")

    # Then
    assert redis_client.xlen("msgrelay:logs") == 1


def test_a_standalone_server_is_accepted(redis_url: str) -> None:
    create_transport(load_settings(None, {"redis": {"url": redis_url}})).close()
