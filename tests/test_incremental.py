"""Incremental collection over real HTTP against the simulator: what a steady round costs, that
counts stay exact in both listing orders, that a listing which moves messages is caught, that
the first read spreads over rounds, and that the state file survives restarts (or says why
not)."""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from smsp_exporter import simulator
from smsp_exporter.collection import fold, model, statestore
from smsp_exporter.collection import pages as incremental_pages
from smsp_exporter.collection.reader import read_whole
from smsp_exporter.config import config_from_dict
from smsp_exporter.exporter import Exporter
from smsp_exporter.simulator import Message, Simulator, TagSpec

from .helpers import samples, scrape, serve, statuses_of, value

KEY = "inc-test-key"
# A tag of 50,000 messages at t=0 that keeps growing at 20 a second (a long-lived OTP tag);
# every message gets a report (the never-reported share makes every page of the last 48 h
# changeable: see test_waiting_older_than_the_deadline_is_final).
LIVE = dict(messages=70_000, rate=20.0, start=-2500.0, delivered=0.95, not_delivered=0.05)
STEADY_BUDGET = 36  # "a few dozen requests per steady round"


@pytest.fixture
def sim():
    simulator = Simulator(api_key=KEY, page_size=100, seed=5).start()
    simulator.freeze(at=0)
    try:
        yield simulator
    finally:
        simulator.stop()


def config(sim, tags, **collection):
    return config_from_dict(
        {
            "api": {"url": sim.url, "key": KEY, "max_requests_per_second": 0, "retries": 0},
            "collection": collection,
            "tags": list(tags),
        },
        source="<test>",
    )


def run(exporter, sim, budget=60.0):
    """One round; returns (requests it made, the tag states by tag)."""
    before = sim.stats()["requests"]
    snapshot = exporter.poller.run_round(budget)
    return sim.stats()["requests"] - before, {s.tag: s for s in snapshot.tags}


def exact(state, sim, tag, stop=True):
    truth = sim.expected(tag)
    counts = state.counts
    assert counts is not None, state
    assert dict(counts.statuses) == truth["statuses"]
    if stop:
        assert counts.stop == truth["stop"]


@pytest.mark.parametrize("order", ["oldest", "newest"])
def test_a_growing_tag_costs_a_few_dozen_requests_a_round_and_stays_exact(sim, order, monkeypatch):
    sim.add_tag(TagSpec("otp", **LIVE, stop=0.02, report_delay=20.0, order=order))
    with Exporter(config(sim, ["otp"])) as exporter:
        made, states = run(exporter, sim)
        assert made == 501  # the first read: every page, once
        exact(states["otp"], sim, "otp")
        for seconds in (10, 7, 13, 10, 3, 10):  # growth of 200, 140, 260...: pages straddle
            sim.advance(seconds)
            made, states = run(exporter, sim)
            info = states["otp"].incremental
            assert made <= STEADY_BUDGET, (made, info)
            assert info.order == order and info.mode == "incremental"
            exact(states["otp"], sim, "otp", stop=False)  # a late STOP waits for the audit
        assert states["otp"].incremental.reused_total > 2500
        # Sending stops (all 70,000 sent), every report arrives, then STOP replies too.
        sim.advance(1200)
        run(exporter, sim)
        sim.advance(3 * 86400)
        made, states = run(exporter, sim)
        exact(states["otp"], sim, "otp", stop=False)
        # The audit re-reads every frozen page in turn; here in one round.
        monkeypatch.setattr(incremental_pages, "AUDIT_CYCLE", 1)
        made, states = run(exporter, sim)
        exact(states["otp"], sim, "otp")
        assert made >= 700
        info = states["otp"].incremental
        assert not info.mismatches and not info.fallbacks


@pytest.mark.parametrize("order", ["report", "report-oldest"])
def test_a_listing_sorted_by_report_date_is_caught_and_counted_exactly(sim, order):
    sim.add_tag(TagSpec("otp", 30_000, rate=20.0, start=-600, stop=0.02, order=order))
    with Exporter(config(sim, ["otp"])) as exporter:
        run(exporter, sim)
        for seconds in (10, 10, 10, 5):
            sim.advance(seconds)
            _, states = run(exporter, sim)
            exact(states["otp"], sim, "otp")
        info = states["otp"].incremental
        assert info.order == "whole" and sum(info.fallbacks.values()) == 1
        assert info.mode == "whole"


