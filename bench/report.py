"""The results, three ways: Rich tables on the terminal, docs/benchmarks.md (+ .json, + .png chart).

Every figure is the median of the repeats with the min-max spread; every ratio compares medians of the same
run. The page is rebuilt from the JSON alone (``python -m bench --from-json docs/benchmarks.json``).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table as RichTable

from bench.peer_runs import LABELS, PEERS

APPENDIX = Path(__file__).resolve().parent.parent / "docs" / "benchmarks-appendix.md"
"""Hand-written measurements kept below the generated tables (bench/sink_modes.py, consume_modes.py)."""
RELAY_STREAMS = "e2e:msgrelay-streams"
RELAY_LISTS = "e2e:msgrelay-lists"
PEER_PAYLOAD = 175.0

Fmt = Callable[[float], str]


def rate(value: float) -> str:
    return f"{value:,.0f}"


def one(value: float) -> str:
    return f"{value:,.1f}"


def two(value: float) -> str:
    return f"{value:,.2f}"


def times(value: float) -> str:
    if value >= 10:
        return f"{value:,.1f}×"
    return f"{value:.2f}×" if value >= 0.1 else f"{value:.3f}×"


def with_unit(fmt: Fmt, unit: str) -> Fmt:
    return lambda value: f"{fmt(value)} {unit}"


def headline(figures: dict[str, float]) -> str:
    """A short summary of one run, for the progress lines."""
    for name, fmt, unit in (
        ("p99_ms", two, "ms p99"),
        ("process_msgs_s", rate, "msgs/s"),
        ("msgs_s", rate, "msgs/s"),
    ):
        if name in figures:
            return f"{fmt(figures[name])} {unit}"
    return ""


# --- reading the results ------------------------------------------------------------------------------


class Results:
    """Lookups into the results JSON: medians, spreads, and why a figure is missing."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.meta: dict[str, Any] = data["meta"]
        self.jobs: dict[str, dict[str, Any]] = data["jobs"]

    def values(self, key: str, metric: str) -> list[float]:
        runs = self.jobs.get(key, {}).get("runs", [])
        return [run[metric] for run in runs if metric in run]

    def median(self, key: str, metric: str) -> float | None:
        values = self.values(key, metric)
        return statistics.median(values) if values else None

    def missing(self, key: str) -> str:
        entry = self.jobs.get(key)
        if entry is None:
            return "not measured"
        if entry.get("errors") and not entry.get("runs"):
            return "failed"
        return "not run" if entry.get("note") and not entry.get("runs") else "—"

    def cell(self, key: str, metric: str, fmt: Fmt) -> str:
        """``median (min–max)``, or just the value for one run, or why there is none."""
        values = self.values(key, metric)
        if not values:
            return self.missing(key)
        middle, low, high = statistics.median(values), min(values), max(values)
        if len(values) == 1 or fmt(low) == fmt(high):
            return fmt(middle)
        return f"{fmt(middle)} ({fmt(low)}–{fmt(high)})"

    def ratio(self, key: str, metric: str, other: str, other_metric: str) -> tuple[float, float] | None:
        """Median ratio and the most conservative one (our worst run against their best)."""
        ours, theirs = self.values(key, metric), self.values(other, other_metric)
        if not ours or not theirs or min(theirs) <= 0:
            return None
        return statistics.median(ours) / statistics.median(theirs), min(ours) / max(theirs)

    def ratio_cell(self, key: str, metric: str, other: str, other_metric: str) -> str:
        found = self.ratio(key, metric, other, other_metric)
        if found is None:
            return self.missing(other) if not self.values(other, other_metric) else self.missing(key)
        middle, worst = found
        spread = len(self.values(key, metric)) > 1 or len(self.values(other, other_metric)) > 1
        return f"{times(middle)} (≥ {times(worst)})" if spread else times(middle)


# --- tables -------------------------------------------------------------------------------------------


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)
    intro: str = ""

    def markdown(self) -> str:
        lines = [f"## {self.title}", ""]
        if self.intro:
            lines += [self.intro, ""]
        lines.append("| " + " | ".join(self.headers) + " |")
        lines.append("|---|" + "---:|" * (len(self.headers) - 1))
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in self.rows]
        return "\n".join(lines) + "\n"

    def rich(self) -> RichTable:
        table = RichTable(title=self.title, title_justify="left")
        for number, header in enumerate(self.headers):
            table.add_column(header, justify="left" if number == 0 else "right")
        for row in self.rows:
            table.add_row(*row)
        return table


