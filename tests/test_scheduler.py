"""The request budget (issue 19): the scheduler alone (priorities, reservations, the audit's
share, all-or-nothing whole reads), then rounds over real HTTP against the simulator: finished
campaigns all counted within a few rounds, steady rounds that cost what can change, a deferred
tag that keeps its counts, and the property that no mix of tags and budgets starves a first
read (never a livelock).

Rounds here get their request budget explicitly (``run_round(seconds, requests=N)``), with
the rate limit off: the same plan as the rate limit would give, without waiting for it. The
real-time cases (the rate limit itself, scrapes) are marked ``slow``; ``./dev.sh bench``
measures them too (docs/performance.md)."""

from __future__ import annotations

import itertools
import math
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smsp_exporter.client import RATE_JITTER_MARGIN
from smsp_exporter.collection.reader import budget_for
from smsp_exporter.collection.rounds import round_budget
from smsp_exporter.collection.scheduler import AUDIT_SHARE, Purpose, Scheduler, Want
from smsp_exporter.config import config_from_dict
from smsp_exporter.exporter import Exporter
from smsp_exporter.simulator import Message, Simulator, TagSpec

from .helpers import samples, scrape, serve, value

KEY = "budget-test-key"
DAY = 86400.0
# What the defaults give (5 requests/s, spaced by the rate limit's jitter margin).
SPACING = (1 + RATE_JITTER_MARGIN) / 5
SCRAPE_10S = budget_for(5, round_budget(10.0), SPACING)  # a scrape with a 10 s timeout
BACKGROUND_60S = budget_for(5, 60.0, SPACING)  # a background round at the default interval


# -- the scheduler alone ---------------------------------------------------------------------


def want(purpose, tag, page=1, key=(0.0,), then=0, atomic=False):
    return Want(purpose, key, tag, page, then, atomic)


def drain(sched):
    out = []
    while (w := sched.take()) is not None:
        out.append(w)
    return out


def test_reads_are_handed_out_most_urgent_first_within_the_budget():
    sched = Scheduler(budget=4)
    for purpose in reversed(Purpose):
        sched.offer(want(purpose, f"t-{purpose.label}"))
    taken = drain(sched)
    assert [w.purpose for w in taken] == [
        Purpose.TOTAL,
        Purpose.NEW,
        Purpose.WAITING,
        Purpose.WHOLE,
    ]
    assert sched.deferred() == {Purpose.FIRST_READ: 1, Purpose.COLD_CHECK: 1, Purpose.AUDIT: 1}


def test_what_a_total_promises_is_reserved_before_first_reads():
    sched = Scheduler(budget=5)
    sched.offer(want(Purpose.TOTAL, "hot", then=3))
    for page in range(1, 6):
        sched.offer(want(Purpose.FIRST_READ, "new", page, key=(0.0, page)))
    assert sched.take().tag == "hot"  # its 3 follow-ups are now reserved
    first = drain(sched)
    assert [w.tag for w in first] == ["new"]  # 5 - 1 - 3 reserved = 1 left for first reads
    for page in (2, 3, 4):  # the answer came: its pages take what was kept for them
        sched.offer(want(Purpose.WAITING, "hot", page))
    assert [w.tag for w in drain(sched)] == ["hot"] * 3
    assert sched.left == 0


def test_a_tag_done_early_gives_back_what_it_reserved():
    sched = Scheduler(budget=4)
    sched.offer(want(Purpose.TOTAL, "hot", then=3))
    sched.offer(want(Purpose.FIRST_READ, "new"))
    sched.offer(want(Purpose.FIRST_READ, "new", 2, key=(0.0, 2)))
    assert sched.take().tag == "hot"
    assert drain(sched) == []  # all reserved
    sched.release("hot")  # its total showed nothing more to read
    assert [w.page for w in drain(sched)] == [1, 2]


