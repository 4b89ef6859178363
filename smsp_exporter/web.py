"""The exporter's web application: ``/metrics``, ``/healthz``, a landing page and the routes
the exporter adds (``/probe``, ``/api/v1/tags``, ``/-/reload``), in one route table.

:class:`WebApp` is a WSGI application: path -> :class:`Route` (method -> WSGI handler). It does
in one place what every route needs: basic authentication (when a web configuration asks for
it; ``/healthz`` may be left open), ``404``, ``405`` with ``Allow``, ``HEAD`` (the headers of a
``GET``), ``Content-Length``, the configured security headers, and a ``500`` without the
exception's text when a handler fails (the traceback goes to the log, whose formatter redacts
secrets). :class:`ExporterServer` serves it with :class:`.httpd.HTTPServer`, which owns the
sockets, TLS, limits and lifecycle (see that module for why it is not ``wsgiref``).
"""

from __future__ import annotations

import contextlib
import html
import ipaddress
import logging
import math
import re
import socket
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from types import MappingProxyType, TracebackType
from typing import Any, TypeAlias
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, Metric

from .collector import scrape_timeout
from .httpd import (
    REFUSAL_REASONS,
    HTTPServer,
    Limits,
    is_unusable_address,
    run_to_completion,
)
from .webconfig import AuthResult, BasicAuth, WebConfig, ssl_context

__all__ = [
    "ExporterServer",
    "Route",
    "WSGIApp",
    "WebApp",
    "answer_text",
    "parse_listen_address",
    "parse_scrape_timeout",
]

log = logging.getLogger(__name__)

WSGIApp: TypeAlias = WSGIApplication
Response: TypeAlias = tuple[str, list[tuple[str, str]], bytes]

DEFAULT_WORKERS = Limits.workers
DEFAULT_REQUEST_TIMEOUT = Limits.request_timeout
SCRAPE_TIMEOUT_HEADER = "HTTP_X_PROMETHEUS_SCRAPE_TIMEOUT_SECONDS"
# X-Prometheus-Scrape-Timeout-Seconds is clamped to this range: a client asking for 0.1 s cannot
# make rounds too short to succeed, nor one asking for a day make them endless.
MIN_SCRAPE_TIMEOUT = 1.0
MAX_SCRAPE_TIMEOUT = 120.0

_HOST_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._\-]*[A-Za-z0-9])?")
_WILDCARDS = ("", "0.0.0.0", "::")


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
    return run_to_completion(app, environ)


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


def _wsgi(handler: Callable[[WSGIEnvironment], Response]) -> WSGIApplication:
    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        status, headers, body = handler(environ)
        start_response(status, headers)
        return [body]

    return app


def parse_scrape_timeout(raw: str | None) -> float | None:
    """The X-Prometheus-Scrape-Timeout-Seconds value, clamped to [MIN_SCRAPE_TIMEOUT,
    MAX_SCRAPE_TIMEOUT]; None if absent or not a positive number."""
    if not raw:
        return None
    try:
        value = float(raw.strip())
    except ValueError:
        return None
    if not math.isfinite(value) or value <= 0:
        return None
    return min(MAX_SCRAPE_TIMEOUT, max(MIN_SCRAPE_TIMEOUT, value))


