"""Account credit (GET /v1/me) and the waiting / last-status timestamps, against the simulator."""

from __future__ import annotations

from dataclasses import replace

import pytest

from smsp_exporter.account import parse_me
from smsp_exporter.config import AccountConfig
from smsp_exporter.errors import ApiCodeError, InvalidResponse
from smsp_exporter.simulator import Message

from .helpers import campaign, make_config, samples, scrape, serve, value


def me_requests(sim) -> int:
    return sim.stats()["by_path"].get("/v1/me", 0)


def test_credit_is_exported_and_falls_as_messages_are_sent(sim):
    sim.add_tag(campaign("promo", 40, send_spread=100.0))
    config = replace(make_config(sim, ["promo"]), account=AccountConfig(enabled=True))
    with serve(config) as url:
        sim.advance(10)
        first = samples(scrape(url))
        sent_first = sim.sent()
        sim.advance(50)
        second = samples(scrape(url))
        sent_second = sim.sent()
    assert 0 < sent_first < sent_second
    assert value(first, "sms_account_credits", kind="sms") == 10_000 - sent_first
    assert value(second, "sms_account_credits", kind="sms") == 10_000 - sent_second
    assert value(second, "sms_account_credits", kind="sms_eco") == 20_000
    assert value(second, "sms_account_credits", kind="hlr") == 0
    assert value(second, "sms_account_balance", currency="EUR") == pytest.approx(
        round(500 - sent_second * 0.045, 2)
    )
    assert value(second, "sms_account_up") == 1
    assert me_requests(sim) == 2  # one per round, not per tag or page


def test_account_is_not_read_unless_enabled(sim):
    sim.add_tag(campaign("promo", 5))
    with serve(make_config(sim, ["promo"])) as url:
        text = scrape(url)
    assert "sms_account" not in text
    assert me_requests(sim) == 0


def test_a_failing_credit_reading_keeps_the_last_value_and_counts_the_error(sim):
    sim.add_tag(campaign("promo", 5))
    config = replace(make_config(sim, ["promo"]), account=AccountConfig(enabled=True))
    with serve(config) as url:
        good = samples(scrape(url))
        sim.set_fault(None, "api_error", code=10, endpoint="me")
        bad = samples(scrape(url))
    assert value(bad, "sms_account_up") == 0
    assert value(bad, "sms_account_errors_total", reason="api_code_10") == 1
    assert value(bad, "sms_account_credits", kind="sms") == value(
        good, "sms_account_credits", kind="sms"
    )
    assert value(bad, "sms_up", tag="promo") == 1  # the tags are not affected


def test_parse_me_variants():
    body = (
        b'{"success":true,"code":200,"user":{"username":"x"},"credits":{"creditSms":"12",'
        b'"creditSmsLowCost":3,"creditMms":1,"toSend":0,"solde":"5.50","currency":"eur"}}'
    )
    credit = parse_me(body)
    assert dict(credit.credits) == {"sms": 12.0, "sms_eco": 3.0, "mms": 1.0}
    assert credit.balance == 5.5 and credit.currency == "EUR"
    with pytest.raises(ApiCodeError):
        parse_me(b'{"success":false,"code":10,"message":"Cl\\u00e9 API incorrecte"}')
    with pytest.raises(InvalidResponse):
        parse_me(b'{"success":true,"code":200,"credits":{"creditSms":"lots"}}')
    with pytest.raises(InvalidResponse):
        parse_me(b'{"success":true,"code":200}')
    with pytest.raises(InvalidResponse):  # was OverflowError: a bug report, not a bad answer
        parse_me(b'{"success":true,"code":200,"credits":{"creditSms":1%s}}' % (b"0" * 400))


def test_oldest_waiting_and_last_status_timestamps(sim):
    # 24 messages: 3 pages of 10; the oldest Waiting one is on the last page.
    delivered = [
        Message(f"+336100000{i:02d}", "Delivered", False, 1_700_000_200) for i in range(20)
    ]
    sim.set_messages(
        "mix",
        [
            *delivered,
            Message("+33600000001", "Waiting", False, 1_700_000_300),
            Message("+33600000002", "Waiting", False, 1_700_000_100),
            Message("+33600000003", "Delivered", False, 1_700_000_900),
            Message("+33600000004", "Not delivered", False, 1_700_000_050),
        ],
    )
    sim.set_messages("done", [Message("+33600000005", "Delivered", True, 1_700_000_500)])
    with serve(make_config(sim, ["mix", "done"])) as url:
        found = samples(scrape(url))
    assert value(found, "sms_oldest_waiting_timestamp_seconds", tag="mix") == 1_700_000_100
    assert value(found, "sms_last_status_timestamp_seconds", tag="mix") == 1_700_000_900
    assert value(found, "sms_oldest_waiting_timestamp_seconds", tag="done") is None
    assert value(found, "sms_last_status_timestamp_seconds", tag="done") == 1_700_000_500
