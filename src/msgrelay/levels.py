"""The fixed table from a level word to a log type, and from a log type to a file name.

A file name is never built from message content: only the four values of :data:`TYPE_FILES` can ever be
opened, whatever a message says. Level words are matched case-insensitively after trimming; everything that
is not in :data:`LEVEL_ALIASES` is an unknown type (dead-lettered with reason ``unknown_type``).
"""

from __future__ import annotations

from typing import Final

DEBUG: Final = "DEBUG"
INFO: Final = "INFO"
WARNING: Final = "WARNING"
ERROR: Final = "ERROR"

LOG_TYPES: Final = (DEBUG, INFO, WARNING, ERROR)
"""The canonical log types, in increasing severity."""

DEFAULT_TYPE: Final = INFO
"""The type of a message that names none (a plain text line without a level word, or JSON without one)."""

TYPE_FILES: Final[dict[str, str]] = {
    DEBUG: "debug.log",
    INFO: "info.log",
    WARNING: "warning.log",
    ERROR: "error.log",
}
"""Log type -> file name inside the log folder. The only files a log sink ever opens."""

LEVEL_ALIASES: Final[dict[str, str]] = {
    # Canonical names and the usual abbreviations.
    "debug": DEBUG,
    "dbg": DEBUG,
    "trace": DEBUG,
    "verbose": DEBUG,
    "info": INFO,
    "information": INFO,
    "informational": INFO,  # syslog severity 6
    "notice": INFO,  # syslog severity 5
    "warning": WARNING,  # syslog severity 4
    "warn": WARNING,
    "error": ERROR,  # syslog severity 3
    "err": ERROR,
    "critical": ERROR,
    "crit": ERROR,  # syslog severity 2
    "fatal": ERROR,
    "alert": ERROR,  # syslog severity 1
    "emerg": ERROR,  # syslog severity 0
    "emergency": ERROR,
    "panic": ERROR,
    "severe": ERROR,
}
"""Every accepted level word (lower case) -> canonical log type.

Severities above ERROR (critical, fatal, syslog emerg/alert/crit) are written to ``error.log``; the
original word is kept in the line's ``level`` field so nothing is hidden.
"""

_MAX_LEVEL_WORD_INPUT = 64
"""Longer inputs are refused before any string work: no level word, however padded, is that long."""


def normalize_level(word: str) -> str | None:
    """Return the canonical type for a level word, or ``None`` if it is not one we know."""
    if len(word) > _MAX_LEVEL_WORD_INPUT:  # cheap refusal of long hostile strings before lowering them
        return None
    return LEVEL_ALIASES.get(word.strip().lower())
