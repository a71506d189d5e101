"""One log file, kept in step with its path while rotators move it: nothing acknowledged is lost to rotation.

A consumer keeps each file open (one ``O_APPEND`` descriptor) and appends under ``flock``. Others move the
path under it: logrotate (rename then create, or copy then truncate), an operator's ``mv``/``rm``, another
consumer's built-in rotation. The rules, each with the race it closes:

1. **Before a write**, under the lock, the path must name the open file (same ``st_dev``/``st_ino``);
   otherwise the descriptor is closed and the path opened again (created if need be). A path that is gone
   is given :data:`MISSING_GRACE_S` to come back first: logrotate's ``create`` makes the new file right
   after its rename, with ``O_EXCL``, and would move a file we had just created out of its way.
2. **Built-in rotation** happens there too, under the same lock (:mod:`msgrelay.sinks.rotation`).
3. **After the write** (and the fsync), the path must still name the file. A rotator that takes no lock
   can rename it between 1 and our write (``mv error.log error.log.1``, then ``rm`` or ``gzip`` of it): our
   bytes went to a file that is no longer at the path and may soon be gone. They are cut back off its end
   (we hold the lock: nobody appended after them) and written again at the path, before the batch is
   acknowledged. So an acknowledged line is always in the file at the path at the moment it is checked.
4. **Truncation** (``copytruncate``) is noticed before and after each write; what it lost is written
   again (:mod:`msgrelay.sinks.truncation`).

What follows 3 is the rotator's business: lines acknowledged before a rotation are in the rotated file,
which the rotator keeps, compresses or deletes as configured.
"""

from __future__ import annotations

import enum
import errno
import fcntl
import os
import stat
import time
from contextlib import suppress
from pathlib import Path
from typing import Final

from msgrelay.sinks.appendfile import append_whole, cut_torn_tail, open_for_append
from msgrelay.sinks.rotation import RotationPolicy, fsync_folder, rotate
from msgrelay.sinks.truncation import RecentAppends

MISSING_GRACE_S: Final = 0.05
"""How long a path found missing is given to reappear (logrotate creates it microseconds after its rename)."""
MAX_REOPENS: Final = 20
"""Reopens in a row before giving up on a path that keeps moving (an error for that file, retried later)."""


class Placement(enum.Enum):
    """Where the bytes of an append are, checked right after it."""

    IN_PLACE = "in place"
    """At the path, whole."""
    MOVED = "moved"
    """The file was renamed or removed under us (a rotator between our check and our write)."""
    TRUNCATED = "truncated"
    """The file was truncated (copytruncate) around our write: after it, our bytes may be in the copy or
    lost; before it, they are in place but earlier appends may be lost. The next pass writes again what
    the copy does not hold."""


