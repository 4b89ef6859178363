"""One GET to the SMS Partner API, bounded in time, size and destination.

What :class:`Transport` guarantees, whatever the upstream (or a man in the middle) sends:

- **Time**: ``api.timeout`` bounds the whole request: connecting, the TLS handshake, the
  headers and every byte of the body. A per-read timeout alone lets an answer trickling one
  byte every few seconds hold a worker for ever; here a :class:`Watchdog` thread shuts the
  socket down at the deadline, and the request fails with reason ``timeout``. (Name
  resolution is the one step it cannot cut: it is bounded by the system resolver's timeout.)
- **Size**: at most ``api.max_response_bytes`` of body, counted while streaming and after
  decompression (gzip and deflate are inflated here, a bounded piece at a time, so a gzip bomb
  stops at the cap); reason ``response_too_large``. A body that fails is dropped at once: no
  frame kept alive by an exception's traceback still holds it.
- **Destination**: redirects are never followed. The key travels in the query string, and a
  ``Location`` keeping the query would carry it to another host; a redirect loop would send
  dozens of requests the rate limit never saw. A 3xx fails with reason ``redirect``.
- **Words**: errors name the host and the cause (name resolution, connection refused, TLS,
  timeout...), never the URL: it holds the key.

``Retry-After`` is honoured up to :data:`MAX_RETRY_AFTER` (:func:`retry_after_seconds`).
"""

from __future__ import annotations

import contextlib
import email.utils
import errno
import heapq
import http.client
import itertools
import os
import re
import socket
import ssl
import threading
import time
import weakref
import zlib
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from urllib.parse import urlsplit

import requests
import urllib3.exceptions
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.util.retry import Retry

from . import __version__
from .errors import (
    ConnectionFailed,
    InvalidResponse,
    RedirectRefused,
    RequestTimeout,
    ResponseTooLarge,
    UpstreamError,
)

# The longest pause a Retry-After may impose on every request (seconds). Longer than any
# per-minute limit window; short enough that one absurd header (a day) costs two minutes of
# collection, not a day. Read at call time (tests lower it).
MAX_RETRY_AFTER = 120.0
# Bytes asked of the socket per read; inflated output is produced at most this much at a time.
CHUNK = 64 * 1024
# Only what the transport can inflate itself, piece by piece, under the cap.
ACCEPT_ENCODING = "gzip, deflate"
# While a fired request is still running (its socket was not open yet), fire again this often.
REFIRE = 0.05


# -- time: the watchdog ------------------------------------------------------------------------


def _abort(conn: object) -> None:
    """Cut a connection's socket: a read blocked on it returns at once. Its ``sock`` while it
    connects (the TLS handshake included); the one it recorded once connected, as http.client
    hands the socket over to the response (and sets ``sock`` to None) when the server says it
    will close. ``socket.shutdown`` itself, not ``SSLSocket.shutdown``, which also drops the
    TLS object under the reader."""
    for sock in (getattr(conn, "sock", None), getattr(conn, "_smsp_sock", None)):
        if sock is not None:
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)


class Guard:
    """The deadline of one request, and the connection it is using right now."""

    __slots__ = ("_conn", "_lock", "active", "deadline", "fired")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.active = True
        self.fired = False
        self._conn: object | None = None
        self._lock = threading.Lock()

    def attach(self, conn: object) -> None:
        with self._lock:
            self._conn = conn
            if self.fired:
                _abort(conn)

    def detach(self, conn: object) -> None:
        """The connection went back to the pool: from now on it serves someone else."""
        with self._lock:
            if self._conn is conn:
                self._conn = None

    def fire(self) -> None:
        with self._lock:
            if not self.active:
                return
            self.fired = True
            if self._conn is not None:
                _abort(self._conn)


# The guard of the request the current thread is making (the pool hands it the connection).
_current = threading.local()


