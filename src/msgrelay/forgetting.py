"""Forgetting consumers that are gone, so ``stats`` does not list a dead consumer's name forever.

Every consumer name joins its queue's consumer group (streams) or consumer set (lists), and the default
name is ``<hostname>-<pid>``: each restart adds one. A clean exit leaves (``Transport.leave``); a killed one
stays. Only a consumer that holds nothing is ever forgotten: a dead consumer's pending entries stay visible
in ``stats`` until a live consumer takes them over (``claim_idle_s``), and are never dropped.

Who forgets: live ``consume`` and ``notify`` processes, during maintenance, every ``forget_after_s / 4``
(at most once a minute), on streams with one atomic script (``scripts.STREAM_FORGET``); on lists the reaper
already forgets a consumer whose heartbeat expired once it has requeued its entries. ``stats`` hides the
consumers that the next such turn would forget, so a deployment with no live consumer shows them gone too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Final

from msgrelay.batch import ConsumerHook
from msgrelay.transport.base import Transport

log = logging.getLogger(__name__)

MAX_INTERVAL_S: Final = 60.0
"""Forgetting is housekeeping: at most one XINFO CONSUMERS a minute per live consumer."""


class ConsumerForgetting(ConsumerHook):
    """Forgets the consumers of ``transport``'s queue that hold nothing and have been gone ``forget_after_s``
    or longer (never ``keep``, the caller's own name); ``forget_after_s = 0`` forgets nobody."""

    def __init__(
        self,
        transport: Transport,
        forget_after_s: float,
        *,
        keep: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.transport = transport
        self.forget_after_s = forget_after_s
        self.keep = keep
        self.interval_s = min(MAX_INTERVAL_S, forget_after_s / 4)
        self.clock = clock
        self._next = 0.0

    def on_maintenance(self) -> None:
        self.forget_if_due()

    def forget_if_due(self) -> list[str]:
        """Forget now if the last turn is ``interval_s`` old; returns who was forgotten."""
        now = self.clock()
        if self.forget_after_s <= 0 or now < self._next:
            return []
        self._next = now + self.interval_s
        forgotten = self.transport.forget_consumers(self.forget_after_s, keep=self.keep)
        if forgotten:
            log.info(
                "forgot %d consumers of %s gone for %.0fs or more, holding nothing: %s",
                len(forgotten),
                self.transport.keys.queue,
                self.forget_after_s,
                ", ".join(forgotten),
            )
        return forgotten


def present_consumers(transport: Transport, forget_after_s: float) -> dict[str, int]:
    """Consumer name -> entries it holds, without the consumers gone ``forget_after_s`` or more that hold
    nothing (0: every consumer)."""
    pending = transport.pending()
    if forget_after_s <= 0 or not pending:
        return pending
    gone = transport.gone_consumers(forget_after_s)
    return {name: count for name, count in pending.items() if name not in gone}