def test_a_message_removed_mid_list_is_caught_at_the_anchor(sim):
    messages = [
        Message(
            f"+3360000{i:04d}", ("Delivered", "Not delivered")[i % 7 == 0], i % 5 == 0, 1000 + i
        )
        for i in range(2000)
    ]
    sim.set_messages("liste", messages)
    with Exporter(config(sim, ["liste"])) as exporter:
        run(exporter, sim)
        run(exporter, sim)
        # One message leaves page 3 and one arrives at the end: the total does not move, every
        # page after the third shifts by one.
        changed = (
            messages[:250] + messages[251:] + [Message("+33611111111", "Delivered", True, 9999)]
        )
        sim.set_messages("liste", changed)
        _, states = run(exporter, sim)
        assert dict(states["liste"].counts.statuses) == dict(sim.expected("liste")["statuses"])
        assert states["liste"].counts.stop == sim.expected("liste")["stop"]
        assert sum(states["liste"].incremental.fallbacks.values()) == 1


@pytest.mark.parametrize("change", ["shrink", "page_size", "ignore_page"])
def test_a_shrinking_total_a_new_page_size_or_an_ignored_page_never_miscount(sim, change):
    sim.add_tag(TagSpec("otp", 5000, rate=20.0, start=-200, delivered=0.95, not_delivered=0.05))
    with Exporter(config(sim, ["otp"])) as exporter:
        run(exporter, sim)
        sim.advance(10)
        run(exporter, sim)
        if change == "shrink":
            sim.add_tag(TagSpec("otp", 2000, rate=20.0, start=-50))  # redrawn, fewer messages
        elif change == "page_size":
            sim.page_size = 60
        else:
            sim.set_fault("otp", "ignore_page")
        sim.advance(10)
        _, states = run(exporter, sim)
        state = states["otp"]
        if change == "ignore_page":
            assert state.counts.complete is False and state.truncations["page_ignored"] == 1
            assert state.counts.messages == 100  # page 1 once, never doubled
        else:
            exact(state, sim, "otp")
            assert state.incremental.fallbacks == {change: 1}
        sim.clear_faults()
        sim.advance(10)
        _, states = run(exporter, sim)
        if change != "ignore_page":  # that one stays on whole reads for a while: still exact
            exact(states["otp"], sim, "otp", stop=False)


def test_waiting_older_than_the_deadline_is_final_and_no_longer_read(sim):
    # 3% never reported: while young they keep their pages changeable; 48 h later they are not.
    sim.add_tag(TagSpec("rappel", 6000, rate=1.0, start=-6000, delivered=0.9, not_delivered=0.07))
    with Exporter(config(sim, ["rappel"])) as exporter:
        exporter.poller.reader.clock = lambda: sim.start_time + sim.now()
        run(exporter, sim)
        sim.advance(10)
        young, states = run(exporter, sim)
        assert young > 40  # nearly every page holds a young Waiting message
        exact(states["rappel"], sim, "rappel", stop=False)
        sim.advance(49 * 3600)
        run(exporter, sim)  # reads them once more: still Waiting, now final
        sim.advance(10)
        made, states = run(exporter, sim)
        assert made <= 4, made
        exact(states["rappel"], sim, "rappel", stop=False)
        assert states["rappel"].counts.statuses["Waiting"] > 100


def test_the_first_read_goes_on_over_rounds_and_exports_nothing_until_done(sim):
    sim.add_tag(
        TagSpec(
            "gros",
            30_000,
            rate=20.0,
            start=-1000,
            order="newest",
            delivered=0.95,
            not_delivered=0.05,
        )
    )
    cfg = config_from_dict(
        {
            "api": {"url": sim.url, "key": KEY, "max_requests_per_second": 100, "retries": 0},
            "tags": ["gros"],
        },
        source="<test>",
    )
    ratios = []
    with Exporter(cfg) as exporter:
        for _ in range(12):
            sim.advance(2)  # it grows while it is being read, newest first
            _, states = run(exporter, sim, budget=0.6)
            state = states["gros"]
            if state.incremental.mode != "first_read":
                break
            # Not done in time: up (it is progressing, not failing), no counts yet.
            assert state.counts is None and state.up and state.error is None
            ratios.append(state.incremental.read / state.incremental.known)
        else:
            pytest.fail("the first read never ended")
        exact(state, sim, "gros", stop=False)  # a STOP on a frozen page waits for the audit
        assert state.incremental.order == "newest"
    assert len(ratios) >= 2 and ratios == sorted(ratios)


