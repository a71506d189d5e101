"""Notifiers that stay on this host: the console (the default) and the append-only alert log."""

from __future__ import annotations

import errno
import os
import sys
import time
from pathlib import Path
from typing import TextIO

from msgrelay.alerting.model import Notification
from msgrelay.alerting.notifiers.base import alert_record
from msgrelay.errors import NotifyPermanentError, NotifyTransientError
from msgrelay.sinks.appendfile import append_whole, cut_torn_tail, locked, open_for_append
from msgrelay.sinks.lines import _iso, _safe_json, escape

# These will not go away by trying again: the path is wrong or not ours. Anything else (ENOSPC, EIO) may.
_PERMANENT_ERRNOS = frozenset(
    {errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EACCES, errno.EPERM, errno.EROFS}
)


class ConsoleNotifier:
    """Prints each notification's text as one line (what the tweet bot would post)."""

    def __init__(self, stream: TextIO | None = None, *, name: str = "console") -> None:
        self.name = name
        # Resolved at send time when not given, so a redirected sys.stdout (tests, daemons) is honoured.
        self._stream = stream

    def send(self, notification: Notification) -> None:
        stream = self._stream if self._stream is not None else sys.stdout
        try:
            stream.write(escape(notification.text) + "\n")  # one write: lines of two senders never interleave
            stream.flush()
        except OSError as exc:  # a closed pipe or a full disk behind the redirect
            raise NotifyTransientError(f"{self.name}: cannot write: {exc.strerror or exc}") from None
        except ValueError:  # the stream was closed under us: no retry will reopen it
            raise NotifyPermanentError(f"{self.name}: the output stream is closed") from None

    def close(self) -> None:
        """The stream belongs to the caller: nothing to release."""

    def __repr__(self) -> str:
        return f"ConsoleNotifier(name={self.name!r})"


class AlertLogNotifier:
    """Appends one JSON line per notification to an append-only file.

    The file is opened per notification (notifications are rare), so a rotated log is picked up at once.
    Each line is written whole, in one ``write()`` on an ``O_APPEND`` descriptor under ``flock``: several
    notify processes can share the file, and a line torn by a killed writer is cut before the next one."""

    def __init__(self, path: Path | str, *, fsync: bool = False, name: str = "log") -> None:
        self.name = name
        self.path = Path(path)
        self._fsync = fsync

    def send(self, notification: Notification) -> None:
        line = (_safe_json(self._record(notification)) + "\n").encode()
        try:
            fd = open_for_append(self.path)
        except OSError as exc:
            raise self._error("cannot open", exc) from None
        try:
            with locked([fd]):
                append_whole(fd, line, cut_torn_tail(fd), fsync=self._fsync)
        except OSError as exc:
            raise self._error("cannot append to", exc) from None
        finally:
            os.close(fd)

    def _record(self, notification: Notification) -> dict[str, object]:
        return {
            "written": _iso(time.time()),
            "key": notification.key,
            "kind": str(notification.kind),
            "text": notification.text,
            "alerts": [alert_record(alert) for alert in notification.alerts],
        }

    def _error(self, what: str, exc: OSError) -> NotifyPermanentError | NotifyTransientError:
        message = f"{self.name}: {what} {escape(str(self.path))}: {exc.strerror or exc}"
        if exc.errno in _PERMANENT_ERRNOS:
            return NotifyPermanentError(message)
        return NotifyTransientError(message)

    def close(self) -> None:
        """No descriptor is held between notifications."""

    def __repr__(self) -> str:
        return f"AlertLogNotifier(name={self.name!r}, path={str(self.path)!r})"
