"""Human-readable output of the CLI: batch lines, totals, stats tables."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from rich.cells import cell_len
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from msgrelay.batch import BatchResult, ConsumerHook, Totals
from msgrelay.deadletter import DeadLetterEntry
from msgrelay.errors import SinkError
from msgrelay.monitor import AlertStats, QueueStats
from msgrelay.sinks.lines import escape as visible
from msgrelay.transport.base import HeldEntries

RAW_PREVIEW_CHARS = 80
"""How much of a dead letter's raw entry ``msgrelay dlq list`` shows without ``--raw``."""

REPORT_INTERVAL_S = 0.5
"""At most two batch lines a second: faster batches are summed into one line, so printing never slows us."""


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """``1 message``, ``0 messages``, ``2 entries`` (``plural(n, "entry", "entries")``)."""
    return f"{count} {noun if count == 1 else nouns or noun + 's'}"


def now_iso() -> str:
    """The current time as the log lines write it: ISO 8601 UTC with milliseconds."""
    return _iso(time.time())


class BatchReporter(ConsumerHook):
    """Prints each batch (time, messages, written, dead-lettered, success rate), coalescing fast ones, and
    each failure (what failed, when the next attempt is)."""

    def __init__(self, console: Console, *, interval_s: float = REPORT_INTERVAL_S) -> None:
        self.console = console
        self.interval_s = interval_s
        self._last_print = 0.0
        self._pending: list[BatchResult] = []
        self._first_batch = 1

    def after_batch(self, result: BatchResult, totals: Totals) -> None:
        self._pending.append(result)
        now = time.monotonic()
        if now - self._last_print >= self.interval_s:
            self._flush(totals)
            self._last_print = now

    def finish(self, totals: Totals) -> None:
        """Print the batches not reported yet (the last ones of a run), so the lines cover every batch."""
        if self._pending:
            self._flush(totals)

    def _flush(self, totals: Totals) -> None:
        batches = self._pending
        fetched = sum(b.fetched for b in batches)
        written = sum(b.written for b in batches)
        dead = sum(b.dead_lettered for b in batches)
        last = totals.batches
        label = f"batch {last}" if len(batches) == 1 else f"batches {self._first_batch}-{last}"
        recovered = " (recovered)" if any(b.recovered for b in batches) else ""
        print_plain(
            self.console,
            f"{now_iso()} {label}: {plural(fetched, 'message')}, {written} written, {dead} dead-lettered"
            f"{_success(written, fetched)}{recovered} | total {totals.written} written",
        )
        self._pending = []
        self._first_batch = last + 1

    def on_failure(self, error: Exception, retry_in_s: float) -> None:
        print_plain(
            self.console, f"{now_iso()} {_what_failed(error)}, retrying in {retry_in_s:.1f}s: {error}"
        )


def _what_failed(error: Exception) -> str:
    # Redis failures are not reported through on_failure: the consumer's outage log says them, once per
    # episode (see stamped)
    if isinstance(error, SinkError):
        return "log file not writable (its lines are held, not acknowledged)"
    return "batch failed"


def stamped(console: Console) -> Callable[[str], None]:
    """Prints each line with the time in front, like the batch lines: the ``say`` of the long-running
    commands' :class:`~msgrelay.outage.OutageLog` (on stderr, ``--quiet`` or not)."""
    return lambda line: print_plain(console, f"{now_iso()} {line}")


def _success(written: int, fetched: int) -> str:
    """``, success 99.5%``; nothing when there was nothing to succeed at."""
    return f", success {100.0 * written / fetched:.1f}%" if fetched else ""


def _rate(count: int, seconds: float) -> str:
    return f"{seconds:.2f}s ({count / seconds:,.0f} msgs/s)" if seconds > 0 and count else f"{seconds:.2f}s"


def print_totals(console: Console, totals: Totals, *, stopped_by_signal: bool) -> None:
    """The run's last line: counts, the wall time and the busy time (without waits and pauses), each with
    its rate, so an hour mostly idle does not read as a slow consumer."""
    how = "stopped by signal after finishing its batch" if stopped_by_signal else "done"
    counts = (
        f"{plural(totals.batches, 'batch', 'batches')}, {plural(totals.fetched, 'message')}, "
        f"{totals.written} written, {totals.dead_lettered} dead-lettered"
    )
    times = f"in {_rate(totals.fetched, totals.elapsed_s)}, busy {_rate(totals.fetched, totals.busy_s)}"
    print_plain(console, f"{how}: {counts}{_success(totals.written, totals.fetched)}, {times}")


def print_held_elsewhere(console: Console, held: Sequence[HeldEntries], claim_idle_s: float) -> None:
    """Entries other consumers hold, which this run could not take: why a burst found nothing, and when it
    will (``claim_idle_s`` after the holder last touched them)."""
    for each in held:
        entries = plural(each.count, "entry", "entries")
        when = f"in {each.available_in_s:.0f} s" if each.available_in_s >= 0.5 else "now"
        them = "it" if each.count == 1 else "them"
        print_plain(
            console,
            f"{entries} pending for consumer {visible(each.consumer)}, available for take-over {when} "
            f"(consumer.claim_idle_s = {claim_idle_s:g}; `msgrelay consume --name {visible(each.consumer)}` "
            f"takes {them} back at once)",
        )


