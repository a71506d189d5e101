"""The write journal of effectively-once file sinks, in the Redis hash ``keys.journal()``.

Field = consumer name; value = the batch that consumer is writing or has written but not yet acknowledged,
as JSON::

    {"at": <unix time>, "files": [[file_key, dev, ino, start, length, sha1_hex, handles_b64, head_b64], ...]}

(every element a string: Lua's cjson would round large integers). ``file_key`` is ``<host id>:<path>``;
``dev``/``ino`` tell a rotated file from the one written (its lines are then looked for in the rotated
file: :func:`msgrelay.sinks.rotation.find_rotated`); ``start``/``length``/``sha1_hex`` are where the batch's
bytes for that file went and what they hash to; ``handles_b64`` is the concatenated SHA-1 of the transport
handles of the messages in those bytes; ``head_b64`` their first :data:`HEAD_BYTES` bytes, so that a file
truncated since (``copytruncate``) and written again by others is never taken for our torn write and cut.

The protocol (see :class:`msgrelay.sinks.files.LogFileSink`): a writer takes the file locks, records its
entry with :meth:`WriteJournal.begin` (one round trip that also returns the other consumers' records on the
same files), cuts any torn record (its bytes run past the end of the file: its writer died mid-write) and
drops it, then writes. After the ack, :meth:`WriteJournal.clear` removes the entry.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Final

import orjson
import redis

from msgrelay.keys import KeySchema
from msgrelay.transport.base import redis_errors

DIGEST_BYTES: Final = 20
HEAD_BYTES: Final = 64

# KEYS[1] journal; ARGV[1] this consumer, ARGV[2] its entry, ARGV[3..] the file keys it is about to write.
# Returns every record on those files (without handles), this consumer's previous entry included (it may be
# torn too: same name after a restart), then records the new entry.
_BEGIN: Final = """
local wanted = {}
for i = 3, #ARGV do wanted[ARGV[i]] = true end
local found = {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local ok, entry = pcall(cjson.decode, all[i + 1])
  if ok and type(entry) == 'table' and type(entry.files) == 'table' then
    for _, f in ipairs(entry.files) do
      if type(f) == 'table' and wanted[f[1]] then
        found[#found + 1] = all[i]
        found[#found + 1] = cjson.encode({f[1], f[2], f[3], f[4], f[5], f[6], '', f[8]})
      end
    end
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return found
"""

# KEYS[1] journal; ARGV[1] this consumer, ARGV[2] its new entry ('' = leave it, '-' = delete it); then
# quadruples (consumer, file key, inode, start) naming records to drop. An entry left without records is
# deleted.
_DROP: Final = """
if ARGV[2] == '-' then
  redis.call('HDEL', KEYS[1], ARGV[1])
elseif ARGV[2] ~= '' then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
for i = 3, #ARGV, 4 do
  local raw = redis.call('HGET', KEYS[1], ARGV[i])
  if raw then
    local ok, entry = pcall(cjson.decode, raw)
    if ok and type(entry) == 'table' and type(entry.files) == 'table' then
      local kept = {}
      for _, f in ipairs(entry.files) do
        local same = f[1] == ARGV[i + 1] and f[3] == ARGV[i + 2] and f[4] == ARGV[i + 3]
        if not same then kept[#kept + 1] = f end
      end
      if #kept == 0 then
        redis.call('HDEL', KEYS[1], ARGV[i])
      elseif #kept < #entry.files then
        entry.files = kept
        redis.call('HSET', KEYS[1], ARGV[i], cjson.encode(entry))
      end
    end
  end
end
return 0
"""


@cache
def host_id() -> str:
    """This machine, so records of a same-named file on another host are never mistaken for ours."""
    try:
        return Path("/etc/machine-id").read_text(encoding="ascii").strip() or socket.gethostname()
    except OSError:
        return socket.gethostname()


def file_key(path: Path) -> str:
    return f"{host_id()}:{path}"


def handle_digest(handle: bytes) -> bytes:
    return hashlib.sha1(handle, usedforsecurity=False).digest()


def content_digest(data: bytes) -> str:
    return hashlib.sha1(data, usedforsecurity=False).hexdigest()


@dataclass(frozen=True, slots=True)
class FileRecord:
    """Where one batch's bytes for one file went. ``handles`` is empty on records read for a check."""

    key: str
    dev: int
    ino: int
    start: int
    length: int
    sha1: str
    handles: frozenset[bytes] = frozenset()
    head: bytes = b""
    """The first bytes written (up to HEAD_BYTES)."""

    @property
    def end(self) -> int:
        return self.start + self.length

    def same_file(self, key: str, dev: int, ino: int) -> bool:
        return (self.key, self.dev, self.ino) == (key, dev, ino)

    def is_torn(self, size: int) -> bool:
        """Its bytes start inside the file but run past its end: the writer died mid-write (see
        :func:`torn_in` for the check against the file's bytes)."""
        return self.start <= size < self.end

    def encode(self) -> list[str]:
        blob = base64.b64encode(b"".join(sorted(self.handles))).decode("ascii")
        head = base64.b64encode(self.head).decode("ascii")
        numbers = [str(self.dev), str(self.ino), str(self.start), str(self.length)]
        return [self.key, *numbers, self.sha1, blob, head]

    @classmethod
    def decode(cls, fields: Sequence[Any]) -> FileRecord:
        """Raises ``ValueError``/``IndexError``/``TypeError`` on a malformed record."""
        key, dev, ino, start, length, sha1 = (str(value) for value in fields[:6])
        blob = base64.b64decode(str(fields[6])) if len(fields) > 6 else b""
        handles = frozenset(blob[i : i + DIGEST_BYTES] for i in range(0, len(blob), DIGEST_BYTES))
        head = base64.b64decode(str(fields[7])) if len(fields) > 7 else b""
        return cls(key, int(dev), int(ino), int(start), int(length), sha1, handles, head)


def torn_in(fd: int, record: FileRecord) -> bool:
    """Whether the file open on ``fd`` ends inside ``record``'s bytes, which begin as the record says: its
    writer died mid-write. A file truncated and written again since holds other bytes there: not torn."""
    size = os.fstat(fd).st_size
    if not record.is_torn(size):
        return False
    known = record.head[: size - record.start]
    return os.pread(fd, len(known), record.start) == known


def holds(fd: int, record: FileRecord) -> bool:
    """Whether the file open on ``fd`` holds ``record``'s bytes, whole, where it says."""
    return content_digest(os.pread(fd, record.length, record.start)) == record.sha1


@dataclass(frozen=True, slots=True)
class OwnedRecord:
    """A record and the consumer whose entry holds it."""

    consumer: str
    record: FileRecord


def _decode_entry(consumer: str, raw: bytes) -> list[OwnedRecord]:
    try:
        files = orjson.loads(raw)["files"]
        return [OwnedRecord(consumer, FileRecord.decode(fields)) for fields in files]
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, IndexError):
        return []  # not ours to understand (a newer format?): never act on it


class WriteJournal:
    """One consumer's view of the journal hash. Every call is one round trip; errors are ``BrokerError``."""

    def __init__(self, client: redis.Redis, keys: KeySchema, consumer: str, *, url: str) -> None:
        self.client = client
        self.key = keys.journal()
        self.consumer = consumer
        self.url = url
        """Masked URL, for error messages."""
        self._begin = client.register_script(_BEGIN)
        self._drop = client.register_script(_DROP)

    def _entry(self, records: Iterable[FileRecord]) -> bytes:
        return orjson.dumps({"at": int(time.time()), "files": [record.encode() for record in records]})

    def begin(self, records: Sequence[FileRecord]) -> list[OwnedRecord]:
        """Record this consumer's batch; return the records already journaled on the same files (this
        consumer's previous entry included)."""
        keys = sorted({record.key for record in records})
        with redis_errors(self.url):
            reply = self._begin(keys=[self.key], args=[self.consumer, self._entry(records), *keys])
        found: list[OwnedRecord] = []
        for consumer, raw in zip(reply[::2], reply[1::2], strict=True):
            found += _decode_entry(consumer.decode(errors="replace"), b'{"files":[' + raw + b"]}")
        return found

    def rewrite_and_drop(self, records: Sequence[FileRecord] | None, dropped: Sequence[OwnedRecord]) -> None:
        """Replace this consumer's entry with ``records`` (unless None) and drop the ``dropped`` records."""
        if records is not None:  # our old entry is replaced as a whole (our new records may share its starts)
            dropped = [owned for owned in dropped if owned.consumer != self.consumer]
        self._drop_records(b"" if records is None else self._entry(records), dropped)

    def _drop_records(self, own: str | bytes, dropped: Sequence[OwnedRecord]) -> None:
        args: list[str | bytes] = [self.consumer, own]
        for owned in dropped:
            args += [owned.consumer, owned.record.key, str(owned.record.ino), str(owned.record.start)]
        with redis_errors(self.url):
            self._drop(keys=[self.key], args=args)

    def records(self) -> list[OwnedRecord]:
        """Every consumer's records (this one's included)."""
        with redis_errors(self.url):
            entries: dict[bytes, bytes] = self.client.hgetall(self.key)  # type: ignore[assignment]
        found: list[OwnedRecord] = []
        for consumer, raw in entries.items():
            found += _decode_entry(consumer.decode(errors="replace"), raw)
        return found

    def clear(self, *, dropping: Sequence[OwnedRecord] = ()) -> None:
        """Forget this consumer's entry (its batch is acknowledged), and drop the ``dropping`` records."""
        if not dropping:
            with redis_errors(self.url):
                self.client.hdel(self.key, self.consumer)
            return
        self._drop_records("-", dropping)
