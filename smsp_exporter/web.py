"""The exporter's HTTP server: ``/metrics``, ``/healthz``, a landing page and extra routes.

A small WSGI application served by a threaded :mod:`wsgiref` server, with bounded resource
use:

* request line and headers are limited by :mod:`http.server` (64 KiB a line, 100 headers:
  414 and 431 answers);
* every connection gets a socket timeout (30 s by default), so a slow client cannot hold a
  thread forever;
* at most ``max_threads`` (64) requests are handled at once. When they are all busy, a new
  connection is answered ``503 Service Unavailable`` (``Retry-After: 1``) at once instead of
  waiting: the accept loop never blocks, so :meth:`ExporterServer.shutdown` stays prompt, and a
  scrape fails fast rather than piling up behind slow ones.

With a web configuration (:mod:`.webconfig`), connections are TLS (the handshake happens in
the connection's own thread, bounded by the request timeout, never in the accept loop) and
every route asks for basic authentication (``/healthz`` too, unless ``healthz_without_auth``).

Nothing is printed to stderr: requests are logged at debug level, errors through
:mod:`logging` (whose formatter redacts secrets), and an HTTP answer never carries an
exception's text.
"""

from __future__ import annotations

import errno
import html
import ipaddress
import logging
import math
import re
import socket
import socketserver
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from http import HTTPStatus
from socketserver import ThreadingMixIn
from types import MappingProxyType, TracebackType
from typing import Any, TypeAlias
from wsgiref.simple_server import ServerHandler, WSGIRequestHandler, WSGIServer
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from prometheus_client import CollectorRegistry, make_wsgi_app

from .collector import scrape_timeout
from .webconfig import BasicAuth, WebConfig, ssl_context

__all__ = ["ExporterServer", "WSGIApp", "answer_text", "parse_listen_address"]

log = logging.getLogger(__name__)

WSGIApp: TypeAlias = WSGIApplication
Response: TypeAlias = tuple[str, list[tuple[str, str]], bytes]

DEFAULT_MAX_THREADS = 64
DEFAULT_REQUEST_TIMEOUT = 30.0
SCRAPE_TIMEOUT_HEADER = "HTTP_X_PROMETHEUS_SCRAPE_TIMEOUT_SECONDS"

_MAX_REQUEST_LINE = 65536  # as http.server and wsgiref
_DISCARD_LIMIT = 1024 * 1024  # bytes of an oversized request read (and dropped) before a 414
_POLL_INTERVAL = 0.1  # how often the accept loop checks for shutdown
_ALLOWED = "GET, HEAD"
_HOST_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._\-]*[A-Za-z0-9])?")
_WILDCARDS = ("", "0.0.0.0", "::")
_BUSY_WARNING_INTERVAL = 60.0


# --- listen address --------------------------------------------------------------------------


def parse_listen_address(value: str) -> tuple[str, int]:
    """Split a Prometheus-style listen address into ``(host, port)``.

    ``"127.0.0.1:9847"``, ``"localhost:0"``, ``":9847"`` (all interfaces: host ``""``),
    ``"[::1]:9847"`` (host ``"::1"``). Raises :class:`ValueError` otherwise.
    """
    example = "expected HOST:PORT, e.g. :9847, 127.0.0.1:9847 or [::1]:9847"
    if not isinstance(value, str) or not value:
        raise ValueError(f"empty listen address: {example}")
    scheme, has_scheme, rest = value.partition("://")
    if has_scheme:
        # A URL where an address belongs: say so (its "http:" looked like a bare IPv6 address).
        address = rest.split("/", 1)[0]
        if not re.fullmatch(r"[\w.:\[\]-]{1,100}", address):  # echoed unquoted: plain only
            address = ":9847"
        raise ValueError(
            f"invalid listen address {value!r}: an address, not a URL: drop {scheme + '://'!r} "
            f"and any path, e.g. {address} (TLS: --web.config.file)"
        )
    if "/" in value:
        raise ValueError(
            f"invalid listen address {value!r}: no path here (/metrics is fixed); {example}"
        )
    if value.startswith("["):
        end = value.find("]")
        if end < 0 or value[end + 1 : end + 2] != ":":
            raise ValueError(f"invalid listen address {value!r}: {example}")
        host, port_text = value[1:end], value[end + 2 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(
                f"invalid listen address {value!r}: {host!r} is not an IPv6 address"
            ) from None
    else:
        host, sep, port_text = value.rpartition(":")
        if not sep:
            raise ValueError(f"invalid listen address {value!r}: no port; {example}")
        if ":" in host:
            raise ValueError(
                f"invalid listen address {value!r}: put an IPv6 address in brackets, "
                "e.g. [::1]:9847"
            )
        if host and not _HOST_RE.fullmatch(host):
            raise ValueError(f"invalid listen address {value!r}: invalid host {host!r}")
    if not (port_text.isascii() and port_text.isdigit() and len(port_text) <= 5):
        raise ValueError(f"invalid listen address {value!r}: invalid port {port_text!r}; {example}")
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"invalid listen address {value!r}: port {port} is not in 0..65535")
    return host, port


