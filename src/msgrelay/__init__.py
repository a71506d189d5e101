"""msgrelay: reliable, fast message processing on Redis.

from msgrelay import Producer, load_settings
with Producer.from_settings(load_settings()) as producer:
    producer.send("ERROR", "disk full on /var", host="web-1")
"""

from msgrelay.config import Settings, load_settings
from msgrelay.consumer import BatchResult, Consumer, ConsumerHook, Totals
from msgrelay.dlq import DeadLetterStore
from msgrelay.errors import (
    BrokerConnectionError,
    BrokerError,
    BrokerResponseError,
    BrokerTimeoutError,
    ConfigError,
    DecodeError,
    MessageError,
    MessageTooLarge,
    MsgrelayError,
    ProduceOutcomeUnknown,
    SinkError,
)
from msgrelay.message import Delivery, Message
from msgrelay.producer import Producer
from msgrelay.sinks import LogFileSink, Sink

__version__ = "0.1.0"

__all__ = [
    "BatchResult",
    "BrokerConnectionError",
    "BrokerError",
    "BrokerResponseError",
    "BrokerTimeoutError",
    "ConfigError",
    "Consumer",
    "ConsumerHook",
    "DeadLetterStore",
    "DecodeError",
    "Delivery",
    "LogFileSink",
    "Message",
    "MessageError",
    "MessageTooLarge",
    "MsgrelayError",
    "ProduceOutcomeUnknown",
    "Producer",
    "Settings",
    "Sink",
    "SinkError",
    "Totals",
    "__version__",
    "load_settings",
]
