"""The real system tools some tests drive (logrotate ...): found, or the test fails saying why.

They are Debian packages listed in ``.ci/debian-packages.txt``, installed by ``make test`` (``make
system-deps``). A test that needs one never skips: a missing tool is a failure with the install command.
"""

from __future__ import annotations

import shutil

import pytest

_SEARCH_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def require_tool(command: str, package: str | None = None) -> str:
    """The absolute path of ``command``; fails the test (never skips) when it is not installed."""
    path = shutil.which(command) or shutil.which(command, path=_SEARCH_PATH)
    if path is None:
        pytest.fail(
            f"{command} is not installed: run `make system-deps` as root, or "
            f"`apt-get install {package or command}` (listed in .ci/debian-packages.txt)",
            pytrace=False,
        )
    return path