class Watchdog:
    """One thread per client, started on first use, that fires each request's guard at its
    deadline (and again every :data:`REFIRE` s until the request lets go of it)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Guard]] = []
        self._ids = itertools.count()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    def arm(self, deadline: float) -> Guard:
        guard = Guard(deadline)
        with self._cond:
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._run, name="smsp-watchdog", daemon=True)
                self._thread.start()
            heapq.heappush(self._heap, (deadline, next(self._ids), guard))
            if self._heap[0][2] is guard:  # the thread sleeps until the earliest deadline
                self._cond.notify()
        return guard

    @staticmethod
    def disarm(guard: Guard) -> None:
        with guard._lock:
            guard.active = False  # its heap entry is dropped when it comes up

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(2.0)

    def _run(self) -> None:
        with self._cond:
            while not self._closed:
                while self._heap and not self._heap[0][2].active:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait()
                    continue
                now = time.monotonic()
                deadline, _, guard = self._heap[0]
                if deadline > now:
                    self._cond.wait(deadline - now)
                    continue
                heapq.heappop(self._heap)
                guard.fire()
                heapq.heappush(self._heap, (now + REFIRE, next(self._ids), guard))


# -- the connection pool -----------------------------------------------------------------------


class _AbortingPool:
    """A urllib3 connection pool that hands each connection to the guard of the request using
    it, and whose ``close()`` also cuts the connections in use: a request waiting on a slow
    upstream then fails at once instead of holding the process up to ``api.timeout`` at
    shutdown."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._every_conn: weakref.WeakSet = weakref.WeakSet()
        self._every_conn_lock = threading.Lock()

    def _new_conn(self):
        conn = super()._new_conn()  # type: ignore[misc]
        with self._every_conn_lock:
            self._every_conn.add(conn)
        return conn

    def _get_conn(self, timeout=None):
        conn = super()._get_conn(timeout)  # type: ignore[misc]
        guard = getattr(_current, "guard", None)
        if guard is not None:
            conn._smsp_guard = guard
            guard.attach(conn)
        return conn

    def _put_conn(self, conn) -> None:
        guard = getattr(conn, "_smsp_guard", None)
        if guard is not None:
            conn._smsp_guard = None
            guard.detach(conn)
        super()._put_conn(conn)  # type: ignore[misc]

    def close(self) -> None:
        super().close()  # type: ignore[misc]
        with self._every_conn_lock:
            conns = list(self._every_conn)
        for conn in conns:
            _abort(conn)


class _Recording:
    """A connection that remembers its socket once connected (see :func:`_abort`)."""

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        self._smsp_sock = self.sock  # type: ignore[attr-defined]


class _RecordingHTTPConnection(_Recording, HTTPConnection):
    pass


class _RecordingHTTPSConnection(_Recording, HTTPSConnection):
    pass


class _AbortingHTTPPool(_AbortingPool, HTTPConnectionPool):
    ConnectionCls = _RecordingHTTPConnection


class _AbortingHTTPSPool(_AbortingPool, HTTPSConnectionPool):
    ConnectionCls = _RecordingHTTPSConnection


class AbortingAdapter(HTTPAdapter):
    """Closing it (``session.close()``) aborts the requests in flight."""

    _pools = MappingProxyType({"http": _AbortingHTTPPool, "https": _AbortingHTTPSPool})

    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = self._pools

    def proxy_manager_for(self, proxy, **proxy_kwargs):
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        manager.pool_classes_by_scheme = self._pools
        return manager

    def close(self) -> None:
        # urllib3 2 forgets its pools on clear() without closing them: close them here.
        pools = []
        for manager in (self.poolmanager, *self.proxy_manager.values()):
            keys = manager.pools.keys()  # the container itself refuses iteration
            pools += [pool for key in keys if (pool := manager.pools.get(key))]
        super().close()
        for pool in pools:
            pool.close()


# -- size: the body ----------------------------------------------------------------------------


class _Inflater:
    """gzip (several members allowed) or deflate (zlib, or raw as some servers send it),
    inflated at most ``room`` bytes at a time: never more than the cap in memory."""

    def __init__(self, encoding: str) -> None:
        self._gzip = encoding in ("gzip", "x-gzip")
        self._wbits = 31 if self._gzip else 15
        self._obj = zlib.decompressobj(self._wbits)
        self._started = False
        self.fed = False

    @property
    def finished(self) -> bool:
        return self._obj.eof

    def inflate(self, data: bytes, room: int) -> Iterator[bytes]:
        """Yield the inflated pieces of ``data``, stopping once more than ``room`` came out."""
        self.fed = True
        produced = 0
        while data and produced <= room:
            try:
                piece = self._obj.decompress(data, min(CHUNK, room - produced + 1))
            except zlib.error:
                if self._gzip or self._started:
                    raise InvalidResponse("the compressed answer is corrupt") from None
                self._wbits, self._obj = -15, zlib.decompressobj(-15)  # raw deflate
                self._started = True
                continue
            self._started = True
            produced += len(piece)
            if piece:
                yield piece
            data = self._obj.unconsumed_tail
            if self._obj.eof and self._obj.unused_data and self._gzip:
                data = self._obj.unused_data  # the next gzip member
                self._obj = zlib.decompressobj(self._wbits)


