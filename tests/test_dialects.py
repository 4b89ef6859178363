"""Every encoding the real API may use, served by the simulator over real HTTP (issue "Survive
first contact with the real API"): whatever the dialect, every status count is exact and the
tag is up; STOP counts are exact where readable; sms_unreadable_fields says how many messages'
date or stopSMS could not be read; and that is logged once per tag and field, not per round."""

from __future__ import annotations

import calendar
import json
import logging

import pytest
import requests

from smsp_exporter.parse import parse_page, parse_page_reference
from smsp_exporter.simulator import DIALECTS, Message, Simulator
from smsp_exporter.simulator import main as simulator_main

from .helpers import (
    API_KEY,
    campaign,
    expected_statuses,
    make_config,
    samples,
    scrape,
    serve,
    statuses_of,
    value,
)

TAG = "dialecte"
NEIGHBOUR = "voisin"


def add_campaigns(sim: Simulator, dialect: str) -> None:
    # 95 messages over 10 pages of 10; at t=150 s some are delivered (a third of them STOP),
    # some failed, many still Waiting.
    for name in (TAG, NEIGHBOUR):
        sim.add_tag(campaign(name, 95, stop=0.3, report_delay=60))
    sim.set_dialect(TAG, dialect)
    sim.advance(150)


def unreadable_of(found, tag: str) -> dict[str, float]:
    return {
        dict(labels)["field"]: v
        for (name, labels), v in found.items()
        if name == "sms_unreadable_fields" and dict(labels)["tag"] == tag
    }


