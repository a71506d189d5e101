"""URLs safe to print: :func:`mask_url` hides the password (userinfo or ``?password=``)."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

__all__ = ["mask_url"]

_QUERY_PASSWORD = re.compile(r"(?i)((?:^|&)password=)[^&]*")


def mask_url(url: str) -> str:
    """The URL with its password (userinfo or ``?password=``) replaced by ``***``, safe to print and log."""
    parts = urlsplit(url)
    netloc, query = parts.netloc, _QUERY_PASSWORD.sub(r"\1***", parts.query)
    if parts.password is not None:
        # Keep the host part exactly as written (IPv6 brackets, port); only the password changes.
        netloc = f"{parts.username or ''}:***@{netloc.rpartition('@')[2]}"
    if (netloc, query) == (parts.netloc, parts.query):
        return url
    return urlunsplit(parts._replace(netloc=netloc, query=query))
