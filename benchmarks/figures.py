"""The benchmark figures. Each is a ratio of two times (or sizes) measured in the same run.

Every function takes the workload's sizes as arguments, so that the test suite can run it
small (``tests/test_benchmarks.py``) and ``benchmarks/run.py`` at the sizes the targets are
stated for.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import resource
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from prometheus_client import CollectorRegistry, Gauge, generate_latest

from smsp_exporter.client import TagCounts
from smsp_exporter.collection.model import RoundInfo
from smsp_exporter.collection.rounds import Snapshot, TagState
from smsp_exporter.collector import SmsCollector, families
from smsp_exporter.config import Config, config_from_dict
from smsp_exporter.exporter import Exporter
from smsp_exporter.parse import parse_page
from smsp_exporter.simulator import TagSpec

from .simproc import API_KEY, FROZEN_AT, SimulatorProcess

PAGE_SIZE = 100  # messages per page served by the simulator in the fetch figures
NO_LIMIT = 0


@dataclass(frozen=True)
class Figure:
    """One line of the table."""

    key: str  # stable identifier, the key in latest.json
    title: str
    value: float
    target: str  # e.g. "<= 1.25"; "" when the line only informs
    passed: bool | None  # None: no target
    detail: str = ""


def _check(value: float, op: str, bound: float) -> bool:
    return value <= bound if op == "<=" else value >= bound


def figure(key: str, title: str, value: float, op: str, bound: float, detail: str) -> Figure:
    return Figure(key, title, value, f"{op} {bound:g}", _check(value, op, bound), detail)


def make_config(
    url: str, tags: list[str], collection: dict[str, Any] | None = None, **api: Any
) -> Config:
    section: dict[str, Any] = {
        "url": url,
        "key": API_KEY,
        "timeout": "30s",
        "retries": 0,
        "max_requests_per_second": NO_LIMIT,
    }
    section.update(api)
    return config_from_dict(
        {"api": section, "collection": collection or {}, "tags": tags}, source="<bench>"
    )


def campaign(name: str, messages: int) -> TagSpec:
    return TagSpec(name, messages, send_spread=0.0, report_delay=30.0)


def _round(config: Config) -> tuple[float, Snapshot]:
    """One collection round of a fresh exporter, as a scrape would run it: (seconds, snapshot)."""
    exporter = Exporter(config)
    try:
        started = time.perf_counter()
        snapshot = exporter.poller.run_round(600.0)
        return time.perf_counter() - started, snapshot
    finally:
        exporter.close()


def _messages(snapshot: Snapshot) -> int:
    """Messages counted by a round; raises if a tag failed (the figure would mean nothing)."""
    total = 0
    for state in snapshot.tags:
        if not state.up or state.counts is None:
            raise RuntimeError(f"tag {state.tag} failed during the benchmark: {state.error}")
        total += state.counts.messages
    return total


# -- 1 and 2: fetching ---------------------------------------------------------------------


def _tags(sim: SimulatorProcess, prefix: str, count: int, pages: int) -> list[str]:
    names = [f"{prefix}-{i}" for i in range(count)]
    # The last page half full, so that page sizes are checked too.
    sim.add_tags([campaign(name, pages * PAGE_SIZE - PAGE_SIZE // 2) for name in names])
    return names


def fetch_vs_bound(
    tags: int = 100, pages: range = range(1, 6), latency: float = 0.05, concurrency: int = 8
) -> list[Figure]:
    """Round time over ceil(T*P/C)*L, for each page count P."""
    out = []
    with SimulatorProcess(latency=latency, page_size=PAGE_SIZE) as sim:
        for p in pages:
            names = _tags(sim, f"p{p}", tags, p)
            config = make_config(sim.url, names, concurrency=concurrency, max_pages=p + 1)
            _round(make_config(sim.url, names[:concurrency], concurrency=concurrency))  # warm-up
            sim.call("reset_stats")
            seconds, results = _round(config)
            requests_made = sim.stats()["requests"]
            expected = tags * (p * PAGE_SIZE - PAGE_SIZE // 2)
            if _messages(results) != expected or requests_made != tags * p:
                raise RuntimeError(f"P={p}: wrong counts or requests ({requests_made})")
            bound = math.ceil(tags * p / concurrency) * latency
            out.append(
                figure(
                    f"fetch_vs_bound_p{p}",
                    f"fetch / ideal bound, T={tags} P={p}",
                    seconds / bound,
                    "<=",
                    1.25,
                    f"round {seconds:.3f} s, bound {bound:.3f} s ({requests_made} requests, "
                    f"L={latency * 1000:g} ms, C={concurrency})",
                )
            )
    return out


def naive_round(url: str, tags: list[str]) -> dict[str, Counter[str]]:
    """The documentation's Python sample, extended to pages: one requests.get (so one new
    connection) after another, ``r.json()``, counted in Python."""
    counts: dict[str, Counter[str]] = {}
    for tag in tags:
        counter: Counter[str] = Counter()
        page = 1
        while True:
            r = requests.get(
                f"{url}/bulk-status-by-tag?apiKey={API_KEY}&tag={tag}&page={page}", timeout=30
            )
            r_json = r.json()
            if r_json.get("success") is not True:
                raise RuntimeError("the naive client got an error answer")
            items = r_json["StatutResponse_List"]
            for item in items:
                counter[item["status"]] += 1
            if not items or page * len(items) >= r_json["total"] or len(items) < PAGE_SIZE:
                break
            page += 1
        counts[tag] = counter
    return counts


def naive_vs_exporter(
    tags: int = 100, pages: int = 3, latency: float = 0.05, concurrency: int = 8
) -> Figure:
    with SimulatorProcess(latency=latency, page_size=PAGE_SIZE) as sim:
        names = _tags(sim, "naive", tags, pages)
        started = time.perf_counter()
        naive = naive_round(sim.url, names)
        naive_seconds = time.perf_counter() - started
        ours, results = _round(make_config(sim.url, names, concurrency=concurrency))
        if sum(sum(c.values()) for c in naive.values()) != _messages(results):
            raise RuntimeError("the naive client and the exporter disagree")
    return figure(
        "naive_vs_exporter",
        f"naive client / exporter, T={tags} P={pages}",
        naive_seconds / ours,
        ">=",
        6.0,
        f"naive {naive_seconds:.2f} s, exporter {ours:.3f} s",
    )


# -- 3: the rate limit ---------------------------------------------------------------------


def peak_rate(arrivals: list[float], window: float = 1.0) -> int:
    """Most arrivals within any half-open window of ``window`` seconds."""
    arrivals = sorted(arrivals)
    best, first = 0, 0
    for last, t in enumerate(arrivals):
        while t - arrivals[first] >= window:
            first += 1
        best = max(best, last - first + 1)
    return best


def rate_limit(
    rate: float = 20.0, tags: int = 20, pages: int = 3, latency: float = 0.05, concurrency: int = 8
) -> list[Figure]:
    with SimulatorProcess(latency=latency, page_size=PAGE_SIZE) as sim:
        names = _tags(sim, "rate", tags, pages)
        config = make_config(sim.url, names, concurrency=concurrency, max_requests_per_second=rate)
        sim.call("reset_stats")
        seconds, results = _round(config)
        _messages(results)
        arrivals = sim.call("request_times")
    n = len(arrivals)
    peak = peak_rate(arrivals)
    bound = n / rate
    return [
        figure(
            "rate_limit_peak",
            f"peak requests in any 1 s / R, R={rate:g}",
            peak / rate,
            "<=",
            1.0,
            f"peak {peak} requests in 1 s, R={rate:g}",
        ),
        figure(
            "rate_limit_time",
            "round time / (N/R)",
            seconds / bound,
            "<=",
            1.2,
            f"round {seconds:.3f} s, N/R = {n}/{rate:g} = {bound:.3f} s",
        ),
    ]


# -- 4: parsing ----------------------------------------------------------------------------


def page_body(messages: int) -> bytes:
    """One answer of ``messages`` messages, as the simulator serves it."""
    with SimulatorProcess(page_size=messages) as sim:
        sim.add_tags([campaign("big", messages)])
        r = requests.get(f"{sim.url}/bulk-status-by-tag?apiKey={API_KEY}&tag=big", timeout=60)
        r.raise_for_status()
        return r.content


def _best(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def parse_vs_json(messages: int = 100_000, repeat: int = 9) -> Figure:
    body = page_body(messages)
    page = parse_page(body)
    if page.items != messages or sum(page.statuses.values()) != messages:
        raise RuntimeError("parse_page miscounted the page")
    ours = _best(lambda: parse_page(body), repeat)
    stdlib = _best(lambda: json.loads(body), repeat)
    return figure(
        "parse_vs_json_loads",
        f"parse+aggregate / json.loads, {messages:,} messages",
        ours / stdlib,
        "<=",
        1.0,
        f"parse_page {ours * 1000:.1f} ms, json.loads {stdlib * 1000:.1f} ms "
        f"({len(body) / 1e6:.1f} MB, best of {repeat})",
    )


# -- 5: memory -----------------------------------------------------------------------------


def _measured_round(url: str, tag: str, page_size: int, out: Any) -> None:
    """In a fresh process: one exporter round over one tag; sends (peak RSS bytes, messages)."""
    pages = 2 + 10**8 // page_size
    config = make_config(url, [tag], concurrency=8, max_pages=min(pages, 10**6))
    _seconds, results = _round(config)
    out.send((peak_rss(), _messages(results)))


def peak_rss() -> int:
    """This process's peak resident set, in bytes.

    VmHWM, not getrusage's ru_maxrss: a child started by fork+exec keeps its parent's ru_maxrss,
    while VmHWM belongs to the new address space."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def peak_rss_of_round(url: str, tag: str, page_size: int) -> tuple[int, int]:
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    process = ctx.Process(target=_measured_round, args=(url, tag, page_size, child))
    process.start()
    child.close()
    try:
        if not parent.poll(300):
            raise RuntimeError("the measured round did not finish")
        return parent.recv()
    finally:
        process.join(10)
        if process.is_alive():
            process.kill()
        parent.close()


