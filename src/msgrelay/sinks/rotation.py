"""Built-in rotation of the log files: when a file is due, and how the rotated files are named and shifted.

Names follow logrotate's default (numbered, newest first)::

    error.log          the file being written
    error.log.1        the newest rotated file (or error.log.1.gz once compressed)
    error.log.2.gz     ...
    error.log.<keep>   the oldest kept; at the next rotation it is deleted

A rotation renames ``error.log.<n>[.gz]`` to ``<n + 1>`` (from the highest number down, so no name is ever
overwritten; those beyond ``keep`` are deleted), then ``error.log`` to ``error.log.1``. The names come from
the fixed type -> file table and a counter, never from message content.

Every rotation runs under the lock (``flock``) of the file being rotated, taken by a writer that checked the
path still names the file it holds (:mod:`msgrelay.sinks.logfile`): of several consumers on one host sharing
the folder, exactly one rotates a file that is due; the others find the path moved and reopen it. Writers
append under the same lock, so no one ever writes into a file that another just rotated away, and a
rotation never falls between an effectively-once batch's journal record and its write.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

GZ: Final = ".gz"
DAY_S: Final = 86_400


@dataclass(frozen=True, slots=True)
class RotationPolicy:
    """When a log file is rotated, and what is kept. Built from ``[consumer.rotation]``.

    ``max_bytes``: rotate before a write would take the file past this size (0: no size limit); a single
    batch larger than that still goes whole into a fresh file. ``daily``: rotate at the first write after
    midnight UTC (the time zone of the lines), or at the next idle maintenance turn. ``keep``: rotated
    files kept (``<name>.1`` .. ``<name>.<keep>``). ``compress``: gzip rotated files in the background.
    """

    max_bytes: int = 0
    daily: bool = False
    keep: int = 7
    compress: bool = False

    def __post_init__(self) -> None:
        if self.max_bytes < 0 or self.keep < 1:
            raise ValueError(f"max_bytes must be >= 0 and keep >= 1 (got {self.max_bytes}, {self.keep})")

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0 or self.daily

    def due(self, info: os.stat_result, incoming: int, now: float | None = None) -> bool:
        """Whether the file described by ``info`` (an ``fstat`` under its lock) is rotated before ``incoming``
        more bytes are appended. An empty file is never rotated (logrotate's ``notifempty``)."""
        if info.st_size == 0:
            return False
        if self.max_bytes and info.st_size + incoming > self.max_bytes:
            return True
        return self.daily and _utc_day(info.st_mtime) < _utc_day(time.time() if now is None else now)


def _utc_day(timestamp: float) -> int:
    return int(timestamp // DAY_S)


def numbered(path: Path, number: int, *, compressed: bool = False) -> Path:
    """``error.log`` -> ``error.log.<number>`` (``.gz`` appended when ``compressed``)."""
    return path.with_name(f"{path.name}.{number}{GZ if compressed else ''}")


def rotated_files(path: Path) -> Iterator[tuple[int, Path]]:
    """The rotated files of ``path`` that exist, as (number, path), in no particular order."""
    pattern = re.compile(re.escape(path.name) + r"\.([1-9][0-9]{0,8})(\.gz)?")
    try:
        entries = list(os.scandir(path.parent))
    except FileNotFoundError:
        return
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if match is not None:
            yield int(match[1]), Path(entry.path)


def rotate(path: Path, keep: int) -> Path:
    """Shift the rotated files up by one, delete those past ``keep``, rename ``path`` to ``<path>.1``.

    Call it holding ``path``'s lock, on the descriptor the path was just checked to name. Returns the new
    name of the rotated file. Raises ``OSError`` (a failed rename leaves every file under some name: nothing
    is deleted before the shift that makes room for it).
    """
    for number, old in sorted(rotated_files(path), reverse=True):  # highest first: no name is overwritten
        if number >= keep:
            old.unlink(missing_ok=True)
        else:
            os.rename(old, numbered(path, number + 1, compressed=old.name.endswith(GZ)))
    newest = numbered(path, 1)
    os.rename(path, newest)
    fsync_folder(path.parent)
    return newest


def find_rotated(path: Path, dev: int, ino: int) -> Path | None:
    """The file among ``path``'s rotated siblings (built-in names, logrotate's numbered or dated names) that
    is the inode ``(dev, ino)``: where the lines of a journal record went when the file was rotated after
    its write. None when it is gone (deleted, or compressed into a new inode)."""
    prefix = path.name
    try:
        entries = list(os.scandir(path.parent))
    except FileNotFoundError:
        return None
    for entry in entries:
        if entry.name == prefix or not entry.name.startswith(prefix) or entry.inode() != ino:
            continue
        info = entry.stat(follow_symlinks=False)
        if info.st_dev == dev:
            return Path(entry.path)
    return None


def fsync_folder(folder: Path) -> None:
    """Make renames and creations in ``folder`` durable (POSIX: a rename is durable once its folder is)."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
