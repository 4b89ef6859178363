"""A faithful fake of the SMS Partner HTTP API, served over real HTTP on loopback.

It answers ``GET /v1/bulk-status-by-tag`` and ``GET /v1/me`` in the shapes of the real API (see
``docs/api-reading.md``), checks the API key like it, and can inject every failure the
exporter must survive (:meth:`Simulator.set_fault`). It serves the test suite, the demo and the
benchmarks: HTTP/1.1 keep-alive, one thread per connection, quiet, standard library only.

Model. A campaign (:class:`TagSpec`) of ``messages`` SMS is sent evenly over ``send_spread``
seconds from simulated time 0, in a fixed order; each message gets, from
``random.Random(f"{seed}:{name}")``, a report delay (exponential, mean ``report_delay``, capped
at 48 h), a final status (``Delivered``, ``Not delivered``, or ``Waiting`` for ever) and perhaps
a STOP reply some time after delivery. The state is a pure function of (seed, specs, t): per
message only three compact arrays are kept, and page bodies are built on demand.

Choices where the real API is unknown (``docs/api-reading.md`` says what its documentation leaves
open):

- a tag lists only the messages already *sent* at time t, so ``total`` grows while a campaign
  is being sent; pages are in send order, so a page's content never moves to another page;
- ``page`` that is not a positive integer (``0``, ``-1``, ``abc``, ``1.5``, empty) is page 1;
- a missing or empty ``tag`` answers like an unknown tag (code 4, "Message introuvable");
- error bodies come with HTTP ``error_http_status`` (default 200); ``_format=xml`` is ignored;
- bodies are compact JSON with non-ASCII escaped (``\\u00e9``), as PHP's ``json_encode`` does.
- a tag is served in the documented encoding unless given a *dialect* (:data:`DIALECTS`,
  :meth:`Simulator.set_dialect`): 0/1 flags, words, ``statut`` and Paris local times,
  milliseconds, ISO 8601, and Waiting messages whose date and STOP flag are null, empty or absent.

Command line: ``python -m smsp_exporter.simulator --help``.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import ipaddress
import json
import math
import random
import signal
import socket
import socketserver
import struct
import sys
import threading
import time
import traceback
from array import array
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

__all__ = [
    "DEFAULT_START_TIME",
    "DEMO_DIALECTS",
    "DEMO_TAGS",
    "DIALECTS",
    "FAULT_KINDS",
    "WRONG_SHAPE_VARIANTS",
    "Message",
    "Simulator",
    "TagSpec",
    "main",
]

API_PREFIX = "/v1/"
CONTROL_PREFIX = "/_sim/"
BULK = "bulk-status-by-tag"
ME = "me"
ENDPOINTS = (BULK, ME)
LIST_KEY = "StatutResponse_List"

DEFAULT_START_TIME = 1_764_000_000  # simulated t=0, as a Unix time: dates are deterministic
MAX_REPORT_DELAY = 48 * 3600.0  # "jusqu'à 48h maximum"
STOP_DELAY_MEAN = 120.0  # mean time from delivery to the recipient's STOP reply
REQUEST_TIMES_KEPT = 1_000_000
MAX_CONTROL_BODY = 64 * 1024 * 1024

DELIVERED = "Delivered"
NOT_DELIVERED = "Not delivered"
WAITING = "Waiting"
_FINAL_STATUSES = (DELIVERED, NOT_DELIVERED, WAITING)  # indexed by the campaign's final code
LISTING_ORDERS = ("oldest", "newest", "report", "report-oldest")

ERROR_MESSAGES: dict[int, str] = {
    1: "La Clé API est requise",
    3: "L\u2019ID du message est requis",
    4: "Message introuvable",
    10: "Clé API incorrecte",
}

_JSON = "application/json"
_HTML = "text/html; charset=utf-8"


@dataclass(frozen=True)
class Message:
    """One static message, served as is whatever the time (see :meth:`Simulator.set_messages`)."""

    phone: str
    status: str
    stop: bool
    date: int


@dataclass(frozen=True)
class TagSpec:
    """A campaign: ``messages`` SMS sent evenly over ``send_spread`` s from simulated t=0.

    ``delivered`` and ``not_delivered`` are the shares of final statuses (the rest stays
    ``Waiting``: never reported); ``stop`` is the share of *delivered* recipients that reply
    STOP; ``report_delay`` is the mean delay (s) from sending to the delivery report.

    A long-lived tag (one kind of message, sent for months): ``rate`` (messages a second, >0)
    replaces ``send_spread`` (then ``messages / rate``), and ``start`` (simulated time of the
    first send, negative for a history already sent at t=0) places it in time; sending stops
    once ``messages`` are sent. ``order`` is how the listing is sorted: ``oldest`` (send order,
    oldest first), ``newest`` (send order, newest first), ``report`` (by the ``date`` field,
    newest first: a message moves when its report arrives) or ``report-oldest`` (by ``date``,
    oldest first).
    """

    name: str
    messages: int
    delivered: float = 0.90
    not_delivered: float = 0.05
    stop: float = 0.02
    send_spread: float = 60.0
    report_delay: float = 30.0
    rate: float = 0.0
    start: float = 0.0
    order: str = "oldest"

    def __post_init__(self) -> None:
        if self.rate:
            if not (isinstance(self.rate, int | float) and self.rate > 0):
                raise ValueError("TagSpec.rate must be > 0")
            object.__setattr__(self, "send_spread", self.messages / self.rate)
        if self.order not in LISTING_ORDERS:
            raise ValueError(f"TagSpec.order must be one of {', '.join(LISTING_ORDERS)}")
        if not math.isfinite(self.start):
            raise ValueError("TagSpec.start must be a finite number")
        if not isinstance(self.name, str) or not self.name:
            raise ValueError("TagSpec.name must be a non-empty string")
        if isinstance(self.messages, bool) or not isinstance(self.messages, int):
            raise ValueError("TagSpec.messages must be an integer")
        if not 0 <= self.messages <= 100_000_000:
            raise ValueError("TagSpec.messages must be between 0 and 100,000,000")
        for name in ("delivered", "not_delivered", "stop"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"TagSpec.{name} must be between 0 and 1")
        if self.delivered + self.not_delivered > 1.0 + 1e-9:
            raise ValueError("TagSpec.delivered + TagSpec.not_delivered must not exceed 1")
        if not (self.send_spread >= 0.0 and self.report_delay >= 0.0):
            raise ValueError("TagSpec.send_spread and TagSpec.report_delay must be >= 0")


DEMO_TAGS: tuple[TagSpec, ...] = (
    TagSpec(
        "promo-noel",
        1200,
        delivered=0.94,
        not_delivered=0.04,
        stop=0.02,
        send_spread=180.0,
        report_delay=25.0,
    ),
    TagSpec(
        "relance-panier",
        300,
        delivered=0.92,
        not_delivered=0.05,
        stop=0.03,
        send_spread=120.0,
        report_delay=40.0,
    ),
    TagSpec(
        "alerte-stock",
        40,
        delivered=0.72,
        not_delivered=0.25,
        stop=0.0,
        send_spread=30.0,
        report_delay=20.0,
    ),
    TagSpec(
        "rappel-rdv",
        600,
        delivered=0.95,
        not_delivered=0.03,
        stop=0.01,
        send_spread=240.0,
        report_delay=60.0,
    ),
)

# Faults. Every kind takes the generic filters ``times`` (apply to the next N matching
# requests only), ``page`` (only requests for that page) and ``endpoint`` ("bulk-status-by-tag"
# or "me"), plus the parameters listed here.
FAULT_KINDS: dict[str, frozenset[str]] = {
    "http_status": frozenset({"status", "body", "content_type", "headers"}),
    "rate_limit": frozenset({"status", "retry_after", "rps", "body"}),
    "api_error": frozenset({"code", "message", "status"}),
    "delay": frozenset({"seconds"}),
    "reset": frozenset({"at", "pause"}),
    "html": frozenset({"status", "body"}),
    "truncated_json": frozenset({"fraction"}),
    "wrong_shape": frozenset({"variant"}),
    "ignore_page": frozenset(),
    "short_page": frozenset({"keep"}),
    "page_error": frozenset({"status", "body"}),
    "empty": frozenset(),
}
_GENERIC_FAULT_PARAMS = frozenset({"times", "page", "endpoint"})
_BULK_ONLY_KINDS = frozenset({"wrong_shape", "ignore_page", "short_page", "page_error", "empty"})


def _drop(obj: dict[str, Any], key: str) -> None:
    obj.pop(key, None)


def _each_item(fn: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], Any]:
    def apply(obj: dict[str, Any]) -> dict[str, Any]:
        for item in obj.get(LIST_KEY) or ():
            fn(item)
        return obj

    return apply


def _set(key: str, value: Callable[[dict[str, Any]], Any]) -> Callable[[dict[str, Any]], Any]:
    def apply(obj: dict[str, Any]) -> dict[str, Any]:
        obj[key] = value(obj)
        return obj

    return apply


# The time zone of the API's "YYYY-MM-DD HH:MM:SS" dates (its message-status endpoint's).
PARIS = ZoneInfo("Europe/Paris")


def _readable_date(item: dict[str, Any]) -> None:
    item["date"] = datetime.fromtimestamp(int(item["date"]), PARIS).strftime("%Y-%m-%d %H:%M:%S")


def _stop_as_string(item: dict[str, Any]) -> None:
    item["stopSMS"] = "true" if item["stopSMS"] else "false"


def _stop_as_int(item: dict[str, Any]) -> None:
    item["stopSMS"] = int(item["stopSMS"])


def _stop_as_digit(item: dict[str, Any]) -> None:
    item["stopSMS"] = str(int(item["stopSMS"]))


def _date_as_int(item: dict[str, Any]) -> None:
    item["date"] = int(item["date"])


def _date_in_millis(item: dict[str, Any]) -> None:
    item["date"] = item["date"] + "000"


def _iso_date(item: dict[str, Any]) -> None:
    when = datetime.fromtimestamp(int(item["date"]), UTC)
    item["date"] = when.isoformat().replace("+00:00", "Z")


def _spelled_statut(item: dict[str, Any]) -> None:
    item["statut"] = item.pop("status")


def _waiting(fn: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    def apply(item: dict[str, Any]) -> None:
        if item.get("status", item.get("statut")) == WAITING:
            fn(item)

    return apply


_LEFT_OUT = object()  # _blank: remove the field


def _blank(value: Any, *fields: str) -> Callable[[dict[str, Any]], None]:
    def apply(item: dict[str, Any]) -> None:
        for name in fields:
            if value is _LEFT_OUT:
                item.pop(name, None)
            else:
                item[name] = value

    return apply


@dataclass(frozen=True)
class Dialect:
    """A way the real API may write its answers, beyond the one documented example.

    ``header`` rewrites the answer's top-level fields, ``items`` each message (in order);
    ``unknown`` names the fields left unreadable on Waiting messages (whose STOP flag the
    campaign model keeps false: hiding it hides no STOP)."""

    items: tuple[Callable[[dict[str, Any]], None], ...] = ()
    header: Callable[[dict[str, Any]], Any] | None = None
    unknown: frozenset[str] = frozenset()


def _header_as_php(doc: dict[str, Any]) -> None:
    doc["success"], doc["code"], doc["total"] = 1, "200", str(doc["total"])


_DATE_AND_STOP = frozenset({"date", "stopSMS"})

# Plausible encodings of a success answer, beyond the documented one: served per tag
# (Simulator.set_dialect), each must be read with every status counted and the tag up.
DIALECTS: dict[str, Dialect] = {
    "documented": Dialect(),
    # A PHP back end: numbers for booleans, integers for numeric strings.
    "php": Dialect((_stop_as_int, _date_as_int), header=_header_as_php),
    # Booleans as words, success included.
    "strings": Dialect((_stop_as_string,), header=lambda doc: doc.update(success="true")),
    # As the API's message-status endpoint writes a message: `statut`, Paris local time.
    "message-status": Dialect((_spelled_statut, _readable_date, _stop_as_digit)),
    "millis": Dialect((_date_in_millis,), header=lambda doc: doc.pop("code")),
    "iso": Dialect((_iso_date,)),
    # A message without a report yet has no date and no STOP flag, written as null, "" or
    # left out...
    "waiting-null": Dialect((_waiting(_blank(None, "date", "stopSMS")),), unknown=_DATE_AND_STOP),
    "waiting-empty": Dialect((_waiting(_blank("", "date", "stopSMS")),), unknown=_DATE_AND_STOP),
    "waiting-missing": Dialect(
        (_waiting(_blank(_LEFT_OUT, "date", "stopSMS")),), unknown=_DATE_AND_STOP
    ),
    # ...or as MySQL's "no date", among 0/1 flags.
    "waiting-zero-date": Dialect(
        (_stop_as_int, _waiting(_blank("0000-00-00 00:00:00", "date"))),
        header=_header_as_php,
        unknown=frozenset({"date"}),
    ),
}
# The demo shows two of them: one all readable, one with Waiting messages without a date.
DEMO_DIALECTS: dict[str, str] = {"rappel-rdv": "message-status", "alerte-stock": "waiting-null"}


def _speak(dialect: Dialect, doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` (a success answer in the documented encoding) written in ``dialect``."""
    for item in doc[LIST_KEY]:
        for fn in dialect.items:
            fn(item)
    if dialect.header is not None:
        dialect.header(doc)
    return doc


