"""Whole-line appends to a shared log file: lock, cut a torn tail, write once, cut back on failure.

Every writer (any consumer process on this host) appends under ``flock(LOCK_EX)`` on the file, so at any
moment at most one append is in progress. Under the lock:

* the file must end with ``\\n``; if it does not, a writer was killed mid-write (SIGKILL, power loss) and
  its partial line was never acknowledged (it will be delivered again), so it is cut off;
* the start offset is the file size, and the batch goes out in one ``write()`` (``O_APPEND``);
* if the write or the fsync fails part-way (ENOSPC, EIO), the file is cut back to the start offset before
  the error is raised: a failed append leaves nothing behind.

Only regular files are cut; anything else (``/dev/full``, a FIFO) is written as-is.
"""

from __future__ import annotations

import fcntl
import os
import stat
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

_TAIL_CHUNK = 64 * 1024


def open_for_append(path: Path) -> int:
    """An ``O_APPEND`` descriptor on ``path`` (created 0644), readable so a torn tail can be found."""
    return os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)


def is_regular(fd: int) -> bool:
    return stat.S_ISREG(os.fstat(fd).st_mode)


@contextmanager
def locked(fds: Sequence[int]) -> Iterator[None]:
    """Hold ``LOCK_EX`` on every descriptor, taken in the order given (callers sort by path: no deadlock)."""
    held: list[int] = []
    try:
        for fd in fds:
            fcntl.flock(fd, fcntl.LOCK_EX)
            held.append(fd)
        yield
    finally:
        for fd in reversed(held):
            with suppress(OSError):  # closing the descriptor releases it anyway
                fcntl.flock(fd, fcntl.LOCK_UN)


def cut_torn_tail(fd: int, info: os.stat_result | None = None) -> int:
    """Cut the file back to just after its last ``\\n`` and return its size. Call under the lock; ``info``
    is its ``fstat`` if already taken under the lock."""
    info = os.fstat(fd) if info is None else info
    size = info.st_size
    if not stat.S_ISREG(info.st_mode) or size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return size
    end = size
    while end > 0:
        begin = max(0, end - _TAIL_CHUNK)
        newline = os.pread(fd, end - begin, begin).rfind(b"\n")
        if newline >= 0:
            end = begin + newline + 1
            break
        end = begin
    os.ftruncate(fd, end)
    return end


def append_whole(fd: int, data: bytes, start: int, *, fsync: bool) -> None:
    """Append ``data`` at ``start`` (the size, under the lock); on error cut back to ``start``, raise."""
    try:
        view = memoryview(data)
        while view:  # a regular file takes it all at once; a short write (signal, ENOSPC) loops or raises
            written = os.write(fd, view)
            view = view[written:]
        if fsync:
            os.fsync(fd)
    except OSError as exc:
        cut_back(fd, start, exc)
        raise


def cut_back(fd: int, start: int, error: OSError) -> None:
    """Cut a regular file back to ``start``; if even that fails, say so on ``error``."""
    try:
        if is_regular(fd) and file_size(fd) > start:  # never extend: a file truncated meanwhile stays so
            os.ftruncate(fd, start)
    except OSError as cut_error:
        error.add_note(f"and cutting the file back to {start} bytes failed: {cut_error.strerror}")


def file_size(fd: int) -> int:
    return os.fstat(fd).st_size
