"""Realistic random system log messages, for ``msgrelay produce`` and the demo."""

from __future__ import annotations

import random
from collections.abc import Iterator

from msgrelay.levels import DEBUG, ERROR, INFO, WARNING
from msgrelay.message import JSONValue

SampleMessage = tuple[str, str, dict[str, JSONValue]]

_TEMPLATES: dict[str, tuple[str, ...]] = {
    INFO: (
        "user {user} logged in from {ip}",
        "GET /api/v1/orders/{n} 200 in {ms} ms",
        "job {job} finished in {ms} ms",
        "cache warmed: {n} keys loaded",
        "payment {n} captured for customer {user}",
        "deployment {version} rolled out to {host}",
    ),
    DEBUG: (
        "SQL query took {ms} ms: SELECT * FROM orders WHERE id = {n}",
        "cache miss for key session:{n}",
        "retrying request to {service} (attempt {attempt})",
        "feature flag checkout_v2 evaluated for {user}: true",
    ),
    WARNING: (
        "disk usage at {pct}% on {host}:/var",
        "slow response from {service}: {ms} ms",
        "connection pool for {service} at {pct}% capacity",
        "deprecated API /v1/legacy called by {user}",
        "certificate for {host} expires in {n} days",
    ),
    ERROR: (
        "database connection to {service} refused",
        "unhandled exception in worker {job}: KeyError 'customer_id'",
        "GET /api/v1/orders/{n} 500 in {ms} ms",
        "failed to write to /var/lib/{service}: No space left on device",
        "timeout after {ms} ms calling {service}",
    ),
}
_WEIGHTS = {INFO: 60, DEBUG: 15, WARNING: 15, ERROR: 10}
_HOSTS = ("web-1", "web-2", "api-1", "worker-3", "db-1")
_SERVICES = ("postgres", "redis", "billing", "auth", "search", "s3-gateway")
_USERS = ("alice", "bob", "chloé", "dmitri", "ægir", "zoë", "李雷")


def random_messages(seed: int | None = None) -> Iterator[SampleMessage]:
    """An endless stream of ``(type, text, fields)`` with a realistic mix of types."""
    rng = random.Random(seed)  # noqa: S311 - sample data, not secrets
    types = list(_WEIGHTS)
    weights = list(_WEIGHTS.values())
    while True:
        msg_type = rng.choices(types, weights)[0]
        host = rng.choice(_HOSTS)
        text = rng.choice(_TEMPLATES[msg_type]).format(
            user=rng.choice(_USERS),
            ip=f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
            n=rng.randrange(1, 100_000),
            ms=rng.randrange(1, 5000),
            job=f"job-{rng.randrange(10_000)}",
            version=f"v{rng.randrange(1, 4)}.{rng.randrange(20)}.{rng.randrange(10)}",
            host=host,
            service=rng.choice(_SERVICES),
            attempt=rng.randrange(1, 5),
            pct=rng.randrange(70, 100),
        )
        yield msg_type, text, {"host": host, "app": "shop"}
