"""Building a Redis client and a transport from the settings."""

from __future__ import annotations

from typing import TYPE_CHECKING

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from msgrelay.errors import ConfigError
from msgrelay.keys import KeySchema
from msgrelay.transport.base import Transport, redis_errors
from msgrelay.transport.cluster import refuse_cluster
from msgrelay.transport.lists import ListTransport
from msgrelay.transport.streams import StreamTransport
from msgrelay.urls import mask_url

if TYPE_CHECKING:  # the settings are only read here; importing config would be a cycle through alerting
    from msgrelay.config import QueueSettings, Settings

NO_RESEND = Retry(NoBackoff(), 0)
"""redis-py never resends a command by itself: a resent XADD whose first reply was lost would be stored
twice and reported as sent once, and a resent XREADGROUP/BLMOVE would hand out entries nobody sees. Every
failure surfaces; msgrelay's own layer backs off, reconnects (the next command opens a new connection) and
knows what a resend means (``ProduceOutcomeUnknown``, recovery of the consumer's own entries)."""


def connect(settings: Settings, *, check: bool = True) -> redis.Redis:
    """A client for the configured server. With ``check``, fail now (one clear error) if it is unreachable
    or a Redis Cluster node (:class:`~msgrelay.errors.UnsupportedRedisError`, see :mod:`.cluster`)."""
    url = settings.redis.effective_url()
    tcp_only = {} if url.startswith("unix:") else {"socket_keepalive": True}
    try:
        client = redis.Redis.from_url(
            url,
            socket_timeout=settings.redis.socket_timeout_s,
            socket_connect_timeout=settings.redis.connect_timeout_s,
            health_check_interval=30,
            **tcp_only,
            retry=NO_RESEND,
        )
    except ValueError as exc:
        raise ConfigError(f"invalid Redis URL {mask_url(url)}: {exc}") from None
    if check:
        with redis_errors(mask_url(url)):
            client.ping()
        refuse_cluster(client, mask_url(url))
    return client


def check_ready(transport: Transport) -> None:
    """Fail now, with the one error that says why, unless the server serves this transport: unreachable
    (:class:`~msgrelay.errors.BrokerConnectionError`), not serving now (a state: loading, a failed save ...,
    :class:`~msgrelay.errors.BrokerStateError`) or a Redis Cluster node. The start-up check of the
    long-running commands, which wait out a state (:func:`msgrelay.outage.wait_until_serving`)."""
    transport.ping()
    refuse_cluster(transport.client, transport.url)


def create_transport(
    settings: Settings, *, check: bool = True, queue: QueueSettings | None = None
) -> Transport:
    """The transport selected by ``queue.transport``, connected; ``queue`` names another queue than the log
    messages' (the alerts': ``settings.alerts.as_queue(...)``)."""
    queue = queue or settings.queue
    client = connect(settings, check=check)
    url = mask_url(settings.redis.effective_url())
    limits = {
        "max_message_bytes": queue.max_message_bytes,
        "max_batch_bytes": settings.consumer.max_batch_bytes,
    }
    if queue.transport == "streams":
        keys = KeySchema(queue.namespace, queue.stream)
        return StreamTransport(client, keys, url=url, group=queue.group, **limits)
    keys = KeySchema(queue.namespace, queue.buffer_key)
    return ListTransport(
        client,
        keys,
        url=url,
        heartbeat_ttl_s=settings.consumer.claim_idle_s,
        isolate_suspects=settings.consumer.delivery == "at_least_once",
        **limits,
    )