# wrong_shape variants: each turns a success body (a dict) into a broken JSON document.
WRONG_SHAPE_VARIANTS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "list_missing": lambda o: {k: v for k, v in o.items() if k != LIST_KEY},
    "list_null": _set(LIST_KEY, lambda o: None),
    "list_not_list": _set(LIST_KEY, lambda o: {str(i): m for i, m in enumerate(o[LIST_KEY])}),
    "no_status": _each_item(lambda item: _drop(item, "status")),
    "total_negative": _set("total", lambda o: -1),
    "total_absurd": _set("total", lambda o: 10**15),
    "total_missing": lambda o: {k: v for k, v in o.items() if k != "total"},
    "total_string": _set("total", lambda o: str(o["total"])),
    "not_object": lambda o: o[LIST_KEY],
}


# --------------------------------------------------------------------------- message sources


class _Source:
    """The messages of one tag as a function of simulated time t (seconds since t=0)."""

    def count(self, t: float) -> int:
        raise NotImplementedError

    def items(self, start: int, end: int, t: float) -> list[dict[str, Any]]:
        raise NotImplementedError

    def expected(self, t: float) -> dict[str, Any]:
        raise NotImplementedError


class _Static(_Source):
    def __init__(self, messages: Iterable[Message]) -> None:
        self.messages = tuple(messages)

    def count(self, t: float) -> int:
        return len(self.messages)

    def items(self, start: int, end: int, t: float) -> list[dict[str, Any]]:
        return [
            {
                "phoneNumber": m.phone,
                "status": m.status,
                "stopSMS": bool(m.stop),
                "date": str(m.date),
            }
            for m in self.messages[start:end]
        ]

    def expected(self, t: float) -> dict[str, Any]:
        statuses = Counter(m.status for m in self.messages)
        return {
            "statuses": dict(statuses),
            "stop": sum(1 for m in self.messages if m.stop),
            "total": len(self.messages),
        }


