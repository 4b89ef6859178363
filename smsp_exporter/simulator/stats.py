"""What the simulator was asked: request counters, arrival times, connections, its own errors.

Benchmarks and tests read them to measure the exporter from the outside: how many requests,
for which tag and page, how many at once, how many connections, at what rate.
"""

from __future__ import annotations

import socket
import threading
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

REQUEST_TIMES_KEPT = 1_000_000


@dataclass
class Counts:
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


class Traffic:
    """The counters of the API's requests (not of ``/_sim/``) and the live connections."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = Counts()
        self._times: deque[float] = deque(maxlen=REQUEST_TIMES_KEPT)
        self._recent: deque[float] = deque()  # arrivals in the last second, for rate_limit rps
        self._live: set[socket.socket] = set()
        self.last_error: str | None = None

    def arrived(self, path: str, tag: str | None, page: int | None, at: float) -> int:
        """Count one request arriving at monotonic time ``at`` (``tag`` and ``page`` for the
        bulk endpoint); returns the requests of the last second, this one included."""
        with self._lock:
            counts = self._counts
            counts.requests += 1
            counts.by_path[path] += 1
            self._times.append(at)
            recent = self._recent
            recent.append(at)
            while recent and recent[0] <= at - 1.0:
                recent.popleft()
            if tag is not None and page is not None:
                counts.by_tag[tag] += 1
                counts.by_page[(tag, page)] += 1
            counts.in_flight += 1
            counts.max_in_flight = max(counts.max_in_flight, counts.in_flight)
            return len(recent)

    def faults_applied(self, kinds: Iterable[str]) -> None:
        with self._lock:
            self._counts.faults_applied.update(kinds)

    def finished(self, status: int | None) -> None:
        """A request is over: answered with HTTP ``status`` (0: connection reset), or not."""
        with self._lock:
            if status is not None:
                self._counts.by_status[status] += 1
            self._counts.in_flight -= 1

    def connection_opened(self, conn: socket.socket) -> None:
        with self._lock:
            self._counts.connections += 1
            self._live.add(conn)

    def connection_closed(self, conn: socket.socket) -> None:
        with self._lock:
            self._live.discard(conn)

    def live_connections(self) -> list[socket.socket]:
        with self._lock:
            return list(self._live)

    def note_error(self, text: str) -> None:
        """A simulator bug (a traceback): counted, the last one kept."""
        with self._lock:
            self._counts.errors += 1
            self.last_error = text

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            s = self._counts
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
        with self._lock:
            return list(self._times)

    def reset(self) -> None:
        """Counters back to zero, except the requests still in flight."""
        with self._lock:
            in_flight = self._counts.in_flight
            self._counts = Counts(in_flight=in_flight, max_in_flight=in_flight)
            self._times.clear()
