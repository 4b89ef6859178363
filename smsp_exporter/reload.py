"""Configuration reload (SIGHUP, ``POST /-/reload``): a new config replaces the old one whole.

:class:`Reloader` loads the configuration again; when it is valid, a new :class:`Exporter` is
built and swapped in atomically (a scrape sees the old one or the new one, never a mix) and the
old one is closed as soon as no scrape uses it any more. When it is not, the old exporter keeps
serving, the error is logged on one line and ``sms_config_last_reload_successful`` drops to 0.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from http import HTTPStatus

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .config import Config, ConfigError
from .exporter import Exporter
from .logs import add_secret
from .status import ReloadInfo
from .web import Route, WSGIApp, answer_text

__all__ = ["Reloader", "lifecycle_disabled_route", "reload_route"]

log = logging.getLogger(__name__)


class Reloader(Collector):
    """Holds the current exporter; collects its metrics and the reload metrics.

    ``load`` returns a new :class:`Config` or raises :class:`ConfigError`.

    Reloads asked while one runs share the next one (which reads the files after they were
    asked): a storm of ``POST /-/reload`` makes a few reloads, not one each. A retired
    exporter is closed exactly once, when the last scrape or probe using it is done.
    """

    def __init__(self, load: Callable[[], Config], config: Config) -> None:
        self._load = load
        self._cond = threading.Condition()  # the reloads asked, started and finished
        self._started = 0
        self._finished = 0
        self._running = False
        self._result = True
        self._lock = threading.Lock()  # the current exporter and the scrapes using each one
        self._exporter = Exporter(config)
        self._exporter.status.reloads = self.reload_info
        self._in_use: dict[Exporter, int] = {}
        self._retired: set[Exporter] = set()
        self._closed = False
        self._successful = True
        self._success_time = time.time()

    @property
    def exporter(self) -> Exporter:
        return self._exporter

    def start(self) -> Reloader:
        self._exporter.start()
        return self

    def close(self) -> None:
        """Close every exporter now, in use or not (the process is stopping: the requests in
        flight are aborted, so that it stops promptly)."""
        with self._cond:
            self._cond.wait_for(lambda: not self._running, timeout=30)
            self._closed = True
        with self._lock:
            exporters = [self._exporter, *self._retired]
            self._retired.clear()
        for exporter in exporters:
            exporter.close()

    def reload(self) -> bool:
        """Load the configuration again. True if the new one is now serving."""
        with self._cond:
            wanted = self._started + 1  # any reload starting from now on reads today's files
            while self._finished < wanted:
                if not self._running:
                    if self._closed:
                        return False
                    self._running = True
                    self._started += 1
                    number = self._started
                    break
                self._cond.wait()
            else:
                return self._result
        result = False
        try:
            result = self._reload_once()
        finally:
            with self._cond:
                self._running = False
                self._finished = number
                self._result = result
                self._cond.notify_all()
        return result

    def _reload_once(self) -> bool:
        try:
            config = self._load()
        except ConfigError as err:
            self._successful = False
            log.error("config reload failed, the previous configuration stays: %s", err)
            return False
        add_secret(config.api.key)
        for warning in config.warnings:
            log.warning("%s: %s", config.source, warning)
        new = Exporter(config)
        new.status.reloads = self.reload_info
        new.carry_over(self._exporter)
        new.start()
        with self._lock:
            old, self._exporter = self._exporter, new
            busy = self._in_use.get(old, 0) > 0
            if busy:  # the last scrape using it closes it (see _using)
                self._retired.add(old)
            self._successful = True
            self._success_time = time.time()
        if not busy:
            old.close()
        log.info(
            "config reloaded",
            extra={"tags": len(config.tags), "mode": config.collection.mode},
        )
        return True

    def reload_info(self) -> ReloadInfo:
        """The last (re)load's outcome, for the status page."""
        return ReloadInfo(self._successful, self._success_time)

    # -- Collector --

    @contextlib.contextmanager
    def _using(self) -> Iterator[Exporter]:
        """The current exporter, kept open until the caller is done with it."""
        with self._lock:
            exporter = self._exporter
            self._in_use[exporter] = self._in_use.get(exporter, 0) + 1
        try:
            yield exporter
        finally:
            with self._lock:
                left = self._in_use[exporter] - 1
                if left:
                    self._in_use[exporter] = left
                else:
                    del self._in_use[exporter]
                # Only the last user closes a retired exporter (and only once).
                close = not left and exporter in self._retired
                if close:
                    self._retired.discard(exporter)
            if close:
                exporter.close()

    def routes(self) -> dict[str, WSGIApp]:
        """The current exporter's routes (/, /probe, /api/v1/tags), following reloads."""

        def route(path: str) -> WSGIApp:
            def app(environ: dict, start_response: Callable) -> Iterable[bytes]:
                with self._using() as exporter:
                    # The answer is built in full while the exporter is held.
                    return list(exporter.routes()[path](environ, start_response))

            return app

        return {path: route(path) for path in self._exporter.routes()}

    def collect(self) -> Iterator[Metric]:
        with self._using() as exporter:
            yield from exporter.collector.collect()
        ok = GaugeMetricFamily(
            "sms_config_last_reload_successful",
            "1 if the last configuration (re)load succeeded, else 0",
        )
        ok.add_metric([], 1.0 if self._successful else 0.0)
        yield ok
        when = GaugeMetricFamily(
            "sms_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful configuration (re)load",
        )
        when.add_metric([], self._success_time)
        yield when

    def describe(self) -> list[Metric]:
        # Registering must not trigger a round of API calls.
        return []


def reload_route(reloader: Reloader) -> Route:
    """The ``/-/reload`` route: POST reloads (200, or 500 if the new config is refused)."""

    def app(environ: dict, start_response: Callable) -> Iterable[bytes]:
        if reloader.reload():
            return answer_text(start_response, HTTPStatus.OK, "config reloaded\n")
        # The reason is in the log; an HTTP answer says nothing about the config's content.
        return answer_text(
            start_response,
            HTTPStatus.INTERNAL_SERVER_ERROR,
            "config reload failed: the previous configuration stays (see the log)\n",
        )

    return Route.post(app)


def lifecycle_disabled_route() -> Route:
    """``/-/reload`` without ``--web.enable-lifecycle``: 403, as Prometheus answers."""

    def app(environ: dict, start_response: Callable) -> Iterable[bytes]:
        return answer_text(
            start_response,
            HTTPStatus.FORBIDDEN,
            "the lifecycle API is not enabled: start with --web.enable-lifecycle, "
            "or reload with SIGHUP\n",
        )

    return Route.post(app)
