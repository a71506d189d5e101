"""The producer library: ``Producer(...).send(type, text, **fields)`` and ``send_many(...)``.

Every message gets a producer-assigned id (``<random prefix>-<counter in hex>``, unique per producer
instance, cheap to make) that survives every hop, so duplicates can be recognised downstream. Many
messages go out in pipelined chunks of ``pipeline_size``: one round trip per chunk, never per message.
"""

from __future__ import annotations

import itertools
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import TracebackType
from typing import Final, Self

import msgspec
import orjson

from msgrelay.codec import ENVELOPE_KEYS, visible_surrogates, wire_record
from msgrelay.config import Settings
from msgrelay.errors import (
    BrokerConnectionError,
    BrokerTimeoutError,
    MessageError,
    MessageTooLarge,
    ProduceOutcomeUnknown,
)
from msgrelay.levels import LOG_TYPES, normalize_level
from msgrelay.message import JSONValue, Message
from msgrelay.retries import Backoff
from msgrelay.transport.base import Transport
from msgrelay.transport.connection import create_transport

_EXACT_TYPES: Final = {
    **{msg_type: msg_type for msg_type in LOG_TYPES},
    **{msg_type.lower(): msg_type for msg_type in LOG_TYPES},
}
"""Type words that need no normalising: one dict lookup on the hot path."""

CHUNK_BYTES: Final = 4 * 1024 * 1024
"""Payload bytes per chunk (one command): 64 KB messages go 64 at a time, small ones ``pipeline_size``."""
_PLAIN_TYPES: Final = frozenset((str, bool, type(None)))
"""Field values msgspec writes exactly as orjson does (floats not: 1e16 against 1e+16)."""
_encode_plain = msgspec.json.Encoder().encode

MessageSpec = Message | tuple[str, str] | tuple[str, str, Mapping[str, JSONValue]]
"""What ``send_many`` takes: ready Messages, ``(type, text)`` or ``(type, text, fields)``."""


class Producer:
    """Sends log messages through a transport."""

    def __init__(
        self, transport: Transport, *, max_message_bytes: int = 64 * 1024, pipeline_size: int = 1000
    ) -> None:
        self.transport = transport
        self.max_message_bytes = max_message_bytes
        self.pipeline_size = pipeline_size
        self._id_prefix = secrets.token_hex(6)
        self._counter = itertools.count(1)

    @classmethod
    def from_settings(cls, settings: Settings) -> Producer:
        """A producer connected to the configured Redis (raises BrokerConnectionError if unreachable)."""
        return cls(
            create_transport(settings),
            max_message_bytes=settings.queue.max_message_bytes,
            pipeline_size=settings.producer.pipeline_size,
        )

    def new_id(self) -> str:
        return f"{self._id_prefix}-{next(self._counter):x}"

    def build_many(self, messages: Iterable[MessageSpec]) -> list[Message]:
        """Validated messages with their ids, ready for ``send_many`` (and for resending as they are)."""
        return [self._as_message(spec) for spec in messages]

    def build(self, msg_type: str, text: str, fields: Mapping[str, JSONValue] | None = None) -> Message:
        """A validated message with a fresh id and the current time. Raises :class:`MessageError`."""
        canonical, extra = _checked(msg_type, text, fields)
        return Message(id=self.new_id(), type=canonical, text=text, ts=time.time(), fields=extra)

    def send(self, msg_type: str, text: str, **fields: JSONValue) -> str:
        """Send one message; returns its id."""
        return self.send_many([(msg_type, text, fields)])[0]

    def send_many(self, messages: Iterable[MessageSpec]) -> list[str]:
        """Send messages in chunks of ``pipeline_size`` (one command each); returns their ids in order.

        Every message is validated before any chunk is sent, and a chunk is stored whole or not at all.
        If the connection fails while a chunk is sent, :class:`ProduceOutcomeUnknown` says which ids are
        stored, unknown and unsent: resend the unknown ones with the same ids (pass the same
        :class:`Message` objects) and duplicates stay recognisable downstream. An error reply (out of
        memory ...) means the chunk was refused.
        """
        ids, payloads = self._encode_all(messages)
        for start, end in self._chunks(payloads):
            try:
                self.transport.send(payloads[start:end])
            except (BrokerConnectionError, BrokerTimeoutError) as exc:
                raise ProduceOutcomeUnknown(
                    f"{exc}; outcome unknown for {len(ids[start:end])} messages: they may or may not be "
                    "stored (resending them is safe, duplicates keep their ids)",
                    url=exc.url,
                    unknown_ids=ids[start:end],
                    stored_ids=ids[:start],
                    unsent_ids=ids[end:],
                ) from exc
        return ids

    def _chunks(self, payloads: list[bytes]) -> Iterator[tuple[int, int]]:
        """``(start, end)`` of each chunk: at most ``pipeline_size`` messages and about ``CHUNK_BYTES`` (a
        chunk of big messages must not make one huge command that holds up Redis and the reply)."""
        start = 0
        while start < len(payloads):
            end, size = start, 0
            limit = min(len(payloads), start + self.pipeline_size)
            while end < limit and (end == start or size + len(payloads[end]) <= CHUNK_BYTES):
                size += len(payloads[end])
                end += 1
            yield start, end
            start = end

    def _as_message(self, spec: MessageSpec) -> Message:
        if isinstance(spec, Message):
            return spec
        return self.build(*spec)

    def _encode_all(self, specs: Iterable[MessageSpec]) -> tuple[list[str], list[bytes]]:
        """Ids and wire payloads of every message, all validated before anything is sent.

        The hot path of producing: a ``(type, text[, fields])`` tuple goes straight to its JSON bytes,
        with no :class:`Message` in between (making objects only to encode them cost more than encoding).
        """
        ids: list[str] = []
        payloads: list[bytes] = []
        prefix, counter, clock, exact = self._id_prefix, self._counter, time.time, _EXACT_TYPES
        for spec in specs:
            if type(spec) is tuple:
                msg_type, text, fields = spec if len(spec) == 3 else (*spec, None)
                canonical = exact.get(msg_type) if type(msg_type) is str else None
                clash = fields is not None and not ENVELOPE_KEYS.isdisjoint(fields)
                if canonical is None or type(text) is not str or clash:  # raises, or normalises the type
                    canonical, fields = _checked(msg_type, text, fields)
                msg_id = f"{prefix}-{next(counter):x}"
                record = {"id": msg_id, "type": canonical, "text": text, "ts": clock(), **(fields or {})}
            else:
                message = self._as_message(spec)
                msg_id, fields, record = message.id, message.fields, wire_record(message)
            if not fields or _PLAIN_TYPES.issuperset(map(type, fields.values())):
                payloads.append(self._dumps_plain(record, msg_id))
            else:
                payloads.append(self._dumps(record, msg_id))
            ids.append(msg_id)
        return ids, payloads

    def _dumps_plain(self, record: dict[str, JSONValue], msg_id: str) -> bytes:
        """A record whose fields are strings, booleans and nulls, and whose ``ts`` is epoch seconds: msgspec
        writes the same bytes as orjson, and stays fast where orjson gets ten times slower when its results
        are kept alive (a chunk's payloads are)."""
        try:
            payload = _encode_plain(record)
        except UnicodeEncodeError:  # a lone surrogate
            payload = _dumps_escaped(record, msg_id)
        if len(payload) > self.max_message_bytes:
            raise MessageTooLarge(len(payload), self.max_message_bytes)
        return payload

    def _dumps(self, record: dict[str, JSONValue], msg_id: str) -> bytes:
        try:
            payload = orjson.dumps(record)
        except orjson.JSONEncodeError:  # (a TypeError) a lone surrogate, or a value JSON cannot hold
            payload = _dumps_escaped(record, msg_id)
        if len(payload) > self.max_message_bytes:
            raise MessageTooLarge(len(payload), self.max_message_bytes)
        return payload

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _dumps_escaped(record: dict[str, JSONValue], msg_id: str) -> bytes:
    """The JSON of a record whose strings hold lone surrogates (a file name from ``os.fsdecode`` that is not
    UTF-8): each written as the visible text ``\\udcXX``, as lines show them, since a log call must not
    fail on one byte. Raises :class:`MessageError` for a value JSON cannot hold (an object, a set ...)."""
    try:
        return orjson.dumps(visible_surrogates(record))
    except orjson.JSONEncodeError as exc:  # orjson's name for TypeError
        raise MessageError(f"message {msg_id} is not JSON-serialisable: {exc}") from None


