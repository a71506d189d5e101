"""Real local servers for the tests (127.0.0.1, port 0): TCP listeners, and HTTP servers that play a scripted
list of answers and keep every request.

A stdlib ``http.server`` in a thread; nothing is mocked between a client and the socket, and nothing leaves
the machine. The ``serve`` fixture (conftest.py) starts them and stops them after the test.
"""

from __future__ import annotations

import json
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"ok"
    hang: bool = False
    """Read the request, then answer nothing until the test ends."""
    cut: bool = False
    """Announce more body than is sent, then close the connection."""
    trickle_s: float = 0.0
    """Send the body a byte at a time, this far apart (a receiver that is slow, not silent)."""


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> object:
        return json.loads(self.body)


class Server:
    """Answers POSTs with ``replies`` in order (the last one repeats) and records every request."""

    def __init__(self, *replies: Reply) -> None:
        self.replies = list(replies) or [Reply()]
        self.received: list[Received] = []
        self.release = threading.Event()
        self.hanging = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                server.received.append(Received(self.path, dict(self.headers.items()), body))
                reply = server.replies.pop(0) if len(server.replies) > 1 else server.replies[0]
                if reply.hang:
                    server.hanging.set()
                    server.release.wait(30)
                    return
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                extra = 100 if reply.cut else 0
                self.send_header("Content-Length", str(len(reply.body) + extra))
                self.end_headers()
                if reply.trickle_s:
                    for byte in reply.body:
                        if server.release.wait(reply.trickle_s):  # the test is over: stop at once
                            return
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                else:
                    self.wfile.write(reply.body)
                    self.wfile.flush()
                self.close_connection = True

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        self.release.set()
        self._httpd.shutdown()
        self._httpd.server_close()


def listen_tcp(port: int = 0) -> socket.socket:
    """A listening TCP socket on loopback (``port`` 0: a free one; another port: come back on it)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(16)
    return sock