@dataclass(frozen=True)
class Contender:
    """An end-to-end row: where its rate is (``msgs_s`` for ours, ``process_msgs_s`` for a peer)."""

    key: str
    label: str
    metric: str = "msgs_s"
    rss_metric: str = "rss_mb"
    family: str = "msgrelay"


def e2e_contenders(results: Results) -> list[Contender]:
    rows = [
        Contender(RELAY_STREAMS, "msgrelay streams"),
        Contender(RELAY_LISTS, "msgrelay lists"),
    ]
    for transport in ("streams", "lists"):
        for mode in ("fsync", "effectively_once"):
            key = f"e2e:msgrelay-{transport}-{mode}"
            if key in results.jobs:
                rows.append(Contender(key, f"msgrelay {transport} ({mode})"))
    rows += [
        Contender("e2e:plain-streams", "plain streams loop (XREADGROUP + XACK)", family="baseline"),
        Contender("e2e:plain-list", "plain list loop (LPOP count, unreliable)", family="baseline"),
    ]
    rows += [
        Contender(f"peer:{peer}", LABELS[peer], "process_msgs_s", "worker_rss_mb", "peer") for peer in PEERS
    ]
    return rows


def summary(results: Results) -> str:
    """One sentence: msgrelay streams end to end against every other contestant of this run."""
    parts = []
    for row in e2e_contenders(results):
        found = results.ratio(RELAY_STREAMS, "msgs_s", row.key, row.metric)
        if row.family != "msgrelay" and found is not None:
            parts.append(f"{times(found[0])} {row.label}")
    if not parts or results.median(RELAY_STREAMS, "msgs_s") is None:
        return ""
    value = rate(results.median(RELAY_STREAMS, "msgs_s") or 0.0)
    return f"msgrelay streams end to end: {value} msgs/s, that is " + ", ".join(parts) + "."


def goals_table(results: Results) -> Table:
    plain, celery = (
        results.median("e2e:plain-streams", "msgs_s"),
        results.median("peer:celery", "process_msgs_s"),
    )
    anchors = (("the plain Streams loop", plain), ("Celery", celery))
    seen = ", ".join(f"{name} {rate(value)} msgs/s" for name, value in anchors if value is not None)
    table = Table(
        "Goals",
        ["goal", "target", "measured (median)", "met"],
        intro="Targets from issue 4. Its ratios restate 200,000 msgs/s against the anchors it measured (the "
        "plain Streams loop ≈ 55–60k msgs/s, Dramatiq ≈ 4,300, Celery ≈ 700–1,000); the ratios here are "
        "against this run's own figures" + (f" ({seen})." if seen else "."),
    )
    streams_p99 = "latency:msgrelay-streams@{}"
    per_s, ms, mb = with_unit(rate, "msgs/s"), with_unit(two, "ms"), with_unit(one, "MB")
    payloads = with_unit(two, "× payload")

    def figure(key: str, metric: str, target: float, fmt: Fmt, *, at_most: bool = False) -> list[str]:
        value = results.median(key, metric)
        if value is None:
            return [results.missing(key), "—"]
        met = value <= target if at_most else value >= target
        return [fmt(value), "yes" if met else "no"]

    def ratio(other: str, other_metric: str, target: float) -> list[str]:
        found = results.ratio(RELAY_STREAMS, "msgs_s", other, other_metric)
        if found is None:
            return [results.missing(other) if not results.values(other, other_metric) else "—", "—"]
        return [times(found[0]), "yes" if found[0] >= target else "no"]

    table.rows = [
        ["end to end, streams, reliable", "≥ 200,000 msgs/s",
         *figure(RELAY_STREAMS, "msgs_s", 200_000, per_s)],
        ["end to end, lists, reliable", "≥ 200,000 msgs/s", *figure(RELAY_LISTS, "msgs_s", 200_000, per_s)],
        ["streams vs the plain Streams loop", "≥ 3×", *ratio("e2e:plain-streams", "msgs_s", 3)],
        ["streams vs Dramatiq", "≥ 45×", *ratio("peer:dramatiq", "process_msgs_s", 45)],
        ["streams vs Celery", "≥ 200×", *ratio("peer:celery", "process_msgs_s", 200)],
        ["produce, streams, one process", "≥ 300,000 msgs/s",
         *figure("produce:msgrelay-streams", "msgs_s", 300_000, per_s)],
        ["p99 produce → line at 50,000 msgs/s (streams)", "≤ 5 ms",
         *figure(streams_p99.format(50_000), "p99_ms", 5, ms, at_most=True)],
        ["p99 produce → line at 10,000 msgs/s (streams)", "≤ 1.5 ms",
         *figure(streams_p99.format(10_000), "p99_ms", 1.5, ms, at_most=True)],
        ["consumer RSS across the long run", "≤ 80 MB", *figure("rss:long", "rss_mb", 80, mb, at_most=True)],
        ["Redis bytes per queued message, streams", "≤ 1.3× payload",
         *figure("produce:msgrelay-streams", "bytes_ratio", 1.3, payloads, at_most=True)],
        ["Redis bytes per queued message, lists", "≤ 1.3× payload",
         *figure("produce:msgrelay-lists", "bytes_ratio", 1.3, payloads, at_most=True)],
    ]  # fmt: skip
    return table