def test_progress_and_the_incremental_metrics_are_exported(sim):
    sim.add_tag(
        TagSpec(
            "otp", 3000, rate=20.0, start=-100, delivered=0.95, not_delivered=0.05, report_delay=1
        )
    )
    with serve(config(sim, ["otp"])) as url:
        found = samples(scrape(url))
        assert value(found, "sms_collection_first_read_ratio", tag="otp") == 1.0
        assert value(found, "sms_collection_listing_order", tag="otp", order="unknown") == 1.0
        sim.advance(10)
        found = samples(scrape(url))
    assert value(found, "sms_collection_listing_order", tag="otp", order="oldest") == 1.0
    assert value(found, "sms_collection_pages_fetched_total", tag="otp") >= 22
    assert value(found, "sms_collection_pages_reused_total", tag="otp") >= 15
    assert statuses_of(found, "otp")["Delivered"] > 0


@pytest.mark.parametrize("order", ["oldest", "newest"])
def test_a_restart_with_the_state_file_costs_about_one_steady_round(sim, tmp_path, order):
    sim.add_tag(TagSpec("otp", **LIVE, stop=0.02, order=order))
    cfg = config(sim, ["otp"], state_file=str(tmp_path / "state.db"))
    with Exporter(cfg) as exporter:
        run(exporter, sim)
        steady = []
        for _ in range(3):
            sim.advance(10)
            made, _ = run(exporter, sim)
            steady.append(made)
    sim.advance(10)
    with Exporter(cfg) as exporter:
        made, states = run(exporter, sim)
    assert made <= 1.5 * max(steady), (made, steady)
    exact(states["otp"], sim, "otp", stop=False)
    assert states["otp"].incremental.order == order
    with sqlite3.connect(tmp_path / "state.db") as db:
        blob = b"".join(
            str(row).encode()
            for table in ("meta", "tags", "segments")
            for row in db.execute(f"SELECT * FROM {table}")
        )
    assert b"+336" not in blob and KEY.encode() not in blob


def test_reload_keeps_the_state_of_the_tags_that_stay_and_drops_the_others(sim):
    from smsp_exporter.reload import Reloader

    for name in ("a", "b"):
        sim.add_tag(
            TagSpec(
                name, 3000, rate=20.0, start=-100, delivered=0.9, not_delivered=0.1, report_delay=1
            )
        )
    configs = [config(sim, ["a", "b"]), config(sim, ["a"])]
    reloader = Reloader(lambda: configs[1], configs[0])
    try:
        run(reloader.exporter, sim)
        assert reloader.reload()
        sim.advance(10)
        made, states = run(reloader.exporter, sim)
        assert states["a"].incremental.mode == "incremental" and made <= 6
        assert set(reloader.exporter.poller.incremental.tags) == {"a"}
    finally:
        reloader.close()


# -- the state file's failures -------------------------------------------------------------


def cli_config(tmp_path, sim_url, state):
    path = tmp_path / "smsp.yaml"
    path.write_text(
        textwrap.dedent(
            f"""\
            api: {{url: "{sim_url}", key: "{KEY}"}}
            collection: {{state_file: "{state}"}}
            tags: [otp]
            """
        )
    )
    return path


def start_up(cfg):
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "smsp_exporter",
            "--config.file",
            str(cfg),
            "--web.listen-address",
            "127.0.0.1:0",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize("content", ["corrupt", "foreign", "version"])
def test_a_bad_state_file_is_one_line_and_exit_2_at_start_up(sim, tmp_path, content):
    state = tmp_path / "state.db"
    if content == "corrupt":
        state.write_bytes(b"SQLite format 3\x00" + os.urandom(3000))
    else:
        with sqlite3.connect(state) as db:
            if content == "foreign":
                db.execute("CREATE TABLE users (name TEXT)")
            else:
                db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
                db.execute(
                    "INSERT INTO meta VALUES ('format', ?), ('version', '99')", (statestore.FORMAT,)
                )
    result = start_up(cli_config(tmp_path, sim.url, state))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "collection.state_file" in lines[0] and str(state) in lines[0]
    assert "Traceback" not in result.stderr and KEY not in result.stderr


def test_a_read_only_state_file_is_exit_2_at_start_up(sim, tmp_path):
    state = tmp_path / "state.db"
    statestore.open_store(str(state)).close()
    os.chmod(state, 0o444)
    # Root writes a 0444 file anyway: make it immutable, which stops root too.
    immutable = os.getuid() == 0
    if immutable and subprocess.run(["chattr", "+i", str(state)], check=False).returncode:
        pytest.skip("cannot make a read-only file for root here (chattr)")
    try:
        result = start_up(cli_config(tmp_path, sim.url, state))
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(state)], check=False)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "not writable" in lines[0] and str(state) in lines[0]