class _Campaign(_Source):
    """A :class:`TagSpec` drawn once: three compact arrays, 17 bytes per message."""

    def __init__(self, spec: TagSpec, seed: int | str, start_time: float) -> None:
        self.spec = spec
        self.start_time = start_time
        n = self.n = spec.messages
        self.step = spec.send_spread / n if n else 0.0
        self.t0 = float(spec.start)  # simulated time of the first send
        rng = random.Random(f"{seed}:{spec.name}")
        # Phone numbers: an affine bijection of [0, 10^8), so unique within the tag.
        self.phone_mul = rng.randrange(10**7) * 10 + rng.choice((1, 3, 7, 9))
        self.phone_add = rng.randrange(10**8)
        report = array("d", bytes(8 * n))  # report time offset; inf = never
        final = array("b", bytes(n))  # index in _FINAL_STATUSES
        stop = array("d", bytes(8 * n))  # STOP time offset; inf = never
        rand, log, inf, step, t0 = rng.random, math.log, math.inf, self.step, self.t0
        mean, p_stop = spec.report_delay, spec.stop
        p_delivered = spec.delivered
        p_final = spec.delivered + spec.not_delivered
        for i in range(n):
            u_status, u_delay, u_stop = rand(), rand(), rand()
            delay = -mean * log(1.0 - u_delay)
            if delay > MAX_REPORT_DELAY:
                delay = MAX_REPORT_DELAY
            if u_status < p_delivered:
                reported = report[i] = t0 + i * step + delay
                if u_stop < p_stop:  # u_stop / p_stop is uniform on [0, 1): reuse it
                    after = -STOP_DELAY_MEAN * log(1.0 - u_stop / p_stop)
                    stop[i] = reported + min(after, MAX_REPORT_DELAY)
                else:
                    stop[i] = inf
            elif u_status < p_final:
                report[i] = t0 + i * step + delay
                final[i] = 1
                stop[i] = inf
            else:
                report[i] = inf
                final[i] = 2
                stop[i] = inf
        self.report, self.final, self.stop = report, final, stop
        self._sorted: tuple[array[float], array[float], array[float]] | None = None
        self._sorted_lock = threading.Lock()
        self._by_date: tuple[float, int, list[int]] | None = None  # (t, count, listing)

    def send_time(self, i: int) -> float:
        return self.t0 + i * self.step

    def count(self, t: float) -> int:
        """Messages sent at time t: the i with ``t0 + i * step <= t``."""
        t -= self.t0
        n, step = self.n, self.step
        if n == 0 or t < 0:
            return 0
        if step <= 0.0:
            return n
        k = min(int(t / step), n - 1)
        while k + 1 < n and (k + 1) * step <= t:
            k += 1
        while k >= 0 and k * step > t:
            k -= 1
        return k + 1

    def phone(self, i: int) -> str:
        return f"+336{(self.phone_mul * i + self.phone_add) % 100_000_000:08d}"

    def _date(self, i: int, t: float) -> float:
        reported = self.report[i]
        return reported if reported <= t else self.t0 + i * self.step

    def _listing(self, start: int, end: int, t: float) -> Iterable[int]:
        """The send indices listed at positions [start, end) at time t, per the order."""
        order = self.spec.order
        if order == "oldest":
            return range(start, end)
        total = self.count(t)
        if order == "newest":
            return range(total - 1 - start, total - 1 - end, -1)
        with self._sorted_lock:
            cached = self._by_date
            if cached is None or cached[0] != t or cached[1] != total:
                date = self._date
                listing = sorted(range(total), key=lambda i: (date(i, t), i))
                if order == "report":
                    listing.reverse()
                cached = self._by_date = (t, total, listing)
        return cached[2][start:end]

    def items(self, start: int, end: int, t: float) -> list[dict[str, Any]]:
        report, final, stop, st = self.report, self.final, self.stop, self.start_time
        out = []
        for i in self._listing(start, end, t):
            reported = report[i]
            if reported <= t:
                status, date = _FINAL_STATUSES[final[i]], st + reported
            else:
                status, date = WAITING, st + self.t0 + i * self.step
            out.append(
                {
                    "phoneNumber": self.phone(i),
                    "status": status,
                    "stopSMS": stop[i] <= t,
                    "date": str(int(date)),
                }
            )
        return out

    def _sorted_times(self) -> tuple[array[float], array[float], array[float]]:
        with self._sorted_lock:
            if self._sorted is None:
                report, final = self.report, self.final
                delivered = array(
                    "d", sorted(r for r, f in zip(report, final, strict=True) if f == 0)
                )
                failed = array("d", sorted(r for r, f in zip(report, final, strict=True) if f == 1))
                stops = array("d", sorted(s for s in self.stop if s != math.inf))
                self._sorted = (delivered, failed, stops)
            return self._sorted

    def expected(self, t: float) -> dict[str, Any]:
        delivered, failed, stops = self._sorted_times()
        total = self.count(t)
        counts = {
            DELIVERED: bisect.bisect_right(delivered, t),
            NOT_DELIVERED: bisect.bisect_right(failed, t),
        }
        counts[WAITING] = total - counts[DELIVERED] - counts[NOT_DELIVERED]
        return {
            "statuses": {k: v for k, v in counts.items() if v},
            "stop": bisect.bisect_right(stops, t),
            "total": total,
        }