def memory(big: int = 1_000_000, small: int = 1_000, page_size: int = 1_000) -> Figure:
    with SimulatorProcess(page_size=page_size) as sim:
        sim.add_tags([campaign("big", big), campaign("small", small)])
        small_rss, small_n = peak_rss_of_round(sim.url, "small", page_size)
        big_rss, big_n = peak_rss_of_round(sim.url, "big", page_size)
    if (small_n, big_n) != (small, big):
        raise RuntimeError("the measured rounds miscounted")
    extra = (big_rss - small_rss) / 1e6
    return figure(
        "memory_mb",
        f"peak RSS, {big:,} - {small:,} messages (MB)",
        extra,
        "<=",
        50.0,
        f"{big_rss / 1e6:.1f} MB vs {small_rss / 1e6:.1f} MB, {page_size} messages a page",
    )


# -- 6: serving ----------------------------------------------------------------------------


def static_registry(registry: CollectorRegistry) -> CollectorRegistry:
    """The same samples held by plain prometheus-client gauges: the usual static exporter."""
    static = CollectorRegistry(auto_describe=True)
    for family in registry.collect():
        by_name: dict[str, Gauge] = {}
        for sample in family.samples:
            gauge = by_name.get(sample.name)
            if gauge is None:
                gauge = Gauge(
                    sample.name, family.documentation, list(sample.labels), registry=static
                )
                by_name[sample.name] = gauge
            (gauge.labels(**sample.labels) if sample.labels else gauge).set(sample.value)
    return static