def print_columns(console: Console, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A plain table: a header line, then one line per row, columns aligned (the last one is not padded,
    so a long raw entry or comment does not widen the others). Cells must be single-line, safe text."""
    widths = [max(cell_len(row[i]) for row in (headers, *rows)) for i in range(len(headers) - 1)]
    for row in (headers, *rows):
        cells = [cell + " " * (width - cell_len(cell)) for cell, width in zip(row, widths, strict=False)]
        line = "  ".join([*cells, row[-1]])
        print_plain(console, line if row[-1] else line.rstrip())  # keep a raw entry's trailing spaces


def print_stats(console: Console, stats: QueueStats) -> None:
    # Queue and consumer names are data, never markup: "w[/x]" is shown as typed instead of crashing.
    table = Table(title=escape(f"msgrelay {stats.transport} queue {stats.queue!r}"), show_header=False)
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("produced", f"{stats.produced:,}")
    table.add_row("backlog", "n/a" if stats.backlog is None else f"{stats.backlog:,}")
    table.add_row("processed", f"{stats.processed:,}")
    for msg_type, count in stats.processed_by_type.items():
        table.add_row(f"  {msg_type}", f"{count:,}")
    table.add_row("reclaimed from dead consumers", f"{stats.reclaimed:,}")
    table.add_row("retried", f"{stats.retried:,}")
    table.add_row("waiting for a retry", f"{stats.retries_scheduled:,}")
    table.add_row("dead-lettered", f"{stats.dead_lettered:,}")
    table.add_row("dead-letter store (all queues)", f"{stats.dead_letter_store:,}")
    for reason, count in stats.dead_letters_by_reason.items():
        table.add_row(escape(visible(f"  {reason}")), f"{count:,}")  # a reason XADDed by hand is data
    table.add_row("dead letters replayed", f"{stats.dlq_replayed:,}")
    table.add_row("dead letters purged", f"{stats.dlq_purged:,}")
    table.add_row("batches", f"{stats.batches:,}")
    for name, pending in stats.pending_by_consumer.items():
        table.add_row(escape(f"pending: {name}"), f"{pending:,}")
    table.add_row("redis used memory", stats.redis_used_memory_human)
    console.print(table)


def print_alert_stats(console: Console, stats: AlertStats) -> None:
    table = Table(title=escape(f"alerts: {stats.transport} queue {stats.queue!r}"), show_header=False)
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("pushed", f"{stats.pushed:,}")
    table.add_row("backlog", "n/a" if stats.backlog is None else f"{stats.backlog:,}")
    table.add_row("received by notify", f"{stats.received:,}")
    for verdict, count in stats.verdicts.items():
        table.add_row(f"  {verdict}", f"{count:,}")
    table.add_row("dead-lettered (not alerts)", f"{stats.dead_lettered:,}")
    table.add_row("notifications waiting", f"{stats.outbox:,}")
    for notifier, counts in stats.notifiers.items():
        shown = ", ".join(f"{counter.replace('_', ' ')} {count:,}" for counter, count in counts.items())
        table.add_row(escape(f"notifier {notifier}"), shown)
    for name, pending in stats.pending_by_consumer.items():
        table.add_row(escape(f"pending: {name}"), f"{pending:,}")
    console.print(table)


# Dead letters hold hostile bytes by design: everything from the store is printed through `visible` (control
# characters, escapes and bidi overrides as \x1b, \u202e ...), never as markup or emoji codes.


def shown_raw(raw: bytes) -> str:
    """Raw entry bytes as one safe line: invalid UTF-8 as ``\\xff``, control characters escaped."""
    return visible(raw.decode("utf-8", "backslashreplace"))


def print_plain(console: Console, text: str) -> None:
    """Print ``text`` exactly: no markup, no emoji codes, no highlighting, no wrapping."""
    console.print(text, markup=False, emoji=False, highlight=False, soft_wrap=True)


DEAD_LETTER_COLUMNS = ("ID", "REASON", "TYPE", "ORIGIN", "SIZE", "RAW")


def print_dead_letters(console: Console, entries: list[DeadLetterEntry], *, full_raw: bool) -> None:
    """A header, then one line per dead letter: id, reason, type, origin, size, then the raw entry (a
    preview unless ``full_raw``)."""
    rows = []
    for entry in entries:
        raw = shown_raw(entry.raw)
        if not full_raw and len(raw) > RAW_PREVIEW_CHARS:
            raw = raw[:RAW_PREVIEW_CHARS] + "..."
        size = f"{entry.raw_size}B" + (" truncated" if entry.truncated else "")
        rows.append(
            (
                entry.id,
                visible(entry.reason),
                visible(entry.msg_type) or "-",
                visible(entry.origin),
                size,
                raw,
            )
        )
    if rows:
        print_columns(console, DEAD_LETTER_COLUMNS, rows)


def print_dead_letter(console: Console, entry: DeadLetterEntry) -> None:
    """Every field of one dead letter, one per line."""
    size = f"{entry.raw_size} bytes"
    if entry.truncated:
        size += f" (truncated: only the first {len(entry.raw)} bytes are kept; it cannot be replayed)"
    rows = [
        ("id", entry.id),
        ("reason", visible(entry.reason)),
        ("detail", visible(entry.detail)),
        ("type", visible(entry.msg_type) or "-"),
        ("origin", visible(entry.origin)),
        ("transport", visible(entry.transport) or "-"),
        ("source id", visible(entry.source_id) or "-"),
        ("consumer", visible(entry.consumer)),
        ("attempt", str(entry.attempt)),
        ("dead-lettered", _iso(entry.ts)),
        ("size", size),
        ("raw", shown_raw(entry.raw)),
    ]
    for name, value in rows:
        print_plain(console, f"{name:<14}{value}")


def _iso(ts: float) -> str:
    try:
        return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    except (OverflowError, OSError, ValueError):
        return repr(ts)