def ratios_table(results: Results) -> Table:
    table = Table(
        "Ratios",
        ["msgrelay end to end against", "msgrelay streams", "msgrelay lists"],
        intro="Ratio of the medians of this run; in brackets the most conservative one (msgrelay's slowest "
        "run against the other's fastest).",
    )
    for row in e2e_contenders(results):
        if row.family == "msgrelay":
            continue
        table.rows.append(
            [row.label]
            + [
                results.ratio_cell(ours, "msgs_s", row.key, row.metric)
                for ours in (RELAY_STREAMS, RELAY_LISTS)
            ]
        )
    return table


def e2e_table(results: Results) -> Table:
    table = Table(
        "End to end",
        ["contestant", "messages", "msgs/s", "MB/s", "consumer RSS MB", "msgrelay streams ÷ this"],
        intro="One producer and two consumer processes running at once, ~175-byte JSON log messages, each "
        "appended as a line to its per-type file; rate = N / (producer start → last line on disk). msgrelay "
        "(`msgrelay consume`, default settings) and the plain loops write the same text line (time, type, "
        "id, text, extra fields); the plain loops skip msgrelay's validation and escaping. The peers write "
        "the message's JSON as it came; their figure is what their adapter reports (workers started on the "
        "full queue).",
    )
    for row in e2e_contenders(results):
        payload = PEER_PAYLOAD if row.family == "peer" else None
        ratio = results.ratio_cell(RELAY_STREAMS, "msgs_s", row.key, row.metric)
        table.rows.append(
            [
                row.label,
                results.cell(row.key, "messages", rate),
                results.cell(row.key, row.metric, rate),
                _mb_s(results, row, payload),
                results.cell(row.key, row.rss_metric, one),
                "1.00×" if row.key == RELAY_STREAMS else ratio,
            ]
        )  # fmt: skip
    return table


def _mb_s(results: Results, row: Contender, payload: float | None) -> str:
    if payload is None:
        return results.cell(row.key, "mb_s", one)
    value = results.median(row.key, row.metric)
    return one(value * payload / 1e6) if value is not None else results.missing(row.key)


def modes_table(results: Results) -> Table:
    table = Table(
        "Delivery modes",
        ["transport", "mode", "msgs/s", "vs at_least_once", "cost"],
        intro="End to end as above; `--fsync` fsyncs each batch before its ack, "
        "`--delivery effectively_once` journals each batch's file offsets in Redis before the write.",
    )
    for transport in ("streams", "lists"):
        default = f"e2e:msgrelay-{transport}"
        for mode in ("at_least_once", "fsync", "effectively_once"):
            key = default if mode == "at_least_once" else f"{default}-{mode}"
            found = results.ratio(key, "msgs_s", default, "msgs_s")
            vs = times(found[0]) if found else results.missing(key)
            cost = _cost(found[0]) if found and mode != "at_least_once" else "—"
            table.rows.append([transport, mode, results.cell(key, "msgs_s", rate), vs, cost])
    return table


def _cost(ratio: float) -> str:
    """What a mode costs against the default, in words (a noisy run can make it look faster)."""
    change = (1 - ratio) * 100
    return f"{change:.0f} % slower" if change >= 0 else f"{-change:.0f} % faster (noise)"


RELAY_AND_PLAIN = (
    ("msgrelay-streams", "msgrelay streams"),
    ("msgrelay-lists", "msgrelay lists"),
    ("plain-streams", "plain streams (XADD pipelined by 1000)"),
    ("plain-list", "plain list (LPUSH 1000 values per command)"),
)


def produce_table(results: Results) -> Table:
    table = Table(
        "Produce",
        ["producer", "messages", "msgs/s", "payload B"],
        intro="One Python process sending flat out, nobody consuming (msgrelay: `Producer.send_many`).",
    )
    for key, label in RELAY_AND_PLAIN:
        job = f"produce:{key}"
        row = [label, results.cell(job, "messages", rate), results.cell(job, "msgs_s", rate)]
        table.rows.append([*row, results.cell(job, "payload_bytes", one)])
    for peer in PEERS:
        job = f"peer:{peer}"
        row = [LABELS[peer], results.cell(job, "messages", rate), results.cell(job, "produce_msgs_s", rate)]
        table.rows.append([*row, rate(PEER_PAYLOAD)])
    return table


