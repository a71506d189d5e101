"""Per-message barriers: one entry's failure becomes its dead letter, never a crashed or wedged loop.

Every step that handles one message or alert on its own (reading the entry's fields in the transport,
decoding and validating it, rendering a notification) runs behind a barrier: whatever it raises is caught
for that entry alone, which is dead-lettered with the reason and the error text while its batch-mates go on.
The reasons a barrier gives, besides the decoders' own (:mod:`msgrelay.codec`,
:mod:`msgrelay.alerting.codec`):

====================  ==================================================================================
``unreadable_entry``  the transport could not read the entry as one message (a stream entry's fields in
                      our retry layout with a retry count that is not one, or an error reading them)
``max_deliveries``    delivered more than ``max_deliveries`` times without being settled: it may be what
                      killed the consumers that took it, so it is not decoded again
``decode_crash``      decoding raised something other than a refusal (a decoder bug)
``render_crash``      judging or rendering an alert's notification raised (a bug, or a state left by an
                      older version)
====================  ==================================================================================
"""

from __future__ import annotations

from typing import Final

from msgrelay.deadletter import DeadLetter
from msgrelay.message import Delivery

MAX_DETAIL_CHARS: Final = 1000
"""A dead letter's detail is cut to this (the dead-letter store keeps no more)."""


def refused_before_decoding(delivery: Delivery, max_deliveries: int) -> DeadLetter | None:
    """The dead letter of a delivery that must not be decoded at all (see :func:`refusal`), or None."""
    if delivery.attempt > max_deliveries or delivery.unreadable:
        return refusal(delivery, max_deliveries)
    return None


def refusal(delivery: Delivery, max_deliveries: int) -> DeadLetter:
    """The dead letter of a delivery the transport could not read (``unreadable_entry``, saying why) or
    that was delivered more than ``max_deliveries`` times (``max_deliveries``, with the last error)."""
    if delivery.unreadable:
        return DeadLetter(delivery, "unreadable_entry", delivery.unreadable[:MAX_DETAIL_CHARS])
    detail = f"delivered {delivery.attempt} times without being processed"
    detail += f"; last error: {delivery.last_error}" if delivery.last_error else ""
    return DeadLetter(delivery, "max_deliveries", f"{detail} (attempt {delivery.attempt})"[:MAX_DETAIL_CHARS])


def crash_letter(delivery: Delivery, step: str, error: BaseException) -> DeadLetter:
    """The dead letter of a delivery whose ``step`` ("decode", "render") raised ``error``: reason
    ``<step>_crash``, detail the error's type and text."""
    return DeadLetter(delivery, f"{step}_crash", f"{type(error).__name__}: {error}"[:MAX_DETAIL_CHARS])