class LogFile:
    """One log file's descriptor: opened on demand, locked with :meth:`acquire`, checked against the path."""

    def __init__(self, path: Path, rotation: RotationPolicy | None = None) -> None:
        self.path = path
        self.rotation = rotation if rotation is not None and rotation.enabled else None
        self._where = str(path)  # os.stat takes a str a little faster than a Path: twice per write
        self.fd: int | None = None
        self.info: os.stat_result | None = None
        """``fstat`` of the descriptor, taken by :meth:`acquire` under the lock (its identity is fixed)."""
        self.recent = RecentAppends(path)
        self._entry_synced = False
        """Whether the folder was fsynced since the descriptor was opened (the file may be new)."""

    # --- locking, with the path check and built-in rotation -------------------------------------------

    def acquire(self, incoming: int = 0) -> os.stat_result:
        """Lock the file at the path, rotating it first if ``incoming`` more bytes make it due; return its
        ``fstat``. Raises ``OSError`` (the descriptor is closed then: the next call opens the path anew)."""
        moved = False
        for _ in range(MAX_REOPENS):
            fd = self._open(wait_for_path=moved)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                info = os.fstat(fd)
            except OSError:
                self.close()
                raise
            if self._at_path(info):
                if self.rotation is None or not self._rotate_if_due(fd, info, incoming):
                    self.recent.follow(info)
                    self.info = info
                    return info
                moved = False  # we rotated it ourselves: the new file is ours to create, no waiting
            else:
                moved = True
            self.release()
            self.close()
        raise OSError(errno.ESTALE, f"{self.path} kept moving while being opened ({MAX_REOPENS} times)")

    def release(self) -> None:
        if self.fd is not None:
            with suppress(OSError):  # closing the descriptor releases it anyway
                fcntl.flock(self.fd, fcntl.LOCK_UN)

    def _open(self, *, wait_for_path: bool) -> int:
        if self.fd is None:
            if wait_for_path:
                self._wait_for_path()
            try:
                self.fd = open_for_append(self.path)
            except FileNotFoundError:  # the folder itself was removed: make it again, as on start
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.fd = open_for_append(self.path)
            self._entry_synced = False
        return self.fd

    def _wait_for_path(self) -> None:
        deadline = time.monotonic() + MISSING_GRACE_S
        while not self.path.exists() and time.monotonic() < deadline:
            time.sleep(0.002)  # polling a condition with a deadline: no notification exists for it

    def _at_path(self, info: os.stat_result) -> bool:
        try:
            current = os.stat(self._where)
        except FileNotFoundError:
            return False
        return current.st_ino == info.st_ino and current.st_dev == info.st_dev

    def _rotate_if_due(self, fd: int, info: os.stat_result, incoming: int) -> bool:
        assert self.rotation is not None
        if not stat.S_ISREG(info.st_mode) or not self.rotation.due(info, incoming):
            return False
        cut_torn_tail(fd, info)  # a rotated file never ends with a partial line
        rotate(self.path, self.rotation.keep)
        return True

    # --- one append -----------------------------------------------------------------------------------

    def prepare(self, data: bytes) -> tuple[int, bytes]:
        """Under the lock: (where the append starts, the bytes to append). Those are ``data`` preceded by
        whatever a truncation since our last append lost; a torn tail left by a killed writer is cut."""
        fd, info = self.held(), self._locked_info()
        lost = self.recent.lost(fd, info.st_size)
        return cut_torn_tail(fd, info), lost + data

    def append(self, start: int, data: bytes, *, fsync: bool) -> Placement:
        """Append ``data`` (``start`` from :meth:`prepare`), then say where it is. On a write error the file
        is cut back to ``start`` and the ``OSError`` raised. A moved append is taken back off the moved file;
        an append in place is remembered (for a truncation to come)."""
        fd, info = self.held(), self._locked_info()
        append_whole(fd, data, start, fsync=fsync)
        if fsync and not self._entry_synced:  # a file created since (after a rotation): its name too
            fsync_folder(self.path.parent)
            self._entry_synced = True
        if not stat.S_ISREG(info.st_mode):  # /dev/full, a FIFO: no offsets to check
            return Placement.IN_PLACE if self._at_path(info) else Placement.MOVED
        # O_APPEND wrote at the end of the file as it was then: after a truncation since prepare(), not at
        # start. The file position says where it really went; the end of the file, whether it is still there.
        end = os.lseek(fd, 0, os.SEEK_CUR)
        size = os.lseek(fd, 0, os.SEEK_END)
        actual = end - len(data)
        if not self._at_path(info):
            self.take_back(actual, len(data))
            return Placement.MOVED
        if size < end:
            self.recent.add(actual, data)
            return Placement.TRUNCATED  # after our write: the copy may hold it, or not (see lost())
        if actual != start:
            return Placement.TRUNCATED  # before our write: it is in place, what came before may be lost
        self.recent.add(start, data)
        return Placement.IN_PLACE

    def take_back(self, start: int, length: int) -> None:
        """Cut our append off the end of a file that moved away, so it is not there twice once written again.
        Only when it is the file's tail (we hold the lock; a rotator that compresses may hold a copy)."""
        fd = self.held()
        with suppress(OSError):
            info = os.fstat(fd)
            if stat.S_ISREG(info.st_mode) and info.st_size == start + length:
                os.ftruncate(fd, start)

    def write(self, data: bytes, *, fsync: bool) -> None:
        """Lock, append ``data`` (with what a truncation lost), check, unlock: until it is in place at the
        path. Raises ``OSError`` with nothing of ``data`` left in the file at the path."""
        pending = data
        for _ in range(MAX_REOPENS):
            self.acquire(len(pending))
            try:
                start, payload = self.prepare(pending)
                if not payload:
                    return
                placement = self.append(start, payload, fsync=fsync)
            finally:
                self.release()
            if placement is Placement.IN_PLACE:
                return
            # moved: write it all again at the path; truncated: write again what the truncation lost
            pending = payload if placement is Placement.MOVED else b""
        raise OSError(errno.ESTALE, f"{self.path} kept moving while being written ({MAX_REOPENS} times)")

    def held(self) -> int:
        """The open descriptor (locked by :meth:`acquire`); ``OSError`` if there is none."""
        if self.fd is None:
            raise OSError(errno.EBADF, f"{self.path} is not open")
        return self.fd

    def _locked_info(self) -> os.stat_result:
        if self.info is None:
            raise OSError(errno.EBADF, f"{self.path} is not locked")
        return self.info

    def close(self) -> None:
        """Close the descriptor (releasing its lock); the next :meth:`acquire` opens the path again."""
        fd, self.fd, self.info = self.fd, None, None
        if fd is not None:
            self.recent.forget()  # about that descriptor's file: a new file may even get its inode number
            os.close(fd)