def test_a_state_file_that_fails_at_run_time_falls_back_to_memory(sim, tmp_path, caplog):
    sim.add_tag(
        TagSpec(
            "otp", 3000, rate=20.0, start=-100, delivered=0.9, not_delivered=0.1, report_delay=1
        )
    )
    folder = tmp_path / "state"
    folder.mkdir()
    cfg = config(sim, ["otp"], state_file=str(folder / "state.db"))
    with Exporter(cfg) as exporter:
        run(exporter, sim)
        shutil.rmtree(folder)  # its journal can no longer be created
        with caplog.at_level(logging.ERROR):
            for _ in range(3):
                sim.advance(10)
                made, states = run(exporter, sim)
                exact(states["otp"], sim, "otp", stop=False)
        assert made <= 6  # still incremental, from memory
    errors = [r for r in caplog.records if "state file" in r.getMessage()]
    assert len(errors) == 1


@pytest.mark.parametrize("order", ["oldest", "newest"])
def test_reused_pages_give_what_a_whole_read_gives(sim, order):
    sim.add_tag(
        TagSpec("otp", 20_000, rate=20.0, start=-800, delivered=0.9, not_delivered=0.07, stop=0.0)
    )
    with Exporter(config(sim, ["otp"])) as exporter:
        for seconds in (0, 10, 7, 10):
            sim.advance(seconds)
            _, states = run(exporter, sim)
        ours = states["otp"].counts
        whole = read_whole(exporter.client, ["otp"])["otp"]
    assert ours.messages == whole.messages == sim.expected("otp")["total"]
    for name in ("statuses", "stop", "oldest_waiting", "newest", "waiting_unknown", "unreadable"):
        assert getattr(ours, name) == getattr(whole, name), name
    assert list(ours.waiting_dates) == list(whole.waiting_dates)


@pytest.mark.parametrize("order", ["oldest", "newest"])
def test_a_tag_growing_while_each_round_runs_is_never_miscounted(sim, order):
    # The clock runs (fast) during the rounds: pages move under the reader, newest first.
    sim.add_tag(
        TagSpec(
            "vite", 40_000, rate=50.0, start=-300, order=order, delivered=0.95, not_delivered=0.05
        )
    )
    sim.latency = 0.002
    with Exporter(config(sim, ["vite"])) as exporter:
        sim.speed = 20.0
        sim.unfreeze()
        for _ in range(6):
            _, states = run(exporter, sim)
            state = states["vite"]
            if state.counts is not None:  # whatever the moment, never more than were sent
                assert state.counts.messages <= sim.expected("vite")["total"]
        sim.freeze()
        for _ in range(3):
            _, states = run(exporter, sim)
    exact(states["vite"], sim, "vite", stop=False)
    assert states["vite"].incremental.order == order


# -- the checks, one rule at a time ----------------------------------------------------------


def kept_segment(rows, ref=1000):
    from array import array

    statuses = sorted({status for status, _, _ in rows})
    segment = model.Segment(
        0,
        len(rows),
        bytes(statuses.index(status) for status, _, _ in rows),
        bytes(stop for _, stop, _ in rows),
        array("q", (date for _, _, date in rows)),
        read_at=ref,
        ref=ref,
        unknown_seen=None,
    )
    return segment, statuses


def detail(rows):
    from array import array

    return model.Detail(
        tuple(s for s, _, _ in rows),
        bytes(x for _, x, _ in rows),
        array("q", (d for *_, d in rows)),
    )


@pytest.mark.parametrize(
    ("before", "after", "reason"),
    [
        ([("Delivered", 0, 900)], [("Delivered", 1, 900)], None),  # a late STOP
        ([("Delivered", 1, 900)], [("Delivered", 0, 900)], "stop_vanished"),
        ([("Delivered", 0, 900)], [("Not delivered", 0, 900)], "status_changed"),
        ([("Delivered", 0, 900)], [("Delivered", 0, 901)], "date_changed"),
        ([("Waiting", 0, 900)], [("Waiting", 0, 900)], None),
        ([("Waiting", 0, 900)], [("Waiting", 0, 950)], "waiting_date_changed"),
        ([("Waiting", 0, 900)], [("Delivered", 0, 1200)], None),  # its report
        ([("Waiting", 0, 900)], [("Delivered", 0, 899)], "report_before_sending"),
        ([("Waiting", 0, 0)], [("Delivered", 0, 1500)], None),  # unknown date: a report
    ],
)
def test_what_a_message_read_again_may_have_become(before, after, reason):
    kept, statuses = kept_segment(before, ref=1000)
    assert model.check_same(kept, statuses, detail(after), slack=0) == reason


