"""The checker: every output line against the producer's ledger, plus the final Redis state.

``lost = ok - seen`` (must be 0), ``recovered = unknown & seen``, ``unexpected = seen - attempted``,
``dup = sum(count - 1)``, ``torn`` = lines that do not parse as one whole message in the right file.

Where Redis itself deletes queued messages (FLUSHALL, DEL of the queue), the scenario reads the queue in the
same transaction as the deletion (:func:`ids_in_queue`): those ids are ``dropped``, not ``lost``. ``lost``
stays every other acknowledged send without its line, so everything produced after the deletion must be
written.
"""

from __future__ import annotations

import gzip
import re
import time
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import orjson
import redis

from msgrelay.keys import KeySchema
from msgrelay.levels import TYPE_FILES

from .ledger import Ledger
from .redis_node import RedisNode

STREAM = "msgrelay:logs"
GROUP = "msgrelay"
BUFFER = "message_buffer"
NAMESPACE = "msgrelay"
FILE_TYPES = {name: msg_type for msg_type, name in TYPE_FILES.items()}

BACKLOG_COUNT_LIMIT = 100_000
"""The checker counts at most this many undelivered entries (enough to say "not drained")."""

_TEXT_LINE = re.compile(
    r"(?P<ts>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) (?P<type>[A-Z]+) (?P<id>\S+) "
    r"m (?P<echo>\S+) (?P<tag>[A-Za-z-]+) x*"
)


@dataclass(slots=True)
class Seen:
    """What the log files hold: id -> times seen, plus the lines that are not one whole message."""

    counts: Counter[str] = field(default_factory=Counter)
    torn: int = 0
    torn_samples: list[str] = field(default_factory=list)
    lines: int = 0

    def add_torn(self, line: str) -> None:
        self.torn += 1
        if len(self.torn_samples) < 5:
            self.torn_samples.append(line[:200])


def read_logs(log_dir: Path) -> Seen:
    """Parse every line of the four log files and of their rotated files (``error.log.1``, ``.2.gz``,
    ``error.log-20261201`` ...: any name that starts with the file's name, gzipped ones unpacked; hidden
    temporary files are not log files). Text format; a file whose last line has no ``\\n`` is torn."""
    seen = Seen()
    for path, msg_type in log_files(log_dir):
        try:
            raw = gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
        except (OSError, EOFError, zlib.error) as exc:  # a compressed file cut short counts as torn
            seen.add_torn(f"{path.name}: {exc}")
            continue
        lines = raw.decode("utf-8", "replace").split("\n")
        if lines[-1]:
            seen.add_torn(lines[-1])  # no newline at the end: a partial write left behind
        for line in lines[:-1]:
            seen.lines += 1
            match = _TEXT_LINE.fullmatch(line)
            if match is None or match["type"] != msg_type or match["echo"] != match["id"]:
                seen.add_torn(line)
                continue
            seen.counts[match["id"]] += 1
    return seen


def log_files(log_dir: Path) -> list[tuple[Path, str]]:
    """Every file holding lines of a type: ``<name>`` and its rotated siblings, with the type."""
    found: list[tuple[Path, str]] = []
    if not log_dir.is_dir():
        return found
    for path in sorted(log_dir.iterdir()):
        for name, msg_type in FILE_TYPES.items():
            if path.name.startswith(name) and path.is_file():
                found.append((path, msg_type))
    return found


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: int
    fail: int
    unknown: int
    seen: int
    lost: int
    recovered: int
    unexpected: int
    dup: int
    torn: int
    fail_seen: int
    dup_ok: int
    """ids sent with a definite ``ok`` that have more than one line."""
    dropped: int = 0
    """ids sent ``ok`` that Redis itself deleted before any consumer took them (FLUSHALL, DEL)."""
    lost_sample: tuple[str, ...] = ()
    torn_sample: tuple[str, ...] = ()

    def figures(self) -> str:
        return (
            f"ok={self.ok} fail={self.fail} unknown={self.unknown} seen={self.seen} lost={self.lost} "
            f"recovered={self.recovered} unexpected={self.unexpected} dup={self.dup} torn={self.torn} "
            f"fail_seen={self.fail_seen} dup_ok={self.dup_ok} dropped={self.dropped}"
        )


def judge(
    ledger: Ledger,
    seen: Seen,
    *,
    expect_absent: set[str] | None = None,
    dropped: frozenset[str] = frozenset(),
) -> Verdict:
    """Compare the ledger with the lines. ``expect_absent`` (the poison set) is left out of ``lost``, and so
    are the ids Redis itself deleted from the queue (``dropped``, counted apart)."""
    seen_ids = set(seen.counts)
    absent_ok = expect_absent or set()
    lost = (ledger.ok - absent_ok - dropped) - seen_ids
    return Verdict(
        ok=len(ledger.ok),
        fail=len(ledger.fail),
        unknown=len(ledger.unknown),
        seen=len(seen_ids),
        lost=len(lost),
        recovered=len(ledger.unknown & seen_ids),
        unexpected=len(seen_ids - ledger.attempted),
        dup=sum(count - 1 for count in seen.counts.values()),
        torn=seen.torn,
        fail_seen=len(ledger.fail & seen_ids),
        dup_ok=sum(1 for i, count in seen.counts.items() if count > 1 and i in ledger.ok),
        dropped=len((ledger.ok & dropped) - seen_ids),
        lost_sample=tuple(sorted(lost)[:5]),
        torn_sample=tuple(seen.torn_samples),
    )


