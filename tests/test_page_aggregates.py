"""A tag's Waiting dates, unknown dates and unreadable fields, summed over its pages."""

from __future__ import annotations

import json
from array import array

from smsp_exporter.client import TagPager
from smsp_exporter.parse import parse_page


def page_body(dates_and_statuses, number, total) -> bytes:
    messages = [
        {"phoneNumber": "+33600000000", "status": status, "stopSMS": False, "date": date}
        for status, date in dates_and_statuses
    ]
    doc = {"success": True, "code": 200, "currentPage": number, "total": total}
    doc["StatutResponse_List"] = messages
    return json.dumps(doc).encode()


def test_the_pager_merges_the_pages_waiting_dates_in_order():
    pager = TagPager("t", max_pages=10)
    one = parse_page(page_body([("Waiting", "500"), ("Delivered", "10"), ("Waiting", "30")], 1, 6))
    two = parse_page(page_body([("Waiting", "40"), ("Waiting", "20"), ("Waiting", "900")], 2, 6))
    assert pager.first_page(one) == [2]
    pager.other_page(2, two)
    counts = pager.result()
    assert isinstance(counts.waiting_dates, array)
    assert list(counts.waiting_dates) == [20, 30, 40, 500, 900]
    assert counts.oldest_waiting == 20
    assert counts.waiting_unknown == 0
    assert dict(counts.unreadable) == {}


def test_a_page_served_twice_adds_no_waiting_dates():
    pager = TagPager("t", max_pages=10)
    one = parse_page(page_body([("Waiting", "5"), ("Waiting", "7")], 1, 4))
    pager.first_page(one)
    pager.other_page(2, parse_page(page_body([("Waiting", "5"), ("Waiting", "7")], 1, 4)))
    counts = pager.result()
    assert not counts.complete
    assert list(counts.waiting_dates) == [5, 7]
