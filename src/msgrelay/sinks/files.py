"""One append-only log file per message type, in one folder.

The file of a message is ``TYPE_FILES[message.type]`` inside ``log_dir``: a fixed table, never a name
built from message content. Each batch is written with one ``write()`` per file (``O_APPEND``, so
concurrent consumers on one host never interleave inside a line), then fsynced when ``fsync`` is on.

Failure contract: if any file of the batch cannot be written (ENOSPC, EIO, permissions), ``write_batch``
raises :class:`SinkError` and nothing of the batch is acknowledged; lines already written for other types
will be written again on redelivery (duplicates, never a gap).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from msgrelay.errors import SinkError
from msgrelay.levels import TYPE_FILES
from msgrelay.message import Message
from msgrelay.sinks.lines import FORMATTERS


class LogFileSink:
    """Appends each message as one line to ``<log_dir>/<type>.log``."""

    def __init__(self, log_dir: Path, *, fsync: bool = False, line_format: str = "text") -> None:
        self.log_dir = Path(log_dir).resolve()
        self.fsync = fsync
        self._format = FORMATTERS[line_format]
        self._fds: dict[str, int] = {}
        try:
            self.log_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SinkError(f"cannot create log folder {self.log_dir}: {exc.strerror}") from exc

    def path_for(self, msg_type: str) -> Path:
        """The file of a type. ``KeyError`` for anything outside the fixed table."""
        return self.log_dir / TYPE_FILES[msg_type]

    def write_batch(
        self, messages: Sequence[Message], handles: Sequence[bytes] = ()
    ) -> list[tuple[int, str]]:
        chunks: dict[str, list[str]] = {}
        for message in messages:
            chunks.setdefault(message.type, []).append(self._format(message))
        for msg_type, lines in chunks.items():
            self._append(msg_type, "".join(lines).encode("utf-8"))
        return []

    def already_written(self, handles: Sequence[bytes]) -> set[bytes]:
        return set()

    def settled(self) -> None:
        """Nothing to do in at-least-once mode."""

    def _append(self, msg_type: str, data: bytes) -> None:
        path = self.path_for(msg_type)
        try:
            fd = self._fd(msg_type)
            view = memoryview(data)
            while view:  # a regular file takes it all at once; a short write (signal, ENOSPC) loops or raises
                written = os.write(fd, view)
                view = view[written:]
            if self.fsync:
                os.fsync(fd)
        except OSError as exc:
            self._close_fd(msg_type)  # reopen next time: the file may have been rotated or remounted
            raise SinkError(f"cannot write {path}: {exc.strerror or exc}") from exc

    def _fd(self, msg_type: str) -> int:
        fd = self._fds.get(msg_type)
        if fd is None:
            fd = os.open(
                self.path_for(msg_type), os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644
            )
            self._fds[msg_type] = fd
        return fd

    def _close_fd(self, msg_type: str) -> None:
        fd = self._fds.pop(msg_type, None)
        if fd is not None:
            os.close(fd)

    def close(self) -> None:
        for msg_type in list(self._fds):
            self._close_fd(msg_type)