def read_body(raw, headers: Mapping[str, str], limit: int) -> bytes:
    """The body of ``raw`` (a urllib3 response, not decoded), inflated, at most ``limit``
    bytes: :class:`ResponseTooLarge` past that, as soon as it is passed."""
    encoding = headers.get("Content-Encoding", "").strip().lower()
    inflater = None
    if encoding in ("gzip", "x-gzip", "deflate"):
        inflater = _Inflater(encoding)
    elif encoding not in ("", "identity"):
        raise InvalidResponse("the answer's Content-Encoding is not gzip, deflate or identity")
    else:
        length = headers.get("Content-Length", "").strip()
        if length.isdigit() and len(length) < 20 and int(length) > limit:
            raise ResponseTooLarge(limit)  # said up front: not a byte read
    chunks: list[bytes] = []
    size = 0
    try:
        while data := raw.read(CHUNK, decode_content=False):
            for piece in (data,) if inflater is None else inflater.inflate(data, limit - size):
                size += len(piece)
                if size > limit:
                    raise ResponseTooLarge(limit)
                chunks.append(piece)
        if inflater is not None and inflater.fed and not inflater.finished:
            raise InvalidResponse("the compressed answer is cut short")
        return b"".join(chunks)
    except BaseException:
        chunks.clear()  # this frame may outlive the call in a traceback: not the body with it
        raise


# -- words: what went wrong, without the URL ---------------------------------------------------

_HOST = re.compile(r"[A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\]")