# --- the application -------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    """What one path answers: HTTP method -> WSGI handler (``HEAD`` follows ``GET``).

    ``auth``: whether basic authentication, when configured, applies (always, but for an open
    ``/healthz``)."""

    methods: Mapping[str, WSGIApp]
    auth: bool = True

    @classmethod
    def get(cls, app: WSGIApp) -> Route:
        return cls(MappingProxyType({"GET": app}))

    @classmethod
    def post(cls, app: WSGIApp) -> Route:
        return cls(MappingProxyType({"POST": app}))

    def handler(self, method: str) -> WSGIApp | None:
        if method == "HEAD" and "HEAD" not in self.methods:
            return self.methods.get("GET")
        return self.methods.get(method)

    def allow(self) -> str:
        names = list(self.methods)
        if "GET" in names and "HEAD" not in names:
            names.insert(names.index("GET") + 1, "HEAD")
        return ", ".join(names)


_UNAUTHORIZED = _text(
    HTTPStatus.UNAUTHORIZED,
    "unauthorized\n",
    ("WWW-Authenticate", 'Basic realm="smsp-exporter", charset="UTF-8"'),
)
_AUTH_BUSY = _text(
    HTTPStatus.SERVICE_UNAVAILABLE,
    "too many password checks at once, try again\n",
    ("Retry-After", "1"),
)


class WebApp:
    """The exporter's WSGI application: a route table, with auth, 404, 405, HEAD in one place."""

    def __init__(
        self,
        routes: Mapping[str, Route],
        *,
        auth: BasicAuth | None = None,
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        for path in routes:
            if not path.startswith("/"):
                raise ValueError(f"route {path!r} must start with '/'")
        self.routes: Mapping[str, Route] = MappingProxyType(dict(routes))
        self._auth = auth if auth else None
        self._headers = list(headers)
        self.auth_busy = 0  # requests answered 503 for want of a free password check
        self._count_lock = threading.Lock()

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        method = str(environ.get("REQUEST_METHOD", "GET")).upper()
        try:
            status, headers, body = self._respond(path, method, environ)
        except Exception:
            log.exception(
                "error while serving an HTTP request",
                extra={"method": method[:16], "path": path[:200]},
            )
            status, headers, body = _text(
                HTTPStatus.INTERNAL_SERVER_ERROR, "internal server error\n"
            )
        headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
        headers.extend(self._headers)
        headers.append(("Content-Length", str(len(body))))  # for HEAD: that of the GET
        start_response(status, headers)
        return [b"" if method == "HEAD" else body]

    def _respond(self, path: str, method: str, environ: WSGIEnvironment) -> Response:
        route = self.routes.get(path)
        if self._auth is not None and (route is None or route.auth):
            verdict = self._auth.verify(environ.get("HTTP_AUTHORIZATION"))
            if verdict is AuthResult.BUSY:
                with self._count_lock:
                    self.auth_busy += 1
                return _AUTH_BUSY[0], list(_AUTH_BUSY[1]), _AUTH_BUSY[2]
            if verdict is not AuthResult.OK:
                return _UNAUTHORIZED[0], list(_UNAUTHORIZED[1]), _UNAUTHORIZED[2]
        if route is None:
            return _text(HTTPStatus.NOT_FOUND, "not found\n")
        handler = route.handler(method)
        if handler is None:
            return _text(
                HTTPStatus.METHOD_NOT_ALLOWED, "method not allowed\n", ("Allow", route.allow())
            )
        if method == "HEAD":
            environ = {**environ, "REQUEST_METHOD": "GET"}  # HEAD answers the headers of a GET
        return _call(handler, environ)


# --- the exporter's server -------------------------------------------------------------------


class _Refusals:
    """``sms_http_refused_total{reason}``: what the serving limits turned away."""

    def __init__(self, server: ExporterServer) -> None:
        self.server = server

    def collect(self) -> Iterable[Metric]:
        family = CounterMetricFamily(
            "sms_http_refused",
            "HTTP requests the exporter's server refused or cut short, by reason "
            "(request_timeout, evicted, queue_full, malformed, tls_handshake, auth_busy)",
            labels=["reason"],
        )
        for reason, count in self.server.refused().items():
            family.add_metric([reason], float(count))
        yield family

    def describe(self) -> list[Metric]:
        return []


class ExporterServer:
    """Serves ``registry`` on ``/metrics``, with ``/healthz``, ``/`` and ``extra_routes``.

    ``health`` (no argument, True when healthy) backs ``/healthz``; ``extra_routes`` maps exact
    paths to a :class:`Route` (or a WSGI app: a ``GET`` route); one for ``/`` replaces the plain
    landing page (the exporter's status page, :mod:`.status`, does). ``web_config`` turns on TLS and
    basic authentication (see :mod:`.webconfig`); its TLS files are loaded at :meth:`start`.
    ``limits`` bound what clients may cost (:class:`.httpd.Limits`); ``max_threads`` and
    ``request_timeout`` override its ``workers`` and ``request_timeout``.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        listen_address: str,
        *,
        title: str = "SMS Partner exporter",
        version: str = "",
        health: Callable[[], bool] | None = None,
        extra_routes: Mapping[str, Route | WSGIApp] | None = None,
        max_threads: int | None = None,
        request_timeout: float | None = None,
        web_config: WebConfig | None = None,
        limits: Limits | None = None,
    ) -> None:
        limits = limits or Limits()
        overrides: dict[str, Any] = {}
        if max_threads is not None:
            overrides["workers"] = max_threads
        if request_timeout is not None:
            overrides["request_timeout"] = request_timeout
        if overrides:
            limits = Limits(**{**limits.__dict__, **overrides})
        self.limits = limits
        self._listen_address = listen_address
        self._title = title
        self._version = version
        self._health = health
        self._metrics_app: WSGIApplication = make_wsgi_app(registry)
        open_healthz = web_config is not None and web_config.healthz_without_auth
        routes: dict[str, Route] = {
            "/": Route.get(_wsgi(self._landing)),
            "/metrics": Route.get(_wsgi(self._metrics)),
            "/healthz": Route(MappingProxyType({"GET": _wsgi(self._healthz)}), not open_healthz),
        }
        for path, route in (extra_routes or {}).items():
            if not path.startswith("/"):
                raise ValueError(f"route {path!r} must start with '/'")
            if path in routes and path != "/":  # "/" (a plain landing page) may be replaced
                raise ValueError(f"route {path!r} is built in")
            routes[path] = route if isinstance(route, Route) else Route.get(route)
        self._web_config = web_config
        self.app = WebApp(
            routes,
            auth=BasicAuth(web_config.basic_auth_users if web_config else ()),
            headers=web_config.headers if web_config else (),
        )
        self._registry = registry
        self._refusals = _Refusals(self)
        self._lock = threading.Lock()
        self._server: HTTPServer | None = None
        self._host: str | None = None
        self._port: int | None = None
        self._closed = False

    # -- lifecycle --

    def start(self) -> None:
        """Bind and serve from daemon threads.

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
            server.start()
            self._server = server
            self._registry.register(self._refusals)
            self._host, self._port = host, server.server_port
        log.debug("listening", extra={"address": self._listen_address, "port": self._port})

    def _bind(self, host: str, port: int) -> HTTPServer:
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
            server = HTTPServer(sockaddr, family, self.app, limits=self.limits, tls=tls)
            try:
                server.bind()
                return server
            except OSError as err:
                if not (is_unusable_address(err) and index + 1 < len(candidates)):
                    raise _listen_error(self._listen_address, err) from err
        raise AssertionError("unreachable")  # pragma: no cover

    def shutdown(self) -> None:
        """Stop serving and close the socket. Idempotent; returns within a fraction of a second
        (requests being answered finish on their own daemon threads)."""
        with self._lock:
            server, self._server = self._server, None
            self._closed = True
        if server is None:
            return
        with contextlib.suppress(KeyError):
            self._registry.unregister(self._refusals)
        server.shutdown()
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

    def refused(self) -> dict[str, int]:
        """What the serving limits turned away, by reason (see ``sms_http_refused_total``)."""
        server = self._server
        counts = dict.fromkeys(REFUSAL_REASONS, 0) if server is None else dict(server.refused)
        counts["auth_busy"] = self.app.auth_busy
        return counts

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

    # -- the built-in routes --

    def _metrics(self, environ: WSGIEnvironment) -> Response:
        token = scrape_timeout.set(parse_scrape_timeout(environ.get(SCRAPE_TIMEOUT_HEADER)))
        try:
            # _call consumes the whole body here: the collection runs with the variable set.
            return _call(self._metrics_app, environ)
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
