"""One append-only log file per message type, in one folder.

The file of a message is ``TYPE_FILES[message.type]`` inside ``log_dir``: a fixed table, never a name
built from message content (nor from anything read back from Redis). Each batch is written with one
``write()`` per file, under ``flock`` and with a torn tail cut first (:mod:`msgrelay.sinks.appendfile`), so
consumers on one host sharing the folder never tear or interleave a line; then fsynced when ``fsync`` is on.

Rotation (:mod:`msgrelay.sinks.logfile`): before each write the path is checked against the open file and
reopened when it moved; after the write it is checked again, and bytes that a lock-free rotator moved away
meanwhile are written again at the path before the batch is acknowledged. A truncation (``copytruncate``) is
repaired the same way. ``request_reopen`` (SIGHUP) closes every file at the next safe moment. With a
:class:`~msgrelay.sinks.rotation.RotationPolicy` the sink rotates the files itself, under their locks, and
:meth:`LogFileSink.maintain` compresses rotated files in the background and rotates idle files at midnight.

Failure contract (:mod:`msgrelay.sinks.base`): every type's file is attempted. If some fail, ``write_batch``
raises :class:`SinkError` whose ``failed_types`` are the types with nothing written (their files were cut
back to where the batch started); the other types' lines are durably written. A message the formatter
cannot render is returned as a reject and the rest of the batch is written.

Effectively once (``journal`` given, :mod:`msgrelay.sinks.journaled`): the files of a batch are locked
together (sorted by path), the batch is journaled in Redis before the write, and a record left torn by a
killed writer is cut and dropped by the next writer. A consumer killed at any instant thus leaves no torn
line, and ``already_written`` tells it, after a restart or a takeover, which deliveries are already on disk
(in the file, or in the file it was rotated to): no duplicate line either.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from msgrelay.errors import SinkError
from msgrelay.levels import TYPE_FILES
from msgrelay.message import Message
from msgrelay.sinks.base import Reject
from msgrelay.sinks.compress import Compressor, Referenced
from msgrelay.sinks.journal import WriteJournal, handle_digest
from msgrelay.sinks.journaled import JournaledAppends, Part
from msgrelay.sinks.lines import FORMATTERS
from msgrelay.sinks.logfile import LogFile
from msgrelay.sinks.rotation import RotationPolicy

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _FileBatch:
    """The part of a batch going to one file."""

    msg_type: str
    path: Path
    lines: list[str] = field(default_factory=list)
    handles: set[bytes] = field(default_factory=set)
    """SHA-1 of the handles of its messages (effectively once only)."""

    def data(self) -> bytes:
        return "".join(self.lines).encode("utf-8")


class LogFileSink:
    """Appends each message as one line to ``<log_dir>/<type>.log``; with a journal, effectively once."""

    def __init__(
        self,
        log_dir: Path,
        *,
        fsync: bool = False,
        line_format: str = "text",
        journal: WriteJournal | None = None,
        rotation: RotationPolicy | None = None,
    ) -> None:
        self.log_dir = Path(log_dir).resolve()
        self.fsync = fsync
        self.journal = journal
        self.rotation = rotation if rotation is not None and rotation.enabled else None
        self._format = FORMATTERS[line_format]
        self._paths = {msg_type: self.log_dir / name for msg_type, name in TYPE_FILES.items()}
        self._files = {msg_type: LogFile(path, self.rotation) for msg_type, path in self._paths.items()}
        self._journaled = None if journal is None else JournaledAppends(journal, fsync=fsync)
        self._reopen = threading.Event()
        self._compressor: Compressor | None = None
        if self.rotation is not None and self.rotation.compress:
            referenced = None if journal is None else _referenced_by(journal)
            self._compressor = Compressor(list(self._files.values()), referenced)
        try:
            self.log_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SinkError(f"cannot create log folder {self.log_dir}: {exc.strerror}") from exc

    def path_for(self, msg_type: str) -> Path:
        """The file of a type. ``KeyError`` for anything outside the fixed table."""
        return self._paths[msg_type]

    def write_batch(self, messages: Sequence[Message], handles: Sequence[bytes] = ()) -> list[Reject]:
        """Write the batch; return the rejects. See the module's failure contract."""
        if self.journal is not None and len(handles) != len(messages):
            raise ValueError(f"{len(messages)} messages but {len(handles)} handles: journaling needs both")
        self._reopen_if_requested()
        batches, rejects = self._split(messages, handles)
        if self._journaled is None:
            failures = {batch.msg_type: self._append_alone(batch) for batch in batches}
        else:
            failures = self._append_journaled(batches, self._journaled)
        failed = {msg_type: error for msg_type, error in failures.items() if error is not None}
        if failed:
            raise SinkError("; ".join(failed.values()), failed_types=frozenset(failed))
        return rejects

    def _split(
        self, messages: Sequence[Message], handles: Sequence[bytes]
    ) -> tuple[list[_FileBatch], list[Reject]]:
        """Format every message (a message that cannot be formatted is a reject) and group them by file."""
        batches: dict[str, _FileBatch] = {}
        rejects: list[Reject] = []
        paths, format_line, journaled = self._paths, self._format, self.journal is not None
        for index, message in enumerate(messages):  # the hot loop of writing: kept to the bare steps
            try:
                line = format_line(message)
                batch = batches.get(message.type)
                if batch is None:
                    batch = batches[message.type] = _FileBatch(message.type, paths[message.type])
            except Exception as exc:  # one bad message must never fail the batch
                rejects.append((index, f"{type(exc).__name__}: {exc}"))
                continue
            batch.lines.append(line)
            if journaled:
                batch.handles.add(handle_digest(handles[index]))
        return sorted(batches.values(), key=lambda batch: str(batch.path)), rejects

    def _append_alone(self, batch: _FileBatch) -> str | None:
        """At least once: lock this one file (in step with its path), append, check. An error text or None."""
        log_file = self._files[batch.msg_type]
        try:
            log_file.write(batch.data(), fsync=self.fsync)
        except OSError as exc:
            log_file.close()  # reopen next time: the file may have been replaced or remounted
            return self._describe(batch, exc)
        return None

    def _append_journaled(
        self, batches: list[_FileBatch], journaled: JournaledAppends
    ) -> dict[str, str | None]:
        """Effectively once: lock every file, journal the batch, cut torn records, then append."""
        parts = [
            Part(batch.msg_type, self._files[batch.msg_type], batch.data(), frozenset(batch.handles))
            for batch in batches
        ]
        outcome = journaled.write(parts)
        failures: dict[str, str | None] = {}
        for batch in batches:
            error = outcome.get(batch.msg_type)
            failures[batch.msg_type] = None if error is None else self._describe(batch, error)
            if error is not None:
                self._files[batch.msg_type].close()  # reopen next time
        return failures

    def already_written(self, handles: Sequence[bytes]) -> set[bytes]:
        """Handles whose lines a journal record shows fully on disk. Always empty without a journal.

        Call it for recovered deliveries (reclaimed from a dead consumer, or retaken by this name after a
        restart) before writing anything new, ack what it returns, write the rest. A torn record met on
        the way is cut and dropped, as a writer would.
        """
        if self._journaled is None or not handles:
            return set()
        try:
            return self._journaled.already_written(list(self._files.values()), handles)
        except OSError as exc:
            raise SinkError(f"cannot check the log files in {self.log_dir}: {exc.strerror or exc}") from exc

    def settled(self) -> None:
        """The last batch is acknowledged: drop its journal entry, and the records of other consumers whose
        handles ``already_written`` reported (they are acknowledged now). No-op without a journal."""
        if self._journaled is not None:
            self._journaled.settled()

    # --- rotation and reopening -----------------------------------------------------------------------

    def request_reopen(self) -> None:
        """Close every file at the next safe moment (next write or :meth:`maintain`), so that the paths are
        opened anew: what SIGHUP asks for. Safe from a signal handler."""
        self._reopen.set()

    def _reopen_if_requested(self) -> None:
        if self._reopen.is_set():
            self._reopen.clear()
            self.close_files()

    def maintain(self) -> None:
        """Housekeeping between batches (the consumer's maintenance turn, about once a second): a requested
        reopen; with rotation, the daily rotation of files that got no write since midnight, and the
        compression of rotated files in the background. Never raises: a problem is logged."""
        self._reopen_if_requested()
        if self.rotation is None:
            return
        if self.rotation.daily:
            for msg_type, log_file in self._files.items():
                try:
                    self._rotate_idle(log_file)
                except OSError as exc:
                    log.warning("cannot rotate %s: %s", self._paths[msg_type], exc.strerror or exc)
        if self._compressor is not None:
            self._compressor.poke()

    def _rotate_idle(self, log_file: LogFile) -> None:
        assert self.rotation is not None
        try:
            info = log_file.path.stat()
        except FileNotFoundError:
            return
        if self.rotation.due(info, 0):
            log_file.acquire()  # rotates it, under its lock
            log_file.release()

    @staticmethod
    def _describe(batch: _FileBatch, error: OSError) -> str:
        notes = "".join(f" ({note})" for note in getattr(error, "__notes__", []))
        return f"cannot write {batch.path}: {error.strerror or error}{notes}"

    def close_files(self) -> None:
        """Close every open file (the next write opens the paths again)."""
        for log_file in self._files.values():
            log_file.close()

    def close(self) -> None:
        if self._compressor is not None:
            self._compressor.close()
        self.close_files()


def _referenced_by(journal: WriteJournal) -> Referenced:
    def referenced() -> set[tuple[str, int, int]]:
        return {(o.record.key, o.record.dev, o.record.ino) for o in journal.records()}

    return referenced
