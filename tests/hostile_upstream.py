"""A hostile SMS Partner API on 127.0.0.1, for the transport tests: per tag it trickles, sends
endless or huge bodies, gzip bombs, redirects, or answers a small valid page.

It speaks just enough HTTP/1.1 by hand (one request per connection, then close) to misbehave in
ways no well-behaved server library allows. Every behaviour is bounded in time and bytes, and
stops as soon as the client goes away; the time each connection was held is recorded, so a test
can tell how long the exporter kept a worker on it.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

HEAD_LIMIT = 64 * 1024
JSON_HEAD = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"


@dataclass
class Seen:
    """One request the server received."""

    path: str
    query: str
    headers: str
    tag: str | None
    began: float
    ended: float | None = None  # when the client went away or the answer was all sent

    @property
    def held(self) -> float:
        return (self.ended or time.monotonic()) - self.began


Behaviour = Callable[["Client"], None]


@dataclass
class Client:
    sock: socket.socket
    seen: Seen
    stopping: threading.Event

    def send(self, data: bytes) -> bool:
        """Send ``data``; False once the client has gone away."""
        try:
            self.sock.sendall(data)
        except OSError:
            return False
        return True

    def gone(self, wait: float) -> bool:
        """Wait up to ``wait`` s; True if the client closed its side (or the server stops)."""
        if self.stopping.wait(0):
            return True
        try:
            readable, _, _ = select.select([self.sock], [], [], wait)
            return bool(readable) and not self.sock.recv(65536)
        except OSError:
            return True


def page(tag: str, messages: int = 3) -> bytes:
    """A small, valid answer for ``tag``: ``messages`` delivered messages."""
    items = [
        {"phoneNumber": f"+3361000{i:04d}", "status": "Delivered", "stopSMS": False, "date": "1"}
        for i in range(messages)
    ]
    return json.dumps(
        {"success": True, "code": 200, "currentPage": 1, "total": messages,
         "StatutResponse_List": items}
    ).encode()  # fmt: skip


ME_BODY = json.dumps(
    {
        "success": True,
        "code": 200,
        "credits": {"creditSms": 100, "balance": "1.5", "currency": "EUR"},
    }
).encode()


def valid(client: Client) -> None:
    body = ME_BODY if client.seen.tag == "me" else page(client.seen.tag or "")
    client.send(f"{JSON_HEAD}Content-Length: {len(body)}\r\n\r\n".encode() + body)


def trickle_body(interval: float = 0.5, limit: float = 60.0) -> Behaviour:
    """Headers at once, then one byte of a never-ending body every ``interval`` seconds."""

    def run(client: Client) -> None:
        client.send(f"{JSON_HEAD}Content-Length: 100000\r\n\r\n".encode())
        end = time.monotonic() + limit
        while time.monotonic() < end and client.send(b" ") and not client.gone(interval):
            pass

    return run


def trickle_head(interval: float = 0.5, limit: float = 60.0) -> Behaviour:
    """The status line and headers themselves, one byte every ``interval`` seconds."""

    def run(client: Client) -> None:
        head = (JSON_HEAD + "X-Padding: " + "x" * 10_000).encode()
        end = time.monotonic() + limit
        for byte in head:
            if time.monotonic() > end or not client.send(bytes([byte])) or client.gone(interval):
                return

    return run


def trickle_tls(interval: float = 0.2, limit: float = 60.0) -> Behaviour:
    """For an ``https://`` client: the header of a 16 KiB TLS handshake record, then its body
    one byte every ``interval`` seconds. TLS waits for the whole record: no read ever times
    out, the handshake never ends."""

    def run(client: Client) -> None:
        end = time.monotonic() + limit
        if not client.send(b"\x16\x03\x03\x40\x00"):
            return
        while time.monotonic() < end and client.send(b"\x00") and not client.gone(interval):
            pass

    return run


BLOCK = b" " * (1 << 20)


def endless(limit_bytes: int, *, length: bool = False) -> Behaviour:
    """A success answer whose message list never ends (up to ``limit_bytes``), sent as fast as
    the client reads. With ``length``, a Content-Length announces it all up front."""

    def run(client: Client) -> None:
        head = JSON_HEAD + (f"Content-Length: {limit_bytes}\r\n" if length else "")
        if not client.send(f"{head}\r\n".encode()):
            return
        client.send(b'{"success": true, "code": 200, "total": 1, "StatutResponse_List": [')
        sent = 0
        while sent < limit_bytes and not client.stopping.is_set() and client.send(BLOCK):
            sent += len(BLOCK)

    return run


def garbage(size: int) -> Behaviour:
    """``size`` bytes that are not JSON, under a 200 OK."""

    def run(client: Client) -> None:
        client.send(f"{JSON_HEAD}Content-Length: {size}\r\n\r\n".encode() + b"x" * size)

    return run


_BOMBS: dict[int, bytes] = {}


def gzip_bomb_bytes(inflated: int) -> bytes:
    """One gzip member that inflates to ``inflated`` bytes of spaces (about 1000:1)."""
    if inflated not in _BOMBS:
        packer = zlib.compressobj(9, zlib.DEFLATED, 31)
        parts = [packer.compress(BLOCK) for _ in range(inflated // len(BLOCK))]
        _BOMBS[inflated] = b"".join(parts) + packer.flush()
    return _BOMBS[inflated]


def gzip_bomb(inflated: int) -> Behaviour:
    def run(client: Client) -> None:
        body = gzip_bomb_bytes(inflated)
        client.send(
            f"{JSON_HEAD}Content-Encoding: gzip\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )

    return run


def redirect(location: Callable[[Seen], str], status: int = 302) -> Behaviour:
    """A redirect to ``location(request)``."""

    def run(client: Client) -> None:
        body = b"moved"
        client.send(
            (
                f"HTTP/1.1 {status} Found\r\nLocation: {location(client.seen)}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            ).encode()
            + body
        )

    return run


@dataclass
class HostileUpstream:
    """The server. ``behaviours`` maps a tag (or ``"me"`` for ``/v1/me``) to what it does;
    a tag not listed gets :func:`valid`."""

    behaviours: dict[str, Behaviour] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    raw: Behaviour | None = None  # run at once on every connection, before any request is read

    def __post_init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=64)
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._acceptor = threading.Thread(target=self._accept, daemon=True)

    @property
    def port(self) -> int:
        return self._listener.getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> HostileUpstream:
        self._acceptor.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._acceptor.join(5)
        for thread in list(self._threads):
            thread.join(10)

    def requests_for(self, tag: str) -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if s.tag == tag]

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(sock,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, sock: socket.socket) -> None:
        with sock:
            if self.raw is not None:
                seen = Seen("", "", "", None, time.monotonic())
                with self._lock:
                    self.seen.append(seen)
                try:
                    self.raw(Client(sock, seen, self._stopping))
                finally:
                    seen.ended = time.monotonic()
                return
            sock.settimeout(5)
            head = b""
            try:
                while b"\r\n\r\n" not in head and len(head) < HEAD_LIMIT:
                    chunk = sock.recv(4096)
                    if not chunk:
                        return
                    head += chunk
            except OSError:
                return
            sock.settimeout(None)
            request_line, _, headers = head.decode("latin-1").partition("\r\n")
            target = request_line.split(" ")[1] if " " in request_line else "/"
            parts = urlsplit(target)
            tag = parse_qs(parts.query).get("tag", [None])[0]
            if parts.path.endswith("/me"):
                tag = "me"
            seen = Seen(parts.path, parts.query, headers, tag, time.monotonic())
            with self._lock:
                self.seen.append(seen)
            behaviour = self.behaviours.get(tag or "", valid)
            try:
                behaviour(Client(sock, seen, self._stopping))
            finally:
                seen.ended = time.monotonic()