def test_the_audit_takes_at_most_its_share_of_a_budget():
    sched = Scheduler(budget=100)
    for page in range(50):
        sched.offer(want(Purpose.AUDIT, f"t{page}", page))
    assert len(drain(sched)) == math.floor(AUDIT_SHARE * 100)
    unlimited = Scheduler(budget=None)
    for page in range(50):
        unlimited.offer(want(Purpose.AUDIT, f"t{page}", page))
    assert len(drain(unlimited)) == 50


def test_a_whole_read_goes_only_if_all_its_pages_fit_but_the_stalest_always_goes():
    sched = Scheduler(budget=10)
    sched.offer(want(Purpose.WHOLE, "grand", key=(1.0,), then=20, atomic=True))  # stalest
    sched.offer(want(Purpose.WHOLE, "petit", key=(2.0,), then=2, atomic=True))
    taken = drain(sched)
    # The stalest goes though it cannot fit (a tag larger than any round would never be
    # tried); what it reserved leaves nothing for the other, which waits for its turn.
    assert [w.tag for w in taken] == ["grand"]
    sched = Scheduler(budget=10)
    sched.offer(want(Purpose.WHOLE, "petit", key=(1.0,), then=2, atomic=True))
    sched.offer(want(Purpose.WHOLE, "grand", key=(2.0,), then=20, atomic=True))
    assert [w.tag for w in drain(sched)] == ["petit"]
    assert sched.deferred() == {Purpose.WHOLE: 1}


def test_a_read_never_sent_is_not_spent():
    sched = Scheduler(budget=1)
    sched.offer(want(Purpose.TOTAL, "a"))
    taken = sched.take()
    sched.refund(taken)
    assert sched.left == 1 and sched.pending() == {"a": 1}


# -- rounds over HTTP --------------------------------------------------------------------------


@pytest.fixture
def sim():
    simulator = Simulator(api_key=KEY, page_size=100, seed=11).start()
    simulator.freeze(at=0)
    try:
        yield simulator
    finally:
        simulator.stop()


def finished(name, messages=300, **fields):
    """A campaign sent three days ago: every report in, its never-reported messages final."""
    return TagSpec(name, messages, start=-3 * DAY, **fields)


def config(sim, tags, **collection):
    return config_from_dict(
        {
            "api": {"url": sim.url, "key": KEY, "max_requests_per_second": 0, "retries": 0},
            "collection": collection,
            "tags": list(tags),
        },
        source="<test>",
    )


def follow(exporter, sim):
    """The exporter's clock follows the simulator's (rounds advance it by hand)."""
    exporter.poller.reader.clock = lambda: sim.start_time + sim.now()


def run(exporter, sim, requests, seconds=9.0):
    before = sim.stats()["requests"]
    snapshot = exporter.poller.run_round(seconds, requests=requests)
    return sim.stats()["requests"] - before, snapshot


def exact(state, sim):
    truth = sim.expected(state.tag)
    assert state.counts is not None, state
    assert dict(state.counts.statuses) == truth["statuses"], state.tag
    assert state.counts.stop == truth["stop"], state.tag


def test_thirty_finished_campaigns_are_all_counted_from_the_fourth_scrape(sim):
    """Issue 19 (a), the plan: 30 tags of 3 pages, a 10 s scrape's budget at the defaults."""
    tags = [f"campagne-{i:02d}" for i in range(30)]
    for tag in tags:
        sim.add_tag(finished(tag))
    with Exporter(config(sim, tags)) as exporter:
        follow(exporter, sim)
        for n in range(1, 9):
            sim.advance(15)  # a scrape every 15 s
            made, snapshot = run(exporter, sim, SCRAPE_10S)
            assert made <= SCRAPE_10S
            assert all(s.up and s.error is None for s in snapshot.tags)
            counted = [s for s in snapshot.tags if s.counts is not None]
            if n >= 4:
                assert len(counted) == 30, n
            for state in counted:
                exact(state, sim)
            if n <= 2:  # (d): first reads pending, nothing else due: they get >= 90 %
                assert snapshot.budget.spent.get("first_read", 0) >= 0.9 * SCRAPE_10S
        # Steady: finished campaigns are quiet, read every cold_check_interval at most.
        assert made <= 3, made


