"""Faults: every failure of the API the exporter must survive, injected request by request.

A fault applies to the requests for one tag (or every request), optionally only to one page or
one endpoint, and only the next ``times`` of them; kinds and their parameters are in
:data:`FAULT_KINDS`. Faults are tried in the order they were set: every matching ``delay`` adds
its sleep, and the first other matching fault decides the answer (:mod:`.answers`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .wire import BULK, ENDPOINTS, LIST_KEY

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
GENERIC_FAULT_PARAMS = frozenset({"times", "page", "endpoint"})
BULK_ONLY_KINDS = frozenset({"wrong_shape", "ignore_page", "short_page", "page_error", "empty"})


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


@dataclass
class Fault:
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
        if self.kind in BULK_ONLY_KINDS and endpoint != BULK:
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


def validate_fault(kind: str, params: dict[str, Any]) -> None:
    if kind not in FAULT_KINDS:
        raise ValueError(f"unknown fault kind {kind!r}; known: {', '.join(FAULT_KINDS)}")
    unknown = set(params) - FAULT_KINDS[kind] - GENERIC_FAULT_PARAMS
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


class FaultBook:
    """The faults in force, in the order they were set; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._ids = 0

    def add(self, tag: str | None, kind: str, params: dict[str, Any]) -> int:
        """Validate and add a fault; returns its id. ``params`` may hold ``times``."""
        validate_fault(kind, params)
        params = dict(params)
        times = params.pop("times", None)
        with self._lock:
            self._ids += 1
            self._faults.append(Fault(self._ids, tag, kind, params, times))
            return self._ids

    def remove(self, fault_id: int) -> None:
        with self._lock:
            self._faults = [f for f in self._faults if f.id != fault_id]

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def describe(self) -> list[dict[str, Any]]:
        with self._lock:
            return [f.describe() for f in self._faults]

    def take(
        self, endpoint: str, tag: str | None, page: int | None, rate: int
    ) -> tuple[float, Fault | None, list[str]]:
        """The total delay and the deciding fault of one request, and the kinds of every fault
        applied; each applied fault is counted, and dropped once its ``times`` are used up."""
        delay, decisive, used = 0.0, None, []
        with self._lock:
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
                if fault.remaining is not None:
                    fault.remaining -= 1
            if any(f.remaining is not None and f.remaining <= 0 for f in used):
                self._faults = [f for f in self._faults if f.remaining is None or f.remaining > 0]
        return delay, decisive, [f.kind for f in used]
