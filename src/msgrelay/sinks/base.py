"""The sink interface."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from msgrelay.message import Message


class Sink(Protocol):
    """Writes batches of messages durably.

    Failure contract: ``write_batch`` returns only when every message of the batch is written (flushed, and
    fsynced if the sink promises it); otherwise it raises :class:`~msgrelay.errors.SinkError` and the
    consumer acknowledges nothing of the batch, which is then delivered again. Some of its lines may already
    be in a file by then: a failed batch can leave duplicates, never a gap.
    """

    def write_batch(self, messages: Sequence[Message], handles: Sequence[bytes]) -> list[tuple[int, str]]:
        """Write the batch; returns ``(index, error)`` of messages it rejected (retried later)."""
        ...

    def already_written(self, handles: Sequence[bytes]) -> set[bytes]:
        """Handles of recovered entries a crashed write already put on disk (effectively-once mode)."""
        ...

    def settled(self) -> None:
        """The last batch was acknowledged."""
        ...

    def close(self) -> None: ...