def test_two_hundred_finished_campaigns_cost_a_fifth_of_a_request_each_a_round(sim):
    """Issue 19 (b): background mode, 60 s rounds: all counted within 4 rounds, then at most
    0.2 request a tag a round on average."""
    tags = [f"c{i:03d}" for i in range(200)]
    for tag in tags:
        sim.add_tag(finished(tag))
    with Exporter(config(sim, tags)) as exporter:  # rounds run by hand, as background would
        follow(exporter, sim)
        for _ in range(4):
            sim.advance(60)
            _, snapshot = run(exporter, sim, BACKGROUND_60S, 60.0)
        assert all(s.counts is not None and s.up for s in snapshot.tags)
        steady = []
        for _ in range(30):  # half an hour
            sim.advance(60)
            made, snapshot = run(exporter, sim, BACKGROUND_60S, 60.0)
            steady.append(made)
            assert all(s.counts is not None and s.up for s in snapshot.tags)
        per_tag = sum(steady) / len(steady) / len(tags)
        print(f"\nsteady rounds: {per_tag:.3f} request a tag a round ({steady})")
        assert per_tag <= 0.2, steady
        for state in snapshot.tags:
            exact(state, sim)
        # Each tag's total was read again within cold_check_interval (10 min).
        now = snapshot.taken_at
        assert all(now - s.last_read <= 600 + 120 for s in snapshot.tags)


def test_a_never_reported_share_costs_a_handful_of_reads_not_a_page_a_round(sim):
    """Issue 19 (c): 50,000 messages, one every 10 s, reports after ~30 s, 2 % never
    reported: steady rounds (10 s) cost at most 12 requests; counts exact once sending
    stops and the schedule has passed."""
    sim.add_tag(
        TagSpec(
            "otp",
            50_000,
            rate=0.1,
            start=-45_000 * 10.0,  # 45,000 sent, 5,000 to go
            delivered=0.93,
            not_delivered=0.05,
            report_delay=30.0,
            stop=0.0,
        )
    )
    budget = budget_for(5, 10.0, SPACING)
    with Exporter(config(sim, ["otp"])) as exporter:  # 10 s rounds, by hand
        follow(exporter, sim)
        rounds = 0
        while True:
            sim.advance(10)
            _, snapshot = run(exporter, sim, budget, 10.0)
            rounds += 1
            if snapshot.tags[0].counts is not None:
                break
            assert rounds < 30
        steady = []
        for _ in range(180):  # half an hour of 10 s rounds
            sim.advance(10)
            made, snapshot = run(exporter, sim, budget, 10.0)
            steady.append(made)
        print(f"\nsteady rounds: max {max(steady)}, mean {sum(steady) / len(steady):.2f}")
        assert max(steady) <= 12, steady
        # Sending stops (5,000 left: 50,000 s), every report arrives: exact within a quarter
        # of the youngest age the last read saw (here: pages read every few hours at most).
        sim.advance(50_000 + 3 * 3600)
        for _ in range(3):
            sim.advance(6 * 3600)
            made, snapshot = run(exporter, sim, budget, 10.0)
        exact(snapshot.tags[0], sim)


