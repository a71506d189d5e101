"""Transports move raw entries between producers and consumers. See :mod:`msgrelay.transport.base`."""

from msgrelay.transport.base import Transport, redis_errors
from msgrelay.transport.connection import connect, create_transport
from msgrelay.transport.lists import ListTransport
from msgrelay.transport.streams import StreamTransport

__all__ = ["ListTransport", "StreamTransport", "Transport", "connect", "create_transport", "redis_errors"]
