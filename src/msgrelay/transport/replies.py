"""Replies read with a byte cap: a blocking read can never make the consumer hold more than it can afford.

``XREADGROUP`` and ``BLMOVE`` hand over the entries themselves, whatever their size: one 100 MB entry
pushed onto an idle queue would be loaded whole by the read that was waiting for it. A reply read through
:func:`capped_reads` while :func:`reply_cap` is set is abandoned once more than the cap has arrived: the
connection is dropped with the rest unread (Redis frees what it still had to send when it sees the socket
close), and :class:`ReplyTooLarge` tells the transport that the command *ran* -- its entries are now the
consumer's, pending -- but that their content was not read. The transport then decides them on the server
side (:mod:`msgrelay.transport.fetch_scripts`): oversize entries are dead-lettered there, the others are
handed out within the byte budget.

Options weighed (design note, issue 10 part 5):

* A Lua fetch on every read (sizes checked before anything leaves Redis): converting each entry into Lua
  and back costs Redis 0.9 us per entry on top of the 1.0 us of ``XREADGROUP`` itself (measured: 175-byte
  entries, batches of 500, INFO commandstats), and Redis' single thread is shared by every producer and
  consumer; a first end-to-end A/B lost about a fifth of the throughput. Kept for the slow paths only.
* Scripts cannot block, so a script-only fetch needs another way to wait. Polling with the script puts the
  poll interval into the latency (p99 is 0.4 ms at 10k msgs/s with a blocking read) and costs a script
  call per poll per idle consumer. ``CLIENT TRACKING ... BCAST`` wake-ups (RESP2: ``REDIRECT`` to a
  connection subscribed to ``__redis__:invalidate``; no server config, Redis >= 6) cost a round trip per
  wake-up, a second connection per consumer whose invalidation messages pile up in Redis' pub/sub output
  buffer (8 MB soft limit) while the consumer is busy, channel permissions under ACLs -- and still the Lua
  fetch on every read. ``XREADGROUP ... COUNT 1`` as a wake-up is not harmless: it returns the entry.
* Chosen: keep the blocking ``XREADGROUP`` / ``BLMOVE`` and read their reply with a cap. Nothing is added
  in Redis, latency is unchanged (an idle consumer is woken by the entry itself), and the client pays one
  subtraction per 64 KiB socket read. What the capped read cannot hand out (too large, oversize, over the
  budget) is decided by a script, on the slow path.

The counting hooks into redis-py's hiredis parser (``redis._parsers.hiredis._HiredisParser``, checked with
redis-py 8.1 and hiredis 3.5; hiredis is a dependency): ``read_from_socket`` feeds each chunk read from the
socket into hiredis, and the reader's buffer length before and after the feed is the size of that chunk. A
redis-py release that changes this fails ``tests/test_batch_bytes.py`` (the oversize entries would be read).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import redis
from redis._parsers.hiredis import _HiredisParser

MIN_CAP_BYTES = 64 * 1024
"""The smallest cap: a connection's set-up replies (``HELLO``: about 200 bytes) are read under the cap of
the command that opened it, and must never trip it. The cap bounds memory; the byte budget itself is
enforced exactly on what was read."""


@dataclass(slots=True)
class ReplyMeter:
    """The cap of the replies read in a :func:`reply_cap` block, and the size of the last one (RESP bytes,
    headers included: never less than the entries it holds)."""

    cap_bytes: int
    read_bytes: int = 0


_meter: ContextVar[ReplyMeter | None] = ContextVar("msgrelay_reply_meter", default=None)


class ReplyTooLarge(redis.exceptions.ConnectionError):
    """A reply grew past the cap; the connection was dropped with the rest of it unread.

    A ``ConnectionError`` for redis-py, so that it disconnects (the half-read reply must never be taken for
    the next command's) and never resends the command (``NO_RESEND``). Transports catch it themselves: it
    is not a failure of Redis and never reaches :func:`~msgrelay.transport.base.redis_errors`.
    """

    def __init__(self, cap_bytes: int) -> None:
        super().__init__(f"reply larger than {cap_bytes} bytes, dropped unread")
        self.cap_bytes = cap_bytes


class _CappedHiredisParser(_HiredisParser):
    """hiredis, counting the bytes of the reply being read against the cap of :func:`reply_cap`."""

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        meter = _meter.get()
        if meter is not None:
            meter.read_bytes = 0  # a new reply (a connection's set-up replies come before the command's)
        return super().read_response(*args, **kwargs)

    def read_from_socket(self, *args: Any, **kwargs: Any) -> Any:
        reader = self._reader
        before = reader.len() if reader is not None else 0
        result = super().read_from_socket(*args, **kwargs)  # type: ignore[no-untyped-call]
        meter = _meter.get()
        if meter is not None and reader is not None:
            meter.read_bytes += reader.len() - before
            if meter.read_bytes > meter.cap_bytes:
                raise ReplyTooLarge(meter.cap_bytes)
        return result


def capped_reads(client: redis.Redis) -> redis.Redis:
    """A second client to the same server, with the same settings (timeouts, TLS, no resend), whose
    replies honour :func:`reply_cap`. It has its own connection: a dropped read never disturbs the
    commands of ``client``."""
    pool = client.connection_pool
    kwargs = {**pool.connection_kwargs, "parser_class": _CappedHiredisParser}
    reads = redis.Redis(
        connection_pool=redis.ConnectionPool(connection_class=pool.connection_class, **kwargs)
    )
    reads.auto_close_connection_pool = True  # close() closes its pool too
    return reads


@contextmanager
def reply_cap(max_bytes: int) -> Iterator[ReplyMeter]:
    """Within this block, a reply read through a :func:`capped_reads` client that is larger than
    ``max_bytes`` (RESP bytes, headers included; at least :data:`MIN_CAP_BYTES`) raises
    :class:`ReplyTooLarge` after at most the cap plus one socket read (64 KiB) have been read. The meter
    yielded tells the size of the last reply read."""
    meter = ReplyMeter(max(max_bytes, MIN_CAP_BYTES))
    token = _meter.set(meter)
    try:
        yield meter
    finally:
        _meter.reset(token)
