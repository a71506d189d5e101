"""``--help`` of every command, as the real ``msgrelay`` process prints it (issue 10, section 8).

Help texts are shown as typed (``[[monitor.checks]]`` and ``[alerts]`` are not eaten as markup), every option
has a help text, an option that takes a value shows a readable metavar (``N``, ``SECONDS``, ``KEY=VALUE``,
``streams|lists`` ...) and a flag none; no Typer type label (``<int>``, ``<list[str]>``, ``{text}``) is left.
The commands are found by walking the app, so a command added later is checked too.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from msgrelay.cli import app

METAVAR = re.compile(r"^(?:[A-Z][A-Z_]*(?:=[A-Z]+)?|[A-Za-z_]+(?:\|[A-Za-z_]+)+)$")
"""``N``, ``SECONDS``, ``KEY=VALUE``, or choices ``streams|lists``."""
TYPE_LABEL = re.compile(r"<(?:int|str|float|bool|path|text)\b[^>]*>|<list\[|\{[a-z_]+\}", re.IGNORECASE)
BRACKETED = re.compile(r"\[[^\]\s]*\]+")
"""A bracketed word such as ``[alerts]``, ``[[monitor.checks]]``, ``[consumer.batch_size]``."""


@dataclass(frozen=True)
class Command:
    path: tuple[str, ...]
    command: Any  # Typer's vendored click command


def _commands(command: Any, path: tuple[str, ...] = ()) -> list[Command]:
    found = [Command(path, command)]
    for name, sub in getattr(command, "commands", {}).items():
        found += _commands(sub, (*path, name))
    return found


COMMANDS = _commands(typer.main.get_command(app))


@pytest.fixture(scope="module")
def helps() -> dict[tuple[str, ...], str]:
    """``msgrelay <path> --help`` of every command, through the app itself (one process: twenty
    interpreters would cost the suite ten seconds); the examples below run the real process."""
    runner = CliRunner()
    done = {}
    for each in COMMANDS:
        result = runner.invoke(app, [*each.path, "--help"], prog_name="msgrelay")
        assert result.exit_code == 0, result.output
        done[each.path] = result.stdout
    return done


def _options_section(text: str) -> dict[str, tuple[list[str], str]]:
    """``Options:`` entries as long name -> (metavar words, help text)."""
    entries: dict[str, tuple[list[str], str]] = {}
    section = text.split("\nOptions:\n", 1)[1].split("\n\n", 1)[0]
    current = ""
    for line in section.splitlines():
        entry = re.match(r"^  (-\S.*?)(?:\s{2,}(\S.*))?$", line)
        if entry:
            words = entry.group(1).replace(",", " ").replace(" / ", " ").split()
            current = next(word for word in words if word.startswith("--"))
            entries[current] = ([w for w in words if not w.startswith("-")], entry.group(2) or "")
        elif line.strip():  # a wrapped help text
            metavars, help_text = entries[current]
            entries[current] = (metavars, f"{help_text} {line.strip()}".strip())
    return entries


@pytest.mark.parametrize("each", COMMANDS, ids=lambda c: " ".join(c.path) or "msgrelay")
def test_help_shows_texts_verbatim_with_readable_metavars_and_help_for_every_option(
    helps: dict[tuple[str, ...], str], each: Command
) -> None:
    text = helps[each.path]

    # Then: bracketed words of the command's and its options' help texts are all there, as typed
    texts = [each.command.help or "", *(getattr(p, "help", None) or "" for p in each.command.params)]
    for word in {match for help_text in texts for match in BRACKETED.findall(help_text)}:
        assert word in text, f"{word!r} missing from the help of {each.path}"

    # And no Typer type label anywhere, nor in the usage line
    assert not TYPE_LABEL.search(text), text

    # And every option has a help text; a flag has no metavar, any other option one readable metavar
    options = _options_section(text)
    for param in each.command.params:
        if param.param_type_name != "option" or param.hidden:
            continue
        long_name = next(opt for opt in param.opts if opt.startswith("--"))
        metavars, help_text = options[long_name]
        assert help_text, f"{long_name} of {each.path} has no help"
        if param.is_flag:
            assert metavars == [], f"flag {long_name} shows {metavars}"
        else:
            assert len(metavars) == 1 and METAVAR.match(metavars[0]), f"{long_name}: {metavars}"


@pytest.mark.parametrize(
    ("path", "verbatim"),
    [
        (("monitor",), "[[monitor.checks]]"),
        (("notify",), "[alerts]"),
        ((), "[[monitor.checks]]"),
        (("consume",), "--batch-size N"),
        (("send",), "--field KEY=VALUE"),
        (("send",), "Usage: msgrelay send [OPTIONS] TEXT\n"),
        (("dlq", "replay"), "Usage: msgrelay dlq replay [OPTIONS] [ID...]\n"),
        (("consume",), "--processing-delay SECONDS"),
    ],
)
def test_the_examples_of_the_issue_read_as_expected(
    run_cli: Callable[..., subprocess.CompletedProcess[str]], path: tuple[str, ...], verbatim: str
) -> None:
    result = run_cli(*path, "--help", url=False)

    assert result.returncode == 0, result.stderr
    assert verbatim in result.stdout
