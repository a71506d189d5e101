"""Start-up checks of the Redis server's settings that decide whether queued messages can be lost.

Two settings matter (see ``shared/reliability-matrix.md``): a ``maxmemory-policy`` other than
``noeviction`` lets Redis delete queue keys under memory pressure, silently; and a server that persists
nothing (no AOF, no RDB save points) loses every queued message when it restarts. The consumer warns
about either on start, or refuses to run with ``consumer.unsafe_redis = "refuse"``.
"""

from __future__ import annotations

import redis

from msgrelay.transport.base import redis_errors


def unsafe_settings(client: redis.Redis, url: str) -> list[str]:
    """Plain-language problems with the server's settings; empty when it is safe for queue data."""
    with redis_errors(url):
        memory = client.info("memory")
        persistence = client.info("persistence")
        save_points = _save_points(client)
    problems = []
    policy = str(memory.get("maxmemory_policy", "noeviction"))
    if policy != "noeviction":
        problems.append(
            f"maxmemory-policy is {policy}: Redis may evict queued messages under memory pressure "
            "(set it to noeviction)"
        )
    if not int(persistence.get("aof_enabled", 0)) and save_points == "":
        problems.append(
            "persistence is off (appendonly no, no save points): a Redis restart loses every queued "
            "message (set appendonly yes)"
        )
    return problems


def _save_points(client: redis.Redis) -> str | None:
    """The ``save`` setting, or None if CONFIG is not allowed (ACL, renamed command): then we cannot tell."""
    try:
        reply = client.config_get("save")
    except redis.exceptions.ResponseError:
        return None
    value = reply.get("save", reply.get(b"save"))  # type: ignore[call-overload]
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)
