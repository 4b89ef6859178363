"""The API's answers: ``GET /v1/bulk-status-by-tag`` and ``GET /v1/me``, faults applied.

Where the real API's behaviour is not documented, the simulator chooses (and the exporter must
cope with whatever the real one does):

- a tag lists only the messages already *sent* at time t, so ``total`` grows while a campaign
  is being sent;
- ``page`` that is not a positive integer (``0``, ``-1``, ``abc``, ``1.5``, empty) is page 1;
- a missing or empty ``tag`` answers like an unknown tag (code 4, "Message introuvable");
- error bodies come with HTTP ``error_http_status`` (default 200); ``_format=xml`` is ignored;
- bodies are compact JSON with non-ASCII escaped, as PHP's ``json_encode`` writes them.
"""

from __future__ import annotations

import threading
import time
from http import HTTPStatus
from typing import Any, Protocol
from urllib.parse import parse_qs

from .catalogue import Catalogue
from .clock import Clock
from .dialects import speak
from .faults import WRONG_SHAPE_VARIANTS, Fault, FaultBook
from .server import Exchange
from .stats import Traffic
from .wire import (
    API_PREFIX,
    BULK,
    ENDPOINTS,
    ERROR_MESSAGES,
    HTML,
    JSON,
    LIST_KEY,
    ME,
    dumps,
    first,
    parse_page,
)


class Settings(Protocol):
    """The knobs read at each request (a :class:`.Simulator`'s attributes, changeable live)."""

    api_key: str
    page_size: int
    latency: float
    error_http_status: int
    credits_sms: int
    credits_sms_eco: int
    solde: float
    cost_per_sms: float


def status_page(status: int) -> bytes:
    """The HTML error page of a reverse proxy in front of the API."""
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Error"
    return (
        f"<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n"
        f"<center><h1>{status} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n"
        "</body>\r\n</html>\r\n"
    ).encode()


MAINTENANCE_PAGE = (
    '<!DOCTYPE html><html lang="fr"><head><meta charset="utf-8"><title>SMS Partner</title>'
    "</head><body><h1>Service temporairement indisponible</h1><p>Nous effectuons une "
    "opération de maintenance. Merci de réessayer dans quelques instants.</p></body></html>"
).encode()


def body_of(value: Any, default: bytes, content_type: str) -> tuple[bytes, str]:
    """A fault's ``body`` parameter as bytes: None (the default), bytes, text, or JSON."""
    if value is None:
        return default, content_type
    if isinstance(value, bytes):
        return value, content_type
    if isinstance(value, str):
        return value.encode(), content_type
    return dumps(value), JSON


def retry_after(value: Any) -> str:
    return str(int(value)) if isinstance(value, float) else str(value)


