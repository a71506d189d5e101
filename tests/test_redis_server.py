"""The private redis-server launcher used by the demo and by every test."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from msgrelay.redis_server import RedisServer, RedisServerError, find_redis_server, free_tcp_port


def test_private_server_is_our_child_and_answers_on_its_socket(redis_server: RedisServer) -> None:
    client = redis_server.client()
    try:
        assert int(client.info("server")["process_id"]) == redis_server.pid
        assert client.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
    finally:
        client.close()


def test_server_on_a_tcp_port_that_is_already_taken_fails_instead_of_using_the_other(tmp_path: Path) -> None:
    # Given: something else listens on the port
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        # When / Then: we refuse to start rather than talk to a server that is not ours
        with pytest.raises(RedisServerError):
            RedisServer(tmp_path / "r", tcp_port=port).start()


def test_server_on_a_free_tcp_port_serves_tcp_clients(tmp_path: Path) -> None:
    with RedisServer(tmp_path / "r", tcp_port=free_tcp_port()) as server:
        assert server.url.startswith("redis://127.0.0.1:")
        client = server.client()
        assert client.ping()
        client.close()


def test_binary_can_be_chosen_explicitly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MSGRELAY_REDIS_SERVER", "/opt/custom/redis-server")
    assert find_redis_server() == "/opt/custom/redis-server"
