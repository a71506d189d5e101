"""The ``msgrelay`` command line (see :mod:`msgrelay.cli.app`)."""

from msgrelay.cli.app import app, main
from msgrelay.cli.exit_codes import ExitCode

__all__ = ["ExitCode", "app", "main"]
