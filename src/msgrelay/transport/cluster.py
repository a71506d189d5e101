"""Refusing Redis Cluster, at connect, with one clear line.

msgrelay does not support Redis Cluster yet (planned). Its server-side scripts touch several keys at once
(the queue, its stats hash, the dead-letter stream, a consumer's processing list ...), and in a cluster
every key of one command must hash to the same slot, or the node answers ``CROSSSLOT``. Worse, some
commands work and some do not: on lists a producer's single-key ``LPUSH`` succeeds, while the consumer's
scripts fail, so messages pile up that nothing can drain. So every command (producers included) checks
the server once at connect and refuses a cluster node before it touches any key.

The check is one ``INFO cluster`` (``cluster_enabled:1`` on a node started with ``cluster-enabled yes``;
see https://redis.io/docs/latest/commands/info/). A server that does not let us run ``INFO`` (an ACL
without ``+info``, a renamed command) cannot tell us: it is taken as not a cluster, as before this check.
"""

from __future__ import annotations

from typing import Final

import redis

from msgrelay.errors import BrokerResponseError, UnsupportedRedisError
from msgrelay.transport.base import raw_command, redis_errors

MEANWHILE: Final = (
    "msgrelay does not support Redis Cluster yet (support is planned); meanwhile point redis.url "
    "(--redis-url, MSGRELAY_REDIS__URL) at a standalone Redis server, with replicas for failover if needed"
)


def is_cluster_node(client: redis.Redis, url: str) -> bool:
    """Whether the server runs with ``cluster-enabled yes``; ``False`` when it will not say (no INFO).

    ``url`` is the masked URL. Raises :class:`~msgrelay.errors.BrokerError` when the server cannot be
    reached or fails otherwise.
    """
    try:
        with redis_errors(url):
            section = raw_command(client, "INFO", "cluster")
    except BrokerResponseError:  # NOPERM, unknown command: cannot tell, so not known to be a cluster
        return False
    return str(section.get("cluster_enabled", 0)) == "1"


def refuse_cluster(client: redis.Redis, url: str) -> None:
    """Raise :class:`UnsupportedRedisError` (one line: the masked ``url``, why, what to use) if the
    server is a Redis Cluster node."""
    if is_cluster_node(client, url):
        raise UnsupportedRedisError(f"Redis at {url} is a Redis Cluster node: {MEANWHILE}")