def serving_render(tags: int = 1_000, repeat: int = 15) -> Figure:
    with SimulatorProcess(page_size=PAGE_SIZE) as sim:
        names = _tags(sim, "serve", tags, 1)
        config = make_config(
            sim.url, names, concurrency=8, collection={"mode": "background", "interval": "1h"}
        )
        _seconds, snapshot = _round(config)
    _messages(snapshot)

    class Fixed:  # the background source's answer: the latest round's snapshot
        def snapshot(self, scrape_timeout: float | None = None) -> Snapshot:
            return snapshot

    ours = CollectorRegistry(auto_describe=False)
    ours.register(SmsCollector(Fixed(), cached=True))
    static = static_registry(ours)
    ours_text, static_text = generate_latest(ours), generate_latest(static)
    if ours_text.count(b"\n") < tags * 5 or abs(len(ours_text) - len(static_text)) > len(ours_text):
        raise RuntimeError("the two registries do not expose the same series")
    ours_s = statistics.median(_times(lambda: generate_latest(ours), repeat))
    static_s = statistics.median(_times(lambda: generate_latest(static), repeat))
    return figure(
        "serving_render",
        f"/metrics render / static generate_latest, {tags:,} tags",
        ours_s / static_s,
        "<=",
        1.5,
        f"ours {ours_s * 1000:.1f} ms, static registry {static_s * 1000:.1f} ms "
        f"({len(families(snapshot))} families, median of {repeat})",
    )


