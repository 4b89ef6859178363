"""HTTP plumbing: a threaded HTTP/1.1 server whose handler hands each request to a route.

The routes (:class:`.answers.Api` for ``/v1/``, :class:`.control.Control` for ``/_sim/``)
answer through an :class:`Exchange`: send an answer, or cut the connection mid-answer.
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import struct
import threading
import traceback
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import urlsplit

from .stats import Traffic
from .wire import CONTROL_PREFIX, JSON, dumps

MAX_CONTROL_BODY = 64 * 1024 * 1024


class Exchange(Protocol):
    """One request's connection, as a route sees it."""

    close_connection: bool

    @property
    def client_host(self) -> str: ...

    def send(
        self,
        status: int,
        body: bytes,
        content_type: str = JSON,
        headers: dict[str, str] | None = None,
    ) -> None: ...

    def reset(self, status: int | None, body: bytes, pause: float) -> None: ...


# route(exchange, method, path, query) and route(exchange, method, path, query, body)
ApiRoute = Callable[[Exchange, str, str, str], None]
ControlRoute = Callable[[Exchange, str, str, str, bytes], None]


class Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 256
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        *,
        api: ApiRoute,
        control: ControlRoute,
        traffic: Traffic,
        stopping: threading.Event,
        unix_time: Callable[[], float] | None = None,
    ) -> None:
        self.api_route, self.control_route = api, control
        self.traffic, self.stopping = traffic, stopping
        # The simulated clock as a Unix time: what the Date header of every answer says, as a
        # real server's says its own time (the exporter reads the API's clock from it).
        self.unix_time = unix_time
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls getfqdn(), a DNS lookup: skip it.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        self.traffic.connection_opened(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        self.traffic.connection_closed(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        self.traffic.note_error(traceback.format_exc())


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "smsp-simulator"
    sys_version = ""
    disable_nagle_algorithm = True
    server: Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: benchmarks make thousands of requests."""

    def date_time_string(self, timestamp: float | None = None) -> str:
        if timestamp is None and self.server.unix_time is not None:
            timestamp = self.server.unix_time()
        return super().date_time_string(timestamp)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    @property
    def client_host(self) -> str:
        return str(self.client_address[0])

    def _dispatch(self, method: str) -> None:
        server = self.server
        try:
            payload = self._read_body()
            split = urlsplit(self.path)
            if split.path.startswith(CONTROL_PREFIX):
                server.control_route(self, method, split.path, split.query, payload)
            else:
                server.api_route(self, method, split.path, split.query)
        except OSError:  # the client went away, or stop() closed the connection
            self.close_connection = True
        except Exception:  # a simulator bug: say so over HTTP rather than hang the client
            server.traffic.note_error(traceback.format_exc())
            self.close_connection = True
            body = dumps({"success": False, "code": 500, "message": "simulator bug"})
            with contextlib.suppress(OSError):  # say that it closes: the client must not reuse
                self.send(500, body, headers={"Connection": "close"})

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_CONTROL_BODY:
            raise ValueError("request body too large")
        return self.rfile.read(length) if length > 0 else b""

    def send(
        self,
        status: int,
        body: bytes,
        content_type: str = JSON,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if body:
            self.wfile.write(body)

    def reset(self, status: int | None, body: bytes, pause: float) -> None:
        """Send the headers and half of ``body`` (unless status is None), then RST the socket."""
        if status is not None:
            self.send_response(status)
            self.send_header("Content-Type", JSON)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            if pause > 0:
                self.server.stopping.wait(pause)
        self.close_connection = True
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        self.rfile.close()  # drops the last reference: the socket really closes, with a RST
