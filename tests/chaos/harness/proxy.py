"""A small asyncio TCP proxy in a thread, for network faults that ``tc netem`` cannot give us here.

Modes (switch at any time with :meth:`FaultProxy.set_mode`):

* ``pass``: forward both ways.
* ``delay``: hold every chunk ``arg`` milliseconds before forwarding it (order kept).
* ``throttle``: forward at most ``arg`` bytes per second in each direction.
* ``blackhole``: accept, never forward; a connection that dropped bytes stays dead (its stream is corrupt).
* ``reset``: RST every open connection now and every new one on accept.
* ``cut``: forward ``arg`` more bytes of server replies on each connection, then RST it (mid-reply).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from dataclasses import dataclass, field

MODES = ("pass", "delay", "throttle", "blackhole", "reset", "cut")
CHUNK = 65536


@dataclass(eq=False, slots=True)
class _Link:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    reply_budget: int | None = None
    dead: bool = False
    blackholed: bool = False
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


def _rst(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST (SO_LINGER 0), like a crashed peer or a middlebox reset."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class FaultProxy:
    """``127.0.0.1:<port>`` -> ``127.0.0.1:<upstream_port>``, with a switchable fault mode."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self.mode = "pass"
        self.arg = 0
        self.resets = 0
        self._links: set[_Link] = set()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-proxy", daemon=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> FaultProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the chaos proxy did not start")
        return self

    def stop(self) -> None:
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def set_mode(self, mode: str, arg: int = 0) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown proxy mode {mode!r}")
        future = asyncio.run_coroutine_threadsafe(self._switch(mode, arg), self._loop)
        future.result(timeout=10)

    async def _switch(self, mode: str, arg: int) -> None:
        self.mode, self.arg = mode, arg
        for link in list(self._links):
            if mode == "reset":
                self._kill(link)
            elif mode == "cut":
                link.reply_budget = arg

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._accept, "127.0.0.1", 0))
        self.port = int(server.sockets[0].getsockname()[1])
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            for link in list(self._links):
                self._kill(link)
            server.close()
            self._loop.run_until_complete(server.wait_closed())
            self._loop.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == "reset":
            self.resets += 1
            _rst(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            _rst(writer)
            return
        link = _Link(writer, up_writer, reply_budget=self.arg if self.mode == "cut" else None)
        self._links.add(link)
        link.tasks = [
            asyncio.create_task(self._pump(link, reader, up_writer, reply=False)),
            asyncio.create_task(self._pump(link, up_reader, writer, reply=True)),
        ]

    async def _pump(
        self, link: _Link, source: asyncio.StreamReader, sink: asyncio.StreamWriter, *, reply: bool
    ) -> None:
        try:
            while True:
                data = await source.read(CHUNK)
                if not data:
                    break
                await self._forward(link, data, sink, reply=reply)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._kill(link)

    async def _forward(self, link: _Link, data: bytes, sink: asyncio.StreamWriter, *, reply: bool) -> None:
        mode, arg = self.mode, self.arg
        if mode == "blackhole":
            link.blackholed = True  # bytes were dropped: this stream can never be trusted again
        if link.dead or link.blackholed:
            return
        if mode == "delay":
            await asyncio.sleep(arg / 1000)
        if reply and link.reply_budget is not None:
            if len(data) >= link.reply_budget:
                sink.write(data[: link.reply_budget])
                await sink.drain()
                self._kill(link)
                return
            link.reply_budget -= len(data)
        sink.write(data)
        await sink.drain()
        if mode == "throttle" and arg > 0:
            await asyncio.sleep(len(data) / arg)

    def _kill(self, link: _Link) -> None:
        if link not in self._links:
            return
        self._links.discard(link)
        link.dead = True
        self.resets += 1
        _rst(link.client)
        _rst(link.upstream)