def test_a_report_dated_well_before_the_read_that_saw_it_waiting_is_a_shift():
    # A neighbour's old report slid into a position seen Waiting: not a report that arrived.
    kept, statuses = kept_segment([("Waiting", 0, 900)], ref=100_000)
    shifted = detail([("Delivered", 0, 950)])
    assert model.check_same(kept, statuses, shifted) == "report_before_last_read"


def test_pieces_paint_later_reads_over_earlier_ones():
    a = detail([("Delivered", 0, 1)] * 4)
    b = detail([("Waiting", 0, 2)] * 4)
    pieces = fold._paint([(0, 4, a, 4), (2, 6, b, 6)])
    assert [(lo, hi, d.statuses) for lo, hi, d in pieces] == [
        (0, 2, ("Delivered",) * 2),
        (2, 6, ("Waiting",) * 4),
    ]
    assert incremental_pages.within(0, 6, [(0, 2), (2, 6)])
    assert not incremental_pages.within(0, 6, [(0, 2), (3, 6)])


def test_a_tag_leaving_the_round_drops_its_state(sim, tmp_path):
    # What a rolling tag leaving its window does: the round's tags no longer hold it.
    for name in ("jour-1", "jour-2"):
        sim.add_tag(TagSpec(name, 500, rate=20.0, start=-100, report_delay=1))
    cfg = config(sim, ["jour-1", "jour-2"], state_file=str(tmp_path / "state.db"))
    with Exporter(cfg) as exporter:
        run(exporter, sim)
        assert set(exporter.poller.incremental.tags) == {"jour-1", "jour-2"}
        exporter.poller.round_tags = lambda now=None: {"jour-2": "jour-{date}"}
        _, states = run(exporter, sim)
        assert set(states) == {"jour-2"}
        assert set(exporter.poller.incremental.tags) == {"jour-2"}
    with sqlite3.connect(tmp_path / "state.db") as db:
        assert {row[0] for row in db.execute("SELECT DISTINCT tag FROM segments")} == {"jour-2"}


@pytest.mark.parametrize("dialect", sorted(simulator.DIALECTS))
def test_every_dialect_is_followed_page_by_page(sim, dialect):
    # Never-reported messages (whose STOP and date some dialects hide) only in the last pages.
    sim.add_tag(
        TagSpec(
            "otp",
            6000,
            rate=20.0,
            start=-250,
            delivered=0.94,
            not_delivered=0.06,
            report_delay=2,
            stop=0.0,
        )
    )
    sim.set_dialect("otp", dialect)
    with Exporter(config(sim, ["otp"])) as exporter:
        for seconds in (0, 10, 7):
            sim.advance(seconds)
            made, states = run(exporter, sim)
        info = states["otp"].incremental
        assert not info.fallbacks and info.mode == "incremental", info
        assert made < 40 and info.reused > 10
        whole = read_whole(exporter.client, ["otp"])["otp"]
    counts = states["otp"].counts
    for name in ("statuses", "stop", "waiting_unknown", "unreadable", "oldest_waiting"):
        assert getattr(counts, name) == getattr(whole, name), name


def test_a_waiting_message_without_a_date_is_aged_from_when_it_was_first_seen(sim):
    sim.add_tag(TagSpec("rdv", 6000, rate=1.0, start=-6000, delivered=0.9, not_delivered=0.07))
    sim.set_dialect("rdv", "waiting-null")
    with Exporter(config(sim, ["rdv"])) as exporter:
        exporter.poller.reader.clock = lambda: sim.start_time + sim.now()
        run(exporter, sim)
        sim.advance(10)
        young, states = run(exporter, sim)
        assert young > 40  # their pages are read again while they may still get a report
        assert states["rdv"].counts.waiting_unknown > 100
        sim.advance(49 * 3600)
        run(exporter, sim)
        sim.advance(10)
        made, states = run(exporter, sim)
        assert made <= 4, made
        assert dict(states["rdv"].counts.statuses) == sim.expected("rdv")["statuses"]
