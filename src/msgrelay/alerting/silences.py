"""Silences in Redis: ``msgrelay silence add / list / expire``, read by the notify loop.

One hash per alert queue (see :mod:`msgrelay.keys`): silence id -> JSON. An expired silence stays listed (as
expired) for :data:`KEEP_EXPIRED_S`, then is dropped the next time silences are read.
"""

from __future__ import annotations

import re
import secrets
from typing import Final

import orjson
import redis

from msgrelay.alerting.policy import Silence
from msgrelay.transport.base import Transport, raw_command, redis_errors

KEEP_EXPIRED_S: Final = 7 * 24 * 3600.0
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT_S: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Seconds in ``90s``, ``30m``, ``2h``, ``1d``, ``1h30m`` or a bare number (ValueError otherwise)."""
    spec = text.strip().lower()
    try:
        seconds = float(spec)
    except ValueError:
        parts = _DURATION.findall(spec)
        if not parts or "".join(n + u for n, u in parts) != spec:
            raise ValueError(f"not a duration: {text!r} (use e.g. 90s, 30m, 2h, 1d, 1h30m)") from None
        seconds = sum(float(number) * _UNIT_S[unit] for number, unit in parts)
    if not 0 < seconds < float("inf"):
        raise ValueError(f"a duration must be positive: {text!r}")
    return seconds


class SilenceStore:
    """The silences of one alert queue."""

    def __init__(self, client: redis.Redis, key: str, *, url: str) -> None:
        self.client = client
        self.key = key
        self.url = url

    @classmethod
    def from_transport(cls, transport: Transport) -> SilenceStore:
        return cls(transport.client, transport.keys.silences(), url=transport.url)

    def add(self, service: str, until: float, comment: str = "") -> Silence:
        if not service.strip():
            raise ValueError("a silence needs a service (a name or a glob such as 'payments-*')")
        silence = Silence(secrets.token_hex(4), service.strip(), until, comment)
        record = {"service": silence.service, "until": silence.until, "comment": silence.comment}
        with redis_errors(self.url):
            raw_command(self.client, "HSET", self.key, silence.id, orjson.dumps(record))
        return silence

    def all(self, now: float) -> list[Silence]:
        """Every silence, soonest end first; those expired longer than KEEP_EXPIRED_S ago are dropped."""
        with redis_errors(self.url):
            stored: dict[bytes, bytes] = raw_command(self.client, "HGETALL", self.key)
        silences = [_silence(sid, raw) for sid, raw in stored.items()]
        stale = [s.id for s in silences if s.until < now - KEEP_EXPIRED_S]
        if stale:
            with redis_errors(self.url):
                raw_command(self.client, "HDEL", self.key, *stale)
        return sorted((s for s in silences if s.id not in stale), key=lambda s: (s.until, s.id))

    def active(self, now: float) -> list[Silence]:
        return [silence for silence in self.all(now) if silence.until > now]

    def expire(self, silence_id: str, now: float) -> bool:
        """End a silence now (it stays listed as expired). False if there is no such silence."""
        with redis_errors(self.url):
            raw = raw_command(self.client, "HGET", self.key, silence_id)
            if raw is None:
                return False
            record = orjson.loads(raw)
            record["until"] = min(float(record["until"]), now)
            raw_command(self.client, "HSET", self.key, silence_id, orjson.dumps(record))
        return True


def _silence(silence_id: bytes, raw: bytes) -> Silence:
    record = orjson.loads(raw)
    return Silence(
        silence_id.decode(), str(record["service"]), float(record["until"]), str(record["comment"])
    )
