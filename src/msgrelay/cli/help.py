"""``--help`` as typed: plain text, no Rich markup, metavars that say what a value is.

Rich markup would eat ``[[monitor.checks]]`` and ``[alerts]`` (they look like style tags), and Typer's
metavars (``<int>``, ``<list[str]>``, ``{text}``) read like placeholders nobody types. Every command gets
:class:`PlainHelpCommand` (through :func:`use_plain_help`): an option's metavar is the one it names
(``SECONDS``, ``URL``, ``KEY=VALUE`` ...), else one derived from its type (``N``, ``NUMBER``, ``PATH``,
``TEXT``); a flag has none; an argument is its metavar, bracketed only when optional (``[ID]...``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args, get_origin

import typer
from typer.core import TyperArgument, TyperCommand, TyperOption

_METAVARS: dict[Any, str] = {int: "N", float: "NUMBER", Path: "PATH", str: "TEXT"}


class PlainHelpCommand(TyperCommand):
    """A Typer command whose help is plain click-style text with readable metavars."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["rich_markup_mode"] = None  # help texts are shown verbatim, brackets included
        super().__init__(*args, **kwargs)
        for param in self.params:
            if (
                param.metavar is None
                and isinstance(param, TyperArgument | TyperOption)
                and _takes_a_value(param)
            ):
                param.metavar = _metavar(param)

    # ctx and formatter are Typer's vendored click types (typer._click, private): typed as Any here.
    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        """``[OPTIONS] TEXT`` (Typer's own would be ``[OPTIONS] {TEXT}``)."""
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if isinstance(param, TyperArgument):
                pieces.append(_argument_label(param, usage=True))
        return pieces

    def format_options(self, ctx: Any, formatter: Any) -> None:
        """``Arguments:`` then ``Options:``, each a name with its metavar and its help."""
        arguments, options = [], []
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if isinstance(param, TyperArgument):
                arguments.append((_argument_label(param, usage=False), record[1]))
            else:
                options.append(record)
        for title, records in (("Arguments", arguments), ("Options", options)):
            if records:
                with formatter.section(title):
                    formatter.write_dl(records)


def use_plain_help(app: typer.Typer) -> None:
    """Give every command of ``app`` and of its sub-apps plain help (call once every command is added)."""
    app.rich_markup_mode = None
    for command in app.registered_commands:
        if command.cls in (None, TyperCommand):  # not a command with a class of its own
            command.cls = PlainHelpCommand
    for group in app.registered_groups:
        if group.typer_instance is not None:
            use_plain_help(group.typer_instance)


def _takes_a_value(param: TyperArgument | TyperOption) -> bool:
    return isinstance(param, TyperArgument) or not (param.is_flag or param.count)


def _metavar(param: TyperArgument | TyperOption) -> str:
    if isinstance(param, TyperArgument):
        return (param.name or "value").upper()
    annotation: Any = param.type_descriptor.annotation
    if get_origin(annotation) is list:
        annotation = get_args(annotation)[0]
    return _METAVARS.get(annotation, "VALUE")


def _argument_label(param: TyperArgument, *, usage: bool) -> str:
    label = (param.metavar or "") + ("..." if param.nargs != 1 else "")
    return f"[{label}]" if usage and not param.required else label
