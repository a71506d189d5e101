"""One append-only log file per message type, in one folder.

The file of a message is ``TYPE_FILES[message.type]`` inside ``log_dir``: a fixed table, never a name
built from message content (nor from anything read back from Redis). Each batch is written with one
``write()`` per file, under ``flock`` and with a torn tail cut first (:mod:`msgrelay.sinks.appendfile`), so
consumers on one host sharing the folder never tear or interleave a line; then fsynced when ``fsync`` is on.

Failure contract (:mod:`msgrelay.sinks.base`): every type's file is attempted. If some fail, ``write_batch``
raises :class:`SinkError` whose ``failed_types`` are the types with nothing written (their files were cut
back to where the batch started); the other types' lines are durably written. A message the formatter
cannot render is returned as a reject and the rest of the batch is written.

Effectively once (``journal`` given): the files of a batch are locked together (sorted by path), the batch
is journaled in Redis before the write, and a record left torn by a killed writer is cut and dropped by the
next writer. A consumer killed at any instant thus leaves no torn line, and ``already_written`` tells it,
after a restart or a takeover, which deliveries are already on disk: no duplicate line either.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from msgrelay.errors import SinkError
from msgrelay.levels import TYPE_FILES
from msgrelay.message import Message
from msgrelay.sinks.appendfile import (
    append_whole,
    cut_torn_tail,
    file_size,
    is_regular,
    locked,
    open_for_append,
)
from msgrelay.sinks.base import Reject
from msgrelay.sinks.journal import (
    FileRecord,
    OwnedRecord,
    WriteJournal,
    content_digest,
    file_key,
    handle_digest,
)
from msgrelay.sinks.lines import FORMATTERS


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
    ) -> None:
        self.log_dir = Path(log_dir).resolve()
        self.fsync = fsync
        self.journal = journal
        self._format = FORMATTERS[line_format]
        self._paths = {msg_type: self.log_dir / name for msg_type, name in TYPE_FILES.items()}
        self._fds: dict[str, int] = {}
        self._adopted: set[OwnedRecord] = set()
        """Complete records of other consumers whose every handle ``already_written`` reported."""
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
        batches, rejects = self._split(messages, handles)
        if self.journal is None:
            failures = {batch.msg_type: self._append_alone(batch) for batch in batches}
        else:
            failures = self._append_journaled(batches, self.journal)
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
        """At least once: lock this one file, cut a torn tail, append. Returns an error text or None."""
        try:
            fd = self._fd(batch.msg_type)
            with locked([fd]):
                append_whole(fd, batch.data(), cut_torn_tail(fd), fsync=self.fsync)
        except OSError as exc:
            self._close_fd(batch.msg_type)  # reopen next time: the file may have been rotated or remounted
            return self._describe(batch, exc)
        return None

    def _append_journaled(self, batches: list[_FileBatch], journal: WriteJournal) -> dict[str, str | None]:
        """Effectively once: lock every file, journal the batch, cut torn records, then append."""
        failures: dict[str, str | None] = {}
        ready: dict[int, _FileBatch] = {}  # in path order, the order every writer locks in: no deadlock
        for batch in batches:
            try:
                ready[self._fd(batch.msg_type)] = batch
            except OSError as exc:
                failures[batch.msg_type] = self._describe(batch, exc)
        if ready:
            with locked(list(ready)):
                self._journal_and_append(ready, journal, failures)
        for msg_type, error in failures.items():
            if error is not None:
                self._close_fd(msg_type)  # reopen next time: the file may have been rotated or remounted
        return failures

    def _journal_and_append(
        self, ready: dict[int, _FileBatch], journal: WriteJournal, failures: dict[str, str | None]
    ) -> None:
        """Under the locks. Fills ``failures`` (type -> error text, or None once written)."""
        datas = {fd: batch.data() for fd, batch in ready.items()}
        records: dict[int, FileRecord] = {}
        for fd, batch in ready.items():
            try:
                records[fd] = self._record(fd, batch, cut_torn_tail(fd), datas[fd])
            except OSError as exc:
                failures[batch.msg_type] = self._describe(batch, exc)
        if not records:
            return
        torn = self._cut_torn_records(records, journal.begin(list(records.values())), ready, failures)
        if torn:  # rare: a writer died mid-write, and our start offsets moved back to where its bytes began
            records = {fd: self._record(fd, ready[fd], file_size(fd), datas[fd]) for fd in records}
            journal.rewrite_and_drop(list(records.values()), torn)
        for fd, record in records.items():
            batch = ready[fd]
            try:
                append_whole(fd, datas[fd], record.start, fsync=self.fsync)
                failures[batch.msg_type] = None
            except OSError as exc:
                failures[batch.msg_type] = self._describe(batch, exc)

    def _record(self, fd: int, batch: _FileBatch, start: int, data: bytes) -> FileRecord:
        info = os.fstat(fd)
        return FileRecord(
            file_key(batch.path), info.st_dev, info.st_ino, start, len(data), content_digest(data),
            frozenset(batch.handles),
        )  # fmt: skip

    def _cut_torn_records(
        self,
        records: dict[int, FileRecord],
        found: Sequence[OwnedRecord],
        ready: dict[int, _FileBatch],
        failures: dict[str, str | None],
    ) -> list[OwnedRecord]:
        """Cut each file back where a record of a dead writer is torn; return those records.

        Every writer does this under the lock before appending, so a torn record is always at the file's
        tail. A file that cannot be cut is not written (its record then looks torn to the next writer).
        """
        torn: list[OwnedRecord] = []
        for fd, mine in list(records.items()):
            if not is_regular(fd):
                continue  # /dev/full, a FIFO: nothing to cut
            for owned in found:
                if owned.record.same_file(mine.key, mine.dev, mine.ino) and owned.record.is_torn(
                    file_size(fd)
                ):
                    try:
                        os.ftruncate(fd, owned.record.start)
                    except OSError as exc:
                        failures[ready[fd].msg_type] = self._describe(ready[fd], exc)
                        del records[fd]
                        break
                    torn.append(owned)
        return torn

    def already_written(self, handles: Sequence[bytes]) -> set[bytes]:
        """Handles whose lines a journal record shows fully on disk. Always empty without a journal.

        Call it for recovered deliveries (reclaimed from a dead consumer, or retaken by this name after a
        restart) before writing anything new, ack what it returns, write the rest. A torn record met on
        the way is cut and dropped, as a writer would.
        """
        if self.journal is None or not handles:
            return set()
        wanted = {handle_digest(handle): handle for handle in handles}
        by_key = {file_key(path): msg_type for msg_type, path in self._paths.items()}
        types = {by_key[o.record.key] for o in self.journal.records() if self._concerns(o, by_key, wanted)}
        if not types:
            return set()
        try:
            fds = {
                msg_type: self._fd(msg_type) for msg_type in sorted(types, key=lambda t: str(self._paths[t]))
            }
            with locked(list(fds.values())):
                # Read again under the locks: a record is only judged while no one can be writing its file.
                found = [o for o in self.journal.records() if self._concerns(o, by_key, wanted)]
                locked_fds = {key: fds[msg_type] for key, msg_type in by_key.items() if msg_type in fds}
                return self._judge(self.journal, found, locked_fds, wanted)
        except OSError as exc:
            raise SinkError(f"cannot check the log files in {self.log_dir}: {exc.strerror or exc}") from exc

    @staticmethod
    def _concerns(owned: OwnedRecord, by_key: dict[str, str], wanted: dict[bytes, bytes]) -> bool:
        return owned.record.key in by_key and not owned.record.handles.isdisjoint(wanted)

    def _judge(
        self, journal: WriteJournal, found: list[OwnedRecord], fds: dict[str, int], wanted: dict[bytes, bytes]
    ) -> set[bytes]:
        """Under the locks: the wanted handles of complete records; torn records are cut and dropped."""
        done: set[bytes] = set()
        torn: list[OwnedRecord] = []
        for owned in found:
            record, fd = owned.record, fds.get(owned.record.key)
            if fd is None:
                continue  # a file we did not lock (its record appeared since the first read)
            info = os.fstat(fd)
            if (record.dev, record.ino) != (info.st_dev, info.st_ino) or not stat.S_ISREG(info.st_mode):
                continue  # the file was rotated since: its lines are elsewhere, write them again
            if record.is_torn(info.st_size):
                os.ftruncate(fd, record.start)
                torn.append(owned)
            elif record.end <= info.st_size and self._holds(fd, record):
                done |= {wanted[digest] for digest in record.handles & wanted.keys()}
                if record.handles <= wanted.keys() and owned.consumer != journal.consumer:
                    self._adopted.add(owned)  # all its handles get acked now: settled() may drop it
        if torn:
            journal.rewrite_and_drop(None, torn)
        return done

    @staticmethod
    def _holds(fd: int, record: FileRecord) -> bool:
        return content_digest(os.pread(fd, record.length, record.start)) == record.sha1

    def settled(self) -> None:
        """The last batch is acknowledged: drop its journal entry, and the records of other consumers whose
        handles ``already_written`` reported (they are acknowledged now). No-op without a journal."""
        if self.journal is not None:
            self.journal.clear(dropping=sorted(self._adopted, key=str))
            self._adopted.clear()

    @staticmethod
    def _describe(batch: _FileBatch, error: OSError) -> str:
        notes = "".join(f" ({note})" for note in getattr(error, "__notes__", []))
        return f"cannot write {batch.path}: {error.strerror or error}{notes}"

    def _fd(self, msg_type: str) -> int:
        fd = self._fds.get(msg_type)
        if fd is None:
            fd = open_for_append(self.path_for(msg_type))
            self._fds[msg_type] = fd
        return fd

    def _close_fd(self, msg_type: str) -> None:
        fd = self._fds.pop(msg_type, None)
        if fd is not None:
            os.close(fd)

    def close(self) -> None:
        for msg_type in list(self._fds):
            self._close_fd(msg_type)