@dataclass(frozen=True, slots=True)
class QueueState:
    """Redis after the run: nothing waiting, nothing held, and what the dead-letter stream holds."""

    backlog: int
    """Stream: entries after the group's last-delivered id (counted, not XINFO's lag); list: its length."""
    pending: int
    retrying: int
    held_by: dict[str, int]
    dlq_ids: frozenset[str]
    dlq_attempts: dict[str, int]

    @property
    def drained(self) -> bool:
        return self.backlog == 0 and self.pending == 0 and self.retrying == 0

    def summary(self) -> str:
        holders = {name: n for name, n in self.held_by.items() if n}
        return (
            f"backlog={self.backlog} pending={self.pending} retrying={self.retrying} "
            f"held_by={holders} dlq={len(self.dlq_ids)}"
        )


def queue_state(node: RedisNode, transport: str) -> QueueState:
    queue = STREAM if transport == "streams" else BUFFER
    keys = KeySchema(NAMESPACE, queue)
    with node.admin() as client:
        if transport == "streams":
            backlog, held_by = _stream_state(client)
        else:
            backlog = int(client.llen(BUFFER))
            held_by = {
                name.decode().rsplit(":", 1)[-1]: int(client.llen(name))
                for name in client.scan_iter(match=keys.processing("*"), count=1000)
            }
        retrying = int(client.zcard(keys.retry())) if client.type(keys.retry()) == b"zset" else 0
        dlq_ids, attempts = _dead_letters(client, keys.dead_letters())
    return QueueState(backlog, sum(held_by.values()), retrying, held_by, frozenset(dlq_ids), attempts)


def _stream_state(client: redis.Redis) -> tuple[int, dict[str, int]]:
    if not client.exists(STREAM):
        return 0, {}
    groups = {g["name"]: g for g in client.xinfo_groups(STREAM)}
    group = groups.get(GROUP.encode())
    if group is None:
        return int(client.xlen(STREAM)), {}
    # Count the entries after the group's last-delivered id ourselves: XINFO's "lag" is an estimate that
    # Redis 7.0 can get wrong after trims and restarts, and the checker must not trust the system under test.
    after = "(" + group["last-delivered-id"].decode()
    undelivered = xrange(client, STREAM, after, count=BACKLOG_COUNT_LIMIT)
    consumers = client.xinfo_consumers(STREAM, GROUP)
    return len(undelivered), {c["name"].decode(): int(c["pending"]) for c in consumers}


def xrange(
    client: redis.Redis, key: str, start: str = "-", count: int | None = None
) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """The entries of a stream from ``start`` (all of them, or the first ``count``)."""
    return cast(list[tuple[bytes, dict[bytes, bytes]]], client.xrange(key, min=start, max="+", count=count))


def ids_in_queue(client: redis.Redis, transport: str, *deletion: object) -> frozenset[str]:
    """Run ``deletion`` (FLUSHALL, DEL ...) in one transaction after reading every entry of the queue: the
    message ids Redis itself deletes from it (the rest of what it deletes, such as processing lists, is
    held by live consumers, which write it)."""
    pipe = client.pipeline(transaction=True)
    if transport == "streams":
        pipe.xrange(STREAM)
    else:
        pipe.lrange(BUFFER, 0, -1)
    pipe.execute_command(*deletion)  # type: ignore[no-untyped-call]
    entries = pipe.execute()[0]
    raws = [fields[b"m"] for _, fields in entries] if transport == "streams" else entries
    return frozenset(str(orjson.loads(raw)["id"]) for raw in raws)


def _dead_letters(client: redis.Redis, key: str) -> tuple[set[str], dict[str, int]]:
    ids: set[str] = set()
    attempts: dict[str, int] = {}
    for _entry_id, fields in xrange(client, key):
        raw = fields.get(b"raw", b"")
        try:
            message_id = str(orjson.loads(raw)["id"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            message_id = raw.decode("utf-8", "replace")
        ids.add(message_id)
        attempts[message_id] = int(fields.get(b"attempt", b"0") or 0)
    return ids, attempts


def wait_drained(
    node: RedisNode, transport: str, deadline_s: float, *, on_poll: Callable[[], None] | None = None
) -> tuple[bool, QueueState, float]:
    """Poll until nothing is waiting or held (twice in a row), or the deadline passes."""
    started = time.monotonic()
    streak = 0
    while True:
        if on_poll is not None:
            on_poll()
        state = queue_state(node, transport)
        streak = streak + 1 if state.drained else 0
        waited = time.monotonic() - started
        if streak >= 2 or waited > deadline_s:
            return streak >= 2, state, waited
        time.sleep(0.2)