def latency_table(results: Results) -> Table:
    table = Table(
        "Latency",
        ["contestant", "offered msgs/s", "achieved", "p50 ms", "p99 ms", "max ms"],
        intro="The producer sends a small batch every millisecond; latency runs from the message's `ts` (set "
        "when it is built) to the moment its batch has been written (msgrelay: flushed by its file sink).",
    )
    for offered in sorted(
        {int(key.rsplit("@", 1)[1]) for key in results.jobs if key.startswith("latency:")}, reverse=True
    ):
        for key, label in RELAY_AND_PLAIN:
            job = f"latency:{key}@{offered}"
            table.rows.append(
                [label, rate(offered), results.cell(job, "achieved_msgs_s", rate)]
                + [results.cell(job, metric, two) for metric in ("p50_ms", "p99_ms", "max_ms")]
            )  # fmt: skip
    return table


def memory_table(results: Results) -> Table:
    table = Table(
        "Memory",
        ["contestant", "payload B", "Redis B/msg", "× payload", "consumer RSS MB"],
        intro="Redis: `INFO memory` used_memory growth / N with N queued and nobody consuming. Consumer RSS: "
        "the highest `VmRSS`/`VmHWM` of the consumer process during its end-to-end run; the long run is "
        "msgrelay streams (default mode) on its own, with its RSS once a tenth of it was done (flat: equal).",
    )
    for key, label in RELAY_AND_PLAIN:
        job = f"produce:{key}"
        table.rows.append(
            [label]
            + [results.cell(job, metric, one) for metric in ("payload_bytes", "redis_bytes_per_msg")]
            + [results.cell(job, "bytes_ratio", two), results.cell(f"e2e:{key}", "rss_mb", one)]
        )  # fmt: skip
    long_label = results.jobs.get("rss:long", {}).get("label", "long run")
    early = results.cell("rss:long", "rss_early_mb", one)
    table.rows.append(
        [long_label, "", "", "", f"{results.cell('rss:long', 'rss_mb', one)} ({early} at 10 %)"]
    )
    for peer in PEERS:
        job = f"peer:{peer}"
        per_message = results.median(job, "redis_bytes_per_msg")
        ratio = two(per_message / PEER_PAYLOAD) if per_message is not None else results.missing(job)
        table.rows.append(
            [LABELS[peer], rate(PEER_PAYLOAD), results.cell(job, "redis_bytes_per_msg", one), ratio,
             results.cell(job, "worker_rss_mb", one)]
        )  # fmt: skip
    return table


def scaling_table(results: Results) -> Table:
    table = Table(
        "Scaling",
        ["msgrelay streams, at_least_once", "messages", "msgs/s", "MB/s", "vs 1 consumer, 175 B"],
        intro="End to end as above, with more `msgrelay consume` processes sharing the group, or other "
        "message sizes (64 KB = 64,000 bytes, under the default 64 KiB message limit).",
    )
    rows = [("scale:consumers-1", "1 consumer, 175 B"), (RELAY_STREAMS, "2 consumers, 175 B")]
    rows += [("scale:consumers-4", "4 consumers, 175 B")]
    rows += [
        (f"scale:size-{size}", f"2 consumers, {label}")
        for size, label in ((64, "64 B"), (1024, "1 KB"), (64_000, "64 KB"))
    ]
    for key, label in rows:
        found = results.ratio(key, "msgs_s", "scale:consumers-1", "msgs_s")
        table.rows.append(
            [label, results.cell(key, "messages", rate), results.cell(key, "msgs_s", rate),
             results.cell(key, "mb_s", one), times(found[0]) if found else results.missing(key)]
        )  # fmt: skip
    return table


def peers_table(results: Results) -> Table:
    table = Table(
        "Peers",
        ["peer", "messages", "process msgs/s", "produce msgs/s", "Redis B/msg", "worker RSS MB", "config"],
        intro="Each in its benchmark virtualenv (`make bench-venvs`), its own fresh redis-server, the same "
        "messages and the same job (bench/peers/run_peer.py).",
    )
    for peer in PEERS:
        job = f"peer:{peer}"
        entry = results.jobs.get(job, {})
        config = (
            entry.get("note", "")
            if results.values(job, "process_msgs_s")
            else entry.get("note", "not measured")
        )
        table.rows.append(
            [LABELS[peer]]
            + [results.cell(job, metric, rate) for metric in ("messages", "process_msgs_s", "produce_msgs_s")]
            + [results.cell(job, metric, one) for metric in ("redis_bytes_per_msg", "worker_rss_mb")]
            + [config or "—"]
        )  # fmt: skip
    return table