def told(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    return [
        (r.tag, r.field)  # type: ignore[attr-defined]
        for r in caplog.records
        if r.levelno == logging.WARNING and hasattr(r, "field")
    ]


@pytest.mark.parametrize("dialect", sorted(DIALECTS))
def test_every_dialect_counts_exactly_and_says_what_it_could_not_read(sim, caplog, dialect):
    add_campaigns(sim, dialect)
    truth = sim.expected(TAG)
    assert 0 < truth["statuses"]["Waiting"] < 95 and truth["stop"] > 0
    unknown = sim.expected_unreadable(TAG)
    with caplog.at_level(logging.WARNING), serve(make_config(sim, [TAG, NEIGHBOUR])) as url:
        first = samples(scrape(url))
        sim.advance(1)  # a second and a third round: nothing more is logged
        scrape(url)
        found = samples(scrape(url))
    assert sim.stats()["by_tag"][TAG] == 30  # three rounds of 10 pages were really read
    for page in (first, found):
        for tag in (TAG, NEIGHBOUR):
            assert value(page, "sms_up", tag=tag) == 1
            assert value(page, "sms_collection_complete", tag=tag) == 1
    assert statuses_of(found, TAG) == expected_statuses(sim, TAG)
    assert statuses_of(found, NEIGHBOUR) == expected_statuses(sim, NEIGHBOUR)
    # Waiting messages never have a STOP in the simulator: hiding theirs hides none.
    assert value(found, "sms_stop_total", tag=TAG) == sim.expected(TAG)["stop"]
    assert unreadable_of(found, TAG) == {k: float(n) for k, n in unknown.items()}
    assert unreadable_of(found, NEIGHBOUR) == {"date": 0.0, "stopSMS": 0.0}
    oldest = value(found, "sms_oldest_waiting_timestamp_seconds", tag=TAG)
    assert oldest == (None if unknown["date"] else sim.start_time)  # all sent at t=0
    assert value(found, "sms_last_status_timestamp_seconds", tag=TAG) == value(
        found, "sms_last_status_timestamp_seconds", tag=NEIGHBOUR
    )
    assert sorted(told(caplog)) == [(TAG, field) for field in sorted(unknown) if unknown[field]]


def test_the_warning_is_once_per_tag_and_field(sim, caplog):
    for name in ("un", "deux"):
        sim.add_tag(campaign(name, 30, report_delay=20))
        sim.set_dialect(name, "waiting-null")
    sim.add_tag(campaign("trois", 30, report_delay=20))
    sim.set_dialect("trois", "waiting-zero-date")
    sim.advance(5)
    with caplog.at_level(logging.WARNING), serve(make_config(sim, ["un", "deux", "trois"])) as url:
        for _ in range(4):
            scrape(url)
            sim.advance(1)
    assert sorted(told(caplog)) == [
        ("deux", "date"),
        ("deux", "stopSMS"),
        ("trois", "date"),
        ("un", "date"),
        ("un", "stopSMS"),
    ]
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "+336" not in text


def test_the_gauge_follows_the_messages_as_their_reports_arrive(sim):
    sim.add_tag(campaign(TAG, 40, delivered=1.0, not_delivered=0.0, report_delay=20))
    sim.set_dialect(TAG, "waiting-empty")
    with serve(make_config(sim, [TAG])) as url:
        before = unreadable_of(samples(scrape(url)), TAG)
        sim.advance(48 * 3600)  # every report in
        after = samples(scrape(url))
    assert before == {"date": 40.0, "stopSMS": 40.0}
    assert unreadable_of(after, TAG) == {"date": 0.0, "stopSMS": 0.0}
    assert value(after, "sms_oldest_waiting_timestamp_seconds", tag=TAG) is None


def test_static_messages_in_the_message_status_dialect(sim):
    # 8 June 2025 (summer time) and 8 December 2025 (winter time), in Paris.
    summer, winter = 1_749_377_111, 1_765_197_111
    sim.set_messages(
        TAG,
        [
            Message("+33600000001", "Delivered", True, summer),
            Message("+33600000002", "Waiting", False, winter),
            Message("+33600000003", "ko", False, summer + 1),
        ],
    )
    sim.set_dialect(TAG, "message-status")
    raw = requests.get(
        f"{sim.url}/bulk-status-by-tag", params={"apiKey": API_KEY, "tag": TAG}, timeout=5
    ).content
    items = json.loads(raw)["StatutResponse_List"]
    assert [i["statut"] for i in items] == ["Delivered", "Waiting", "ko"]
    assert items[0]["date"] == "2025-06-08 12:05:11"  # UTC+2
    assert items[1]["date"] == "2025-12-08 13:31:51"  # UTC+1
    assert calendar.timegm((2025, 6, 8, 10, 5, 11)) == summer
    for parse in (parse_page, parse_page_reference):
        page = parse(raw)
        assert dict(page.statuses) == {"Delivered": 1, "Waiting": 1, "ko": 1}
        assert page.stop == 1 and page.waiting_dates == (winter,)
        assert (page.first_date, page.last_date) == (summer, summer + 1)


def test_dialect_knob_rejects_unknown_names_and_documented_restores(sim):
    sim.add_tag(campaign(TAG, 5))
    with pytest.raises(ValueError, match="dialect must be one of"):
        sim.set_dialect(TAG, "klingon")
    sim.set_dialect(TAG, "php")
    assert sim.dialect(TAG) == "php"
    sim.set_dialect(TAG, "documented")
    assert sim.dialect(TAG) == "documented"
    answer = requests.post(
        f"{sim.base_url}/_sim/dialect", json={"tag": TAG, "dialect": "iso"}, timeout=5
    )
    assert answer.status_code == 200 and sim.dialect(TAG) == "iso"
    answer = requests.post(
        f"{sim.base_url}/_sim/dialect", json={"tag": TAG, "dialect": "nope"}, timeout=5
    )
    assert answer.status_code == 400 and sim.dialect(TAG) == "iso"


@pytest.mark.parametrize("dialect", sorted(set(DIALECTS) - {"documented"}))
def test_each_dialect_really_changes_the_answer(sim, dialect):
    sim.add_tag(campaign(TAG, 10, report_delay=20))
    sim.advance(10)

    def body() -> bytes:
        params = {"apiKey": API_KEY, "tag": TAG}
        return requests.get(f"{sim.url}/bulk-status-by-tag", params=params, timeout=5).content

    documented = body()
    sim.set_dialect(TAG, dialect)
    spoken = body()
    assert spoken != documented
    assert summary(parse_page_reference(spoken)) == summary(parse_page(spoken))
    assert dict(parse_page(spoken).statuses) == dict(parse_page(documented).statuses)


def summary(page):
    return (dict(page.statuses), page.stop, dict(page.unreadable), page.waiting_dates)


def test_simulator_command_line_rejects_a_bad_dialect(capsys):
    with pytest.raises(SystemExit) as info:
        simulator_main(["--dialect", "promo=klingon"])
    assert info.value.code == 2
    assert "--dialect wants TAG=DIALECT" in capsys.readouterr().err


def test_a_large_page_in_every_dialect_reads_the_same_on_both_paths():
    with Simulator(api_key=API_KEY, page_size=5000, seed=3) as big:
        big.freeze()
        big.add_tag(campaign(TAG, 5000, stop=0.2, report_delay=60))
        big.advance(120)
        truth = big.expected(TAG)
        keys = {}
        for dialect in DIALECTS:
            big.set_dialect(TAG, dialect)
            params = {"apiKey": API_KEY, "tag": TAG}
            raw = requests.get(f"{big.url}/bulk-status-by-tag", params=params, timeout=30).content
            fast, reference = parse_page(raw), parse_page_reference(raw)
            assert summary(fast) == summary(reference), dialect
            assert fast.content_key == reference.content_key, dialect
            assert dict(fast.statuses) == truth["statuses"], dialect
            assert fast.stop == truth["stop"], dialect
            assert dict(fast.unreadable) == {
                k: n for k, n in big.expected_unreadable(TAG).items() if n
            }, dialect
            keys[dialect] = fast.content_key
    # The same messages, all readable, have the same key whatever their encoding.
    readable = {keys[d] for d in DIALECTS if not DIALECTS[d].unknown}
    assert readable == {keys["documented"]}
    assert len({keys[d] for d in DIALECTS if DIALECTS[d].unknown}) >= 2