def _bind_candidates(host: str, port: int) -> list[tuple[socket.AddressFamily, tuple[Any, ...]]]:
    """Addresses to try, in order. All interfaces: IPv6 and IPv4 (dual stack) when possible."""
    if host == "":
        candidates: list[tuple[socket.AddressFamily, tuple[Any, ...]]] = []
        if socket.has_dualstack_ipv6():
            candidates.append((socket.AF_INET6, ("", port)))
        candidates.append((socket.AF_INET, ("0.0.0.0", port)))
        return candidates
    seen: list[tuple[socket.AddressFamily, tuple[Any, ...]]] = []
    for family, _, _, _, sockaddr in socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    ):
        if family in (socket.AF_INET, socket.AF_INET6) and (family, sockaddr) not in seen:
            seen.append((family, sockaddr))
    return seen


def _listen_error(address: str, err: OSError) -> OSError:
    reason = err.strerror or str(err) or type(err).__name__
    new = OSError(f"cannot listen on {address}: {reason}")
    new.errno = err.errno
    return new


# --- WSGI helpers ----------------------------------------------------------------------------


def _call(app: WSGIApplication, environ: WSGIEnvironment) -> Response:
    """Run a WSGI app to completion: status, headers and the whole body."""
    captured: dict[str, Any] = {}
    chunks: list[bytes] = []

    def start_response(
        status: str,
        headers: list[tuple[str, str]],
        exc_info: Any = None,
    ) -> Callable[[bytes], object]:
        # Nothing is sent before the app returns, so a second call (with exc_info) just
        # replaces the first one, as PEP 3333 allows.
        captured["status"] = status
        captured["headers"] = list(headers)
        return chunks.append

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
    return captured["status"], captured["headers"], b"".join(chunks)


def _text(status: HTTPStatus, body: str, *headers: tuple[str, str]) -> Response:
    return (
        f"{status.value} {status.phrase}",
        [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("X-Content-Type-Options", "nosniff"),
            *headers,
        ],
        body.encode(),
    )


def answer_text(
    start_response: StartResponse, status: HTTPStatus, body: str, *headers: tuple[str, str]
) -> list[bytes]:
    """Answer a plain-text body from a WSGI route (the extra routes use it too)."""
    status_line, all_headers, data = _text(status, body, *headers)
    start_response(status_line, all_headers)
    return [data]


def _parse_scrape_timeout(raw: str | None) -> float | None:
    """The X-Prometheus-Scrape-Timeout-Seconds value, or None if absent or not usable."""
    if not raw:
        return None
    try:
        value = float(raw.strip())
    except ValueError:
        return None
    if not math.isfinite(value) or value <= 0:
        return None
    return value


class _ErrorStream:
    """``wsgi.errors``: what an application writes there goes to the log, not to stderr."""

    def write(self, text: str) -> int:
        if text.strip():
            log.warning("%s", text.rstrip())
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        pass


# --- the threaded server ---------------------------------------------------------------------


class _ServerHandler(ServerHandler):
    server_software = "smsp-exporter"

    def log_exception(self, exc_info: Any) -> None:
        # The default prints the traceback to stderr.
        try:
            log.error("error while serving an HTTP request", exc_info=exc_info)
        finally:
            exc_info = None