def _checked(
    msg_type: str, text: str, fields: Mapping[str, JSONValue] | None = None
) -> tuple[str, dict[str, JSONValue]]:
    """The canonical type and the extra fields of a message to send. Raises :class:`MessageError`."""
    canonical = _EXACT_TYPES.get(msg_type) if isinstance(msg_type, str) else None
    if canonical is None:
        canonical = normalize_level(msg_type) if isinstance(msg_type, str) else None
        if canonical is None:
            raise MessageError(f"unknown message type {msg_type!r}")
    if not isinstance(text, str):
        raise MessageError("message text must be a string")
    extra = dict(fields) if fields else {}
    if extra and not ENVELOPE_KEYS.isdisjoint(extra):
        clash = sorted(ENVELOPE_KEYS.intersection(extra))
        raise MessageError(f"field names reserved for the envelope: {', '.join(clash)}")
    if msg_type not in _EXACT_TYPES and msg_type.strip().upper() != canonical:
        extra.setdefault("level", msg_type.strip().lower())  # keep "critical" visible, filed under ERROR
    return canonical, extra


def send_with_resends(
    producer: Producer,
    messages: list[Message],
    *,
    within_s: float,
    report: Callable[[Exception, float], None] | None = None,
) -> list[str]:
    """Send, riding out a Redis restart or a dropped connection: what may not be stored is resent with the
    same ids (duplicates stay recognisable downstream), with capped exponential backoff, for at most
    ``within_s`` seconds; then the last error is raised. An error reply (out of memory ...) is not retried."""
    backoff = Backoff(base_s=0.1, cap_s=2.0)
    give_up_at = time.monotonic() + within_s
    failures = 0
    while True:
        try:
            return producer.send_many(messages)
        except BrokerConnectionError as exc:
            failures += 1
            delay = backoff.delay(failures)
            if time.monotonic() + delay > give_up_at:
                raise
            if report is not None:
                report(exc, delay)
            time.sleep(delay)