TABLES = (goals_table, ratios_table, e2e_table, modes_table, produce_table, latency_table, memory_table)
TABLES_LAST = (scaling_table, peers_table)


def all_tables(results: Results) -> list[Table]:
    return [build(results) for build in (*TABLES, *TABLES_LAST)]


# --- the page, the JSON, the chart --------------------------------------------------------------------


def page(results: Results, tables: Sequence[Table], chart: Path | None) -> str:
    meta = results.meta
    load = ", ".join(f"{value:.2f}" for value in meta.get("load_average", []))
    head = [
        "# Benchmarks",
        "",
        "Generated by `make bench` (`python -m bench`, see [bench/](../bench)); do not edit by hand. The "
        "page can be rebuilt from the raw results: `python -m bench --from-json docs/benchmarks.json`.",
        "",
        f"- date: {meta['date']}, commit {meta.get('commit', 'unknown')}",
        f"- machine: {meta['cores']} cores, {meta['cpu']}, Linux {meta.get('kernel', '?')}, load average at "
        f"start {load}",
        f"- Python {meta['python']}, Redis {meta['redis']} (a fresh private redis-server per measurement, "
        "loopback TCP, no persistence, `noeviction`)",
        f"- command: `{meta['command']}`" + (" (smoke sizes: no meaning)" if meta.get("smoke") else ""),
        f"- every measurement repeated {meta['repeat']}×: median, min–max in brackets",
        "",
    ]  # fmt: skip
    if summary(results):
        head += [summary(results), ""]
    if chart is not None:
        head += [f"![end-to-end msgs/s of every contestant, log scale]({chart.name})", ""]
    body = [table.markdown() for table in tables]
    appendix = [APPENDIX.read_text()] if APPENDIX.is_file() else []
    return "\n".join(head) + "\n" + "\n".join(body + appendix)


def chart(results: Results, path: Path) -> Path | None:
    """Log-scale bars of every contestant's end-to-end msgs/s (median, min–max whiskers)."""
    try:
        import matplotlib  # noqa: PLC0415 - optional: pip install '.[bench]'

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
        from matplotlib.patches import Patch  # noqa: PLC0415
    except ImportError:
        return None
    rows = [row for row in e2e_contenders(results) if results.values(row.key, row.metric)]
    if not rows:
        return None
    medians = [statistics.median(results.values(row.key, row.metric)) for row in rows]
    lows = [med - min(results.values(row.key, row.metric)) for row, med in zip(rows, medians, strict=True)]
    highs = [max(results.values(row.key, row.metric)) - med for row, med in zip(rows, medians, strict=True)]
    colours = {"msgrelay": "#1f77b4", "baseline": "#7f7f7f", "peer": "#ff7f0e"}
    figure, axes = plt.subplots(figsize=(9, 0.45 * len(rows) + 1.5))
    positions = range(len(rows))
    axes.barh(positions, medians, xerr=[lows, highs], color=[colours[row.family] for row in rows], capsize=3)
    axes.set_yticks(list(positions), [row.label for row in rows])
    families = {"msgrelay": "msgrelay", "baseline": "plain redis-py loop", "peer": "task queue"}
    present = {row.family for row in rows}
    axes.legend(
        handles=[Patch(color=colours[key], label=name) for key, name in families.items() if key in present],
        loc="lower right",
    )
    axes.invert_yaxis()
    axes.set_xscale("log")
    axes.set_xlabel("messages/s end to end (log scale)")
    axes.set_title(f"msgrelay vs plain loops vs peers — {results.meta['date']}")
    for position, value in zip(positions, medians, strict=True):
        axes.text(value, position, f" {value:,.0f}", va="center", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def write(data: dict[str, Any], out: Path, console: Console) -> None:
    """Print the tables and write the page, its JSON and its chart next to each other."""
    results = Results(data)
    tables = all_tables(results)
    for table in tables:
        console.print(table.rich())
    console.print(summary(results), markup=False)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(data, indent=1) + "\n")
    drawn = chart(results, out.with_suffix(".png"))
    if drawn is None:
        console.print("no chart: matplotlib is not installed (pip install -e '.[bench]')", markup=False)
    out.write_text(page(results, tables, drawn))
    console.print(f"wrote {out}, {out.with_suffix('.json').name}" + (f", {drawn.name}" if drawn else ""))
