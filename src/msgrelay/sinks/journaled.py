"""Effectively-once appends: each batch journaled in Redis before its write, judged after a crash.

Writing (:meth:`JournaledAppends.write`): the files of a batch are locked together, in path order (every
writer does: no deadlock), each checked against its path and rotated if due while it is locked
(:meth:`msgrelay.sinks.logfile.LogFile.acquire`). Then the batch is journaled (one record per file: inode,
offset, length, hash, handles, first bytes), torn records of dead writers on those files are cut and
dropped, and the files are appended. An append that a lock-free rotator moved away meanwhile is taken back
and written again at the path in another pass, journaled again; the records of the appends that stayed in
place are kept in the entry, so a crash at any point is judged right.

Judging (:meth:`JournaledAppends.already_written`), under the same locks: a record whose bytes are whole
where it says is written (ack, don't write again); a torn one is cut and dropped (write again). A record
whose file was rotated since is judged in the rotated file, found by its inode
(:func:`msgrelay.sinks.rotation.find_rotated`): the built-in rotation only happens under the file's lock,
never between a record and its write, and it does not compress a rotated file that a record still refers
to. A record whose file is gone (deleted, or compressed by another tool) is written again: a duplicate at
worst, never a loss.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Final

from msgrelay.sinks.appendfile import file_size
from msgrelay.sinks.journal import (
    HEAD_BYTES,
    FileRecord,
    OwnedRecord,
    WriteJournal,
    content_digest,
    file_key,
    handle_digest,
    holds,
    torn_in,
)
from msgrelay.sinks.logfile import MAX_REOPENS, LogFile, Placement
from msgrelay.sinks.rotation import find_rotated

MAX_PASSES: Final = MAX_REOPENS
"""Passes of a journaled write before a file that keeps moving is reported failed (retried later)."""

Outcome = dict[str, OSError | None]
"""Type -> the error that kept its lines from being written, or None once they are in place."""


@dataclass(frozen=True, slots=True)
class Part:
    """One file's part of a journaled batch."""

    msg_type: str
    log: LogFile
    data: bytes
    handles: frozenset[bytes]
    """SHA-1 of the transport handles of its messages."""


@dataclass(slots=True)
class _Staged:
    part: Part
    start: int
    payload: bytes
    record: FileRecord