class _RequestHandler(WSGIRequestHandler):
    server_version = "smsp-exporter"
    sys_version = ""
    # Errors found before the version is parsed get a full HTTP/1.0 answer, not a bare body.
    default_request_version = "HTTP/1.0"
    server: _Server

    def setup(self) -> None:
        # The socket timeout, applied by StreamRequestHandler.setup (a class default there).
        self.timeout = self.server.request_timeout  # type: ignore[misc]
        super().setup()

    def handle(self) -> None:
        """One request (as :meth:`WSGIRequestHandler.handle`, minus stderr, plus draining)."""
        self.raw_requestline = self.rfile.readline(_MAX_REQUEST_LINE + 1)
        if len(self.raw_requestline) > _MAX_REQUEST_LINE:
            self.requestline = ""
            self.request_version = ""
            self.command = ""
            self._discard_oversized_request()
            self.send_error(HTTPStatus.REQUEST_URI_TOO_LONG)
            return
        if not self.parse_request():  # it has sent the error answer
            return
        handler = _ServerHandler(
            self.rfile,
            self.wfile,  # type: ignore[arg-type]  # a BufferedIOBase, as wsgiref itself passes
            _ErrorStream(),
            self.get_environ(),
            multithread=True,
        )
        handler.request_handler = self  # type: ignore[attr-defined]  # used for logging
        handler.run(self.server.get_app())  # type: ignore[arg-type]

    def _discard_oversized_request(self) -> None:
        # Read the rest of the request line and the headers (up to a bound) before answering:
        # closing a socket with unread input makes the kernel send a RST, and the client could
        # lose the 414 answer.
        budget = _DISCARD_LIMIT
        line = self.raw_requestline
        try:
            while not line.endswith(b"\n") and budget > 0:
                line = self.rfile.readline(min(_MAX_REQUEST_LINE, budget))
                if not line:
                    return
                budget -= len(line)
            while budget > 0:
                line = self.rfile.readline(min(_MAX_REQUEST_LINE, budget))
                if line in (b"", b"\r\n", b"\n"):
                    return
                budget -= len(line)
        except OSError:
            return

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        path = getattr(self, "path", "") or ""
        log.debug(
            "http request",
            extra={
                "method": getattr(self, "command", "") or "-",
                "path": path.split("?", 1)[0][:200],
                "status": int(code) if isinstance(code, int) else str(code),
                "bytes": size,
                "client": self.client_address[0],
            },
        )

    def log_message(self, format: str, *args: Any) -> None:
        text = format % args if args else format
        log.debug("http server: %s", text[:500], extra={"client": self.client_address[0]})


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    block_on_close = False  # server_close() must not wait for slow clients
    allow_reuse_address = True  # on Linux this still refuses a second listener on the port
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[Any, ...],
        *,
        family: socket.AddressFamily,
        app: WSGIApplication,
        max_threads: int,
        request_timeout: float,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.address_family = family
        self.request_timeout = request_timeout
        self.tls = tls
        self._slots = threading.BoundedSemaphore(max_threads)
        self._last_busy_warning = -math.inf
        super().__init__(address, _RequestHandler)
        self.set_app(app)

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6 and self.server_address[0] == "":
            # All interfaces: accept IPv4 too (dual stack).
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        # Not HTTPServer.server_bind: it does a reverse DNS lookup (socket.getfqdn).
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)
        self.setup_environ()
        if self.tls is not None:
            self.base_environ["HTTPS"] = "on"  # wsgi.url_scheme: https

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = self.socket.accept()
        if self.tls is not None:
            # No handshake here: it happens in the connection's thread (see _run).
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, address

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self._reject_busy(request, client_address)
            return
        try:
            thread = threading.Thread(
                target=self._run,
                args=(request, client_address),
                name="smsp-exporter-http-request",
                daemon=True,
            )
            thread.start()
        except BaseException:
            self._slots.release()
            raise

    def _run(self, request: Any, client_address: Any) -> None:
        # As ThreadingMixIn.process_request_thread, but the slot is free before the client
        # sees the connection close.
        try:
            if isinstance(request, ssl.SSLSocket) and not self._handshake(request, client_address):
                return
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self._slots.release()
            self.shutdown_request(request)

    def _handshake(self, request: ssl.SSLSocket, client_address: Any) -> bool:
        try:
            request.settimeout(self.request_timeout)
            request.do_handshake()
        except (OSError, ValueError) as err:  # ssl.SSLError is an OSError
            log.debug(
                "TLS handshake failed",
                extra={"client": client_address[0], "error": _ssl_error(err)},
            )
            return False
        return True

    def _reject_busy(self, request: socket.socket, client_address: Any) -> None:
        now = time.monotonic()
        if now - self._last_busy_warning >= _BUSY_WARNING_INTERVAL:
            self._last_busy_warning = now
            log.warning(
                "too many HTTP requests at once: answering 503",
                extra={"client": client_address[0]},
            )
        body = b"too many requests at once\n"
        answer = (
            b"HTTP/1.0 503 Service Unavailable\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n"
            b"Retry-After: 1\r\n"
            b"Connection: close\r\n\r\n" + body
        )
        if not isinstance(request, ssl.SSLSocket):  # TLS would need a handshake here: close
            try:
                request.settimeout(1.0)
                request.sendall(answer)
            except OSError:
                pass
        self.shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # The default prints a traceback to stderr.
        err = sys.exc_info()[1]
        client = client_address[0] if client_address else "-"
        if isinstance(err, OSError):  # timeouts, resets: the client's doing
            log.debug("http connection error", extra={"client": client, "error": repr(err)})
        else:
            log.error("error while handling an HTTP connection", exc_info=True)