# --------------------------------------------------------------------------- faults


@dataclass
class _Fault:
    id: int
    tag: str | None
    kind: str
    params: dict[str, Any]
    remaining: int | None
    applied: int = 0

    def matches(self, endpoint: str, tag: str | None, page: int | None, rate: int) -> bool:
        wanted_endpoint = self.params.get("endpoint")
        if wanted_endpoint is not None and wanted_endpoint != endpoint:
            return False
        if self.kind in _BULK_ONLY_KINDS and endpoint != BULK:
            return False
        if self.tag is not None and self.tag != tag:
            return False
        wanted_page = self.params.get("page")
        if wanted_page is not None and wanted_page != page:
            return False
        rps = self.params.get("rps")
        return not (self.kind == "rate_limit" and rps is not None and rate <= rps)

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "tag": self.tag,
            "kind": self.kind,
            "remaining": self.remaining,
            "applied": self.applied,
            **self.params,
        }


def _validate_fault(kind: str, params: dict[str, Any]) -> None:
    if kind not in FAULT_KINDS:
        raise ValueError(f"unknown fault kind {kind!r}; known: {', '.join(FAULT_KINDS)}")
    unknown = set(params) - FAULT_KINDS[kind] - _GENERIC_FAULT_PARAMS
    if unknown:
        raise ValueError(f"fault {kind!r} takes no parameter {', '.join(sorted(unknown))}")
    if params.get("endpoint") not in (None, *ENDPOINTS):
        raise ValueError(f"fault endpoint must be one of {ENDPOINTS}")
    for name in ("times", "page", "keep", "rps", "status", "code"):
        value = params.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError(f"fault parameter {name!r} must be an integer")
    if kind == "page_error" and params.get("page") is None:
        raise ValueError("fault 'page_error' needs page=N")
    if kind == "api_error" and params.get("code") is None:
        raise ValueError("fault 'api_error' needs code=N")
    if kind == "wrong_shape" and params.get("variant") not in WRONG_SHAPE_VARIANTS:
        raise ValueError(f"wrong_shape variant must be one of {', '.join(WRONG_SHAPE_VARIANTS)}")
    if kind == "reset" and params.get("at", "body") not in ("body", "start"):
        raise ValueError("reset 'at' must be 'body' or 'start'")
    if kind == "truncated_json" and not 0.0 <= params.get("fraction", 0.5) < 1.0:
        raise ValueError("truncated_json 'fraction' must be in [0, 1)")
    if kind == "delay" and not params.get("seconds", 0) >= 0:
        raise ValueError("delay 'seconds' must be >= 0")


def _status_page(status: int) -> bytes:
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Error"
    return (
        f"<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n"
        f"<center><h1>{status} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n"
        "</body>\r\n</html>\r\n"
    ).encode()


_MAINTENANCE_PAGE = (
    '<!DOCTYPE html><html lang="fr"><head><meta charset="utf-8"><title>SMS Partner</title>'
    "</head><body><h1>Service temporairement indisponible</h1><p>Nous effectuons une "
    "opération de maintenance. Merci de réessayer dans quelques instants.</p></body></html>"
).encode()


def _body_of(value: Any, default: bytes, content_type: str) -> tuple[bytes, str]:
    if value is None:
        return default, content_type
    if isinstance(value, bytes):
        return value, content_type
    if isinstance(value, str):
        return value.encode(), content_type
    return _dumps(value), _JSON


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _parse_page(raw: str | None) -> int:
    """Page numbers are 1-based; anything that is not a positive integer is page 1."""
    if raw is None:
        return 1
    text = raw.strip()
    if not (text.isascii() and text.isdigit()):
        return 1
    if len(text) > 18:  # past any tag's end; avoids int() of thousands of digits
        return 10**18
    return max(int(text), 1)


def _first(params: dict[str, list[str]], name: str) -> str | None:
    values = params.get(name)
    return values[0] if values else None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


