"""The whole Redis key schema, in one place.

==============================================  ======  =====================================================
key                                             type    what
==============================================  ======  =====================================================
``<stream>`` (default ``msgrelay:logs``)        stream  log messages, field ``m`` = JSON (streams transport);
                                                        consumer group ``<group>`` (default ``msgrelay``)
``<buffer_key>`` (default ``message_buffer``)   list    log messages, LPUSH at the head (lists transport)
``<alerts.stream>`` (``msgrelay:alerts``)       stream  alerts, field ``m`` = JSON; group ``<alerts.group>``
                                                        (default ``msgrelay-notify``)
``<alerts.list_key>`` (``tweet_queue``)         list    alerts, LPUSH at the head (lists transport)
``<ns>:processing:<buffer_key>:<consumer>``     list    entries a lists consumer holds until written
``<ns>:consumers:<buffer_key>``                 set     names of lists consumers (for stats and recovery)
``<ns>:heartbeat:<buffer_key>:<consumer>``      string  a live lists consumer; expires claim_idle_s after
                                                        its last beat (the reaper then requeues its list)
``<ns>:deliveries:<buffer_key>``                hash    lists: sha1(entry) -> deliveries so far, only for
                                                        entries delivered more than once
``<ns>:retry:<queue key>``                      zset    messages whose processing failed, scored by the
                                                        time (ms) of their next attempt
``<ns>:journal:<queue key>``                    hash    effectively-once files: consumer -> the batch it
                                                        is writing (files, offsets, entry handles)
``<ns>:silences:<alert queue key>``             hash    alert silences: id -> JSON (service glob, until,
                                                        comment); expired ones kept a week for ``list --all``
``<ns>:alert-state:<alert queue key>``          hash    notify: service -> JSON state (status, since, last
                                                        status notified and when)
``<ns>:outbox:<alert queue key>``               zset    notify: (notification, notifier) items to send,
                                                        scored by when due (a send in progress: lease end)
``<ns>:sent:<alert queue key>:<notifier>:<key>``  string  notify: a notification sent (kept a day), so a
                                                        retry or a second consumer never sends it twice
``<ns>:dlq``                                    stream  dead letters: reason, detail, raw entry, origin,
                                                        its transport (streams, lists, outbox)
``<ns>:stats:<queue key>``                      hash    counters: produced, processed, dead_lettered,
                                                        processed:<TYPE>, batches, batches_failed,
                                                        reclaimed, retried, dlq_replayed, dlq_purged
==============================================  ======  =====================================================

``<ns>`` is ``queue.namespace`` (default ``msgrelay``). The stream and list keys are user-chosen so that
existing producers (``LPUSH message_buffer ...``, ``LPUSH tweet_queue ...``) keep working unchanged. The alert
queue has the same per-queue keys as the log queue (processing lists, retries, stats ...), named after its
own key; the dead-letter stream is shared.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

STREAM_PAYLOAD_FIELD: Final = b"m"
"""The stream entry field holding the JSON message. Entries with other fields are read as a JSON object."""


@dataclass(frozen=True, slots=True)
class KeySchema:
    """Every key msgrelay touches for one queue. ``queue`` is the stream key or the list key."""

    namespace: str
    queue: str

    def dead_letters(self) -> str:
        return f"{self.namespace}:dlq"

    def stats(self) -> str:
        return f"{self.namespace}:stats:{self.queue}"

    def processing(self, consumer: str) -> str:
        return f"{self.namespace}:processing:{self.queue}:{consumer}"

    def consumers(self) -> str:
        return f"{self.namespace}:consumers:{self.queue}"

    def heartbeat(self, consumer: str) -> str:
        return f"{self.namespace}:heartbeat:{self.queue}:{consumer}"

    def deliveries(self) -> str:
        return f"{self.namespace}:deliveries:{self.queue}"

    def retry(self) -> str:
        return f"{self.namespace}:retry:{self.queue}"

    def journal(self) -> str:
        return f"{self.namespace}:journal:{self.queue}"

    def silences(self) -> str:
        return f"{self.namespace}:silences:{self.queue}"

    def alert_states(self) -> str:
        return f"{self.namespace}:alert-state:{self.queue}"

    def outbox(self) -> str:
        return f"{self.namespace}:outbox:{self.queue}"

    def sent(self, notifier: str, key: str) -> str:
        return f"{self.namespace}:sent:{self.queue}:{notifier}:{key}"


class Stat:
    """Field names in the stats hash."""

    PRODUCED: Final = "produced"
    PROCESSED: Final = "processed"
    DEAD_LETTERED: Final = "dead_lettered"
    BATCHES: Final = "batches"
    BATCHES_FAILED: Final = "batches_failed"
    RECLAIMED: Final = "reclaimed"
    RETRIED: Final = "retried"
    DLQ_REPLAYED: Final = "dlq_replayed"
    DLQ_PURGED: Final = "dlq_purged"

    @staticmethod
    def processed_type(msg_type: str) -> str:
        return f"processed:{msg_type}"
