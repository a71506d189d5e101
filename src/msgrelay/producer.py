"""The producer library: ``Producer(...).send(type, text, **fields)`` and ``send_many(...)``.

Every message gets a producer-assigned id (``<random prefix>-<counter in hex>``, unique per producer
instance, cheap to make) that survives every hop, so duplicates can be recognised downstream. Many
messages go out in pipelined chunks of ``pipeline_size``: one round trip per chunk, never per message.
"""

from __future__ import annotations

import itertools
import secrets
import time
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Self

import orjson

from msgrelay.codec import ENVELOPE_KEYS, encode
from msgrelay.config import Settings
from msgrelay.errors import (
    BrokerConnectionError,
    BrokerTimeoutError,
    MessageError,
    MessageTooLarge,
    ProduceOutcomeUnknown,
)
from msgrelay.levels import normalize_level
from msgrelay.message import JSONValue, Message
from msgrelay.transport.base import Transport
from msgrelay.transport.connection import create_transport

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
        canonical = normalize_level(msg_type) if isinstance(msg_type, str) else None
        if canonical is None:
            raise MessageError(f"unknown message type {msg_type!r}")
        if not isinstance(text, str):
            raise MessageError("message text must be a string")
        extra = dict(fields or {})
        clash = ENVELOPE_KEYS.intersection(extra)
        if clash:
            raise MessageError(f"field names reserved for the envelope: {', '.join(sorted(clash))}")
        if msg_type.strip().upper() != canonical:
            extra.setdefault("level", msg_type.strip().lower())
        return Message(id=self.new_id(), type=canonical, text=text, ts=time.time(), fields=extra)

    def send(self, msg_type: str, text: str, **fields: JSONValue) -> str:
        """Send one message; returns its id."""
        return self.send_many([(msg_type, text, fields)])[0]

    def send_many(self, messages: Iterable[MessageSpec]) -> list[str]:
        """Send messages in pipelined chunks; returns their ids in order.

        Every message is validated before any chunk is sent. If the connection fails while a chunk is
        sent, :class:`ProduceOutcomeUnknown` says which ids are stored, unknown and unsent: resend the
        unknown ones with the same ids (pass the same :class:`Message` objects) and duplicates stay
        recognisable downstream. An error reply (out of memory ...) means the chunk was refused.
        """
        built = [self._as_message(spec) for spec in messages]
        payloads = [self._encode(message) for message in built]
        ids = [message.id for message in built]
        for start in range(0, len(payloads), self.pipeline_size):
            end = start + self.pipeline_size
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

    def _as_message(self, spec: MessageSpec) -> Message:
        if isinstance(spec, Message):
            return spec
        return self.build(*spec)

    def _encode(self, message: Message) -> bytes:
        try:
            payload = encode(message)
        except (TypeError, orjson.JSONEncodeError) as exc:
            raise MessageError(f"message {message.id} is not JSON-serialisable: {exc}") from None
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
