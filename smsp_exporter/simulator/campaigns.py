"""Campaigns: what a tag lists at simulated time t, drawn once from a seed.

A campaign (:class:`TagSpec`) of ``messages`` SMS is sent evenly over ``send_spread`` seconds
from its ``start``, in a fixed order; each message gets, from ``random.Random(f"{seed}:{name}")``,
a report delay (exponential, mean ``report_delay``, capped at 48 hours), a final status
(``Delivered``, ``Not delivered``, or ``Waiting`` for ever) and perhaps a STOP reply some time
after delivery. Its state is a pure function of (seed, spec, t): per message only three compact
arrays are kept, and the listed messages are built on demand. A fixed list of
:class:`Message` is the other kind of source: served as is whatever the time.
"""

from __future__ import annotations

import bisect
import math
import random
import threading
from array import array
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .wire import DELIVERED, NOT_DELIVERED, WAITING

DEFAULT_START_TIME = 1_764_000_000  # simulated t=0, as a Unix time: dates are deterministic
MAX_REPORT_DELAY = 48 * 3600.0  # the API promises a delivery report within 48 hours at most
STOP_DELAY_MEAN = 120.0  # mean time from delivery to the recipient's STOP reply
FINAL_STATUSES = (DELIVERED, NOT_DELIVERED, WAITING)  # indexed by the campaign's final code
LISTING_ORDERS = ("oldest", "newest", "report", "report-oldest")


@dataclass(frozen=True)
class Message:
    """One static message, served as is whatever the time (see :meth:`.Simulator.set_messages`)."""

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


# --------------------------------------------------------------------------- message sources


class Source:
    """The messages of one tag as a function of simulated time t (seconds since t=0)."""

    def count(self, t: float) -> int:
        """The messages listed at time t: the answer's ``total``."""
        raise NotImplementedError

    def items(self, start: int, end: int, t: float) -> list[dict[str, Any]]:
        """The messages at listing positions [start, end), in the documented encoding."""
        raise NotImplementedError

    def expected(self, t: float) -> dict[str, Any]:
        """The truth at time t, for tests: see :meth:`.Simulator.expected`."""
        raise NotImplementedError


class MessageList(Source):
    """Fixed messages, listed in this order whatever the time."""

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


class Campaign(Source):
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
        final = array("b", bytes(n))  # index in FINAL_STATUSES
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
                status, date = FINAL_STATUSES[final[i]], st + reported
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
