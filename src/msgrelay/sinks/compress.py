"""Gzip of rotated log files, in a thread of its own (zlib releases the GIL: the consumer keeps writing).

``error.log.<n>`` becomes ``error.log.<n>.gz``: the compressed bytes go to a hidden temporary file in the
folder (``.error.log.<pid>.<inode>.gz.tmp``), are fsynced, and only then, under the lock of
``error.log`` (which every rotation holds while it shifts the numbers), the temporary file is renamed to the
rotated file's current name plus ``.gz`` and the plain file removed. A consumer killed at any point leaves
the plain file whole (and perhaps a temporary file, removed by the next pass once its process is gone).

Several consumers may compress the same folder: a ``LOCK_NB`` flock on the plain file makes one of them do
each file. In effectively-once mode a rotated file that a journal record still refers to (by inode) is left
plain until the record is settled or judged, like logrotate's ``delaycompress``: compressing makes a new
inode, and recovery must find the record's bytes by the old one.
"""

from __future__ import annotations

import fcntl
import gzip
import logging
import os
import re
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

from msgrelay.sinks.journal import file_key
from msgrelay.sinks.logfile import LogFile
from msgrelay.sinks.rotation import GZ, find_rotated, fsync_folder, rotated_files

log = logging.getLogger(__name__)

CHUNK_BYTES: Final = 1024 * 1024
STOP_WAIT_S: Final = 5.0
_TEMP: Final = re.compile(r"\.(?P<name>.+)\.(?P<pid>[0-9]+)\.(?P<ino>[0-9]+)\.gz\.tmp")

Referenced = Callable[[], set[tuple[str, int, int]]]
"""(file key, dev, ino) of every file a journal record refers to; raises if it cannot tell."""


class Compressor:
    """Compresses the rotated files of ``logs`` whenever :meth:`poke` asks, in a daemon thread."""

    def __init__(self, logs: Sequence[LogFile], referenced: Referenced | None = None) -> None:
        self.logs = list(logs)
        self.referenced = referenced
        self._poked = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_problem = ""

    def poke(self) -> None:
        """Ask for a pass over every rotated file (returns at once; the thread starts on first use)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="msgrelay-compress", daemon=True)
            self._thread.start()
        self._poked.set()

    def close(self) -> None:
        """Stop: a compression in progress is abandoned (its temporary file removed), the thread joined."""
        self._stop.set()
        self._poked.set()
        if self._thread is not None:
            self._thread.join(STOP_WAIT_S)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._poked.wait()
            self._poked.clear()
            try:
                self.compress_all()
            except Exception as exc:  # a compressor problem must never stop the consumer: say it once
                self._problem(f"compressing rotated log files failed: {type(exc).__name__}: {exc}")

    def compress_all(self) -> None:
        """One pass: every plain rotated file not referred to by a journal record is compressed."""
        for log_file in self.logs:
            self._remove_stale_temps(log_file.path)
            for _number, path in sorted(rotated_files(log_file.path)):
                if self._stop.is_set():
                    return
                if not path.name.endswith(GZ):
                    self._compress(log_file, path)

    def _compress(self, log_file: LogFile, path: Path) -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return  # shifted or compressed meanwhile: the next pass sees it under its new name
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return  # another consumer is compressing it
            info = os.fstat(fd)
            if info.st_nlink == 0 or self._referenced(log_file.path, info):
                return  # done by another consumer; or a record may still need it whole, as this inode
            temp = path.parent / f".{log_file.path.name}.{os.getpid()}.{info.st_ino}.gz.tmp"
            if self._gzip(fd, info, path.name, temp):
                self._swap(log_file.path, info, temp)
        finally:
            os.close(fd)

    def _gzip(self, fd: int, info: os.stat_result, name: str, temp: Path) -> bool:
        """Compress ``fd`` into ``temp`` and fsync it. False (and no temp) when stopped half-way."""
        out = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, info.st_mode & 0o666)
        try:
            with os.fdopen(out, "wb") as raw:
                with gzip.GzipFile(filename=name, mode="wb", fileobj=raw, mtime=int(info.st_mtime)) as packed:
                    while chunk := os.read(fd, CHUNK_BYTES):
                        if self._stop.is_set():
                            raise InterruptedError
                        packed.write(chunk)
                raw.flush()
                os.fsync(raw.fileno())
        except BaseException:
            temp.unlink(missing_ok=True)
            if self._stop.is_set():
                return False
            raise
        return True

    def _referenced(self, path: Path, info: os.stat_result) -> bool:
        """Asked once the inode is known to be rotated: a record can only be made for the file at the path,
        so every record that will ever refer to this inode exists by now."""
        if self.referenced is None:
            return False
        return (file_key(path), info.st_dev, info.st_ino) in self.referenced()

    @staticmethod
    def _swap(path: Path, info: os.stat_result, temp: Path) -> None:
        """Under ``path``'s lock (rotations shift the numbers under it): the rotated file's current name
        gets the compressed bytes, the plain file goes."""
        lock = LogFile(path)
        try:
            lock.acquire()
            plain = find_rotated(path, info.st_dev, info.st_ino)
            if plain is None:  # deleted meanwhile (past keep)
                temp.unlink(missing_ok=True)
                return
            os.rename(temp, plain.with_name(plain.name + GZ))
            plain.unlink()
            fsync_folder(path.parent)
        finally:
            lock.close()

    @staticmethod
    def _remove_stale_temps(path: Path) -> None:
        """Temporary files of compressions whose process is gone (killed half-way)."""
        try:
            entries = list(os.scandir(path.parent))
        except OSError:
            return
        for entry in entries:
            match = _TEMP.fullmatch(entry.name)
            if match is None or match["name"] != path.name:
                continue
            try:
                os.kill(int(match["pid"]), 0)
            except ProcessLookupError:
                Path(entry.path).unlink(missing_ok=True)
            except (PermissionError, OverflowError):
                continue  # alive (someone else's), or not a pid

    def _problem(self, text: str) -> None:
        if text != self._last_problem:
            self._last_problem = text
            log.warning("%s (will try again)", text)
