"""What the log-file sink tests share: messages with fixed-width ids, sinks on one folder, and the lines of
a log file together with its rotated files."""

from __future__ import annotations

import gzip
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from msgrelay.keys import KeySchema
from msgrelay.message import Message
from msgrelay.sinks import LogFileSink
from msgrelay.sinks.journal import WriteJournal
from msgrelay.sinks.rotation import RotationPolicy

TS = 1_700_000_000.0
KEYS = KeySchema("msgrelay", "msgrelay:logs")


def msg(name: str, msg_type: str = "INFO", text: str = "payload") -> Message:
    return Message(id=name, type=msg_type, text=text, ts=TS)


def batch(prefix: str, count: int, msg_type: str = "INFO") -> tuple[list[Message], list[bytes]]:
    """``count`` messages with fixed-width ids (so every line has the same length) and their handles."""
    messages = [msg(f"{prefix}-{n:05d}", msg_type) for n in range(count)]
    return messages, [f"1700000000000-{prefix}-{n}".encode() for n in range(count)]


def file_ids(path: Path) -> list[str]:
    """The ids of a file's lines, in order (plain or gzipped); a torn line fails the test."""
    raw = gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
    lines = raw.split(b"\n")
    assert lines[-1] == b"", f"{path.name} ends with a torn line: {lines[-1][:80]!r}"
    return [line.decode().split(" ")[2] for line in lines[:-1]]


class SinkMaker:
    """``make(mode, name, rotation=...)``: sinks on one log folder (effectively-once ones journal in the
    test's own Redis, as consumer ``name``); :meth:`close` closes them all."""

    def __init__(self, request: pytest.FixtureRequest, log_dir: Path) -> None:
        self.request, self.log_dir = request, log_dir
        self.made: list[LogFileSink] = []

    def __call__(
        self, mode: str = "at_least_once", name: str = "web-1", *, rotation: RotationPolicy | None = None
    ) -> LogFileSink:
        journal = None
        if mode == "effectively_once":
            client = self.request.getfixturevalue("redis_client")
            journal = WriteJournal(client, KEYS, name, url=self.request.getfixturevalue("redis_url"))
        sink = LogFileSink(self.log_dir, journal=journal, rotation=rotation)
        self.made.append(sink)
        return sink

    def close(self) -> None:
        for sink in self.made:
            sink.close()


def write(sink: LogFileSink, prefix: str, count: int, *, settle: bool = True) -> list[str]:
    """Write a batch of ``count`` ERROR lines (then settle it, as after its ack); return their ids."""
    messages, handles = batch(prefix, count, "ERROR")
    assert sink.write_batch(messages, handles) == []
    if settle:
        sink.settled()
    return [message.id for message in messages]


@dataclass
class Union:
    """Every line of a log file and of its rotated siblings (plain and gzipped)."""

    counts: Counter[str] = field(default_factory=Counter)
    files: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def read(cls, folder: Path, name: str = "error.log") -> Union:
        union = cls()
        for path in sorted(folder.iterdir()):
            if path.name.startswith(name):
                union.files[path.name] = file_ids(path)
                union.counts.update(union.files[path.name])
        return union

    def once(self, expected: list[str]) -> bool:
        """Every expected id exactly once, and nothing else."""
        return self.counts == Counter(expected)
