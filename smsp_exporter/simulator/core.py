"""The :class:`Simulator`: the parts (clock, catalogue, faults, traffic, routes, server) wired
together behind one object, started once and stopped once."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterable
from typing import Any

from .answers import Api
from .campaigns import DEFAULT_START_TIME, Campaign, Message, MessageList, TagSpec
from .catalogue import Catalogue
from .clock import Clock
from .control import Control
from .dialects import DIALECTS
from .faults import FaultBook
from .server import Server
from .stats import Traffic
from .wire import API_PREFIX, WAITING, is_loopback


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
        if not allow_remote and not is_loopback(host):
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

        self._clock = Clock(speed, clock)
        self._catalogue = Catalogue()
        self._faults = FaultBook()
        self._traffic = Traffic()
        self._stopping = threading.Event()
        self._api = Api(
            self,
            clock=self._clock,
            catalogue=self._catalogue,
            faults=self._faults,
            traffic=self._traffic,
            stopping=self._stopping,
        )
        self._control = Control(self)
        self._server: Server | None = None
        self._thread: threading.Thread | None = None
        for spec in tags:
            self.add_tag(spec)
        for tag, dialect in (dialects or {}).items():
            self.set_dialect(tag, dialect)

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> Simulator:
        if self._server is not None or self._stopping.is_set():
            raise RuntimeError("a Simulator starts once")
        server = Server(
            (self.host, self.port),
            api=self._api.handle,
            control=self._control.handle,
            traffic=self._traffic,
            stopping=self._stopping,
            unix_time=lambda: self.start_time + self.now(),
        )
        self.port = server.server_port
        self._clock.restart()
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
        for conn in self._traffic.live_connections():
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

    @property
    def last_error(self) -> str | None:
        """The traceback of the simulator's last bug, if any (``stats()["errors"]`` counts)."""
        return self._traffic.last_error

    # ----------------------------------------------------------------- clock

    def now(self) -> float:
        """Simulated seconds since t=0."""
        return self._clock.now()

    @property
    def frozen(self) -> bool:
        return self._clock.frozen

    @property
    def speed(self) -> float:
        return self._clock.speed

    @speed.setter
    def speed(self, value: float) -> None:
        self._clock.speed = value

    def freeze(self, at: float | None = None) -> None:
        """Stop the clock (at ``at``, default now): time then moves only by :meth:`advance`."""
        self._clock.freeze(at)

    def unfreeze(self) -> None:
        """Let the clock run again from the frozen time."""
        self._clock.unfreeze()

    def advance(self, seconds: float) -> float:
        """Move simulated time forward (frozen or not); returns the new time."""
        return self._clock.advance(seconds)

    # ----------------------------------------------------------------- content

    def add_tag(self, spec: TagSpec) -> None:
        """Add a campaign, or replace the tag of the same name (its messages are redrawn)."""
        self._catalogue.put(spec.name, Campaign(spec, self.seed, self.start_time), spec)

    def set_messages(self, tag: str, messages: Iterable[Message]) -> None:
        """Make ``tag`` list exactly these messages, in this order, whatever the time."""
        self._catalogue.put(tag, MessageList(messages))

    def remove_tag(self, name: str) -> None:
        self._catalogue.remove(name)

    def tags(self) -> list[str]:
        return self._catalogue.tags()

    def spec(self, name: str) -> TagSpec | None:
        return self._catalogue.spec(name)

    def expected(self, tag: str) -> dict[str, Any]:
        """The truth at the current simulated time: ``{"statuses": {status: n}, "stop", "total"}``.

        ``statuses`` lists only statuses with at least one message. KeyError for an unknown tag.
        """
        source, t = self._catalogue.source(tag), self._clock.now()
        if source is None:
            raise KeyError(tag)
        return source.expected(t)

    def set_dialect(self, tag: str, dialect: str) -> None:
        """Serve ``tag``'s success answers in ``dialect`` (a key of :data:`DIALECTS`), from
        now on and whatever its messages; ``"documented"`` restores the documented encoding.
        A ``wrong_shape`` fault is served in the documented encoding."""
        self._catalogue.set_dialect(tag, dialect)

    def dialect(self, tag: str) -> str:
        return self._catalogue.dialect_name(tag)

    def expected_unreadable(self, tag: str) -> dict[str, int]:
        """Messages of ``tag`` whose ``date`` / ``stopSMS`` its dialect leaves unreadable now."""
        unknown = (self._catalogue.dialect(tag) or DIALECTS["documented"]).unknown
        waiting = self.expected(tag)["statuses"].get(WAITING, 0)
        return {name: waiting if name in unknown else 0 for name in ("date", "stopSMS")}

    def sent(self) -> int:
        """Messages sent so far over all tags (what /me's credits are charged for)."""
        t = self._clock.now()
        return sum(source.count(t) for source in self._catalogue.sources())

    # ----------------------------------------------------------------- faults

    def set_fault(self, tag: str | None, kind: str, **params: Any) -> int:
        """Inject a fault on requests for ``tag`` (None: every request); returns its id.

        Generic parameters: ``times`` (only the next N matching requests), ``page``,
        ``endpoint``. Kinds and their parameters: see :data:`FAULT_KINDS`. Faults are tried in
        the order they were set: every matching ``delay`` adds its sleep, and the first other
        matching fault decides the answer.
        """
        return self._faults.add(tag, kind, params)

    def remove_fault(self, fault_id: int) -> None:
        self._faults.remove(fault_id)

    def clear_faults(self) -> None:
        self._faults.clear()

    def faults(self) -> list[dict[str, Any]]:
        return self._faults.describe()

    # ----------------------------------------------------------------- statistics

    def stats(self) -> dict[str, Any]:
        """A snapshot of the request counters (requests to ``/_sim/`` are not counted)."""
        return self._traffic.snapshot()

    def request_times(self) -> list[float]:
        """Monotonic arrival times of the last requests (at most 1,000,000)."""
        return self._traffic.request_times()

    def reset_stats(self) -> None:
        self._traffic.reset()
