"""The ``msgrelay`` command: parse, call the library, print. Nothing here that a library user would need.

Each command group lives in its own module (:mod:`~msgrelay.cli.logs`, :mod:`~msgrelay.cli.alerts`,
:mod:`~msgrelay.cli.dlq`, :mod:`~msgrelay.cli.ops`); this one wires them into one Typer app. Errors from
the library are caught once, in :func:`main`, and printed as one line with a named exit code
(:mod:`~msgrelay.cli.exit_codes`).
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from msgrelay import __version__
from msgrelay.cli import alerts, dlq, logs, ops
from msgrelay.cli.common import err, out
from msgrelay.cli.exit_codes import exit_code_for, hint_for
from msgrelay.cli.help import use_plain_help
from msgrelay.errors import MsgrelayError

app = typer.Typer(
    name="msgrelay",
    help="Reliable, fast message processing on Redis.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(ops.config_app, name="config")
logs.register(app)  # send, produce, consume
alerts.register(app)  # alert, monitor, notify
ops.register(app)  # stats, demo
app.add_typer(alerts.silence_app, name="silence")
app.add_typer(dlq.dlq_app, name="dlq")
use_plain_help(app)  # after every command is added: help texts verbatim, readable metavars


def _version(value: bool) -> None:
    if value:
        out.print(f"msgrelay {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Reliable, fast message processing on Redis."""


def main() -> None:
    """Console entry point: run the app, turn every msgrelay error into one line and an exit code."""
    try:
        app(prog_name="msgrelay")  # usage errors (exit 2) and Ctrl-C are handled by Typer itself
    except MsgrelayError as exc:
        code = exit_code_for(exc)
        hint = hint_for(exc)
        err.print(f"error: {exc}" + (f"; {hint}" if hint else ""), markup=False, soft_wrap=True)
        sys.exit(code)