class JournaledAppends:
    """The effectively-once write and recovery of one sink, with its journal."""

    def __init__(self, journal: WriteJournal, *, fsync: bool) -> None:
        self.journal = journal
        self.fsync = fsync
        self._adopted: set[OwnedRecord] = set()
        """Complete records of other consumers whose every handle ``already_written`` reported."""

    # --- writing --------------------------------------------------------------------------------------

    def write(self, parts: Sequence[Part]) -> Outcome:
        """Write every part; returns each type's outcome. Raises ``BrokerError`` if Redis failed (nothing
        of the pass that was journaling is written then)."""
        outcome: Outcome = {}
        kept: list[FileRecord] = []  # records of appends in place, from earlier passes
        todo = sorted(parts, key=lambda part: str(part.log.path))
        for number in range(MAX_PASSES):
            if not todo:
                break
            todo = self._pass(todo, kept, outcome, first=number == 0)
        for part in todo:
            outcome[part.msg_type] = OSError(errno.ESTALE, f"{part.log.path} kept moving while being written")
        return outcome

    def _pass(self, todo: list[Part], kept: list[FileRecord], outcome: Outcome, *, first: bool) -> list[Part]:
        """Lock the files, journal, cut torn records, append. Returns the parts to write again."""
        held: list[Part] = []
        try:
            for part in todo:  # in path order
                try:
                    part.log.acquire(len(part.data))
                except OSError as exc:
                    outcome[part.msg_type] = exc
                    continue
                held.append(part)
            staged = self._stage(held, outcome)
            if not staged:
                return []
            staged = self._journal(staged, kept, outcome, skip_own=not first)
            return self._append(staged, kept, outcome)
        finally:
            for part in reversed(held):
                part.log.release()

    def _stage(self, held: list[Part], outcome: Outcome) -> list[_Staged]:
        staged: list[_Staged] = []
        for part in held:
            try:
                start, payload = part.log.prepare(part.data)
                if payload:
                    staged.append(_Staged(part, start, payload, self._record(part, start, payload)))
                else:
                    outcome[part.msg_type] = None  # nothing left to write (a truncation lost nothing)
            except OSError as exc:
                outcome[part.msg_type] = exc
        return staged

    @staticmethod
    def _record(part: Part, start: int, payload: bytes) -> FileRecord:
        info = part.log.info or os.fstat(part.log.held())
        return FileRecord(
            file_key(part.log.path), info.st_dev, info.st_ino, start, len(payload), content_digest(payload),
            part.handles, payload[:HEAD_BYTES],
        )  # fmt: skip

    def _journal(
        self, staged: list[_Staged], kept: list[FileRecord], outcome: Outcome, *, skip_own: bool
    ) -> list[_Staged]:
        """Journal the staged appends (with the kept records); cut the torn records of dead writers."""
        found = self.journal.begin([*kept, *(s.record for s in staged)])
        torn: list[OwnedRecord] = []
        for one in list(staged):
            try:
                torn += self._cut_torn(one, found, skip_own=skip_own)
            except OSError as exc:
                outcome[one.part.msg_type] = exc  # not written (its record looks torn to the next writer)
                staged.remove(one)
        if torn:  # rare: a writer died mid-write, and our start offsets moved back to where its bytes began
            for one in staged:
                one.start = file_size(one.part.log.held())
                one.record = self._record(one.part, one.start, one.payload)
            self.journal.rewrite_and_drop([*kept, *(s.record for s in staged)], torn)
        return staged

    def _cut_torn(self, one: _Staged, found: Sequence[OwnedRecord], *, skip_own: bool) -> list[OwnedRecord]:
        """Cut the file back where a record of a dead writer is torn; return those records. Every writer does
        this under the lock before appending, so a torn record is always at the file's tail."""
        fd, mine = one.part.log.held(), one.record
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return []  # /dev/full, a FIFO: nothing to cut
        torn: list[OwnedRecord] = []
        for owned in found:
            if skip_own and owned.consumer == self.journal.consumer:
                continue  # our own records of this very batch, from an earlier pass: whole, never torn
            if owned.record.same_file(mine.key, mine.dev, mine.ino) and torn_in(fd, owned.record):
                os.ftruncate(fd, owned.record.start)
                torn.append(owned)
        return torn

    def _append(self, staged: list[_Staged], kept: list[FileRecord], outcome: Outcome) -> list[Part]:
        again: list[Part] = []
        for one in staged:
            part = one.part
            try:
                placement = part.log.append(one.start, one.payload, fsync=self.fsync)
            except OSError as exc:
                outcome[part.msg_type] = exc
                continue
            if placement is Placement.MOVED:
                again.append(replace(part, data=one.payload))  # taken back: all of it again, journaled anew
                continue
            kept.append(one.record)
            if placement is Placement.TRUNCATED:
                again.append(replace(part, data=b""))  # the next pass writes what the truncation lost
            else:
                outcome[part.msg_type] = None
        return again

    # --- judging after a crash ------------------------------------------------------------------------

    def already_written(self, logs: Sequence[LogFile], handles: Sequence[bytes]) -> set[bytes]:
        """The ``handles`` whose lines a journal record shows whole on disk, in a file at its path or rotated
        since. A torn record met on the way is cut and dropped, as a writer would. Raises ``OSError``."""
        wanted = {handle_digest(handle): handle for handle in handles}
        by_key = {file_key(log.path): log for log in logs}
        concerned = {o.record.key for o in self.journal.records() if _concerns(o, by_key, wanted)}
        if not concerned:
            return set()
        held: list[LogFile] = []
        try:
            for log in sorted((by_key[key] for key in concerned), key=lambda log: str(log.path)):
                log.acquire()
                held.append(log)
            # Read again under the locks: a record is only judged while no one can be writing its file.
            found = [o for o in self.journal.records() if _concerns(o, by_key, wanted)]
            return self._judge(found, {file_key(log.path): log for log in held}, wanted)
        finally:
            for log in reversed(held):
                log.release()

    def _judge(
        self, found: list[OwnedRecord], logs: dict[str, LogFile], wanted: dict[bytes, bytes]
    ) -> set[bytes]:
        done: set[bytes] = set()
        torn: list[OwnedRecord] = []
        for owned in found:
            log = logs.get(owned.record.key)
            if log is None:
                continue  # a file we did not lock (its record appeared since the first read)
            with _record_file(log, owned.record) as fd:
                if fd is None:
                    continue  # its file is gone: its lines are written again
                if torn_in(fd, owned.record):
                    os.ftruncate(fd, owned.record.start)
                    torn.append(owned)
                elif owned.record.end <= file_size(fd) and holds(fd, owned.record):
                    done |= {wanted[digest] for digest in owned.record.handles & wanted.keys()}
                    if owned.record.handles <= wanted.keys() and owned.consumer != self.journal.consumer:
                        self._adopted.add(owned)  # all its handles get acked now: settled() may drop it
        if torn:
            self.journal.rewrite_and_drop(None, torn)
        return done

    def settled(self) -> None:
        """The last batch is acknowledged: drop its journal entry, and the records of other consumers whose
        handles ``already_written`` reported (they are acknowledged now)."""
        self.journal.clear(dropping=sorted(self._adopted, key=str))
        self._adopted.clear()


def _concerns(owned: OwnedRecord, by_key: dict[str, LogFile], wanted: dict[bytes, bytes]) -> bool:
    return owned.record.key in by_key and not owned.record.handles.isdisjoint(wanted)


@contextmanager
def _record_file(log: LogFile, record: FileRecord) -> Iterator[int | None]:
    """A descriptor on the file holding ``record``'s inode: the locked file at the path, or the rotated
    sibling it became (opened for the while; never a compressed one: that is another inode)."""
    fd = log.held()
    info = os.fstat(fd)
    if (info.st_dev, info.st_ino) == (record.dev, record.ino):
        yield fd if stat.S_ISREG(info.st_mode) else None
        return
    rotated = find_rotated(log.path, record.dev, record.ino)
    if rotated is None:
        yield None
        return
    try:
        other = os.open(rotated, os.O_RDWR | os.O_CLOEXEC)
    except OSError:  # removed meanwhile
        yield None
        return
    try:
        yield other
    finally:
        os.close(other)
