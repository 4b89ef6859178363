"""Collection rounds and their results.

A :class:`Poller` runs rounds through the client and folds each into an immutable
:class:`Snapshot` (with the cumulative error counters). Two sources decide *when* rounds run:

- :class:`ScrapeSource` (``collection.mode: scrape``): a round per scrape; concurrent scrapes
  share the round in flight, each waiting at most its own timeout, and a round younger than
  ``collection.min_interval`` is served again.
- :class:`BackgroundSource` (``collection.mode: background``): a thread runs a round every
  ``collection.interval``; scrapes get the latest snapshot at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Protocol

from ..account import AccountReader, AccountState
from ..bounds import bounded_result
from ..client import SmsPartnerClient, TagCounts
from ..config import Config
from ..errors import UpstreamError
from ..tags import expand_tags
from .job import Deferred, Result
from .model import Progress, RoundInfo
from .reader import Reader, RoundOutcome, budget_for
from .state import IncrementalState

log = logging.getLogger(__name__)

# Used when a scrape does not say how long Prometheus waits (Prometheus's own default).
DEFAULT_SCRAPE_TIMEOUT = 10.0
# Seconds the longest scrape timeout seen is remembered for the budget of shared rounds.
PATIENCE_MEMORY = 600.0


def round_budget(scrape_timeout: float | None) -> float:
    """Seconds a round may take to answer a scrape: the timeout less a safety margin."""
    timeout = DEFAULT_SCRAPE_TIMEOUT if scrape_timeout is None else scrape_timeout
    return max(0.1, timeout - min(1.0, timeout * 0.1))


@dataclass(frozen=True, slots=True)
class TagState:
    """What is known of one tag after the latest round."""

    tag: str
    up: bool
    counts: TagCounts | None  # this round's counts, or the last good ones if kept
    error: str | None = None  # reason of the latest failure
    duration: float = 0.0  # seconds from the tag's first request to its last answer
    last_success: float | None = None  # Unix time
    errors: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    truncations: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    template: str | None = None  # the tag template this tag was expanded from
    incremental: RoundInfo | None = None  # how the round read it (None: whole reads only)
    # The latest failure's message, as logged: the API's own words scrubbed (no key, no digits).
    error_message: str | None = None
    # Unix time as of which the tag's counts are current: the end of the last round that did
    # every read the tag was due (None: never). A tag whose reads are deferred keeps its counts
    # and sms_up 1; this is how its staleness shows.
    last_read: float | None = None
    deferred: int = 0  # reads the tag wanted this round that were left for a later round
    behind_since: float | None = None  # Unix time since when its due reads have been deferred


@dataclass(frozen=True, slots=True)
class RoundBudget:
    """What a round could spend on the API, and what it did spend, by purpose (the
    scheduler's purposes: total, new, waiting, whole, first_read, cold_check, audit)."""

    requests: int | None  # the round's budget; None: no rate limit (the deadline alone)
    seconds: float  # the time the round was given
    spent: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    deferred: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    spent_total: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    cold_check_interval: float | None = None  # collection.cold_check_interval (s)


@dataclass(frozen=True, slots=True)
class Snapshot:
    tags: tuple[TagState, ...]
    taken_at: float  # Unix time the round ended
    duration: float  # seconds
    upstream_requests: int  # cumulative HTTP requests sent upstream
    account: AccountState | None = None  # None when account.enabled is false
    budget: RoundBudget | None = None  # None before the first round


class Source(Protocol):
    def snapshot(self, scrape_timeout: float | None = None) -> Snapshot: ...


class Poller:
    """Runs rounds and keeps what outlives one: error counters, last successes.

    The tags of a round are the static ones plus the templates' expansion at the round's start;
    what is kept of an expanded tag is dropped once it leaves its template's window."""

    def __init__(
        self, config: Config, client: SmsPartnerClient, shared: IncrementalState | None = None
    ) -> None:
        self.config = config
        self.client = client
        # Incremental collection: the per-page state (``shared`` is a previous exporter's, kept
        # across a reload); None: every page of every tag each round.
        self.incremental: IncrementalState | None = None
        if config.collection.incremental:
            self.incremental = shared if shared is not None else IncrementalState()
        self.reader = Reader(
            client,
            self.incremental,
            config.collection.report_deadline,
            config.collection.cold_check_interval,
        )
        self._spent_total: Counter[str] = Counter()  # reads sent, by purpose, since start
        self._behind_since: dict[str, float] = {}
        self._errors: dict[str, dict[str, int]] = {tag: {} for tag in config.tags}
        self._truncations: dict[str, dict[str, int]] = {tag: {} for tag in config.tags}
        self._last_good: dict[str, TagCounts] = {}
        self._last_success: dict[str, float] = {}
        self.account = AccountReader(client) if config.account.enabled else None
        self._fold_lock = threading.Lock()  # /probe folds from several threads at once
        self._unreadable_told: set[tuple[str, str]] = set()  # (tag, field) already logged
        self.latest: Snapshot | None = None

    def share_incremental(self, shared: IncrementalState) -> None:
        """Go on with ``shared``, another poller's page state (a reload keeps it)."""
        if self.incremental is not None:
            self.incremental = shared
            self.reader.shared = shared

    def budget(self, seconds: float) -> int | None:
        """Requests a round of ``seconds`` may send (None: no rate limit, the deadline alone),
        the account's reading set aside."""
        rate = self.client.api.max_requests_per_second
        budget = budget_for(rate, seconds, getattr(self.client.limiter, "interval", 0.0))
        if budget is not None and self.account is not None:
            budget = max(1, budget - 1)
        return budget

    def round_tags(self, now: float | None = None) -> dict[str, str | None]:
        """This round's tags, each mapped to its template (None for a static tag)."""
        now = time.time() if now is None else now
        return expand_tags(self.config.tags, self.config.tag_templates, now)

    def run_round(self, budget: float, requests: int | None = None) -> Snapshot:
        """A round of ``budget`` seconds; ``requests``: its request budget, if not the one the
        rate limit gives that time (tests and benchmarks plan rounds without waiting)."""
        started = time.monotonic()
        deadline = started + budget
        tags = self.round_tags()
        account = self.account.start(deadline) if self.account is not None else None
        if requests is None:
            requests = self.budget(budget)
        states, spent = self.collect(tags, deadline, requests, seconds=budget)
        for gone in set(self._errors) - set(tags):
            self._forget(gone)
        if self.incremental is not None:
            self.incremental.save(tags)
        account_state = None
        if self.account is not None and account is not None:
            account_state = self.account.finish(account, deadline)
        snapshot = Snapshot(
            states,
            time.time(),
            time.monotonic() - started,
            self.client.requests_made,
            account_state,
            spent,
        )
        self.latest = snapshot
        return snapshot

    def collect(
        self,
        tags: Mapping[str, str | None],
        deadline: float,
        requests: int | None = None,
        seconds: float | None = None,
    ) -> tuple[tuple[TagState, ...], RoundBudget]:
        """Collect ``tags`` (tag -> template) now, within ``requests`` (None: no limit), and
        fold the results in; also what the round spent."""
        started = time.monotonic()
        durations: dict[str, float] = {}
        outcome = self.reader.fetch_tags(tags, deadline, durations, requests)
        duration = time.monotonic() - started  # for a tag that never started: the round's
        now = time.time()
        with self._fold_lock:
            self._spent_total.update(outcome.spent)
            spent = RoundBudget(
                outcome.budget,
                seconds if seconds is not None else max(0.0, deadline - started),
                MappingProxyType(dict(outcome.spent)),
                MappingProxyType(dict(outcome.left)),
                MappingProxyType(dict(self._spent_total)),
                self.config.collection.cold_check_interval,
            )
            states = []
            for tag, template in tags.items():
                info = outcome.infos.get(tag)
                read = info is None or info.fetched > 0
                state = self._fold(
                    tag, outcome.results[tag], durations.get(tag, duration), now, template, read
                )
                if self.incremental is None:
                    info = None  # whole reads only: no sms_collection_* figures
                states.append(self._fresh(state, info, outcome, now))
            return tuple(states), spent

    def _fresh(
        self, state: TagState, info: RoundInfo | None, outcome: RoundOutcome, now: float
    ) -> TagState:
        """``state`` with how the round read it and how fresh its counts are."""
        tag = state.tag
        deferred = outcome.deferred.get(tag, 0)
        if deferred and state.up:
            self._behind_since.setdefault(tag, now)
        else:
            self._behind_since.pop(tag, None)
        last_read = self.reader.last_read.get(tag)
        return replace(
            state,
            incremental=info,
            last_read=last_read if last_read is None else self._wall(last_read),
            deferred=deferred,
            behind_since=self._behind_since.get(tag),
        )

    def _wall(self, when: float) -> float:
        """A time of the reader's clock (which tests set to a simulator's) as wall time."""
        return when - self.reader.clock() + time.time()

    def _forget(self, tag: str) -> None:
        with self._fold_lock:
            for kept in (
                self._errors,
                self._truncations,
                self._last_good,
                self._last_success,
                self._behind_since,
            ):
                kept.pop(tag, None)
            self.reader.forget(tag)
            self._unreadable_told -= {told for told in self._unreadable_told if told[0] == tag}
        if self.incremental is not None:
            self.incremental.forget(tag)

    def _fold(
        self,
        tag: str,
        result: Result,
        duration: float,
        now: float,
        template: str | None = None,
        read: bool = True,
    ) -> TagState:
        """Fold a tag's result in; ``read``: the round asked the API about it (a quiet tag not
        due for a read keeps its counts, and its last success stays when it was read)."""
        errors = self._errors.setdefault(tag, {})
        truncations = self._truncations.setdefault(tag, {})
        if not isinstance(result, Progress | Deferred):
            result = bounded_result(result)  # at most MAX_TAG_STATUSES statuses a tag
        message = None
        if isinstance(result, Progress):
            # A first read still going on: collected fine so far, but no counts to show.
            counts, up, error = None, True, None
        elif isinstance(result, Deferred):
            # Its reads were left for a later round: not a failure, its counts stand.
            counts, up, error = self._last_good.get(tag), True, None
        elif isinstance(result, UpstreamError):
            errors[result.reason] = errors.get(result.reason, 0) + 1
            log.warning(
                "collecting tag failed: %s",
                result.message,
                extra={"tag": tag, "reason": result.reason},
            )
            counts = self._last_good.get(tag) if self.config.collection.keep_last_values else None
            up, error = False, result.reason
            message = result.message
        else:
            if result.truncation:
                truncations[result.truncation] = truncations.get(result.truncation, 0) + 1
                log.warning(
                    "tag cut short: counts are incomplete",
                    extra={"tag": tag, "reason": result.truncation, "pages": result.pages},
                )
            self._tell_unreadable(tag, result)
            self._last_good[tag] = result
            if read or tag not in self._last_success:
                self._last_success[tag] = now
            counts, up, error = result, True, None
        return TagState(
            tag=tag,
            up=up,
            counts=counts,
            error=error,
            error_message=message,
            duration=duration,
            last_success=self._last_success.get(tag),
            errors=MappingProxyType(dict(errors)),
            truncations=MappingProxyType(dict(truncations)),
            template=template,
        )

    def _tell_unreadable(self, tag: str, counts: TagCounts) -> None:
        """Warn once per tag and field (not per message, nor per round) that some messages'
        field could not be read; ``sms_unreadable_fields`` tells how many, round after round."""
        for name, messages in sorted(counts.unreadable.items()):
            if messages and (tag, name) not in self._unreadable_told:
                self._unreadable_told.add((tag, name))
                log.warning(
                    "some messages of the tag have no readable %s: they are counted, "
                    "without it (this is said once; see sms_unreadable_fields)",
                    name,
                    extra={"tag": tag, "field": name, "messages": messages},
                )

    def pending(self) -> Snapshot:
        """A snapshot for before the first round: every tag down, nothing counted."""
        states = tuple(
            TagState(tag=tag, up=False, counts=None, template=template)
            for tag, template in self.round_tags().items()
        )
        account = self.account.pending() if self.account is not None else None
        return Snapshot(states, time.time(), 0.0, self.client.requests_made, account)

    def close(self) -> None:
        if self.account is not None:
            self.account.close()


class ScrapeSource:
    """A round per scrape; concurrent scrapes share one round.

    A round runs on a thread of its own, with the budget of the most patient scrape seen in the
    last ``PATIENCE_MEMORY`` seconds: a client sending ``X-Prometheus-Scrape-Timeout-Seconds:
    0.1`` cannot cut rounds short for the others (and the web layer clamps that header to at
    least a second). A scrape more patient than the round under way waits for the next round,
    which starts as soon as that one ends, with its budget. Each scrape waits only as long as
    its own timeout allows; one whose time is up gets the latest complete snapshot (before the
    first one: every tag down)."""

    def __init__(self, poller: Poller) -> None:
        self.poller = poller
        self.min_interval = poller.config.collection.min_interval
        self._cond = threading.Condition()
        self._running = False
        self._running_budget = 0.0
        self._closed = False
        self._generation = 0  # rounds finished
        self._wanted = 0  # the round some scrape waits for
        self._finished_at = float("-inf")
        self._patience = (0.0, float("-inf"))  # (budget, remembered until)

    def snapshot(self, scrape_timeout: float | None = None) -> Snapshot:
        budget = round_budget(scrape_timeout)
        now = time.monotonic()
        # The round ends within `budget`; its snapshot is ready a moment later.
        timeout = DEFAULT_SCRAPE_TIMEOUT if scrape_timeout is None else scrape_timeout
        wait_until = now + budget + max(0.0, timeout - budget) / 2
        with self._cond:
            latest = self.poller.latest
            fresh = now - self._finished_at < self.min_interval
            if latest is not None and not self._running and fresh:
                return latest
            if self._closed and not self._running:  # no round will start: do not wait for one
                return latest or self.poller.pending()
            patient = self._remember(budget, now)
            if not self._running:
                wanted = self._generation + 1
                self._start(now, patient)
            elif budget > self._running_budget:
                wanted = self._generation + 2  # the next round, with this scrape's patience
            else:
                wanted = self._generation + 1
            self._wanted = max(self._wanted, wanted)
            self._cond.wait_for(
                lambda: self._generation >= wanted,
                timeout=max(0.0, wait_until - time.monotonic()),
            )
            return self.poller.latest or self.poller.pending()

    def _remember(self, budget: float, now: float) -> float:
        """The most patient budget asked within ``PATIENCE_MEMORY`` seconds, this one included."""
        patient, until = self._patience
        if budget >= patient or now >= until:
            self._patience = patient, until = budget, now + PATIENCE_MEMORY
        return patient

    def _start(self, since: float, budget: float) -> None:
        """Start a round ending by ``since + budget``: from when the scrape asked for it, not
        from the thread's start (a few milliseconds later on a busy machine)."""
        self._running, self._running_budget = True, budget
        try:
            threading.Thread(
                target=self._run, args=(since + budget,), name="smsp-round", daemon=True
            ).start()
        except BaseException:
            self._running = False
            raise

    def _run(self, deadline: float) -> None:
        try:
            self.poller.run_round(max(0.0, deadline - time.monotonic()))
        except Exception:
            if self._closed:  # a round cut short by closing (a reload): no error
                log.debug("collection round stopped by closing", exc_info=True)
            else:
                log.exception("collection round failed")
        finally:
            with self._cond:
                self._running = False
                self._generation += 1
                self._finished_at = time.monotonic()
                if self._wanted > self._generation and not self._closed:
                    # With the patience of the scrape waiting for it.
                    self._start(self._finished_at, self._patience[0])
                self._cond.notify_all()

    def close(self) -> None:
        """No new round; the one in flight ends when the client is closed."""
        with self._cond:
            self._closed = True


class BackgroundSource:
    """A refresher thread runs a round every ``interval``; scrapes never wait for upstream,
    except for the very first round after start-up."""

    def __init__(self, poller: Poller) -> None:
        self.poller = poller
        self.interval = poller.config.collection.interval
        self._stop = threading.Event()
        self._first = threading.Event()
        self._thread = threading.Thread(target=self._run, name="smsp-refresh", daemon=True)

    def start(self) -> BackgroundSource:
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.poller.run_round(self.interval)
            except Exception:  # never let the refresher die
                if self._stop.is_set():  # a round cut short by closing (a reload): no error
                    log.debug("collection round stopped by closing", exc_info=True)
                    break
                log.exception("collection round failed")
            self._first.set()
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def snapshot(self, scrape_timeout: float | None = None) -> Snapshot:
        if self.poller.latest is None:
            self._first.wait(round_budget(scrape_timeout))
        return self.poller.latest or self.poller.pending()
