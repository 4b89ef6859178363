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
from dataclasses import replace

from .api import TagsApi
from .client import SmsPartnerClient
from .collection.rounds import BackgroundSource, Poller, ScrapeSource, Snapshot, Source
from .collection.state import IncrementalState
from .collection.statestore import StateFileError, open_store
from .collector import SmsCollector
from .config import Config
from .probe import ProbeApp
from .status import RecentOutcomes, StatusPage
from .web import WSGIApp

log = logging.getLogger(__name__)


class _WithProbeRequests:
    """The source's snapshots, with the requests /probe sent (on its own client) counted in
    ``sms_api_requests_total``."""

    def __init__(self, source: Source, probe: ProbeApp) -> None:
        self.source = source
        self.probe = probe

    def snapshot(self, scrape_timeout: float | None = None) -> Snapshot:
        snapshot = self.source.snapshot(scrape_timeout)
        extra = self.probe.requests_made
        return replace(snapshot, upstream_requests=snapshot.upstream_requests + extra)


class _RecordingPoller(Poller):
    """A poller whose every round's snapshot also feeds the status page's recent outcomes."""

    def __init__(
        self,
        config: Config,
        client: SmsPartnerClient,
        shared: IncrementalState | None,
        outcomes: RecentOutcomes,
    ) -> None:
        super().__init__(config, client, shared)
        self.outcomes = outcomes

    def run_round(self, budget: float, requests: int | None = None) -> Snapshot:
        snapshot = super().run_round(budget, requests)
        self.outcomes.record(snapshot)
        return snapshot


class Exporter:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.client = SmsPartnerClient(config.api)
        self._owns_state = True
        self.outcomes = RecentOutcomes()
        self.poller: Poller = _RecordingPoller(
            config, self.client, self._state(config), self.outcomes
        )
        self.background = config.collection.mode == "background"
        self.source: ScrapeSource | BackgroundSource
        if self.background:
            self.source = BackgroundSource(self.poller)
        else:
            self.source = ScrapeSource(self.poller)
        self.probe = ProbeApp(config, self.client)
        counted = _WithProbeRequests(self.source, self.probe)
        self.collector = SmsCollector(counted, cached=self.background)
        self.tags_api = TagsApi(counted)
        # The status page reads the poller's latest snapshot: it never starts a round.
        self.status = StatusPage(self.poller, self.outcomes, probed=self.probe.probed)

    @staticmethod
    def _state(config: Config) -> IncrementalState | None:
        """The page state of incremental collection (None: whole reads), from the state file
        if there is one."""
        if not config.collection.incremental:
            return None
        path = config.collection.state_file
        store = None
        if path is not None:
            try:
                store = open_store(path)
            except StateFileError as err:  # at run time (a reload): memory only, said once
                log.error("%s: the page state is kept in memory only", err)
        return IncrementalState(store)

    def routes(self) -> dict[str, WSGIApp]:
        """The HTTP routes besides /metrics: the status page ``/``, ``/probe`` and
        ``/api/v1/tags``."""
        return {"/": self.status, "/probe": self.probe, "/api/v1/tags": self.tags_api}

    def carry_over(self, old: Exporter) -> None:
        """Keep what ``old`` (the exporter of the configuration before a reload) knew and a
        reload must not lose: the last account reading (and its error counters), when both
        read the same account; the page state of the tags and when each was last read (see
        below); the status page's recent outcomes."""
        self.outcomes.carry_from(old.outcomes)
        same_account = (old.config.api.url, old.config.api.key) == (
            self.config.api.url,
            self.config.api.key,
        )
        if same_account and self.poller.account is not None and old.poller.account is not None:
            self.poller.account.carry_from(old.poller.account)
        # The page state of incremental collection, when both keep it in the same place (the
        # same state file, or memory): the tags that stay go on from where they were.
        mine, kept = self.poller.incremental, old.poller.incremental
        if mine is not None and kept is not None and old._owns_state:
            path = mine.store.path if mine.store is not None else None
            if (kept.store.path if kept.store is not None else None) == path:
                if mine.store is not None:
                    mine.store.close()
                self.poller.share_incremental(kept)
                self.poller.reader.carry_from(old.poller.reader)
                old._owns_state = False
        elif mine is None and kept is None:  # whole reads: their sizes and freshness go on
            self.poller.reader.carry_from(old.poller.reader)

    def start(self) -> Exporter:
        """Start the background refresher, if the mode has one."""
        if isinstance(self.source, BackgroundSource):
            self.source.start()
        return self

    def close(self) -> None:
        # The sources are told first, so that a round cut short by the closing is not an error;
        # then the client: it aborts the requests in flight, so a round in progress ends at
        # once and the refresher thread can be joined without waiting for the upstream.
        if isinstance(self.source, BackgroundSource):
            self.source.stop(timeout=0)
        else:
            self.source.close()
        self.client.close()
        self.probe.close()
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