def host_of(url: str) -> str:
    """``host[:port]`` of a URL (no user info, path or query), or ``""``."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port
    except ValueError:
        return ""
    if ":" in host:
        host = f"[{host}]"
    if not _HOST.fullmatch(host):
        return ""
    return f"{host}:{port}" if port else host


def _causes(err: BaseException) -> Iterator[BaseException]:
    """``err`` and what it wraps (requests and urllib3 nest them several levels deep)."""
    seen: set[int] = set()
    stack = [err]
    while stack and len(seen) < 32:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        nested = [getattr(current, "reason", None), current.__cause__, current.__context__]
        nested += list(current.args)
        stack += [n for n in reversed(nested) if isinstance(n, BaseException)]


def describe(err: BaseException) -> str:
    """The cause of a failed request in a few words: never the URL, nor any text that could
    hold it (``str()`` of requests' and urllib3's exceptions does)."""
    causes = list(_causes(err))

    def first(*kinds: type[BaseException]) -> BaseException | None:
        return next((c for c in causes if isinstance(c, kinds)), None)

    if first(urllib3.exceptions.NameResolutionError, socket.gaierror):
        return "cannot resolve the host name (DNS)"
    if isinstance(found := first(ssl.SSLCertVerificationError), ssl.SSLCertVerificationError):
        detail = str(found.verify_message or "")[:120]
        return f"TLS error: the server's certificate was refused ({detail})"
    if isinstance(found := first(ssl.SSLError), ssl.SSLError):
        reason = str(getattr(found, "reason", "") or "")[:60]
        return f"TLS error ({reason})" if reason else "TLS error"
    if first(urllib3.exceptions.SSLError):
        return "TLS error"
    if first(urllib3.exceptions.ProxyError):
        return "the proxy failed"
    if first(ConnectionRefusedError):
        return "connection refused"
    if first(ConnectionResetError):
        return "connection reset by the server"
    if first(http.client.RemoteDisconnected):
        return "the server closed the connection without answering"
    if first(http.client.IncompleteRead, urllib3.exceptions.IncompleteRead):
        return "the answer was cut short"
    if first(urllib3.exceptions.ProtocolError, http.client.HTTPException):
        return "the answer broke the HTTP protocol or was cut short"
    found = first(OSError)
    if isinstance(found, OSError) and found.errno in errno.errorcode:
        return os.strerror(found.errno or 0).lower()
    return f"request failed ({type(err).__name__})"


def _where(location: str | None, base: str) -> str:
    """Where a redirect pointed, as ``scheme://host[:port]`` at most (its path and query may
    hold the key)."""
    if not location:
        return ""
    try:
        scheme = urlsplit(location).scheme.lower()
    except ValueError:
        return ""
    host = host_of(location) if scheme in ("http", "https") else ""
    if host:
        return f" to {scheme}://{host}"
    return f" to another path on {base}" if not scheme and location.startswith("/") else ""


def retry_after_seconds(header: str | None) -> float | None:
    """Seconds a ``Retry-After`` header asks for (a number or an HTTP date), at most
    :data:`MAX_RETRY_AFTER`; None if absent or unreadable."""
    if not header or len(header) > 64:
        return None
    try:
        seconds = Retry().parse_retry_after(header)
    except Exception:
        return None
    return min(max(0.0, float(seconds)), MAX_RETRY_AFTER)


# -- the transport -----------------------------------------------------------------------------


class _NoRedirectSession(requests.Session):
    """Never looks for a redirect's target. With ``allow_redirects=False`` requests still
    prepares the next request of a 3xx, and reads the whole 3xx body to do so: uncapped."""

    def get_redirect_target(self, resp) -> None:
        return None


class Transport:
    """A keep-alive session of ``pool_size`` connections, used by one client."""

    def __init__(self, base_url: str, pool_size: int, max_response_bytes: int) -> None:
        self.host = host_of(base_url) or "the API"
        self.max_response_bytes = max_response_bytes
        self.session = _NoRedirectSession()
        self.session.headers.update(
            {
                "User-Agent": f"smsp-exporter/{__version__}",
                "Accept": "application/json",
                "Accept-Encoding": ACCEPT_ENCODING,
            }
        )
        adapter = AbortingAdapter(
            pool_connections=1, pool_maxsize=pool_size, max_retries=0, pool_block=True
        )
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.watchdog = Watchdog()
        # The API's clock less ours (s), from the Date header of its latest answer; None until
        # an answer had one. Report deadlines are reckoned on the API's clock (its dates).
        self.clock_offset: float | None = None

    def close(self) -> None:
        self.session.close()
        self.watchdog.close()

    def get(
        self, url: str, params: Mapping[str, str | int], timeout: float
    ) -> tuple[int, bytes, str | None]:
        """GET ``url``: (HTTP status, body, Retry-After header), all within ``timeout`` s;
        raises an :class:`UpstreamError` otherwise."""
        guard = self.watchdog.arm(time.monotonic() + timeout)
        _current.guard = guard
        failure: UpstreamError | None = None
        try:
            with self.session.get(
                url, params=params, timeout=timeout, stream=True, allow_redirects=False
            ) as resp:
                status = resp.status_code
                if 300 <= status < 400:
                    where = _where(resp.headers.get("Location"), self.host)
                    raise RedirectRefused(status, f"{self.host} answered HTTP {status}{where}")
                body = read_body(resp.raw, resp.headers, self.max_response_bytes)
                retry_after = resp.headers.get("Retry-After")
                self._note_date(resp.headers.get("Date"))
        except UpstreamError:
            if not guard.fired:
                raise
            failure = self._timeout(timeout)
        except (
            requests.RequestException,
            urllib3.exceptions.HTTPError,
            http.client.HTTPException,
            OSError,
        ) as err:
            # Built here, raised below: the new error must not carry ``err`` as its context
            # (its text holds the URL, its traceback the frames that read the body).
            failure = self._failure(err, guard.fired, timeout)
        finally:
            _current.guard = None
            self.watchdog.disarm(guard)
        if failure is None and guard.fired:
            # The deadline cut a body that runs to the end of the connection: it reads as
            # complete, but is not.
            failure = self._timeout(timeout)
        if failure is not None:
            raise failure
        return status, body, retry_after

    def _note_date(self, header: str | None) -> None:
        """Keep the API's clock offset from a ``Date`` header (RFC 9110: an origin server with a
        clock sends it); an absent or unreadable one changes nothing."""
        if not header or len(header) > 64:
            return
        try:
            when = email.utils.parsedate_to_datetime(header)
        except (TypeError, ValueError, IndexError, OverflowError):
            return
        if when.tzinfo is None:
            return  # RFC 9110 dates are GMT; one without a zone is not one of them
        self.clock_offset = when.timestamp() - time.time()

    def _timeout(self, timeout: float) -> RequestTimeout:
        return RequestTimeout(
            f"request to {self.host} timed out: no complete answer within {timeout:.3g} s"
        )

    def _failure(self, err: BaseException, fired: bool, timeout: float) -> UpstreamError:
        if fired:
            return self._timeout(timeout)
        if isinstance(err, requests.ConnectTimeout):
            return RequestTimeout(
                f"request to {self.host} timed out: not connected within {timeout:.3g} s"
            )
        # Not urllib3's TimeoutError: its NewConnectionError (a refused connection) is one.
        if isinstance(err, requests.Timeout) or any(
            isinstance(c, urllib3.exceptions.ReadTimeoutError | TimeoutError) for c in _causes(err)
        ):
            return self._timeout(timeout)  # the socket's own timeout beat the watchdog
        return ConnectionFailed(f"request to {self.host} failed: {describe(err)}")
