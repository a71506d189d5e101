"""Where processed messages end up. Every sink states what happens to a batch when it fails."""

from msgrelay.sinks.base import Reject, Sink
from msgrelay.sinks.files import LogFileSink
from msgrelay.sinks.journal import WriteJournal

__all__ = ["LogFileSink", "Reject", "Sink", "WriteJournal"]
