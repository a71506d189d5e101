"""Copy-then-truncate rotation (logrotate's ``copytruncate``) without losing a line.

logrotate copies the file (reading until EOF), fsyncs the copy, then truncates the file to 0 bytes; it takes
no lock. Lines appended between the end of its copy and the truncation are in neither file (its manual
page: "some logging data might be lost"), and a write caught half-way by its copy leaves a partial line at
the end of the copy. A writer cannot prevent that; it can notice and repair it, which is what this module
does for the lines this consumer wrote:

* every append is remembered (offset and bytes) for a while: the last :data:`RECENT_MAX_BYTES` bytes,
  written within :data:`RECENT_MAX_AGE_S` of the newest append (the window of a copytruncate is its fsync of
  the copy, far shorter);
* before and after each write (under the file's lock) the file is checked for a truncation: it is shorter
  than our last append's end, or our last append's first bytes are no longer where we put them (another
  consumer appended after the truncation);
* the copy is then found among the file's siblings (``error.log.1``, ``error.log-20261201``, their ``.gz``):
  the rotated file that holds our oldest remembered append at its offset. Each remembered append it does
  not hold whole is written again; a partial one at its end is cut off it (the copy of a plain file), so no
  torn line stays behind. No copy found (``olddir``, ``rotate 0``): every remembered append is written
  again: possible duplicates, never a loss.

An append older than that memory and caught in the window is lost, as with any writer: prefer a rotation
that renames (logrotate ``create``/``nocreate``, or the built-in rotation).
"""

from __future__ import annotations

import gzip
import os
import stat
import time
import zlib
from collections import deque
from pathlib import Path
from typing import Final, NamedTuple

RECENT_MAX_BYTES: Final = 2 * 1024 * 1024
"""Bytes of our latest appends remembered per file (most of two seconds at full speed)."""
RECENT_MAX_AGE_S: Final = 10.0
"""Appends older than this, counted back from the newest, are forgotten."""
SAMPLE_BYTES: Final = 64
"""How much of our last append is read back to see whether it is still where we wrote it."""
GZ_CANDIDATES: Final = 2
"""Compressed siblings searched for the copy (newest first): the copy is one of the newest files."""


class Append(NamedTuple):
    """Bytes this consumer appended to a file, and where (a tuple: one is made per write)."""

    start: int
    end: int
    data: bytes
    at: float


class RecentAppends:
    """This consumer's latest appends to one file (one inode), to write again what a truncation lost."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.inode: tuple[int, int] | None = None
        self._appends: deque[Append] = deque()
        self._bytes = 0

    def follow(self, info: os.stat_result) -> None:
        """The descriptor now open is ``info``'s file: forget appends made to any other."""
        inode = (info.st_dev, info.st_ino)
        if inode != self.inode:
            self.forget()
            self.inode = inode if stat.S_ISREG(info.st_mode) else None

    def forget(self) -> None:
        """Forget every append (the descriptor they were made through is closed)."""
        self.inode = None
        self._appends.clear()
        self._bytes = 0

    def add(self, start: int, data: bytes) -> None:
        if self.inode is None or not data:
            return
        now = time.monotonic()
        appends = self._appends
        appends.append(Append(start, start + len(data), data, now))
        self._bytes += len(data)
        if self._bytes > RECENT_MAX_BYTES or appends[0].at < now - RECENT_MAX_AGE_S:
            self._forget_old(now)

    def _forget_old(self, now: float) -> None:
        appends = self._appends
        while len(appends) > 1 and (self._bytes > RECENT_MAX_BYTES or appends[0].at < now - RECENT_MAX_AGE_S):
            self._bytes -= len(appends.popleft().data)

    def truncated(self, fd: int, size: int) -> bool:
        """Whether the file was truncated since our last append (call under the file's lock)."""
        if not self._appends:
            return False
        last = self._appends[-1]
        if size < last.end:
            return True
        sample = last.data[:SAMPLE_BYTES]
        return os.pread(fd, len(sample), last.start) != sample

    def lost(self, fd: int, size: int) -> bytes:
        """After a truncation, the remembered appends that are not whole in the copy (oldest first), to be
        written again; empty when the file was not truncated. Forgets them (they describe the old content)."""
        if not self.truncated(fd, size):
            return b""
        appends = list(self._appends)
        self._appends.clear()
        self._bytes = 0  # the inode stays: the appends written again are remembered anew
        return b"".join(append.data for append in _missing_from_copy(self.path, appends))


def _missing_from_copy(path: Path, appends: list[Append]) -> list[Append]:
    for candidate in _candidates(path):
        try:
            missing = _compare(candidate, appends)
        except (OSError, EOFError, zlib.error):
            continue  # unreadable, or being compressed right now: try the next
        if missing is not None:
            return missing
    return appends


def _candidates(path: Path) -> list[Path]:
    """Siblings named after ``path`` (rotated copies), plain ones first, each kind newest first."""
    found: list[tuple[bool, float, Path]] = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return []
    for entry in entries:
        if entry.name != path.name and entry.name.startswith(path.name):
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISREG(info.st_mode):
                found.append((entry.name.endswith(".gz"), -info.st_mtime, Path(entry.path)))
    found.sort()
    plain = [item[2] for item in found if not item[0]]
    return plain + [item[2] for item in found if item[0]][:GZ_CANDIDATES]


def _compare(candidate: Path, appends: list[Append]) -> list[Append] | None:
    """None if ``candidate`` is not the copy (it does not hold our oldest append); else the appends it
    does not hold whole. A partial append at the end of a plain copy is cut off it."""
    first = appends[0]
    if candidate.name.endswith(".gz"):
        with gzip.open(candidate, "rb") as stream:
            stream.seek(first.start)
            tail = stream.read()
        if tail[: len(first.data)] != first.data:
            return None
        return [a for a in appends if tail[a.start - first.start : a.end - first.start] != a.data]
    fd = os.open(candidate, os.O_RDWR | os.O_CLOEXEC)
    try:
        if os.pread(fd, len(first.data), first.start) != first.data:
            return None
        size = os.fstat(fd).st_size
        missing = [a for a in appends if a.end > size or os.pread(fd, len(a.data), a.start) != a.data]
        if missing and missing[0].start < size:
            partial = missing[0]
            if os.pread(fd, size - partial.start, partial.start) == partial.data[: size - partial.start]:
                os.ftruncate(fd, partial.start)  # our line cut in two by the copy: it is written again whole
        return missing
    finally:
        os.close(fd)
