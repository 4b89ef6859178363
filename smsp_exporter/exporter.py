"""The exporter assembled: config -> client -> poller -> snapshot source -> collector.

This is also how to embed it in another Python process::

    from prometheus_client import REGISTRY
    from smsp_exporter.config import load_config
    from smsp_exporter.exporter import Exporter

    exporter = Exporter(load_config("smsp.yaml")).start()
    REGISTRY.register(exporter.collector)
"""

from __future__ import annotations

import logging

from .api import TagsApi
from .client import SmsPartnerClient
from .collector import SmsCollector
from .config import Config
from .incremental import IncrementalState
from .probe import ProbeApp
from .snapshot import BackgroundSource, Poller, ScrapeSource
from .statestore import StateFileError, open_store
from .web import WSGIApp

log = logging.getLogger(__name__)


class Exporter:
    """``previous``: the exporter a reload replaces; its page state is kept (same state file)."""

    def __init__(self, config: Config, previous: Exporter | None = None) -> None:
        self.config = config
        self.client = SmsPartnerClient(config.api)
        self._owns_state = True
        self.poller = Poller(config, self.client, self._state(config, previous))
        self.background = config.collection.mode == "background"
        self.source: ScrapeSource | BackgroundSource
        if self.background:
            self.source = BackgroundSource(self.poller)
        else:
            self.source = ScrapeSource(self.poller)
        self.collector = SmsCollector(self.source, cached=self.background)
        self.probe = ProbeApp(config, self.client)
        self.tags_api = TagsApi(self.source)

    def _state(self, config: Config, previous: Exporter | None) -> IncrementalState | None:
        if not config.collection.incremental:
            return None
        path = config.collection.state_file
        if previous is not None and previous.poller.incremental is not None:
            kept = previous.poller.incremental
            if (kept.store.path if kept.store is not None else None) == path:
                previous._owns_state = False
                return kept
        store = None
        if path is not None:
            try:
                store = open_store(path)
            except StateFileError as err:  # at run time (a reload): memory only, said once
                log.error("%s: the page state is kept in memory only", err)
        return IncrementalState(store)

    def routes(self) -> dict[str, WSGIApp]:
        """The HTTP routes besides /metrics: ``/probe`` and ``/api/v1/tags``."""
        return {"/probe": self.probe, "/api/v1/tags": self.tags_api}

    def start(self) -> Exporter:
        """Start the background refresher, if the mode has one."""
        if isinstance(self.source, BackgroundSource):
            self.source.start()
        return self

    def close(self) -> None:
        # The client first: it aborts the requests in flight, so a round in progress ends at
        # once and the refresher thread can be joined without waiting for the upstream.
        self.client.close()
        if isinstance(self.source, BackgroundSource):
            self.source.stop()
        self.poller.close()
        shared = self.poller.incremental
        if self._owns_state and shared is not None and shared.store is not None:
            shared.store.close()

    def __enter__(self) -> Exporter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
