"""A tag's Waiting dates, unknown dates and unreadable fields, summed over its pages."""

from __future__ import annotations

import json
from array import array

from smsp_exporter.collection.whole import TagPager
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


def test_pages_whose_waiting_dates_overlap_are_merged_in_order():
    pager = TagPager("t", max_pages=10)
    first = [("Waiting", "50"), ("Waiting", "10"), ("Waiting", "90")]
    pager.first_page(parse_page(page_body(first, 1, 9)))
    # Pages finish in any order; the third overlaps both others.
    pager.other_page(3, parse_page(page_body([("Waiting", "5"), ("Waiting", "60")], 3, 9)))
    pager.other_page(2, parse_page(page_body([("Waiting", "95"), ("Waiting", "91")], 2, 9)))
    pager.other_page(4, parse_page(page_body([("Waiting", "50"), ("Delivered", "1")], 4, 9)))
    counts = pager.result()
    assert list(counts.waiting_dates) == [5, 10, 50, 50, 60, 90, 91, 95]
    assert counts.waiting_dates.typecode == "q"


def test_pages_in_send_order_are_concatenated():
    pager = TagPager("t", max_pages=10)
    pager.first_page(parse_page(page_body([("Waiting", "1"), ("Waiting", "2")], 1, 6)))
    pager.other_page(3, parse_page(page_body([("Waiting", "5"), ("Waiting", "6")], 3, 6)))
    pager.other_page(2, parse_page(page_body([("Waiting", "2"), ("Waiting", "4")], 2, 6)))
    assert list(pager.result().waiting_dates) == [1, 2, 2, 4, 5, 6]
