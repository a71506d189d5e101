"""The sink interface and its failure contract.

A consumer drives a sink like this, per batch::

    handles_done = sink.already_written(handles of recovered deliveries)   # ack those, never write them again
    rejects = sink.write_batch(messages, handles)                           # may raise SinkError
    transport.settle(...)                                                   # ack what was written
    sink.settled()                                                          # the sink may forget the batch

Failure contract of ``write_batch``:

* It returns normally when every message of the batch is durably written (flushed, and fsynced if the sink
  promises it) **except** the ones it returns as ``(index, error_text)`` rejects: messages the sink could
  not handle by themselves (a formatter that raised for that one message). Rejects are not written at all;
  the consumer retries them with backoff. One message never fails the batch.
* It raises :class:`~msgrelay.errors.SinkError` when some destination could not be written (ENOSPC, EIO,
  permissions). ``error.failed_types`` names the types whose lines are **not** durably written (empty:
  the whole batch); the messages of every other type (rejects aside) **are**, and may be acknowledged.
  A failed destination holds none of the batch's lines (the sink cuts a half-written append back), so
  retrying never tears a line.
* A :class:`~msgrelay.errors.BrokerError` (effectively-once sinks only, which journal in Redis) means
  nothing of the batch was written.

``handles`` are the transport handles of ``messages``, index for index. A sink that journals its writes
(effectively once) needs them; one that does not ignores them. ``already_written`` and ``settled`` are then
no-ops that never talk to Redis.

Effectively once, the consumer must also: call ``already_written`` for every delivery that may have been
handed out before (recovered, reclaimed, requeued: ``attempt > 1``) before writing it, and before writing
anything new after a batch whose settle failed (the next ``write_batch`` replaces the sink's journal entry);
call ``settled`` only after a successful ack. Every consumer writing one log folder must use the same mode:
an at-least-once writer does not read the journal.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from msgrelay.message import Message

Reject = tuple[int, str]
"""A message ``write_batch`` did not write: its index in the batch and why."""


class Sink(Protocol):
    """Writes batches of messages durably (see the module's failure contract)."""

    def write_batch(self, messages: Sequence[Message], handles: Sequence[bytes]) -> list[Reject]:
        """Write the batch; return the rejects; raise ``SinkError(failed_types=...)`` on a failed type."""
        ...

    def already_written(self, handles: Sequence[bytes]) -> set[bytes]:
        """The handles (of recovered deliveries) whose lines are already fully written: ack, don't rewrite."""
        ...

    def settled(self) -> None:
        """The last written batch is acknowledged: forget it."""
        ...

    def close(self) -> None: ...