class Api:
    """Answers ``/v1/`` requests: counted, delayed, faulted, then written from the catalogue
    at the clock's time."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock,
        catalogue: Catalogue,
        faults: FaultBook,
        traffic: Traffic,
        stopping: threading.Event,
    ) -> None:
        self.settings, self.clock, self.catalogue = settings, clock, catalogue
        self.faults, self.traffic, self.stopping = faults, traffic, stopping

    def handle(self, h: Exchange, method: str, path: str, query: str) -> None:
        """The server's route for everything outside ``/_sim/``."""
        arrival = time.monotonic()
        endpoint = path[len(API_PREFIX) :] if path.startswith(API_PREFIX) else None
        if endpoint not in ENDPOINTS:
            endpoint = None
        params = parse_qs(query, keep_blank_values=True)
        tag = first(params, "tag") if endpoint == BULK else None
        page = parse_page(first(params, "page")) if endpoint == BULK else None
        rate = self.traffic.arrived(path, tag, page, arrival)
        status: int | None = None
        try:
            delay, fault = 0.0, None
            if endpoint is not None and method == "GET":
                delay, fault, applied = self.faults.take(endpoint, tag, page, rate)
                self.traffic.faults_applied(applied)
            wait = max(float(self.settings.latency), 0.0) + delay
            if wait > 0 and self.stopping.wait(wait):
                h.close_connection = True
                return
            status = self._answer(h, method, endpoint, params, page, fault)
        finally:
            self.traffic.finished(status)

    def error(
        self, code: int, message: str | None = None, status: int | None = None
    ) -> tuple[int, bytes]:
        """An API error answer: ``{"success": false, "code", "message"}``."""
        text = message if message is not None else ERROR_MESSAGES.get(code, f"Erreur {code}")
        body = dumps({"success": False, "code": code, "message": text})
        return (self.settings.error_http_status if status is None else status), body

    def _answer(
        self,
        h: Exchange,
        method: str,
        endpoint: str | None,
        params: dict[str, list[str]],
        page: int | None,
        fault: Fault | None,
    ) -> int:
        """Write the answer of one API request; returns its HTTP status (0: connection reset)."""
        if endpoint is None:
            h.send(404, dumps({"success": False, "code": 404, "message": "Not Found"}))
            return 404
        if method != "GET":
            h.send(
                405,
                dumps({"success": False, "code": 405, "message": "Method Not Allowed"}),
                headers={"Allow": "GET"},
            )
            return 405
        kind = fault.kind if fault is not None else None
        p = fault.params if fault is not None else {}
        if kind == "reset" and p.get("at", "body") == "start":
            h.reset(None, b"", 0.0)
            return 0
        if kind in ("http_status", "page_error"):
            status = int(p.get("status", 500))
            body, ctype = body_of(p.get("body"), status_page(status), HTML)
            ctype = p.get("content_type", ctype)
            h.send(status, body, ctype, headers=dict(p.get("headers") or {}))
            return status
        if kind == "rate_limit":
            status = int(p.get("status", 429))
            body, ctype = body_of(p.get("body"), status_page(status), HTML)
            headers = {}
            if p.get("retry_after") is not None:
                headers["Retry-After"] = retry_after(p["retry_after"])
            h.send(status, body, ctype, headers=headers)
            return status
        if kind == "api_error":
            status, body = self.error(int(p["code"]), p.get("message"), p.get("status"))
            h.send(status, body)
            return status
        if kind == "html":
            status = int(p.get("status", 200))
            body, ctype = body_of(p.get("body"), MAINTENANCE_PAGE, HTML)
            h.send(status, body, ctype)
            return status

        status, body = self._body(endpoint, params, page, kind, p)
        if kind == "reset":
            h.reset(status, body, float(p.get("pause", 0.05)))
            return 0
        if kind == "truncated_json":
            body = body[: int(len(body) * float(p.get("fraction", 0.5)))]
        h.send(status, body)
        return status

    def _body(
        self,
        endpoint: str,
        params: dict[str, list[str]],
        page: int | None,
        kind: str | None,
        p: dict[str, Any],
    ) -> tuple[int, bytes]:
        key = first(params, "apiKey")
        if not key:
            return self.error(1)
        if key != self.settings.api_key:
            return self.error(10)
        t = self.clock.now()
        if endpoint == ME:
            return 200, dumps(self.me(sum(s.count(t) for s in self.catalogue.sources())))
        tag = first(params, "tag")
        source = self.catalogue.source(tag) if tag else None
        total = source.count(t) if source is not None else 0
        if source is None or total == 0:
            return self.error(4)
        if kind == "empty":
            doc: dict[str, Any] = {
                "success": True,
                "code": 200,
                "currentPage": page,
                "total": 0,
                LIST_KEY: [],
            }
            return 200, dumps(doc)
        current = 1 if kind == "ignore_page" else (page or 1)
        size = max(int(self.settings.page_size), 1)
        start = (current - 1) * size
        end = min(start + size, total)
        if kind == "short_page":
            end = min(end, start + max(int(p.get("keep", size // 2)), 0))
        items = source.items(start, end, t) if start < end else []
        doc = {
            "success": True,
            "code": 200,
            "currentPage": current,
            "total": total,
            LIST_KEY: items,
        }
        if kind == "wrong_shape":
            return 200, dumps(WRONG_SHAPE_VARIANTS[p["variant"]](doc))
        dialect = self.catalogue.dialect(tag) if tag else None
        if dialect is not None:
            doc = speak(dialect, doc)
        return 200, dumps(doc)

    def me(self, sent: int) -> dict[str, Any]:
        """The ``/v1/me`` answer once ``sent`` messages were charged."""
        s = self.settings
        solde = f"{max(s.solde - sent * s.cost_per_sms, 0.0):.2f}"
        return {
            "success": True,
            "code": 200,
            "user": {"username": "demo", "firstname": "Demo", "lastname": "User"},
            "credits": {
                "creditSms": max(s.credits_sms - sent, 0),
                "creditSmsECO": s.credits_sms_eco,
                "creditHlr": 0,
                "toSend": 0,
                "solde": solde,
                "currency": "EUR",
                "balance": solde,
            },
        }
