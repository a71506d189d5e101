"""A msgrelay consumer whose sink kills the whole process (``os._exit(1)``) on a POISON-EXIT message.

Everything but the sink is the real library: settings from flags and MSGRELAY_* variables, the transport,
the consumer loop and its crash recovery. Used by scenario T10.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import parse_args

from msgrelay.config import load_settings
from msgrelay.consumer import Consumer
from msgrelay.message import Message
from msgrelay.sinks.base import Reject
from msgrelay.sinks.files import LogFileSink
from msgrelay.transport.connection import create_transport

POISON = "POISON-EXIT"


class PoisonSink(LogFileSink):
    """The real log-file sink, except that a batch holding a poison message kills the process first."""

    def write_batch(self, messages: Sequence[Message], handles: Sequence[bytes] = ()) -> list[Reject]:
        if any(POISON in message.text for message in messages):
            os._exit(1)
        return super().write_batch(messages, handles)


def main() -> None:
    args = parse_args()
    settings = load_settings(
        None,
        {
            "redis": {"url": args.redis_url},
            "queue": {"transport": args.transport},
            "consumer": {
                "consumer_name": args.name,
                "log_dir": args.log_dir,
                "batch_size": args.batch_size,
                "block_timeout_s": args.block_timeout,
            },
        },
    )
    sink = PoisonSink(settings.consumer.log_dir)
    consumer = Consumer(
        create_transport(settings),
        sink,
        settings.consumer,
        max_message_bytes=settings.queue.max_message_bytes,
        trim_interval_s=settings.queue.trim_interval_s,
    )
    signal.signal(signal.SIGTERM, lambda *_: consumer.stop())
    consumer.run(burst=args.burst)
    sink.close()


if __name__ == "__main__":
    main()
