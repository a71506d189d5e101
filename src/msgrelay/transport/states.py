"""Error replies that mean "the server's state, not our request, is wrong right now", in one table.

A long-running command waits these out (backoff, one line when the episode starts and one when it ends)
instead of exiting; a one-shot command exits 4 with the state named. The codes are the first word of the
reply. Sources: Redis' shared error replies (``createSharedObjects`` in ``src/server.c``: ``loadingerr``,
``roslaveerr``, ``masterdownerr``, ``bgsaveerr``, ``slowevalerr`` / ``slowscripterr`` / ``slowmoduleerr``,
``noreplicaserr``, ``oomerr``), the replies to blocked clients (``blocked.c``, ``t_stream.c``:
``-UNBLOCKED`` when the stream key is deleted or the server turns into a replica, ``-NOGROUP`` when the
group a client is blocked on is destroyed) and Redis Cluster's ``-TRYAGAIN`` / ``-CLUSTERDOWN``, all checked
against redis-server 7.0 and 6.2 by ``tests/test_redis_states.py``.

==============  =============================================================================================
code            Redis answers it when
==============  =============================================================================================
LOADING         it is loading its dataset (start, restart, a replica's full sync): every data command
READONLY        it is a replica (``REPLICAOF``, a failover): every write, XREADGROUP and our scripts included
MASTERDOWN      it is a replica that lost its primary with ``replica-serve-stale-data no``: even PING
MISCONF         the last RDB save failed (``stop-writes-on-bgsave-error``): every write, and PING
BUSY            a script or module command runs longer than ``busy-reply-threshold``: every command
NOREPLICAS      fewer replicas than ``min-replicas-to-write`` are connected: every write
OOM             it is over ``maxmemory`` with ``noeviction``: commands that may grow memory (producers)
UNBLOCKED       a blocking read was ended by a state change: the stream was deleted (FLUSHALL, DEL) or the
                server became a replica
NOGROUP         the stream or its consumer group was deleted (FLUSHALL, DEL, XGROUP DESTROY)
TRYAGAIN        (Redis Cluster) keys of one command are being moved between nodes
CLUSTERDOWN     (Redis Cluster) the cluster cannot serve
==============  =============================================================================================

Redis 6.2 wraps an error raised inside a script (``redis.call``) in ``ERR Error running script ...:
-READONLY ...``; Redis 7 keeps the code first. Both are recognised.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

STATES: Final[Mapping[str, str]] = {
    "LOADING": "is loading its dataset",
    "READONLY": "is a read-only replica",
    "MASTERDOWN": "is a replica that lost its primary (and replica-serve-stale-data is no)",
    "MISCONF": "refuses writes: it cannot save to disk (stop-writes-on-bgsave-error; see its log)",
    "BUSY": "is busy running a script or a module command",
    "NOREPLICAS": "refuses writes: not enough replicas are connected (min-replicas-to-write)",
    "OOM": "is out of memory (maxmemory, noeviction)",
    "UNBLOCKED": "ended a blocking read: the stream was deleted or the server became a replica",
    "NOGROUP": "has no such consumer group: the stream or the group was deleted",
    "TRYAGAIN": "asks to try again: keys are being moved between cluster nodes",
    "CLUSTERDOWN": "says the cluster is down",
}
"""State code -> what it means, as the rest of a sentence that starts with "Redis at <url>"."""

REPLICA_STATES: Final = frozenset({"READONLY", "MASTERDOWN"})
"""States in which the server is a replica: the line names its primary (``ROLE``)."""

_EMBEDDED = re.compile(r"(?:^|:\s)-([A-Z]+)\s")


def state_of(code: str | None, text: str) -> str | None:
    """The state code of an error reply, or None when the reply is about our request (WRONGTYPE, NOPERM ...).

    ``code`` is the first word of the reply when the client split it off (redis-py does for the codes it
    knows: ``status_code``), else None and ``text`` is the whole reply."""
    first = code if code else text.lstrip().split(" ", 1)[0]
    if first in STATES:
        return first
    if first in ("ERR", "") and "Error running script" in text:  # Redis 6.2: "...: -READONLY You can't"
        embedded = _EMBEDDED.search(text)
        if embedded and embedded.group(1) in STATES:
            return embedded.group(1)
    return None