# --------------------------------------------------------------------------- HTTP plumbing


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 256
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], sim: Simulator) -> None:
        self.sim = sim
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls getfqdn(), a DNS lookup: skip it.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        self.sim._connection_opened(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        self.sim._connection_closed(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        self.sim._note_error(traceback.format_exc())


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "smsp-simulator"
    sys_version = ""
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: benchmarks make thousands of requests."""

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        sim = self.server.sim
        try:
            payload = self._read_body()
            split = urlsplit(self.path)
            if split.path.startswith(CONTROL_PREFIX):
                sim._handle_control(self, method, split.path, split.query, payload)
            else:
                sim._handle_api(self, method, split.path, split.query)
        except OSError:  # the client went away, or stop() closed the connection
            self.close_connection = True
        except Exception:  # a simulator bug: say so over HTTP rather than hang the client
            sim._note_error(traceback.format_exc())
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.send(500, _dumps({"success": False, "code": 500, "message": "simulator bug"}))

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_CONTROL_BODY:
            raise ValueError("request body too large")
        return self.rfile.read(length) if length > 0 else b""

    def send(
        self,
        status: int,
        body: bytes,
        content_type: str = _JSON,
        headers: dict[str, str] | None = None,
        content_length: int | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header(
            "Content-Length", str(len(body) if content_length is None else content_length)
        )
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if body:
            self.wfile.write(body)

    def reset(self, status: int | None, body: bytes, pause: float) -> None:
        """Send the headers and half of ``body`` (unless status is None), then RST the socket."""
        if status is not None:
            self.send_response(status)
            self.send_header("Content-Type", _JSON)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            if pause > 0:
                self.server.sim._stopping.wait(pause)
        self.close_connection = True
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        self.rfile.close()  # drops the last reference: the socket really closes, with a RST


# --------------------------------------------------------------------------- the simulator


@dataclass
class _Stats:
    requests: int = 0
    by_path: Counter[str] = field(default_factory=Counter)
    by_tag: Counter[str] = field(default_factory=Counter)
    by_page: Counter[tuple[str, int]] = field(default_factory=Counter)
    by_status: Counter[int] = field(default_factory=Counter)
    faults_applied: Counter[str] = field(default_factory=Counter)
    in_flight: int = 0
    max_in_flight: int = 0
    connections: int = 0
    errors: int = 0


class Simulator:
    """The fake SMS Partner API. ``start()`` binds at once; ``url`` is then ``http://…/v1``.

    Simulated time t (seconds, see :meth:`now`) runs from 0: by default real monotonic time
    times ``speed`` since :meth:`start`; ``clock`` (a callable returning seconds) replaces it;
    :meth:`freeze` and :meth:`advance` make it manual. A message dated at offset t carries the
    Unix time ``start_time + t``.

    ``api_key``, ``page_size``, ``latency`` (s, per request) and ``error_http_status`` may be
    changed at run time by assigning the attribute.
    """

    def __init__(
        self,
        *,
        api_key: str = "sim-key",
        seed: int | str = 0,
        page_size: int = 100,
        latency: float = 0.0,
        tags: Iterable[TagSpec] = (),
        host: str = "127.0.0.1",
        port: int = 0,
        error_http_status: int = 200,
        speed: float = 1.0,
        start_time: float = DEFAULT_START_TIME,
        clock: Callable[[], float] | None = None,
        allow_remote: bool = False,
        credits_sms: int = 10_000,
        credits_sms_eco: int = 20_000,
        solde: float = 500.0,
        cost_per_sms: float = 0.045,
        dialects: dict[str, str] | None = None,
    ) -> None:
        if page_size < 1:
            raise ValueError("page_size must be >= 1")
        if speed <= 0:
            raise ValueError("speed must be > 0")
        if not allow_remote and not _is_loopback(host):
            raise ValueError(f"refusing to listen on non-loopback address {host!r}")
        self.api_key = api_key
        self.seed = seed
        self.page_size = page_size
        self.latency = latency
        self.error_http_status = error_http_status
        self.start_time = start_time
        self.host, self.port = host, port
        self.credits_sms, self.credits_sms_eco = credits_sms, credits_sms_eco
        self.solde, self.cost_per_sms = solde, cost_per_sms
        self.last_error: str | None = None

        self._lock = threading.Lock()
        self._clock_fn = clock
        self._speed = float(speed)
        self._base = 0.0
        self._mono0 = time.monotonic()
        self._frozen_at: float | None = None

        self._sources: dict[str, _Source] = {}
        self._specs: dict[str, TagSpec] = {}
        self._dialects: dict[str, Dialect] = {}
        self._faults: list[_Fault] = []
        self._fault_ids = 0
        self._stats = _Stats()
        self._times: deque[float] = deque(maxlen=REQUEST_TIMES_KEPT)
        self._recent: deque[float] = deque()  # arrivals in the last second, for rate_limit rps
        self._live: set[socket.socket] = set()

        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        for spec in tags:
            self.add_tag(spec)
        for tag, dialect in (dialects or {}).items():
            self.set_dialect(tag, dialect)

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> Simulator:
        if self._server is not None or self._stopping.is_set():
            raise RuntimeError("a Simulator starts once")
        server = _Server((self.host, self.port), self)
        self.port = server.server_port
        with self._lock:
            if self._frozen_at is None and self._clock_fn is None:
                self._mono0 = time.monotonic()
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"smsp-simulator:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Close the listening socket and every live connection; the port then refuses."""
        server, thread = self._server, self._thread
        self._stopping.set()
        if server is None or thread is None:
            return
        if thread.is_alive():
            server.shutdown()
        server.server_close()
        with self._lock:
            live = list(self._live)
        for conn in live:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        thread.join(timeout=5)

    def __enter__(self) -> Simulator:
        return self if self._server is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("the simulator is not started")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def url(self) -> str:
        """The API root, e.g. ``http://127.0.0.1:PORT/v1``."""
        return self.base_url + API_PREFIX.rstrip("/")

    # ----------------------------------------------------------------- clock

    def _now_locked(self) -> float:
        if self._frozen_at is not None:
            return self._frozen_at
        if self._clock_fn is not None:
            return self._clock_fn() + self._base
        return self._base + (time.monotonic() - self._mono0) * self._speed

    def now(self) -> float:
        """Simulated seconds since t=0."""
        with self._lock:
            return self._now_locked()

    @property
    def frozen(self) -> bool:
        return self._frozen_at is not None

    @property
    def speed(self) -> float:
        return self._speed

    @speed.setter
    def speed(self, value: float) -> None:
        if value <= 0:
            raise ValueError("speed must be > 0")
        with self._lock:
            self._base, self._mono0 = self._now_locked(), time.monotonic()
            self._speed = float(value)

    def freeze(self, at: float | None = None) -> None:
        """Stop the clock (at ``at``, default now): time then moves only by :meth:`advance`."""
        with self._lock:
            self._frozen_at = self._now_locked() if at is None else float(at)

    def unfreeze(self) -> None:
        """Let the clock run again from the frozen time."""
        with self._lock:
            if self._frozen_at is None:
                return
            at, self._frozen_at = self._frozen_at, None
            if self._clock_fn is not None:
                self._base = at - self._clock_fn()
            else:
                self._base, self._mono0 = at, time.monotonic()

    def advance(self, seconds: float) -> float:
        """Move simulated time forward (frozen or not); returns the new time."""
        if not seconds >= 0:
            raise ValueError("time only moves forward")
        with self._lock:
            if self._frozen_at is not None:
                self._frozen_at += seconds
            else:
                self._base += seconds
            return self._now_locked()

    # ----------------------------------------------------------------- content

    def add_tag(self, spec: TagSpec) -> None:
        """Add a campaign, or replace the tag of the same name (its messages are redrawn)."""
        campaign = _Campaign(spec, self.seed, self.start_time)  # outside the lock: may be slow
        with self._lock:
            self._sources[spec.name] = campaign
            self._specs[spec.name] = spec

    def set_messages(self, tag: str, messages: Iterable[Message]) -> None:
        """Make ``tag`` list exactly these messages, in this order, whatever the time."""
        source = _Static(messages)
        with self._lock:
            self._sources[tag] = source
            self._specs.pop(tag, None)

    def remove_tag(self, name: str) -> None:
        with self._lock:
            del self._sources[name]
            self._specs.pop(name, None)

    def tags(self) -> list[str]:
        with self._lock:
            return list(self._sources)

    def spec(self, name: str) -> TagSpec | None:
        with self._lock:
            return self._specs.get(name)

    def expected(self, tag: str) -> dict[str, Any]:
        """The truth at the current simulated time: ``{"statuses": {status: n}, "stop", "total"}``.

        ``statuses`` lists only statuses with at least one message. KeyError for an unknown tag.
        """
        with self._lock:
            source, t = self._sources[tag], self._now_locked()
        return source.expected(t)

    def set_dialect(self, tag: str, dialect: str) -> None:
        """Serve ``tag``'s success answers in ``dialect`` (a key of :data:`DIALECTS`), from
        now on and whatever its messages; ``"documented"`` restores the documented encoding.
        A ``wrong_shape`` fault is served in the documented encoding."""
        if dialect not in DIALECTS:
            raise ValueError(f"dialect must be one of {', '.join(DIALECTS)}")
        with self._lock:
            if dialect == "documented":
                self._dialects.pop(tag, None)
            else:
                self._dialects[tag] = DIALECTS[dialect]

    def dialect(self, tag: str) -> str:
        with self._lock:
            chosen = self._dialects.get(tag)
        return next((name for name, d in DIALECTS.items() if d is chosen), "documented")

    def expected_unreadable(self, tag: str) -> dict[str, int]:
        """Messages of ``tag`` whose ``date`` / ``stopSMS`` its dialect leaves unreadable now."""
        with self._lock:
            unknown = self._dialects.get(tag, DIALECTS["documented"]).unknown
        waiting = self.expected(tag)["statuses"].get(WAITING, 0)
        return {name: waiting if name in unknown else 0 for name in ("date", "stopSMS")}

    def sent(self) -> int:
        """Messages sent so far over all tags (what /me's credits are charged for)."""
        with self._lock:
            sources, t = list(self._sources.values()), self._now_locked()
        return sum(source.count(t) for source in sources)

    # ----------------------------------------------------------------- faults

    def set_fault(self, tag: str | None, kind: str, **params: Any) -> int:
        """Inject a fault on requests for ``tag`` (None: every request); returns its id.

        Generic parameters: ``times`` (only the next N matching requests), ``page``,
        ``endpoint``. Kinds and their parameters: see :data:`FAULT_KINDS`. Faults are tried in
        the order they were set: every matching ``delay`` adds its sleep, and the first other
        matching fault decides the answer.
        """
        _validate_fault(kind, params)
        times = params.pop("times", None)
        with self._lock:
            self._fault_ids += 1
            self._faults.append(_Fault(self._fault_ids, tag, kind, params, times))
            return self._fault_ids

    def remove_fault(self, fault_id: int) -> None:
        with self._lock:
            self._faults = [f for f in self._faults if f.id != fault_id]

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def faults(self) -> list[dict[str, Any]]:
        with self._lock:
            return [f.describe() for f in self._faults]

    def _take_faults(
        self, endpoint: str, tag: str | None, page: int | None, rate: int
    ) -> tuple[float, _Fault | None]:
        """Under the lock: the total delay and the deciding fault of one request (consumed)."""
        delay, decisive, used = 0.0, None, []
        for fault in self._faults:
            if fault.kind != "delay" and decisive is not None:
                continue
            if not fault.matches(endpoint, tag, page, rate):
                continue
            if fault.kind == "delay":
                delay += float(fault.params.get("seconds", 1.0))
            else:
                decisive = fault
            used.append(fault)
        for fault in used:
            fault.applied += 1
            self._stats.faults_applied[fault.kind] += 1
            if fault.remaining is not None:
                fault.remaining -= 1
        if any(f.remaining is not None and f.remaining <= 0 for f in used):
            self._faults = [f for f in self._faults if f.remaining is None or f.remaining > 0]
        return delay, decisive

    # ----------------------------------------------------------------- stats

    def stats(self) -> dict[str, Any]:
        """A snapshot of the request counters (requests to ``/_sim/`` are not counted)."""
        with self._lock:
            s = self._stats
            return {
                "requests": s.requests,
                "by_path": dict(s.by_path),
                "by_tag": dict(s.by_tag),
                "by_page": dict(s.by_page),
                "by_status": dict(s.by_status),
                "faults_applied": dict(s.faults_applied),
                "in_flight": s.in_flight,
                "max_in_flight": s.max_in_flight,
                "connections": s.connections,
                "open_connections": len(self._live),
                "errors": s.errors,
            }

    def request_times(self) -> list[float]:
        """Monotonic arrival times of the last requests (at most 1,000,000)."""
        with self._lock:
            return list(self._times)

    def reset_stats(self) -> None:
        with self._lock:
            in_flight = self._stats.in_flight
            self._stats = _Stats(in_flight=in_flight, max_in_flight=in_flight)
            self._times.clear()

    def _connection_opened(self, conn: socket.socket) -> None:
        with self._lock:
            self._stats.connections += 1
            self._live.add(conn)

    def _connection_closed(self, conn: socket.socket) -> None:
        with self._lock:
            self._live.discard(conn)

    def _note_error(self, text: str) -> None:
        with self._lock:
            self._stats.errors += 1
            self.last_error = text

    # ----------------------------------------------------------------- the API

    def _handle_api(self, h: _Handler, method: str, path: str, query: str) -> None:
        arrival = time.monotonic()
        endpoint = path[len(API_PREFIX) :] if path.startswith(API_PREFIX) else None
        if endpoint not in ENDPOINTS:
            endpoint = None
        params = parse_qs(query, keep_blank_values=True)
        tag = _first(params, "tag") if endpoint == BULK else None
        page = _parse_page(_first(params, "page")) if endpoint == BULK else None
        with self._lock:
            stats = self._stats
            stats.requests += 1
            stats.by_path[path] += 1
            self._times.append(arrival)
            recent = self._recent
            recent.append(arrival)
            while recent and recent[0] <= arrival - 1.0:
                recent.popleft()
            if tag is not None and page is not None:
                stats.by_tag[tag] += 1
                stats.by_page[(tag, page)] += 1
            stats.in_flight += 1
            stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
            delay, fault = 0.0, None
            if endpoint is not None and method == "GET":
                delay, fault = self._take_faults(endpoint, tag, page, len(recent))
        try:
            wait = max(float(self.latency), 0.0) + delay
            if wait > 0 and self._stopping.wait(wait):
                h.close_connection = True
                return
            status = self._answer(h, method, endpoint, params, page, fault)
            with self._lock:
                self._stats.by_status[status] += 1
        finally:
            with self._lock:
                self._stats.in_flight -= 1

    def _error(
        self, code: int, message: str | None = None, status: int | None = None
    ) -> tuple[int, bytes]:
        text = message if message is not None else ERROR_MESSAGES.get(code, f"Erreur {code}")
        body = _dumps({"success": False, "code": code, "message": text})
        return (self.error_http_status if status is None else status), body

    def _answer(
        self,
        h: _Handler,
        method: str,
        endpoint: str | None,
        params: dict[str, list[str]],
        page: int | None,
        fault: _Fault | None,
    ) -> int:
        """Write the answer of one API request; returns its HTTP status (0: connection reset)."""
        if endpoint is None:
            h.send(404, _dumps({"success": False, "code": 404, "message": "Not Found"}))
            return 404
        if method != "GET":
            h.send(
                405,
                _dumps({"success": False, "code": 405, "message": "Method Not Allowed"}),
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
            body, ctype = _body_of(p.get("body"), _status_page(status), _HTML)
            ctype = p.get("content_type", ctype)
            h.send(status, body, ctype, headers=dict(p.get("headers") or {}))
            return status
        if kind == "rate_limit":
            status = int(p.get("status", 429))
            body, ctype = _body_of(p.get("body"), _status_page(status), _HTML)
            headers = {}
            if p.get("retry_after") is not None:
                retry = p["retry_after"]
                headers["Retry-After"] = str(int(retry)) if isinstance(retry, float) else str(retry)
            h.send(status, body, ctype, headers=headers)
            return status
        if kind == "api_error":
            status, body = self._error(int(p["code"]), p.get("message"), p.get("status"))
            h.send(status, body)
            return status
        if kind == "html":
            status = int(p.get("status", 200))
            body, ctype = _body_of(p.get("body"), _MAINTENANCE_PAGE, _HTML)
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
        key = _first(params, "apiKey")
        if not key:
            return self._error(1)
        if key != self.api_key:
            return self._error(10)
        with self._lock:
            t = self._now_locked()
            tag = _first(params, "tag")
            source = self._sources.get(tag) if tag else None
            sources = list(self._sources.values())
            dialect = self._dialects.get(tag) if tag else None
        if endpoint == ME:
            return 200, _dumps(self._me(sum(s.count(t) for s in sources)))
        total = source.count(t) if source is not None else 0
        if total == 0:
            return self._error(4)
        if kind == "empty":
            doc: dict[str, Any] = {
                "success": True,
                "code": 200,
                "currentPage": page,
                "total": 0,
                LIST_KEY: [],
            }
            return 200, _dumps(doc)
        current = 1 if kind == "ignore_page" else (page or 1)
        size = max(int(self.page_size), 1)
        start = (current - 1) * size
        end = min(start + size, total)
        if kind == "short_page":
            end = min(end, start + max(int(p.get("keep", size // 2)), 0))
        items = source.items(start, end, t) if source is not None and start < end else []
        doc = {
            "success": True,
            "code": 200,
            "currentPage": current,
            "total": total,
            LIST_KEY: items,
        }
        if kind == "wrong_shape":
            return 200, _dumps(WRONG_SHAPE_VARIANTS[p["variant"]](doc))
        if dialect is not None:
            doc = _speak(dialect, doc)
        return 200, _dumps(doc)

    def _me(self, sent: int) -> dict[str, Any]:
        solde = f"{max(self.solde - sent * self.cost_per_sms, 0.0):.2f}"
        return {
            "success": True,
            "code": 200,
            "user": {"username": "demo", "firstname": "Demo", "lastname": "User"},
            "credits": {
                "creditSms": max(self.credits_sms - sent, 0),
                "creditSmsECO": self.credits_sms_eco,
                "creditHlr": 0,
                "toSend": 0,
                "solde": solde,
                "currency": "EUR",
                "balance": solde,
            },
        }

    # ----------------------------------------------------------------- control endpoints

    def _handle_control(
        self, h: _Handler, method: str, path: str, query: str, payload: bytes
    ) -> None:
        if not _is_loopback(str(h.client_address[0])):
            h.send(403, _dumps({"ok": False, "error": "control endpoints are loopback only"}))
            return
        action = path[len(CONTROL_PREFIX) :]
        get_actions = {"stats", "expected", "faults"}
        post_actions = {
            "tag",
            "messages",
            "remove-tag",
            "fault",
            "clear-faults",
            "freeze",
            "unfreeze",
            "advance",
            "reset-stats",
            "dialect",
        }
        if action not in get_actions | post_actions:
            h.send(404, _dumps({"ok": False, "error": f"no control action {action!r}"}))
            return
        if method != ("GET" if action in get_actions else "POST"):
            h.send(405, _dumps({"ok": False, "error": "wrong method"}))
            return
        try:
            doc = json.loads(payload) if payload.strip() else {}
            if not isinstance(doc, dict):
                raise ValueError("the body must be a JSON object")
            status, answer = self._control(action, parse_qs(query), doc)
        except (ValueError, TypeError, KeyError) as exc:
            status, answer = 400, {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        h.send(status, _dumps(answer))

    def _control(
        self, action: str, query: dict[str, list[str]], doc: dict[str, Any]
    ) -> tuple[int, dict[str, Any]]:
        if action == "stats":
            stats = self.stats()
            stats["by_page"] = [[tag, page, n] for (tag, page), n in stats["by_page"].items()]
            stats["now"] = self.now()
            return 200, stats
        if action == "expected":
            tag = _first(query, "tag")
            if tag is None or tag not in self.tags():
                return 404, {"ok": False, "error": "unknown tag"}
            return 200, self.expected(tag)
        if action == "faults":
            return 200, {"faults": self.faults()}
        if action == "tag":
            known = {f.name for f in fields(TagSpec)}
            unknown = set(doc) - known
            if unknown:
                raise ValueError(f"unknown TagSpec fields: {', '.join(sorted(unknown))}")
            spec = TagSpec(**doc)
            self.add_tag(spec)
            return 200, {"ok": True, "tag": asdict(spec)}
        if action == "messages":
            messages = [
                Message(str(m["phone"]), str(m["status"]), bool(m["stop"]), int(m["date"]))
                for m in doc["messages"]
            ]
            self.set_messages(str(doc["tag"]), messages)
            return 200, {"ok": True, "messages": len(messages)}
        if action == "remove-tag":
            if doc.get("name") not in self.tags():
                return 404, {"ok": False, "error": "unknown tag"}
            self.remove_tag(doc["name"])
            return 200, {"ok": True}
        if action == "dialect":
            self.set_dialect(str(doc["tag"]), str(doc["dialect"]))
            return 200, {"ok": True}
        if action == "fault":
            params = dict(doc)
            tag = params.pop("tag", None)
            kind = params.pop("kind")
            return 200, {"ok": True, "id": self.set_fault(tag, kind, **params)}
        if action == "clear-faults":
            self.clear_faults()
            return 200, {"ok": True}
        if action == "freeze":
            self.freeze(doc.get("at"))
            return 200, {"ok": True, "now": self.now()}
        if action == "unfreeze":
            self.unfreeze()
            return 200, {"ok": True, "now": self.now()}
        if action == "advance":
            if not self.frozen:
                return 409, {"ok": False, "error": "the clock is not frozen"}
            return 200, {"ok": True, "now": self.advance(float(doc["seconds"]))}
        self.reset_stats()  # "reset-stats"
        return 200, {"ok": True}


# --------------------------------------------------------------------------- command line


def _parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"--listen wants HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def _parse_tag(text: str, spread: float, delay: float, order: str = "oldest") -> TagSpec:
    name, sep, count = text.rpartition(":")
    if not sep or not name or not count.isdigit():
        raise ValueError(f"--tag wants NAME:MESSAGES, got {text!r}")
    return TagSpec(name, int(count), send_spread=spread, report_delay=delay, order=order)


def _parse_dialect(text: str) -> tuple[str, str]:
    tag, sep, dialect = text.rpartition("=")
    if not sep or not tag or dialect not in DIALECTS:
        raise ValueError(
            f"--dialect wants TAG=DIALECT (one of {', '.join(DIALECTS)}), got {text!r}"
        )
    return tag, dialect


def main(argv: list[str] | None = None, prog: str = "python -m smsp_exporter.simulator") -> int:
    parser = argparse.ArgumentParser(
        prog=prog,  # "smsp-exporter simulate" when run that way
        description="A fake SMS Partner API on loopback, for demos and tests.",
    )
    parser.add_argument(
        "--listen", default="127.0.0.1:8787", help="HOST:PORT (default %(default)s)"
    )
    parser.add_argument(
        "--allow-remote", action="store_true", help="allow a non-loopback listen address"
    )
    parser.add_argument("--api-key", default="sim-key")
    parser.add_argument("--seed", default="0")
    parser.add_argument("--page-size", type=int, default=100)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to each request")
    parser.add_argument("--speed", type=float, default=1.0, help="simulated seconds per second")
    parser.add_argument("--error-http-status", type=int, default=200)
    parser.add_argument(
        "--order",
        choices=LISTING_ORDERS,
        default="oldest",
        help="listing order of --tag campaigns (default %(default)s)",
    )
    parser.add_argument(
        "--fixed-dates",
        action="store_true",
        help=f"date simulated t=0 at {DEFAULT_START_TIME} (reproducible) instead of now",
    )
    parser.add_argument(
        "--tag",
        action="append",
        default=[],
        metavar="NAME:MESSAGES",
        help="a campaign (repeatable; default: the demo campaigns)",
    )
    parser.add_argument(
        "--send-spread",
        type=float,
        default=120.0,
        help="seconds over which each --tag campaign is sent",
    )
    parser.add_argument(
        "--report-delay",
        type=float,
        default=30.0,
        help="mean delivery-report delay of --tag campaigns",
    )
    parser.add_argument(
        "--dialect",
        action="append",
        default=[],
        metavar="TAG=DIALECT",
        help=f"serve a tag in another encoding (repeatable; one of {', '.join(DIALECTS)}; "
        "default with the demo campaigns: "
        + ", ".join(f"{t}={d}" for t, d in DEMO_DIALECTS.items())
        + ")",
    )
    args = parser.parse_args(argv)
    try:
        host, port = _parse_listen(args.listen)
        tags = [
            _parse_tag(t, args.send_spread, args.report_delay, args.order) for t in args.tag
        ] or DEMO_TAGS
        dialects = dict(_parse_dialect(d) for d in args.dialect)
        if not args.tag and not args.dialect:
            dialects = dict(DEMO_DIALECTS)
    except ValueError as exc:
        parser.error(str(exc))
    if not args.allow_remote and not _is_loopback(host):
        print(
            f"error: refusing to listen on non-loopback {host!r} without --allow-remote",
            file=sys.stderr,
        )
        return 2
    seed: int | str = int(args.seed) if args.seed.lstrip("-").isdigit() else args.seed
    try:
        sim = Simulator(
            api_key=args.api_key,
            seed=seed,
            page_size=args.page_size,
            latency=args.latency,
            tags=tags,
            host=host,
            port=port,
            error_http_status=args.error_http_status,
            speed=args.speed,
            allow_remote=args.allow_remote,
            dialects=dialects,
            start_time=DEFAULT_START_TIME if args.fixed_dates else time.time(),
        ).start()
    except (OSError, ValueError) as exc:
        print(f"error: cannot start the simulator: {exc}", file=sys.stderr)
        return 1

    done = threading.Event()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, lambda *_: done.set())
    try:
        print(f"simulator listening on {sim.url} (api key: {sim.api_key})", flush=True)
        while not done.wait(0.5):
            pass
    finally:
        sim.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
