"""The HTTP/1.1 server under the exporter's WSGI application: sockets, TLS, limits, lifecycle.

Why not :mod:`wsgiref` or a library? A thread per connection that reads its own request (as
``wsgiref``, ``http.server`` and cheroot do) belongs to whoever holds the connection: clients
that send a header byte every few seconds take every thread, and the socket timeout, being per
read, never fires. waitress reads requests in an event loop, the right design, but has no TLS,
its timeout is one of inactivity (a byte every few seconds resets it) and at its connection
limit it stops accepting, so the same clients starve it too (tried: 110 dripping connections,
a legitimate request timed out). Hence this small server, built on that design:

* **one event loop thread** accepts connections, does the TLS handshakes (non-blocking, never
  blocking the accept) and reads each request, head and body, into memory;
* **a whole-request deadline**: a request must arrive in full within ``request_timeout`` of its
  connection (however slowly its bytes trickle in), or the connection is closed;
* **work goes to a worker only once a request is complete**: a fixed pool of ``workers``
  threads runs the WSGI application and writes the answer (within ``write_timeout``); complete
  requests wait in a bounded queue (``queue_size``; beyond it, ``503`` at once);
* **bounded connections**: at most ``max_connections`` are being read at once; a new one
  closes the oldest unfinished one, so a flood of idle or slow connections cannot lock out a
  scraper, whose request arrives in milliseconds;
* **bounded memory**: a request line of 64 KiB at most (else ``414``), 64 KiB and 100 lines of
  headers (else ``431``), a body of 64 KiB (else ``413``); no chunked bodies (``501``).

Each answer closes its connection (``Connection: close``): no keep-alive, no pipelining.
Errors found by the loop (malformed requests, limits) are answered by the loop itself, then the
connection is drained for a moment before it is closed, so that the client reads the answer
rather than a reset. Nothing is printed: requests are logged at debug level.

The parts: :class:`HTTPServer` owns the listening socket and starts the other two,
:class:`_EventLoop` (the loop thread; its :class:`_Connections` tables, one
:class:`_RequestReader` per connection) and :class:`_WorkerPool` (the workers and their queue).
"""

from __future__ import annotations

import collections
import contextlib
import email.utils
import errno
import io
import logging
import math
import queue
import re
import selectors
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote_to_bytes
from wsgiref.types import WSGIApplication

__all__ = ["HTTPServer", "Limits"]

log = logging.getLogger(__name__)

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VERSION = re.compile(rb"HTTP/(\d)\.(\d)")
_READ_CHUNK = 65536
_READS_PER_EVENT = 4  # chunks read from one connection before the loop serves the others
_ACCEPTS_PER_EVENT = 64
_WARNING_INTERVAL = 60.0
_LINGER_BYTES = 1024 * 1024  # read (and dropped) after an error answer, before closing
# Why the server refused a request or closed a connection before it was complete.
REFUSAL_REASONS = ("request_timeout", "evicted", "queue_full", "malformed", "tls_handshake")