def _ssl_error(err: BaseException) -> str:
    return str(getattr(err, "reason", None) or type(err).__name__)


# --- the exporter's server -------------------------------------------------------------------


class ExporterServer:
    """Serves ``registry`` on ``/metrics`` from a daemon thread.

    ``health`` (no argument, True when healthy) backs ``/healthz``; ``extra_routes`` maps exact
    paths to WSGI apps, which handle their own methods. ``web_config`` turns on TLS and basic
    authentication (see :mod:`.webconfig`); its TLS files are loaded at :meth:`start`.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        listen_address: str,
        *,
        title: str = "SMS Partner exporter",
        version: str = "",
        health: Callable[[], bool] | None = None,
        extra_routes: Mapping[str, WSGIApp] | None = None,
        max_threads: int = DEFAULT_MAX_THREADS,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        web_config: WebConfig | None = None,
    ) -> None:
        if max_threads < 1:
            raise ValueError("max_threads must be at least 1")
        if not request_timeout > 0:
            raise ValueError("request_timeout must be positive")
        self._listen_address = listen_address
        self._title = title
        self._version = version
        self._health = health
        self._metrics_app: WSGIApplication = make_wsgi_app(registry)
        self._routes: dict[str, Callable[[WSGIEnvironment], Response]] = {
            "/": self._landing,
            "/metrics": self._metrics,
            "/healthz": self._healthz,
        }
        extra = dict(extra_routes or {})
        for path in extra:
            if not path.startswith("/"):
                raise ValueError(f"route {path!r} must start with '/'")
            if path in self._routes:
                raise ValueError(f"route {path!r} is built in")
        self._extra: Mapping[str, WSGIApplication] = MappingProxyType(extra)
        self._max_threads = max_threads
        self._request_timeout = request_timeout
        self._web_config = web_config
        self._auth = BasicAuth(web_config.basic_auth_users if web_config else ())
        self._extra_headers = list(web_config.headers) if web_config else []
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._host: str | None = None
        self._port: int | None = None
        self._closed = False

    # -- lifecycle --

    def start(self) -> None:
        """Bind and serve from a daemon thread.

        Raises :class:`ValueError` for a malformed listen address and :class:`OSError`
        ("cannot listen on HOST:PORT: Address already in use") when it cannot bind.
        """
        with self._lock:
            if self._closed:
                raise RuntimeError("the server was shut down")
            if self._server is not None:
                raise RuntimeError("the server is already started")
            host, port = parse_listen_address(self._listen_address)
            server = self._bind(host, port)
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": _POLL_INTERVAL},
                name="smsp-exporter-http",
                daemon=True,
            )
            self._server, self._thread = server, thread
            self._host, self._port = host, int(server.server_address[1])
            thread.start()
        log.debug("listening", extra={"address": self._listen_address, "port": self._port})

    def _bind(self, host: str, port: int) -> _Server:
        try:
            candidates = _bind_candidates(host, port)
        except OSError as err:
            raise _listen_error(self._listen_address, err) from err
        if not candidates:
            raise OSError(f"cannot listen on {self._listen_address}: no usable address")
        tls = None
        if self._web_config is not None and self._web_config.tls is not None:
            tls = ssl_context(self._web_config)
        for index, (family, sockaddr) in enumerate(candidates):
            try:
                return _Server(
                    sockaddr,
                    family=family,
                    app=self._app,
                    max_threads=self._max_threads,
                    request_timeout=self._request_timeout,
                    tls=tls,
                )
            except OSError as err:
                unusable = err.errno in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL)
                if not (unusable and index + 1 < len(candidates)):
                    raise _listen_error(self._listen_address, err) from err
        raise AssertionError("unreachable")  # pragma: no cover

    def shutdown(self) -> None:
        """Stop serving and close the socket. Idempotent; returns within a fraction of a second
        (requests in flight finish on their own daemon threads)."""
        with self._lock:
            server, thread = self._server, self._thread
            self._server = self._thread = None
            self._closed = True
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=2.0)
        log.debug("stopped listening", extra={"address": self._listen_address})

    def __enter__(self) -> ExporterServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown()

    @property
    def port(self) -> int:
        """The port bound (the one the kernel chose when 0 was asked)."""
        if self._port is None:
            raise RuntimeError("the server is not started")
        return self._port

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:9847/`` (``localhost`` for all interfaces)."""
        host = self._host
        if host is None:
            raise RuntimeError("the server is not started")
        if host in _WILDCARDS:
            host = "localhost"
        elif ":" in host:  # IPv6 literal; a zone ("%eth0") is written %25 in URLs
            host = f"[{host.replace('%', '%25')}]"
        scheme = "https" if self._web_config is not None and self._web_config.tls else "http"
        return f"{scheme}://{host}:{self.port}/"

    # -- the WSGI application --

    def _app(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        method = str(environ.get("REQUEST_METHOD", "GET")).upper()
        try:
            extra = self._extra.get(path)
            builtin = self._routes.get(path)
            if self._needs_auth(path) and not self._auth.check(environ.get("HTTP_AUTHORIZATION")):
                status, headers, body = _text(
                    HTTPStatus.UNAUTHORIZED,
                    "unauthorized\n",
                    ("WWW-Authenticate", 'Basic realm="smsp-exporter", charset="UTF-8"'),
                )
            elif extra is not None:
                status, headers, body = _call(extra, environ)
            elif builtin is None:
                status, headers, body = _text(HTTPStatus.NOT_FOUND, "not found\n")
            elif method not in ("GET", "HEAD"):
                status, headers, body = _text(
                    HTTPStatus.METHOD_NOT_ALLOWED, "method not allowed\n", ("Allow", _ALLOWED)
                )
            else:
                status, headers, body = builtin(environ)
        except Exception:
            log.exception(
                "error while serving an HTTP request",
                extra={"method": method[:16], "path": path[:200]},
            )
            status, headers, body = _text(
                HTTPStatus.INTERNAL_SERVER_ERROR, "internal server error\n"
            )
        headers.extend(self._extra_headers)
        if method == "HEAD":
            # Headers only, those of a GET (Content-Length included when known).
            if body:
                headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
                headers.append(("Content-Length", str(len(body))))
            body = b""
        else:
            headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
            headers.append(("Content-Length", str(len(body))))
        start_response(status, headers)
        return [body]

    def _needs_auth(self, path: str) -> bool:
        if not self._auth:
            return False
        wc = self._web_config
        return not (path == "/healthz" and wc is not None and wc.healthz_without_auth)

    def _metrics(self, environ: WSGIEnvironment) -> Response:
        timeout = _parse_scrape_timeout(environ.get(SCRAPE_TIMEOUT_HEADER))
        inner = dict(environ)
        inner["REQUEST_METHOD"] = "GET"  # HEAD answers the headers of a GET
        token = scrape_timeout.set(timeout)
        try:
            # _call consumes the whole body here: the collection runs with the variable set.
            return _call(self._metrics_app, inner)
        finally:
            scrape_timeout.reset(token)

    def _healthz(self, environ: WSGIEnvironment) -> Response:
        healthy = True
        if self._health is not None:
            try:
                healthy = bool(self._health())
            except Exception:
                log.exception("health check failed")
                healthy = False
        if healthy:
            return _text(HTTPStatus.OK, "ok\n", ("Cache-Control", "no-store"))
        return _text(HTTPStatus.SERVICE_UNAVAILABLE, "unhealthy\n", ("Cache-Control", "no-store"))

    def _landing(self, environ: WSGIEnvironment) -> Response:
        title = html.escape(self._title)
        version = f"<p>Version {html.escape(self._version)}</p>\n" if self._version else ""
        page = (
            "<!DOCTYPE html>\n"
            '<html lang="en">\n'
            '<head><meta charset="utf-8"><title>' + title + "</title></head>\n"
            "<body>\n"
            "<h1>" + title + "</h1>\n" + version + "<ul>\n"
            '<li><a href="/metrics">Metrics</a></li>\n'
            '<li><a href="/healthz">Health</a></li>\n'
            "</ul>\n"
            "</body>\n"
            "</html>\n"
        )
        return (
            "200 OK",
            [
                ("Content-Type", "text/html; charset=utf-8"),
                ("X-Content-Type-Options", "nosniff"),
            ],
            page.encode(),
        )
