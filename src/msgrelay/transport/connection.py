"""Building a Redis client and a transport from the settings."""

from __future__ import annotations

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from msgrelay.config import Settings, mask_url
from msgrelay.errors import ConfigError
from msgrelay.keys import KeySchema
from msgrelay.transport.base import Transport, redis_errors
from msgrelay.transport.lists import ListTransport
from msgrelay.transport.streams import StreamTransport

RECONNECT_ATTEMPTS = 3
"""Retries of a command whose connection failed, with jittered exponential backoff (50 ms .. 1 s)."""


def connect(settings: Settings, *, check: bool = True) -> redis.Redis:
    """A client for the configured server. With ``check``, fail now (one clear error) if it is unreachable."""
    url = settings.redis.effective_url()
    tcp_only = {} if url.startswith("unix:") else {"socket_keepalive": True}
    try:
        client = redis.Redis.from_url(
            url,
            socket_timeout=settings.redis.socket_timeout_s,
            socket_connect_timeout=settings.redis.connect_timeout_s,
            health_check_interval=30,
            **tcp_only,
            retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), RECONNECT_ATTEMPTS),
            retry_on_error=[redis.exceptions.ConnectionError, redis.exceptions.TimeoutError],
        )
    except ValueError as exc:
        raise ConfigError(f"invalid Redis URL {mask_url(url)}: {exc}") from None
    if check:
        with redis_errors(mask_url(url)):
            client.ping()
    return client


def create_transport(settings: Settings, *, check: bool = True) -> Transport:
    """The transport selected by ``queue.transport``, connected."""
    queue = settings.queue
    client = connect(settings, check=check)
    url = mask_url(settings.redis.effective_url())
    if queue.transport == "streams":
        keys = KeySchema(queue.namespace, queue.stream)
        return StreamTransport(client, keys, url=url, group=queue.group)
    keys = KeySchema(queue.namespace, queue.buffer_key)
    return ListTransport(client, keys, url=url, heartbeat_ttl_s=settings.consumer.claim_idle_s)