@dataclass(frozen=True)
class Limits:
    """What one client, and all of them together, may cost the server."""

    workers: int = 16  # threads running the application
    queue_size: int = 256  # complete requests waiting for a worker
    max_connections: int = 256  # connections whose request is being read
    request_timeout: float = 10.0  # seconds for a whole request to arrive (TLS handshake too)
    write_timeout: float = 30.0  # seconds to send a whole answer
    max_request_line: int = 65536
    max_header_bytes: int = 65536
    max_headers: int = 100
    max_body: int = 65536
    linger: float = 2.0  # seconds a connection is drained after an error answer

    def __post_init__(self) -> None:
        for name in ("workers", "queue_size", "max_connections"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        for name in ("request_timeout", "write_timeout"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be positive")


class _RequestError(Exception):
    def __init__(self, status: HTTPStatus, message: str = "") -> None:
        super().__init__(message or status.phrase)
        self.status = status


@dataclass(frozen=True)
class _Head:
    method: str
    target: str
    version: tuple[int, int]
    headers: tuple[tuple[str, str], ...]  # (lower-case name, value), in order
    content_length: int


def parse_head(head: bytes, limits: Limits) -> _Head:
    """Parse a request head (request line and header lines, no final empty line).

    Raises :class:`_RequestError` with the status to answer."""
    lines = head.split(b"\n")
    request_line = lines[0].removesuffix(b"\r")
    if len(request_line) > limits.max_request_line:
        raise _RequestError(HTTPStatus.REQUEST_URI_TOO_LONG)
    parts = request_line.split(b" ")
    if len(parts) != 3 or not all(parts):
        raise _RequestError(HTTPStatus.BAD_REQUEST, "malformed request line")
    method, target, version = parts
    if not _TOKEN.fullmatch(method):
        raise _RequestError(HTTPStatus.BAD_REQUEST, "malformed method")
    match = _VERSION.fullmatch(version)
    if match is None:
        raise _RequestError(HTTPStatus.BAD_REQUEST, "malformed HTTP version")
    major, minor = int(match.group(1)), int(match.group(2))
    if major != 1:
        raise _RequestError(HTTPStatus.HTTP_VERSION_NOT_SUPPORTED)
    if not target.startswith(b"/") or any(c < 0x21 or c == 0x7F for c in target):
        raise _RequestError(HTTPStatus.BAD_REQUEST, "only origin-form targets (/path?query)")
    header_lines = lines[1:]
    if sum(len(line) + 1 for line in header_lines) > limits.max_header_bytes:
        raise _RequestError(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE)
    if len(header_lines) > limits.max_headers:
        raise _RequestError(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "too many headers")
    headers = []
    for raw in header_lines:
        line = raw.removesuffix(b"\r")
        if line[:1] in (b" ", b"\t"):
            raise _RequestError(HTTPStatus.BAD_REQUEST, "folded header line")
        name, sep, value = line.partition(b":")
        if not sep or not _TOKEN.fullmatch(name):
            raise _RequestError(HTTPStatus.BAD_REQUEST, "malformed header line")
        if any((c < 0x20 and c != 0x09) or c == 0x7F for c in value):
            raise _RequestError(HTTPStatus.BAD_REQUEST, "control character in a header")
        headers.append((name.decode("ascii").lower(), value.strip(b" \t").decode("latin-1")))
    lengths = {value for name, value in headers if name == "content-length"}
    if any(name == "transfer-encoding" for name, _ in headers):
        raise _RequestError(HTTPStatus.NOT_IMPLEMENTED, "no Transfer-Encoding (chunked) bodies")
    content_length = 0
    if lengths:
        if len(lengths) > 1:
            raise _RequestError(HTTPStatus.BAD_REQUEST, "conflicting Content-Length")
        (text,) = lengths
        if not (text.isascii() and text.isdigit()) or len(text) > 18:
            raise _RequestError(HTTPStatus.BAD_REQUEST, "malformed Content-Length")
        content_length = int(text)
        if content_length > limits.max_body:
            raise _RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
    return _Head(
        method.decode("ascii"),
        target.decode("latin-1"),
        (major, minor),
        tuple(headers),
        content_length,
    )


def _error_answer(status: HTTPStatus, version: str = "HTTP/1.0", *extra: str) -> bytes:
    body = f"{status.phrase.lower()}\n".encode()
    lines = [
        f"{version} {status.value} {status.phrase}",
        "Server: smsp-exporter",
        "Content-Type: text/plain; charset=utf-8",
        "X-Content-Type-Options: nosniff",
        f"Content-Length: {len(body)}",
        "Connection: close",
        *extra,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class _ErrorStream:
    """``wsgi.errors``: what an application writes there goes to the log, not to stderr."""

    def write(self, text: str) -> int:
        if text.strip():
            log.warning("%s", text.rstrip()[:2000])
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        pass


class _RequestReader:
    """One connection's request as it arrives: finds the end of the head, parses it, then waits
    for the body. Pure (no socket, no clock): the loop feeds it and acts on what it says.

    The head is bounded before it is whole: a request line or a header block past its limit is
    refused while it is still arriving, so no client can make the buffer grow without end."""

    __slots__ = ("buf", "head", "limits", "scanned")

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.buf = bytearray()
        self.scanned = 0  # bytes of buf already searched for the end of the head
        self.head: _Head | None = None

    def advance(self) -> bytes | None:
        """The whole body once the request is complete, else None (more bytes needed).

        Raises :class:`_RequestError` with the status to answer."""
        if self.head is None and not self._read_head():
            return None
        head = self.head
        assert head is not None
        if len(self.buf) < head.content_length:
            return None
        return bytes(self.buf[: head.content_length])

    def wants_continue(self) -> bool:
        """Whether the client waits for ``100 Continue`` before sending the body it announced
        (asked right after the head is parsed: not once body bytes have come anyway)."""
        head = self.head
        if head is None or not head.content_length or head.version < (1, 1) or self.buf:
            return False
        return dict(head.headers).get("expect", "").lower() == "100-continue"

    def _read_head(self) -> bool:
        limits, buf = self.limits, self.buf
        while bytes(buf[:1]) in (b"\r", b"\n") and buf:  # empty lines before a request: allowed
            del buf[:1]
        end = _head_end(buf, self.scanned)
        if end is None:
            first = buf.find(b"\n")
            if (first < 0 and len(buf) > limits.max_request_line) or first > (
                limits.max_request_line + 1
            ):
                raise _RequestError(HTTPStatus.REQUEST_URI_TOO_LONG)
            if len(buf) > limits.max_request_line + limits.max_header_bytes + 4:
                raise _RequestError(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE)
            self.scanned = max(0, len(buf) - 3)
            return False
        head_end, body_start = end
        self.head = parse_head(bytes(buf[:head_end]), limits)
        del buf[:body_start]
        return True


_HANDSHAKE, _HEAD, _BODY, _LINGER = "handshake", "head", "body", "linger"


class _Conn:
    """One accepted connection, as the loop sees it: handshake, head, body, then linger."""

    __slots__ = ("client", "deadline", "drained", "events", "reader", "sock", "state")

    def __init__(
        self, sock: socket.socket, client: str, deadline: float, state: str, limits: Limits
    ) -> None:
        self.sock = sock
        self.client = client
        self.deadline = deadline
        self.state = state
        self.reader = _RequestReader(limits)
        self.drained = 0  # bytes read and dropped while lingering
        self.events = selectors.EVENT_READ

    def handshake(self) -> int:
        """Take the TLS handshake a step: 0 once done, else the events it waits for.

        Raises :class:`OSError` (``ssl.SSLError`` is one) or :class:`ValueError` if it fails."""
        assert isinstance(self.sock, ssl.SSLSocket)
        try:
            self.sock.do_handshake()
        except ssl.SSLWantReadError:
            return selectors.EVENT_READ
        except ssl.SSLWantWriteError:
            return selectors.EVENT_WRITE
        self.state = _HEAD
        return 0


class _Connections:
    """The connections the loop holds, in two tables: those whose request is being read, and
    those lingering after an error answer.

    Invariant: each table gives every connection the same delay when it enters (the request
    timeout, the linger), so deadlines grow with insertion order and only the front of each
    table needs a look."""

    def __init__(self) -> None:
        self.reading: collections.OrderedDict[_Conn, None] = collections.OrderedDict()
        self.lingering: collections.OrderedDict[_Conn, None] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self.reading) + len(self.lingering)

    def __contains__(self, conn: object) -> bool:
        return conn in self.reading or conn in self.lingering

    def all(self) -> list[_Conn]:
        return [*self.reading, *self.lingering]

    def oldest(self) -> _Conn | None:
        """The one to evict: a lingering connection first (its answer is already sent), else
        the request that has been arriving the longest."""
        for table in (self.lingering, self.reading):
            if table:
                return next(iter(table))
        return None

    def nearest_deadline(self, now: float, default: float) -> float:
        """Seconds to the nearest deadline, at most ``default``."""
        fronts = [
            next(iter(table)).deadline - now for table in (self.reading, self.lingering) if table
        ]
        return min([default, *fronts])

    def expired(self, now: float) -> list[_Conn]:
        found = []  # from the front of each table, up to the first one still in time
        for table in (self.reading, self.lingering):
            for conn in table:
                if conn.deadline > now:
                    break
                found.append(conn)
        return found

    def linger(self, conn: _Conn) -> None:
        self.reading.pop(conn, None)
        self.lingering[conn] = None

    def discard(self, conn: _Conn) -> None:
        self.reading.pop(conn, None)
        self.lingering.pop(conn, None)


@dataclass
class _Job:
    sock: socket.socket
    client: str
    head: _Head
    body: bytes


class HTTPServer:
    """Serves a WSGI application on a listening socket it binds at :meth:`start`.

    A thin owner: :class:`_EventLoop` reads requests, :class:`_WorkerPool` answers them."""

    def __init__(
        self,
        address: tuple[Any, ...],
        family: socket.AddressFamily,
        app: WSGIApplication,
        *,
        limits: Limits | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.app = app
        self.limits = limits or Limits()
        self.tls = tls
        self._address = address
        self._family = family
        self._listener: socket.socket | None = None
        self._loop: _EventLoop | None = None
        self._pool: _WorkerPool | None = None
        # Counted by the loop thread only; every key exists from the start (read elsewhere).
        self.refused: dict[str, int] = dict.fromkeys(REFUSAL_REASONS, 0)
        self.server_name = ""
        self.server_port = 0

    def bind(self) -> None:
        """Bind and listen (raises OSError); :meth:`start` serves."""
        sock = socket.socket(self._family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if self._family == socket.AF_INET6 and self._address[0] == "":
                # All interfaces: accept IPv4 too (dual stack).
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind(self._address)
            sock.listen(128)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._listener = sock
        host, port = sock.getsockname()[:2]
        self.server_name, self.server_port = str(host), int(port)

    def start(self) -> None:
        if self._listener is None:
            self.bind()
        assert self._listener is not None
        self._pool = _WorkerPool(self)
        self._loop = _EventLoop(self._listener, self.limits, self.tls, self._pool, self.refused)
        self._pool.start()
        self._loop.start()

    def shutdown(self) -> None:
        """Stop accepting and reading; requests being answered finish on their own threads."""
        if self._loop is not None:
            self._loop.stop()
        if self._pool is not None:
            self._pool.stop()
        if self._loop is None and self._listener is not None:
            self._listener.close()  # bound, never started


class _EventLoop:
    """The one loop thread: accepts, does the TLS handshakes, reads each request whole within
    its deadline, hands complete ones to the pool, and answers the refusals itself.

    Only the loop thread touches the selector, the connections and the ``refused`` counts."""

    def __init__(
        self,
        listener: socket.socket,
        limits: Limits,
        tls: ssl.SSLContext | None,
        pool: _WorkerPool,
        refused: dict[str, int],
    ) -> None:
        self.limits = limits
        self.tls = tls
        self.refused = refused
        self._pool = pool
        self._listener = listener
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(listener, selectors.EVENT_READ, "listener")
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._conns = _Connections()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="smsp-exporter-http", daemon=True)
        self._last_warning: dict[str, float] = {}

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        self._thread.join(timeout=2.0)

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                for key, _events in self._selector.select(self._select_timeout()):
                    if key.data == "listener":
                        self._accept()
                    elif key.data == "wake":
                        with contextlib.suppress(OSError):
                            self._wake_r.recv(4096)
                    elif key.data in self._conns:
                        self._ready(key.data)  # (not if closed earlier in this batch)
                self._expire(time.monotonic())
        except Exception:
            log.exception("the HTTP server's event loop failed")
        finally:
            for conn in self._conns.all():
                self._close(conn)
            for sock in (self._listener, self._wake_r, self._wake_w):
                sock.close()
            self._selector.close()

    def _select_timeout(self) -> float:
        return max(0.0, self._conns.nearest_deadline(time.monotonic(), 1.0))

    def _expire(self, now: float) -> None:
        for conn in self._conns.expired(now):
            if conn.state != _LINGER:
                self.refused["request_timeout"] += 1
                log.debug(
                    "http request not received in time: closing",
                    extra={"client": conn.client, "state": conn.state},
                )
            self._close(conn)

    def _accept(self) -> None:
        for _ in range(_ACCEPTS_PER_EVENT):
            try:
                sock, address = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:
                # EMFILE and the like: make room by closing the oldest unfinished request.
                self._warn("accept", "cannot accept a connection", error=err.strerror or "")
                if not self._evict_oldest():
                    time.sleep(0.01)
                return
            sock.setblocking(False)
            client = str(address[0]) if address else "-"
            if len(self._conns) >= self.limits.max_connections:
                self._warn(
                    "connections",
                    "too many connections: closing the oldest unfinished one",
                    limit=self.limits.max_connections,
                )
                if self._evict_oldest():
                    self.refused["evicted"] += 1
            state = _HEAD
            if self.tls is not None:
                try:
                    sock = self.tls.wrap_socket(
                        sock, server_side=True, do_handshake_on_connect=False
                    )
                except (OSError, ValueError):
                    sock.close()
                    continue
                state = _HANDSHAKE
            deadline = time.monotonic() + self.limits.request_timeout
            conn = _Conn(sock, client, deadline, state, self.limits)
            self._conns.reading[conn] = None
            self._selector.register(sock, selectors.EVENT_READ, conn)

    def _evict_oldest(self) -> bool:
        conn = self._conns.oldest()
        if conn is not None:
            self._close(conn)
        return conn is not None

    def _ready(self, conn: _Conn) -> None:
        try:
            if conn.state == _HANDSHAKE and not self._handshake(conn):
                return
            if conn.state == _LINGER:
                self._drain(conn)
                return
            self._read(conn)
        except Exception:
            log.exception("error while reading an HTTP request", extra={"client": conn.client})
            self._close(conn)

    def _handshake(self, conn: _Conn) -> bool:
        """Whether the handshake is done (the request can be read)."""
        try:
            events = conn.handshake()
        except (OSError, ValueError) as err:  # ssl.SSLError is an OSError
            reason = str(getattr(err, "reason", None) or type(err).__name__)
            log.debug("TLS handshake failed", extra={"client": conn.client, "error": reason})
            self.refused["tls_handshake"] += 1
            self._close(conn)
            return False
        self._want(conn, events or selectors.EVENT_READ)
        return not events

    def _want(self, conn: _Conn, events: int) -> None:
        if conn.events != events:
            conn.events = events
            self._selector.modify(conn.sock, events, conn)

    def _read(self, conn: _Conn) -> None:
        for _ in range(_READS_PER_EVENT):
            try:
                data = conn.sock.recv(_READ_CHUNK)
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError):
                break
            except ssl.SSLWantWriteError:
                self._want(conn, selectors.EVENT_WRITE)
                break
            except OSError:
                self._close(conn)
                return
            if not data:  # the client gave up
                self._close(conn)
                return
            conn.reader.buf += data
            if not self._progress(conn):
                return
        if conn.events != selectors.EVENT_READ:
            self._want(conn, selectors.EVENT_READ)

    def _progress(self, conn: _Conn) -> bool:
        """Look at what has arrived; False once the connection has left the reading state."""
        reader = conn.reader
        try:
            body = reader.advance()
        except _RequestError as err:
            self.refused["malformed"] += 1
            return self._fail(conn, err.status)
        if conn.state == _HEAD and reader.head is not None:
            conn.state = _BODY
            if reader.wants_continue():
                with contextlib.suppress(OSError, ValueError):
                    conn.sock.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        if body is None:
            return True
        self._dispatch(conn, body)
        return False

    def _dispatch(self, conn: _Conn, body: bytes) -> None:
        head = conn.reader.head
        assert head is not None
        if not self._pool.submit(_Job(conn.sock, conn.client, head, body)):
            self._warn("busy", "too many HTTP requests waiting: answering 503")
            self.refused["queue_full"] += 1
            self._fail(conn, HTTPStatus.SERVICE_UNAVAILABLE, "Retry-After: 1")
            return
        # The socket is the worker's now: the loop forgets it without closing it.
        del self._conns.reading[conn]
        self._selector.unregister(conn.sock)

    def _fail(self, conn: _Conn, status: HTTPStatus, *extra: str) -> bool:
        """Answer an error from the loop, then drain the connection for a moment."""
        log.debug("http request refused", extra={"client": conn.client, "status": status.value})
        try:
            conn.sock.send(_error_answer(status, "HTTP/1.0", *extra))
            if not isinstance(conn.sock, ssl.SSLSocket):
                conn.sock.shutdown(socket.SHUT_WR)
        except (OSError, ValueError):
            self._close(conn)
            return False
        conn.state = _LINGER
        conn.reader = _RequestReader(self.limits)  # what was read is dropped
        conn.deadline = time.monotonic() + self.limits.linger
        self._conns.linger(conn)
        self._want(conn, selectors.EVENT_READ)
        return False

    def _drain(self, conn: _Conn) -> None:
        for _ in range(_READS_PER_EVENT):
            try:
                data = conn.sock.recv(_READ_CHUNK)
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError):
                return
            except (OSError, ValueError):
                data = b""
            conn.drained += len(data)
            if not data or conn.drained > _LINGER_BYTES:
                self._close(conn)
                return

    def _close(self, conn: _Conn) -> None:
        self._conns.discard(conn)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(conn.sock)
        conn.sock.close()

    def _warn(self, kind: str, message: str, **extra: Any) -> None:
        now = time.monotonic()
        if now - self._last_warning.get(kind, -math.inf) >= _WARNING_INTERVAL:
            self._last_warning[kind] = now
            log.warning(message, extra=extra)


class _WorkerPool:
    """A fixed pool of threads that run the application on complete requests and write the
    answers; the requests wait in a bounded queue (a full queue is the loop's ``503``)."""

    def __init__(self, server: HTTPServer) -> None:
        self._server = server
        self._jobs: queue.Queue[_Job | None] = queue.Queue(server.limits.queue_size)
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for index in range(self._server.limits.workers):
            worker = threading.Thread(
                target=self._work, name=f"smsp-exporter-http-{index}", daemon=True
            )
            worker.start()
            self._threads.append(worker)

    def submit(self, job: _Job) -> bool:
        """Queue a complete request; False when the queue is full (the job is not taken)."""
        try:
            self._jobs.put_nowait(job)
        except queue.Full:
            return False
        return True

    def stop(self) -> None:
        """Ask each worker to end once the queue before it is answered (best effort: with the
        queue full, the daemon threads end with the process)."""
        for _ in self._threads:
            try:
                self._jobs.put_nowait(None)
            except queue.Full:
                break

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            try:
                self._answer(job)
            except Exception:
                log.exception("error while answering an HTTP request", extra={"client": job.client})
            finally:
                with contextlib.suppress(OSError):
                    job.sock.close()

    def _environ(self, job: _Job) -> dict[str, Any]:
        server, head = self._server, job.head
        path, _, query = head.target.partition("?")
        environ: dict[str, Any] = {
            "REQUEST_METHOD": head.method,
            "SCRIPT_NAME": "",
            "PATH_INFO": unquote_to_bytes(path).decode("latin-1"),
            "QUERY_STRING": query,
            "SERVER_NAME": server.server_name,
            "SERVER_PORT": str(server.server_port),
            "SERVER_PROTOCOL": f"HTTP/{head.version[0]}.{head.version[1]}",
            "REMOTE_ADDR": job.client,
            "CONTENT_LENGTH": str(head.content_length) if head.content_length else "",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "https" if server.tls is not None else "http",
            "wsgi.input": io.BytesIO(job.body),
            "wsgi.errors": _ErrorStream(),
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        if server.tls is not None:
            environ["HTTPS"] = "on"
        for name, value in head.headers:
            if "_" in name:  # X_Foo would pass for X-Foo in the environ: dropped, as nginx does
                continue
            if name == "content-type":
                environ["CONTENT_TYPE"] = value
                continue
            if name == "content-length":
                continue
            key = "HTTP_" + name.upper().replace("-", "_")
            environ[key] = f"{environ[key]},{value}" if key in environ else value
        return environ

    def _answer(self, job: _Job) -> None:
        status, headers, body = _run(self._server.app, self._environ(job))
        version = "HTTP/1.1" if job.head.version >= (1, 1) else "HTTP/1.0"
        lines = [
            f"{version} {status}",
            f"Date: {email.utils.formatdate(usegmt=True)}",
            "Server: smsp-exporter",
        ]
        for name, value in headers:
            if name.lower() in ("connection", "date", "server", "transfer-encoding"):
                continue
            lines.append(f"{name}: {value}")
        if not any(name.lower() == "content-length" for name, _ in headers):
            lines.append(f"Content-Length: {len(body)}")
        lines.append("Connection: close")
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        sent = 0
        try:
            _send_all(job.sock, data, time.monotonic() + self._server.limits.write_timeout)
            sent = len(body)
            if not isinstance(job.sock, ssl.SSLSocket):
                job.sock.shutdown(socket.SHUT_WR)
        except (OSError, ValueError) as err:
            log.debug("http answer not sent", extra={"client": job.client, "error": repr(err)})
        log.debug(
            "http request",
            extra={
                "method": job.head.method[:16],
                "path": job.head.target.split("?", 1)[0][:200],
                "status": int(status.split(" ", 1)[0]),
                "bytes": sent,
                "client": job.client,
            },
        )


def _head_end(buf: bytearray, start: int) -> tuple[int, int] | None:
    """(end of the head, start of the body) once an empty line ends the head, else None."""
    crlf = buf.find(b"\n\r\n", start)
    lf = buf.find(b"\n\n", start)
    if crlf < 0 and lf < 0:
        return None
    if lf < 0 or (0 <= crlf < lf):
        return crlf, crlf + 3
    return lf, lf + 2


def _send_all(sock: socket.socket, data: bytes, deadline: float) -> None:
    view = memoryview(data)
    while view:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the answer could not be sent in time")
        sock.settimeout(remaining)
        sent = sock.send(view[:262144])
        view = view[sent:]


def _run(app: WSGIApplication, environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
    """Run a WSGI application to completion: status, headers and the whole body."""
    captured: dict[str, Any] = {}
    chunks: list[bytes] = []

    def start_response(
        status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[[bytes], object]:
        # Nothing is sent before the application returns: a second call replaces the first.
        captured["status"], captured["headers"] = status, list(headers)
        return chunks.append

    try:
        result = app(environ, start_response)
        try:
            for chunk in result:
                chunks.append(chunk)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        if "status" not in captured:
            raise RuntimeError("the WSGI application did not call start_response")
    except Exception:
        log.error("error while serving an HTTP request", exc_info=sys.exc_info())
        status = HTTPStatus.INTERNAL_SERVER_ERROR
        return (
            f"{status.value} {status.phrase}",
            [("Content-Type", "text/plain; charset=utf-8")],
            b"internal server error\n",
        )
    return captured["status"], captured["headers"], b"".join(chunks)


def is_unusable_address(err: OSError) -> bool:
    return err.errno in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL)
