"""The real ``msgrelay consume``, except that its log sink exits the process right after a write, before the
batch is acknowledged, with probability ``$DIE_AFTER_WRITE`` (default 0.05) per batch.

A SIGKILL from outside rarely lands in that window (a write and its ack are a millisecond apart); this lands
there every time, which is where the effectively-once journal earns its keep: every such death leaves a
whole, unacknowledged batch for recovery to find, in its file or in the file it was rotated to since.
Used by scenario R3 (effectively once).
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence

from msgrelay.cli import main
from msgrelay.message import Message
from msgrelay.sinks.base import Reject
from msgrelay.sinks.files import LogFileSink

DIE_ENV = "DIE_AFTER_WRITE"
_write_batch = LogFileSink.write_batch
_chance = float(os.environ.get(DIE_ENV, "0.05"))


def write_then_maybe_die(
    self: LogFileSink, messages: Sequence[Message], handles: Sequence[bytes] = ()
) -> list[Reject]:
    rejects = _write_batch(self, messages, handles)
    if messages and random.random() < _chance:
        os._exit(1)  # written, journaled, not acknowledged
    return rejects


LogFileSink.write_batch = write_then_maybe_die  # type: ignore[method-assign]

if __name__ == "__main__":
    main()
