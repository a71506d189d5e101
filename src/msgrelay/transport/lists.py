"""Redis lists, compatible with producers that ``LPUSH message_buffer ...``.

Consumers never pop into thin air (a bare ``BRPOP`` loses the batch in flight when the worker dies):
entries are moved atomically with ``LMOVE``/``BLMOVE`` from the tail of the queue into the consumer's own
processing list, and removed from there (``LREM``) only after they are written. The processing list is
what ``recover`` reads after a restart.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

from msgrelay.deadletter import DeadLetter
from msgrelay.keys import Stat
from msgrelay.message import Delivery
from msgrelay.transport.base import Transport, raw_command, redis_errors

# Move up to ARGV[1] entries from the tail of KEYS[1] to the head of KEYS[2], atomically, in one round trip,
# and register consumer ARGV[2] in the set KEYS[3] so that ``pending`` sees what it holds.
_MOVE_BATCH = """
redis.call('SADD', KEYS[3], ARGV[2])
local moved = {}
for i = 1, tonumber(ARGV[1]) do
  local entry = redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT')
  if not entry then break end
  moved[i] = entry
end
return moved
"""


class ListTransport(Transport):
    """A list key; one processing list per consumer."""

    name: ClassVar[str] = "lists"

    def send(self, payloads: Sequence[bytes]) -> None:
        if not payloads:
            return
        with redis_errors(self.url):
            pipe = self.client.pipeline(transaction=False)
            pipe.lpush(self.keys.queue, *payloads)
            pipe.hincrby(self.keys.stats(), Stat.PRODUCED, len(payloads))
            pipe.execute()

    def recover(self, consumer: str, count: int) -> list[Delivery]:
        processing = self.keys.processing(consumer)
        with redis_errors(self.url):
            self.client.sadd(self.keys.consumers(), consumer)
            # Oldest at the tail: read the last `count` entries and return them oldest first.
            entries: list[bytes] = raw_command(self.client, "LRANGE", processing, -count, -1)
        return [Delivery(entry, entry, "", 2) for entry in reversed(entries)]

    def fetch(self, consumer: str, count: int, block_s: float) -> list[Delivery]:
        processing = self.keys.processing(consumer)
        script_keys = (self.keys.queue, processing, self.keys.consumers())
        with redis_errors(self.url):
            moved: list[bytes] = raw_command(
                self.client, "EVAL", _MOVE_BATCH, 3, *script_keys, count, consumer
            )
            if not moved and block_s > 0:
                first = raw_command(
                    self.client, "BLMOVE", self.keys.queue, processing, "RIGHT", "LEFT", block_s
                )
                if first is None:
                    return []
                moved = [first]
                if count > 1:
                    moved += raw_command(
                        self.client, "EVAL", _MOVE_BATCH, 3, *script_keys, count - 1, consumer
                    )
        return [Delivery(entry, entry, "", 1) for entry in moved]

    def settle(
        self,
        consumer: str,
        written: Sequence[Delivery],
        dead: Sequence[DeadLetter],
        type_counts: Mapping[str, int],
    ) -> None:
        processing = self.keys.processing(consumer)
        with redis_errors(self.url):
            pipe = self.client.pipeline(transaction=True)
            # LREM -1 removes exactly one copy, searching from the tail where the oldest entries sit.
            for delivery in [*written, *(letter.delivery for letter in dead)]:
                raw_command(pipe, "LREM", processing, -1, delivery.handle)
            self._record_settlement(pipe, consumer, dead, type_counts)
            pipe.execute()

    def backlog(self) -> int:
        with redis_errors(self.url):
            return int(self.client.llen(self.keys.queue))

    def pending(self) -> dict[str, int]:
        with redis_errors(self.url):
            members: set[bytes] = raw_command(self.client, "SMEMBERS", self.keys.consumers())
            consumers = sorted(name.decode() for name in members)
            pipe = self.client.pipeline(transaction=False)
            for name in consumers:
                pipe.llen(self.keys.processing(name))
            lengths = pipe.execute()
        return dict(zip(consumers, (int(n) for n in lengths), strict=True))