def test_a_report_is_counted_within_a_quarter_of_its_age(sim):
    """Issue 19 (c), the schedule: a page whose youngest Waiting message is A old at a read
    is read again A/4 later, so a report arriving at age A waits at most about A/4."""
    old = int(sim.start_time - 3 * DAY)
    sent = int(sim.start_time - 1000)  # the first page: ten messages sent 1000 s ago, Waiting

    def messages(status):
        waiting = [Message(f"+3360000{i:04d}", status, False, sent) for i in range(10)]
        delivered = [Message(f"+3361000{i:04d}", "Delivered", False, old) for i in range(990)]
        return waiting + delivered

    sim.set_messages("rdv", messages("Waiting"))
    with Exporter(config(sim, ["rdv"])) as exporter:
        follow(exporter, sim)
        run(exporter, sim, 40)
        reads = []
        for _ in range(12):
            sim.advance(100)
            _, snapshot = run(exporter, sim, 40)
            reads.append(snapshot.budget.spent.get("waiting", 0))
        # Read again at 1000/4 = 250 s later (3rd round), then 1300/4 = 325 s after that
        # (6th or 7th), then ~400 s (11th): a handful of reads in 1200 s, not twelve.
        assert 2 <= sum(reads) <= 4, reads
        # Every report arrives now: seen within a quarter of the messages' age (and a round).
        sim.set_messages("rdv", messages("Delivered"))
        age = 1000 + sim.now()
        waited = 0.0
        while True:
            sim.advance(100)
            waited += 100
            _, snapshot = run(exporter, sim, 40)
            if snapshot.tags[0].counts.statuses.get("Waiting", 0) == 0:
                break
            assert waited <= age / 4 + 100, waited
        exact(snapshot.tags[0], sim)


def test_a_new_message_on_a_cold_tag_waits_at_most_the_check_interval_on_a_hot_one_a_round(sim):
    """Issue 19 (f)."""
    old = sim.start_time - 3 * DAY
    cold = [Message(f"+3361000{i:04d}", "Delivered", False, int(old + i)) for i in range(150)]
    sim.set_messages("froid", cold)
    sim.add_tag(
        TagSpec("chaud", 5000, rate=1.0, start=-4000.0, delivered=1.0, not_delivered=0.0, stop=0)
    )
    with Exporter(config(sim, ["froid", "chaud"], cold_check_interval="10m")) as exporter:
        follow(exporter, sim)
        for _ in range(3):
            sim.advance(60)
            run(exporter, sim, 50)
        sim.set_messages(
            "froid",
            [
                *cold,
                Message("+33611111111", "Not delivered", False, int(sim.start_time + sim.now())),
            ],
        )
        waited = 0
        while True:
            sim.advance(60)
            waited += 60
            _, snapshot = run(exporter, sim, 50)
            states = {s.tag: s for s in snapshot.tags}
            exact(states["chaud"], sim)  # hot: every round
            if states["froid"].counts.statuses.get("Not delivered"):
                break
            assert waited <= 600, waited
        exact(states["froid"], sim)


def test_a_deferred_tag_keeps_its_counts_and_shows_its_staleness(sim):
    """Deferred is not failed: a budget too small for two busy tags leaves one for later;
    it keeps its counts and sms_up 1, its freshness stays behind, the backlog says why."""
    for name in ("a", "b"):
        sim.add_tag(TagSpec(name, 3000, rate=20.0, start=-100.0, report_delay=5.0))
    with Exporter(config(sim, ["a", "b"])) as exporter:
        follow(exporter, sim)
        run(exporter, sim, None)  # both counted
        sim.advance(10)
        _, snapshot = run(exporter, sim, 1)  # one request: one total read
        states = {s.tag: s for s in snapshot.tags}
        assert all(s.up and s.counts is not None and s.error is None for s in states.values())
        behind = [s for s in states.values() if s.deferred]
        assert len(behind) == 2  # one did its total but not its pages, the other nothing
        assert all(s.behind_since is not None for s in behind)
        assert snapshot.budget.requests == 1 and sum(snapshot.budget.deferred.values()) >= 2
        sim.advance(10)
        _, snapshot = run(exporter, sim, None)  # room again: both catch up
        for state in snapshot.tags:
            assert state.deferred == 0 and state.behind_since is None
            exact(state, sim)


