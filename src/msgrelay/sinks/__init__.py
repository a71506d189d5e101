"""Where processed messages end up. Every sink states what happens to a batch when it fails."""

from msgrelay.sinks.base import Sink
from msgrelay.sinks.files import LogFileSink

__all__ = ["LogFileSink", "Sink"]