def _times(fn: Callable[[], object], repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        out.append(time.perf_counter() - started)
    return out


def concurrent_scrapes(
    scrapes: int = 10, tags: int = 20, concurrency: int = 4, latency: float = 0.05
) -> Figure:
    """Simultaneous scrapes in scrape mode: upstream connections opened / concurrency.

    Each scrape is what the HTTP server's thread does for ``/metrics``: ``generate_latest`` of
    the registry holding the collector, here from ``scrapes`` threads released at once."""
    with SimulatorProcess(latency=latency, page_size=PAGE_SIZE) as sim:
        names = _tags(sim, "scrape", tags, 2)
        exporter = Exporter(make_config(sim.url, names, concurrency=concurrency))
        registry = CollectorRegistry(auto_describe=False)
        registry.register(exporter.collector)
        barrier = threading.Barrier(scrapes)

        def scrape(_: int) -> bytes:
            barrier.wait(10)
            return generate_latest(registry)

        try:
            sim.call("reset_stats")
            with ThreadPoolExecutor(scrapes) as pool:
                texts = list(pool.map(scrape, range(scrapes)))
            stats = sim.stats()
        finally:
            exporter.close()
    up = f'sms_up{{tag="{names[0]}"}} 1.0'.encode()
    if not all(up in text for text in texts):
        raise RuntimeError("a scrape did not get the tags' counts")
    opened = stats["connections"]
    return figure(
        "scrape_connections",
        f"upstream connections / concurrency, {scrapes} simultaneous scrapes",
        opened / concurrency,
        "<=",
        1.0,
        f"{opened} connections, {stats['requests']} requests, at most "
        f"{stats['max_in_flight']} in flight, concurrency {concurrency}",
    )


# -- 8: incremental collection -------------------------------------------------------------


def incremental(
    messages: int = 1_000_000,
    rate: float = 20.0,
    rounds: int = 5,
    interval: float = 10.0,
    order: str = "oldest",
) -> list[Figure]:
    """One long-lived tag of ``messages`` (pages of 100) growing by ``rate`` a second: what a
    steady round asks against the pages that can change, against a whole read, and after a
    restart with the state file."""
    import tempfile

    from smsp_exporter.collection import pages as inc

    spec = TagSpec(
        "long",
        messages + int(rate * interval * (rounds + 4)),
        rate=rate,
        start=FROZEN_AT - messages / rate,
        delivered=0.95,
        not_delivered=0.05,
        stop=0.0,
        report_delay=30.0,
        order=order,
    )
    with SimulatorProcess(page_size=PAGE_SIZE) as sim, tempfile.TemporaryDirectory() as tmp:
        sim.add_tags([spec])
        config = make_config(
            sim.url,
            ["long"],
            collection={"state_file": f"{tmp}/state.db"},
            concurrency=8,
            max_pages=20_000,
        )
        steady, changeable = [], []
        exporter = Exporter(config)
        try:
            sim.call("reset_stats")
            # The first read: at most api.max_pages pages a round, as many rounds as it takes.
            while exporter.poller.run_round(3600.0).tags[0].counts is None:
                pass
            whole = sim.stats()["requests"]
            for _ in range(rounds):
                state = exporter.poller.incremental.tags["long"]
                before_total, size = state.total, state.size
                live = sum(1 for seg in state.segments if seg.live and seg.hi != state.total)
                frozen = len(state.segments) - live
                audit = max(inc.AUDIT_MIN, math.ceil(frozen / inc.AUDIT_CYCLE))
                sim.call("advance", interval)
                sim.call("reset_stats")
                snapshot = exporter.poller.run_round(600.0)
                steady.append(sim.stats()["requests"])
                grown = exporter.poller.incremental.tags["long"].total - before_total
                changeable.append(math.ceil(grown / size) + 1 + live + audit)
            counts = snapshot.tags[0].counts
            truth = sim.call("expected", "long")
            if counts is None or dict(counts.statuses) != truth["statuses"]:
                raise RuntimeError("the incremental rounds miscounted")
        finally:
            exporter.close()
        exporter = Exporter(config)  # a restart, with the state file
        try:
            sim.call("advance", interval)
            sim.call("reset_stats")
            exporter.poller.run_round(600.0)
            restart = sim.stats()["requests"]
        finally:
            exporter.close()
    mean = statistics.mean(steady)
    ratio = max(s / c for s, c in zip(steady, changeable, strict=True))
    detail = f"{messages:,} messages, +{rate:g}/s, rounds of {interval:g} s"
    return [
        figure(
            "incremental_vs_changeable",
            "steady-round requests / pages that can change",
            ratio,
            "<=",
            1.2,
            f"requests {steady}, changeable pages {changeable} ({detail})",
        ),
        figure(
            "incremental_vs_whole",
            "whole-read requests / steady-round requests",
            whole / mean,
            ">=",
            50.0,
            f"whole read {whole} requests, steady round {mean:.1f} on average",
        ),
        figure(
            "incremental_restart",
            "first round after a restart / steady round (state file)",
            restart / mean,
            "<=",
            1.5,
            f"{restart} requests after the restart, {mean:.1f} in a steady round",
        ),
    ]


# -- the request budget (issue 19) -------------------------------------------------------------

DAY = 86400.0
DEFAULT_RATE = 5.0  # api.max_requests_per_second's default
SCRAPE_INTERVAL, SCRAPE_TIMEOUT = 15.0, 10.0  # Prometheus's usual scrape, a 10 s timeout
BACKGROUND_INTERVAL = 60.0  # collection.interval's default


def default_budget(seconds: float) -> int:
    """The requests the defaults give a round of ``seconds`` (the rate limit's spacing)."""
    from smsp_exporter.client import RATE_JITTER_MARGIN
    from smsp_exporter.collection.reader import budget_for

    budget = budget_for(DEFAULT_RATE, seconds, (1 + RATE_JITTER_MARGIN) / DEFAULT_RATE)
    assert budget is not None
    return budget


class _Planned:
    """An exporter over a simulator process whose rounds get the defaults' request budget
    without waiting for the rate limit (rate limit off, the budget counted): the plan the
    exporter makes at 5 requests a second, measured in requests. The exporter's clock follows
    the simulator's, which rounds advance by hand."""

    def __init__(self, sim: SimulatorProcess, tags: list[str], budget: int | None) -> None:
        from smsp_exporter.simulator.campaigns import DEFAULT_START_TIME

        self.sim, self.budget, self.t = sim, budget, float(sim.call("now"))
        self.exporter = Exporter(make_config(sim.url, tags))
        self.exporter.poller.reader.clock = lambda: DEFAULT_START_TIME + self.t

    def round(self, advance: float, seconds: float = 10.0) -> tuple[int, Snapshot]:
        self.sim.call("advance", advance)
        self.t += advance
        before = self.sim.stats()["requests"]
        snapshot = self.exporter.poller.run_round(seconds, requests=self.budget)
        return self.sim.stats()["requests"] - before, snapshot

    def close(self) -> None:
        self.exporter.close()


def _finished(name: str, messages: int = 300) -> TagSpec:
    """A campaign sent three days before the simulator's clock: every report in."""
    return TagSpec(name, messages, start=FROZEN_AT - 3 * DAY, report_delay=30.0)


def _live(name: str, per_day: float, never: float = 0.02, sent: int = 40_000) -> TagSpec:
    """A long-lived tag sending ``per_day`` messages a day, ``sent`` of them already, reports
    after ~30 s, ``never`` of them never reported."""
    rate = per_day / DAY
    return TagSpec(
        name,
        sent + 200_000,
        rate=rate,
        start=FROZEN_AT - sent / rate,
        delivered=0.95 - never,
        not_delivered=0.05,
        stop=0.0,
        report_delay=30.0,
    )


def _until_counted(planned: _Planned, interval: float, limit: int = 60) -> tuple[int, float]:
    """Rounds until every tag has counts, and the least share of a round's budget first reads
    got while some were pending."""
    share = 1.0
    for n in range(1, limit + 1):
        _, snapshot = planned.round(interval, interval)
        if all(s.counts is not None for s in snapshot.tags):
            return n, share
        spent = snapshot.budget.spent if snapshot.budget is not None else {}
        if planned.budget:
            share = min(share, spent.get("first_read", 0) / planned.budget)
    raise RuntimeError("first reads never ended")


def _steady(planned: _Planned, interval: float, rounds: int) -> list[int]:
    out = []
    for _ in range(rounds):
        made, snapshot = planned.round(interval, interval)
        if not all(s.counts is not None and s.up for s in snapshot.tags):
            raise RuntimeError("a tag lost its counts in a steady round")
        out.append(made)
    return out


def budget(
    finished_tags: tuple[int, int] = (30, 200),
    live_sent: int = 45_000,
    steady_minutes: float = 30.0,
) -> list[Figure]:
    """Issue 19's cases at the defaults (5 requests/s): finished campaigns counted within a
    few rounds and then cheap; a long-lived tag with never-reported messages; and what the
    default budget serves (docs/performance.md, "What the default budget serves")."""
    scrape_budget = default_budget(SCRAPE_TIMEOUT - min(1.0, SCRAPE_TIMEOUT * 0.1))
    background_budget = default_budget(BACKGROUND_INTERVAL)
    few, many = finished_tags
    out: list[Figure] = []
    with SimulatorProcess(page_size=PAGE_SIZE) as sim:
        # (a) finished campaigns, scrape mode, a 10 s scrape timeout.
        tags = [f"fini-{i:03d}" for i in range(few)]
        sim.add_tags([_finished(t) for t in tags])
        planned = _Planned(sim, tags, scrape_budget)
        try:
            rounds, share = _until_counted(planned, SCRAPE_INTERVAL)
            steady = _steady(planned, SCRAPE_INTERVAL, int(steady_minutes * 60 / SCRAPE_INTERVAL))
        finally:
            planned.close()
        per_tag_scrape = statistics.mean(steady) / few
        out.append(
            figure(
                "budget_finished_scrape_rounds",
                f"{few} finished tags of 3 pages, scrape (10 s timeout): scrapes until all counted",
                rounds,
                "<=",
                4,
                f"budget {scrape_budget} requests a scrape; steady {per_tag_scrape:.3f} request "
                f"a tag a scrape over {steady_minutes:g} min",
            )
        )
        out.append(
            figure(
                "budget_first_read_share",
                "share of a round's budget first reads get while pending, nothing else due",
                share,
                ">=",
                0.9,
                f"{few} finished tags, budget {scrape_budget}",
            )
        )
        # (b) many finished campaigns, background mode, 60 s rounds.
        tags = [f"bg-{i:03d}" for i in range(many)]
        sim.add_tags([_finished(t) for t in tags])
        planned = _Planned(sim, tags, background_budget)
        try:
            rounds, _ = _until_counted(planned, BACKGROUND_INTERVAL)
            steady = _steady(
                planned, BACKGROUND_INTERVAL, int(steady_minutes * 60 / BACKGROUND_INTERVAL)
            )
        finally:
            planned.close()
        per_tag_background = statistics.mean(steady) / many
        out.append(
            figure(
                "budget_finished_background_rounds",
                f"{many} finished tags of 3 pages, background (60 s): rounds until all counted",
                rounds,
                "<=",
                4,
                f"budget {background_budget} requests a round",
            )
        )
        out.append(
            figure(
                "budget_finished_background_steady",
                f"{many} finished tags, background: steady requests a tag a round",
                per_tag_background,
                "<=",
                0.2,
                f"rounds of {min(steady)}-{max(steady)} requests over {steady_minutes:g} min",
            )
        )
        # (c) a long-lived tag, one message every 10 s, 2 % never reported: against the
        # rounds without a budget (every page that may change, every round: as before).
        sim.add_tags([_live("otp", 8640.0, sent=live_sent)])
        planned = _Planned(sim, ["otp"], default_budget(10.0))
        try:
            _until_counted(planned, 10.0)
            budgeted = _steady(planned, 10.0, int(steady_minutes * 6))
        finally:
            planned.close()
        unplanned = _Planned(sim, ["otp"], None)
        try:
            _until_counted(unplanned, 10.0)
            every = _steady(unplanned, 10.0, 5)
        finally:
            unplanned.close()
        out.append(
            figure(
                "budget_never_reported_steady",
                "a tag at 1 message/10 s, 2 % never reported: most requests of a steady round",
                max(budgeted),
                "<=",
                12,
                f"mean {statistics.mean(budgeted):.2f}; without the schedule (every page that "
                f"may change, every round) {statistics.mean(every):.0f} a round",
            )
        )
        # What the default budget serves: a live tag's steady cost, in each mode.
        sim.add_tags([_live("vif", 8640.0 * 10, sent=live_sent)])
        costs = {}
        for mode, interval, round_budget_ in (
            ("scrape", SCRAPE_INTERVAL, scrape_budget),
            ("background", BACKGROUND_INTERVAL, background_budget),
        ):
            planned = _Planned(sim, ["vif"], round_budget_)
            try:
                _until_counted(planned, interval)
                _steady(planned, interval, 4)  # past the first read's refresh
                costs[mode] = statistics.mean(
                    _steady(planned, interval, int(steady_minutes * 60 / interval))
                )
            finally:
                planned.close()
    for mode, interval, round_budget_, per_finished in (
        ("scrape", SCRAPE_INTERVAL, scrape_budget, per_tag_scrape),
        ("background", BACKGROUND_INTERVAL, background_budget, per_tag_background),
    ):
        # The steady budget kept for tags: what is left after a 5 % audit and a margin of a
        # tenth for first reads of new tags.
        usable = round_budget_ * 0.85
        out.append(
            Figure(
                f"capacity_{mode}_finished_tags",
                f"{mode}: finished campaigns (3 pages) the default budget keeps up with",
                math.floor(usable / max(per_finished, 1e-9)),
                "",
                None,
                f"{per_finished:.3f} request a tag a round of {interval:g} s, budget "
                f"{round_budget_}; first reads of n such tags take 3n/{round_budget_} rounds",
            )
        )
        out.append(
            Figure(
                f"capacity_{mode}_live_tags",
                f"{mode}: tags sending 86,400 messages a day (2 % never reported) it keeps up with",
                math.floor(usable / costs[mode]),
                "",
                None,
                f"{costs[mode]:.2f} requests a tag a round of {interval:g} s",
            )
        )
        # One tag alone: its new messages' pages fill what the round has left.
        pages_per_round = usable - costs[mode]
        out.append(
            Figure(
                f"capacity_{mode}_sends_per_day",
                f"{mode}: messages a day one tag may send and still be read every round",
                math.floor(pages_per_round * PAGE_SIZE * DAY / interval),
                "",
                None,
                f"{pages_per_round:.0f} pages of {PAGE_SIZE} new messages a round of "
                f"{interval:g} s",
            )
        )
    return out


def _status_snapshot(tags: int, taken_at: float, delivered: int) -> Snapshot:
    """A round's snapshot of ``tags`` tags in every state the status page shows: most up, some
    failing (with the API's message), some deferred, some in their first read."""
    states = []
    for i in range(tags):
        tag = f"campagne-{i:04d}"
        if i % 50 == 1:
            states.append(
                TagState(
                    tag,
                    False,
                    None,
                    error="api_code_10",
                    error_message="SMS Partner API error code 10: the API key was rejected "
                    "(API said: 'Cle API invalide')",
                    last_success=taken_at - 3600,
                )
            )
            continue
        if i % 25 == 2:
            states.append(
                TagState(
                    tag, True, None, incremental=RoundInfo("first_read", "unknown", 0, 0, 40, 100)
                )
            )
            continue
        statuses = {"Delivered": delivered + i, "Not delivered": i % 7, "Waiting": 30}
        counts = TagCounts(tag, statuses, i % 3, sum(statuses.values()), 2)
        deferred = 2 if i % 25 == 3 else 0
        states.append(
            TagState(
                tag,
                True,
                counts,
                last_success=taken_at,
                last_read=taken_at - 600 * bool(deferred),
                deferred=deferred,
                behind_since=taken_at - 600 if deferred else None,
            )
        )
    return Snapshot(tuple(states), taken_at, 2.0, 1000)


def status_page(tags: int = 500, repeat: int = 15) -> list[Figure]:
    """The status page (``/``) of ``tags`` tags: its render time against ``/metrics``'s for the
    same snapshot, and its size. No API is called: the page reads the latest snapshot."""
    names = [f"campagne-{i:04d}" for i in range(tags)]
    config = make_config("http://127.0.0.1:9/v1", names)  # never asked: no round runs
    with Exporter(config) as exporter:
        now = time.time()
        for taken_at, delivered in ((now - 1800, 100), (now - 60, 160)):
            snapshot = _status_snapshot(tags, taken_at, delivered)
            exporter.outcomes.record(snapshot)
        exporter.poller.latest = snapshot

        def page() -> bytes:
            return b"".join(exporter.status({"REQUEST_METHOD": "GET"}, lambda *args: None))

        body = page()
        if body.count(b'<th scope="row"') != tags or b"% <span" not in body:
            raise RuntimeError("the status page does not show every tag and its share")

        class Fixed:
            def snapshot(self, scrape_timeout: float | None = None) -> Snapshot:
                return snapshot

        registry = CollectorRegistry(auto_describe=False)
        registry.register(SmsCollector(Fixed(), cached=True))
        page_s = statistics.median(_times(page, repeat))
        metrics_s = statistics.median(_times(lambda: generate_latest(registry), repeat))
        memory = len(exporter.outcomes)
    return [
        figure(
            "status_page_vs_metrics",
            f"status page render / `/metrics` render, {tags:,} tags",
            page_s / metrics_s,
            "<=",
            1.0,
            f"status page {page_s * 1000:.1f} ms, /metrics {metrics_s * 1000:.1f} ms "
            f"(median of {repeat})",
        ),
        figure(
            "status_page_kb",
            f"status page size (kB), {tags:,} tags",
            len(body) / 1000,
            "<=",
            tags * 1.0,
            f"{len(body) / tags:.0f} bytes a tag; {memory} samples kept for the recent "
            "Not-delivered share",
        ),
    ]