def test_the_budget_and_its_spending_are_exported(sim):
    sim.add_tag(finished("fini"))
    cfg = config_from_dict(
        {
            "api": {"url": sim.url, "key": KEY, "max_requests_per_second": 50},
            "tags": ["fini"],
        },
        source="<test>",
    )
    with serve(cfg) as url:
        found = samples(scrape(url, headers={"X-Prometheus-Scrape-Timeout-Seconds": "2"}))
    budget = value(found, "sms_collection_budget_requests")
    assert budget == budget_for(50, round_budget(2.0), (1 + RATE_JITTER_MARGIN) / 50)
    assert value(found, "sms_collection_requests_total", purpose="first_read") == 3
    assert value(found, "sms_collection_requests_total", purpose="audit") == 0
    assert value(found, "sms_collection_deferred_reads", purpose="total") == 0
    assert value(found, "sms_collection_cold_check_interval_seconds") == 600
    assert value(found, "sms_collection_stalest_read_age_seconds") < 5
    assert value(found, "sms_collection_last_read_timestamp_seconds", tag="fini") > 0


# -- never a livelock --------------------------------------------------------------------------


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    sizes=st.lists(st.integers(min_value=1, max_value=60), min_size=1, max_size=12),
    budget=st.integers(min_value=1, max_value=25),
    live=st.booleans(),
)
def test_every_tag_is_counted_within_its_share_of_the_budget(sizes, budget, live):
    """Issue 19 (e): whatever the tags (messages, pages of 10) and the budget, every tag has
    counts within ceil(first-read pages / budget) + 2 rounds, and keeps them. ``live``: one
    more tag keeps sending, so that steady work competes with the first reads."""
    simulator = Simulator(api_key=KEY, page_size=10, seed=1).start()
    simulator.freeze(at=0)
    try:
        tags = [f"t{i}" for i in range(len(sizes))]
        for tag, messages in zip(tags, sizes, strict=True):
            simulator.add_tag(finished(tag, messages))
        pages = sum(math.ceil(n / 10) for n in sizes)
        if live:
            simulator.add_tag(TagSpec("vit", 100_000, rate=0.5, start=-20.0))
        with Exporter(config(simulator, [*tags, *(["vit"] if live else [])])) as exporter:
            follow(exporter, simulator)
            bound = math.ceil(pages / budget) + 2
            if live:  # the live tag's first read (its 1 page) and its total each round
                bound = math.ceil((pages + 1) / max(1, budget - 2)) + 2
            for n in range(1, bound + 3):
                simulator.advance(10)
                made, snapshot = run(exporter, simulator, budget, 10.0)
                assert made <= budget
                states = {s.tag: s for s in snapshot.tags}
                assert all(s.up for s in states.values())
                if n >= bound:
                    for tag in tags:
                        assert states[tag].counts is not None, (n, bound, tag)
                        exact(states[tag], simulator)
    finally:
        simulator.stop()


# -- in real time --------------------------------------------------------------------------


@pytest.mark.slow
def test_thirty_finished_campaigns_in_real_time_at_the_defaults(sim):
    """Issue 19 (a) as a user meets it: defaults (5 requests/s), scrape mode, a 10 s scrape
    timeout, 30 finished tags of 3 pages; every tag has counts from the 4th scrape on."""
    tags = [f"campagne-{i:02d}" for i in range(30)]
    for tag in tags:
        sim.add_tag(finished(tag))
    cfg = config_from_dict({"api": {"url": sim.url, "key": KEY}, "tags": tags}, source="<t>")
    with serve(cfg) as url:
        for n in range(1, 6):
            found = samples(scrape(url, headers={"X-Prometheus-Scrape-Timeout-Seconds": "10"}))
            up = [value(found, "sms_up", tag=t) for t in tags]
            assert up == [1.0] * 30, (n, up)
            counted = [
                t
                for t in tags
                if value(found, "sms_status_total", tag=t, status="Delivered") is not None
            ]
            if n >= 4:
                assert len(counted) == 30, (n, len(counted))


