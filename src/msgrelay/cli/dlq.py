"""``msgrelay dlq list/show/replay/purge``: the dead-letter store, for operators."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from msgrelay.cli.common import ConfigOpt, RedisUrlOpt, TransportOpt, cli_settings, err, out, write_json
from msgrelay.cli.exit_codes import ExitCode
from msgrelay.dlq import ALL, DeadLetterFilter, DeadLetterStore, Selection, is_entry_id
from msgrelay.dlq_replay import SKIP_REASONS, ReplayResult, replay_targets
from msgrelay.reporting import plural, print_dead_letter, print_dead_letters, print_plain
from msgrelay.sinks.lines import escape as visible
from msgrelay.transport.connection import create_transport

dlq_app = typer.Typer(help="Inspect, replay and purge the dead-letter store.", no_args_is_help=True)

ReasonOpt = Annotated[
    str | None, typer.Option("--reason", metavar="REASON", help="Only this reason (oversize, ...).")
]
TypeFilterOpt = Annotated[
    str | None,
    typer.Option("--type", metavar="TYPE", help="Only this message type (dead letters that decoded)."),
]
EntryIdsArg = Annotated[
    list[str] | None,
    typer.Argument(metavar="ID", help="Dead-letter ids (<ms>-<seq>).", show_default=False),
]
AllOpt = Annotated[bool, typer.Option("--all", help="Every dead letter.")]


@contextmanager
def _dead_letter_store(
    config: Path | None, redis_url: str | None, transport: str | None
) -> Iterator[DeadLetterStore]:
    """The store, with the retention of ``[deadletter]`` applied first: every dlq command enforces it."""
    settings = cli_settings(config, redis_url, transport)
    queue_transport = create_transport(settings)
    try:
        store = DeadLetterStore.from_transport(queue_transport, replay_targets(settings))
        retention = settings.deadletter
        trimmed = store.apply_retention(retention.retention_s, retention.max_entries)
        if trimmed:
            print_plain(err, f"retention: trimmed {_dead_letters(trimmed)} ([deadletter] settings)")
        yield store
    finally:
        queue_transport.close()


def _entry_ids(ids: list[str] | None) -> list[str]:
    bad = [entry_id for entry_id in ids or [] if not is_entry_id(entry_id)]
    if bad:
        raise typer.BadParameter(f"not a dead-letter id (<ms>-<seq>): {bad[0]!r}", param_hint="ID")
    return list(ids or [])


def _selection(ids: list[str] | None, everything: bool, where: DeadLetterFilter, choices: str) -> Selection:
    """Exactly one way of choosing entries: ids, --all, or filters (which combine)."""
    entry_ids = _entry_ids(ids)
    given = [bool(entry_ids), everything, where != ALL]
    if given.count(True) != 1:
        raise typer.BadParameter(f"choose the dead letters with exactly one of: {choices}")
    return entry_ids or where


@dlq_app.command("list")
def dlq_list(
    reason: ReasonOpt = None,
    msg_type: TypeFilterOpt = None,
    origin: Annotated[
        str | None, typer.Option("--origin", metavar="KEY", help="Only from this queue key.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, metavar="N", help="At most this many.")] = 100,
    after: Annotated[
        str | None, typer.Option("--after", metavar="ID", help="Start after this id (next page).")
    ] = None,
    raw: Annotated[bool, typer.Option("--raw", help="The whole raw entry, not a preview.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    config: ConfigOpt = None,
    redis_url: RedisUrlOpt = None,
    transport: TransportOpt = None,
) -> None:
    """Dead letters, oldest first; raw entries are shown escaped."""
    if after is not None:
        _entry_ids([after])
    with _dead_letter_store(config, redis_url, transport) as store:
        entries = store.list(reason, msg_type, origin, limit=limit, after=after)
        total = store.count()
    if as_json:
        document = {"entries": [entry.as_dict() for entry in entries], "shown": len(entries), "total": total}
        write_json(document)
        return
    print_dead_letters(out, entries, full_raw=raw)
    more = f" (next page: --after {entries[-1].id})" if len(entries) == limit else ""
    print_plain(out, f"{_dead_letters(len(entries))} shown, {total} in {store.key}{more}")


@dlq_app.command("show")
def dlq_show(
    entry_id: Annotated[str, typer.Argument(metavar="ID", help="Dead-letter id (<ms>-<seq>).")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    config: ConfigOpt = None,
    redis_url: RedisUrlOpt = None,
    transport: TransportOpt = None,
) -> None:
    """Every field of one dead letter, with its whole raw entry (escaped)."""
    _entry_ids([entry_id])
    with _dead_letter_store(config, redis_url, transport) as store:
        entry = store.get(entry_id)
    if entry is None:
        print_plain(err, f"error: no dead letter {entry_id} in {store.key}")
        raise typer.Exit(ExitCode.FAILURE)
    if as_json:
        write_json(entry.as_dict())
    else:
        print_dead_letter(out, entry)


@dlq_app.command("replay")
def dlq_replay(
    ids: EntryIdsArg = None,
    everything: AllOpt = False,
    reason: ReasonOpt = None,
    msg_type: TypeFilterOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only say what would be replayed.")] = False,
    config: ConfigOpt = None,
    redis_url: RedisUrlOpt = None,
    transport: TransportOpt = None,
) -> None:
    """Put dead letters back on their queues (each leaves the store atomically); truncated ones are refused.

    Only queues of this configuration, each as the transport it came from; an entry that cannot go back
    is listed with its id and reason, the rest go on. Exits 1 when any selected entry was skipped.
    """
    where = DeadLetterFilter(reason=reason, msg_type=msg_type)
    selection = _selection(ids, everything, where, "ID..., --all, --reason/--type")
    with _dead_letter_store(config, redis_url, transport) as store:
        result = store.replay(selection, dry_run=dry_run)
    for skipped in result.skipped_entries:
        print_plain(err, f"skipped {skipped.id}: {visible(skipped.detail)}")  # a forged origin is data
    print_plain(out, _replay_summary(result))
    if result.skipped:
        raise typer.Exit(ExitCode.FAILURE)


def _replay_summary(result: ReplayResult) -> str:
    verb = "dry run: would replay" if result.dry_run else "replayed"
    summary = f"{verb} {_dead_letters(result.replayed)} onto their queues"
    reasons = [f"{count} {SKIP_REASONS[reason]}" for reason, count in result.by_reason().items()]
    return summary + (f"; skipped {result.skipped}: " + ", ".join(reasons) if reasons else "")


@dlq_app.command("purge")
def dlq_purge(
    ids: EntryIdsArg = None,
    everything: AllOpt = False,
    reason: ReasonOpt = None,
    older_than: Annotated[
        float | None,
        typer.Option("--older-than", min=0, metavar="SECONDS", help="Only dead letters older than SECONDS."),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    config: ConfigOpt = None,
    redis_url: RedisUrlOpt = None,
    transport: TransportOpt = None,
) -> None:
    """Delete dead letters for good. Asks first on a terminal; elsewhere needs --yes."""
    where = DeadLetterFilter(reason=reason, older_than_s=older_than)
    selection = _selection(ids, everything, where, "ID..., --all, --reason/--older-than")
    if not yes and not sys.stdin.isatty():
        print_plain(err, "error: purge deletes dead letters for good: add --yes (no terminal to confirm on)")
        raise typer.Exit(ExitCode.USAGE)
    with _dead_letter_store(config, redis_url, transport) as store:
        if not yes:
            matching = store.count(selection)
            question = f"Purge {_dead_letters(matching)} from {store.key} for good?"
            if not typer.confirm(question, default=False):
                print_plain(out, "purge cancelled: nothing deleted")
                raise typer.Exit(ExitCode.FAILURE)
        purged = store.purge(selection)
    print_plain(out, f"purged {_dead_letters(purged)} from {store.key}")


def _dead_letters(count: int) -> str:
    return plural(count, "dead letter")
