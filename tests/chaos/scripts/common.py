"""What the chaos worker scripts share: the ``consume`` flags they accept, and the real log sink."""

from __future__ import annotations

import argparse
from pathlib import Path

from msgrelay.codec import decode
from msgrelay.errors import DecodeError
from msgrelay.message import Message


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["consume"])
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--burst", action="store_true")
    parser.add_argument("--name", required=True)
    parser.add_argument("--log-dir", type=Path, required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--transport", default="streams")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--block-timeout", type=float, default=0.5)
    args = parser.parse_args(argv)
    print(f"consumer {args.name} reading {args.transport}", flush=True)  # the harness waits for this
    return args


def decode_all(raws: list[bytes]) -> list[Message]:
    messages = []
    for raw in raws:
        try:
            messages.append(decode(raw, max_bytes=1 << 20))
        except DecodeError:
            continue
    return messages