def test_a_tag_that_leaves_the_round_leaves_nothing_behind(sim):
    """A tag gone from the configuration (or out of its rolling window) leaves no freshness,
    backlog or whole-read memory: rolling tags would otherwise grow them for ever."""
    for name in ("reste", "part"):
        sim.add_tag(TagSpec(name, 3000, rate=20.0, start=-100.0, report_delay=5.0))
    with Exporter(config(sim, ["reste", "part"])) as exporter:
        follow(exporter, sim)
        run(exporter, sim, None)
        sim.advance(10)
        run(exporter, sim, 1)  # behind: deferred reads
        poller = exporter.poller
        assert "part" in poller.reader.last_read and "part" in poller._behind_since
        poller.round_tags = lambda now=None: {"reste": None}
        sim.advance(10)
        _, snapshot = run(exporter, sim, None)
        assert [s.tag for s in snapshot.tags] == ["reste"]
        assert "part" not in poller.reader.last_read and "part" not in poller._behind_since
        assert "part" not in poller.incremental.tags


@pytest.mark.parametrize("order", ["oldest", "newest"])
def test_rounds_too_small_for_the_growth_never_count_twice_and_catch_up(sim, order):
    """More new pages a round than the budget: each round reads what it can, from the oldest
    new message up; the counts are those of the tag's first messages, never more than were
    sent, and exact once the budget has room again (both listing orders)."""
    sim.add_tag(
        TagSpec("flux", 30_000, rate=50.0, start=-200.0, order=order, report_delay=5.0, stop=0)
    )
    with Exporter(config(sim, ["flux"])) as exporter:
        follow(exporter, sim)
        run(exporter, sim, None)
        sim.advance(10)
        run(exporter, sim, None)  # the order is detected on this growth
        counted = []
        for _ in range(6):
            sim.advance(40)  # 2,000 new messages: 20 pages, against a budget of 8
            made, snapshot = run(exporter, sim, 8)
            state = snapshot.tags[0]
            assert made <= 8 and state.up and state.counts is not None, state
            assert state.incremental.order == order
            assert state.counts.messages <= sim.expected("flux")["total"]
            assert state.deferred > 0
            counted.append(state.counts.messages)
        assert counted == sorted(counted) and counted[-1] > counted[0]  # it moves on
        for _ in range(3):
            _, snapshot = run(exporter, sim, None)
        exact(snapshot.tags[0], sim)
        assert snapshot.tags[0].deferred == 0


def test_a_restart_with_the_state_file_keeps_the_quiet_tags_schedule(sim, tmp_path):
    """The schedule is in the state file: after a restart, finished campaigns keep their
    counts and are not read again before their check is due (a restart is not a storm)."""
    tags = [f"fini-{i}" for i in range(20)]
    for tag in tags:
        sim.add_tag(finished(tag))
    cfg = config(sim, tags, state_file=str(tmp_path / "state.db"))
    with Exporter(cfg) as exporter:
        follow(exporter, sim)
        run(exporter, sim, 100)
        sim.advance(60)
        made, _ = run(exporter, sim, 100)
        assert made == 0
    sim.advance(60)
    with Exporter(cfg) as exporter:
        follow(exporter, sim)
        made, snapshot = run(exporter, sim, 100)
        assert made == 0
        for state in snapshot.tags:
            assert state.up
            exact(state, sim)
        sim.advance(600)  # their check is due: one request each, and the audit's share
        made, snapshot = run(exporter, sim, 100)
        spent = snapshot.budget.spent
        assert spent.get("total", 0) + spent.get("cold_check", 0) == 20, spent
        assert made == 20 + spent.get("audit", 0) and spent.get("audit", 0) <= AUDIT_SHARE * 100


def test_a_retry_after_past_the_deadline_defers_the_others_and_ends_the_round_on_time(sim):
    """Hostile upstream: a 429 asking to wait a minute. The tag that got it fails; the reads
    that can no longer start before the round's deadline are deferred (their tags keep their
    counts and sms_up 1), and the round ends at its deadline, not a minute later."""
    for name in ("a", "b", "c"):
        sim.add_tag(TagSpec(name, 3000, rate=20.0, start=-100.0, report_delay=5.0))
    cfg = config_from_dict(
        {
            "api": {
                "url": sim.url,
                "key": KEY,
                "max_requests_per_second": 50,
                "concurrency": 1,
                "retries": 0,
            },
            "tags": ["a", "b", "c"],
        },
        source="<test>",
    )
    with Exporter(cfg) as exporter:
        follow(exporter, sim)
        snapshot = exporter.poller.run_round(20.0)
        assert all(s.counts is not None for s in snapshot.tags)
        sim.advance(10)
        sim.set_fault("a", "rate_limit", status=429, retry_after=60, times=1)
        began = time.monotonic()
        snapshot = exporter.poller.run_round(2.0)
        assert time.monotonic() - began < 3.0
        states = {s.tag: s for s in snapshot.tags}
        assert not states["a"].up and states["a"].error == "http_429"
        for tag in ("b", "c"):
            assert states[tag].up and states[tag].counts is not None and states[tag].deferred
        assert snapshot.budget.deferred.get("total", 0) >= 2


def test_whole_reads_under_a_budget_take_turns_all_or_nothing(sim):
    """collection.incremental: false: every page of a tag, every round, all or nothing. A
    budget for two such reads a round: the tags read longest ago go first, the others keep
    their counts (deferred), and every tag is read in turn."""
    tags = [f"entier-{i}" for i in range(5)]
    for tag in tags:
        sim.add_tag(finished(tag, 250))  # 3 pages
    with Exporter(config(sim, tags, incremental=False)) as exporter:
        follow(exporter, sim)
        run(exporter, sim, None)  # every tag read once: its size is known
        reader = exporter.poller.reader
        last = dict(reader.last_read)  # on the reader's clock (here the simulator's)
        read_in = {tag: [] for tag in tags}
        for n in range(5):
            sim.advance(10)
            made, snapshot = run(exporter, sim, 7)
            assert made == 6, made  # two whole reads of 3 pages: never a third begun
            for state in snapshot.tags:
                assert state.up and state.counts is not None and state.error is None
                exact(state, sim)
                if reader.last_read[state.tag] != last[state.tag]:
                    read_in[state.tag].append(n)
                    last[state.tag] = reader.last_read[state.tag]
                    assert state.deferred == 0
                else:
                    assert state.deferred and state.behind_since is not None
        # In turn, the stalest first: none waits more than ceil(5 / 2) + 1 rounds.
        for rounds in read_in.values():
            gaps = [b - a for a, b in itertools.pairwise([-1, *rounds])]
            assert rounds and max(gaps) <= 3, read_in
        assert sum(len(rounds) for rounds in read_in.values()) == 10


def test_a_reload_keeps_when_each_tag_was_last_read(sim):
    """The freshness goes on with the page state across a reload: a quiet tag not due for a
    read in the first round after it still shows when it was read."""
    from smsp_exporter.reload import Reloader

    sim.add_tag(finished("fini"))
    configs = [config(sim, ["fini"]), config(sim, ["fini"])]
    reloader = Reloader(lambda: configs[1], configs[0])
    try:
        follow(reloader.exporter, sim)
        run(reloader.exporter, sim, 50)
        before = reloader.exporter.poller.reader.last_read["fini"]
        assert reloader.reload()
        follow(reloader.exporter, sim)
        sim.advance(60)
        made, snapshot = run(reloader.exporter, sim, 50)
        assert made == 0  # quiet: not due
        assert reloader.exporter.poller.reader.last_read["fini"] == before
        assert snapshot.tags[0].last_read is not None
    finally:
        reloader.close()
