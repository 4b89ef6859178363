"""Client pieces that need no server: the rate limiter and the pagination rules."""

from __future__ import annotations

import itertools
from types import MappingProxyType

import pytest

from smsp_exporter.client import RateLimiter
from smsp_exporter.collection.whole import TagPager
from smsp_exporter.errors import DeadlineExceeded
from smsp_exporter.parse import Page


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_rate_limiter_spaces_requests():
    fake = FakeTime()
    limiter = RateLimiter(4.0, clock=fake.clock, sleep=fake.sleep)
    starts = []
    for _ in range(9):
        limiter.acquire()
        starts.append(fake.now)
    assert starts[0] == 100.0
    assert [round(b - a, 6) for a, b in itertools.pairwise(starts)] == [0.25] * 8
    # never more than 4 starts in any 1-second window
    assert all(sum(1 for s in starts if t <= s < t + 1) <= 4 for t in starts)


def test_rate_limiter_unlimited_never_sleeps():
    fake = FakeTime()
    limiter = RateLimiter(0, clock=fake.clock, sleep=fake.sleep)
    for _ in range(100):
        limiter.acquire()
    assert fake.sleeps == []


def test_rate_limiter_pause_and_deadline():
    fake = FakeTime()
    limiter = RateLimiter(10.0, clock=fake.clock, sleep=fake.sleep)
    limiter.pause_until(105.0)
    with pytest.raises(DeadlineExceeded):
        limiter.acquire(deadline=103.0)
    limiter.acquire(deadline=110.0)
    assert fake.now == 105.0


def page(items: int, total: int | None, current: int | None = None, fp: int = 0) -> Page:
    return Page(
        current_page=current,
        total=total,
        items=items,
        statuses=MappingProxyType({"Delivered": items} if items else {}),
        stop=0,
        oldest_waiting=None,
        newest=None,
        fingerprint=fp or items * 1000 + (current or 0),
    )


def test_pager_asks_the_remaining_pages_from_the_first_answer():
    pager = TagPager("t", max_pages=100)
    assert pager.first_page(page(10, 35, 1, fp=1)) == [2, 3, 4]
    pager.other_page(2, page(10, 35, 2, fp=2))
    pager.other_page(3, page(10, 35, 3, fp=3))
    pager.other_page(4, page(5, 35, 4, fp=4))
    result = pager.result()
    assert result.messages == 35 and result.complete and result.pages == 4


def test_pager_single_page_and_unknown_total():
    assert TagPager("t", 100).first_page(page(7, 7, 1)) == []
    assert TagPager("t", 100).first_page(page(7, None, 1)) == []


def test_pager_drops_a_repeated_page():
    pager = TagPager("t", max_pages=100)
    pager.first_page(page(10, 30, 1, fp=1))
    pager.other_page(2, page(10, 30, 1, fp=1))  # says page 1
    pager.other_page(3, page(10, 30, None, fp=1))  # same content, no page number
    result = pager.result()
    assert result.messages == 10
    assert not result.complete and result.truncation == "page_ignored"


def test_pager_cap():
    pager = TagPager("t", max_pages=2)
    assert pager.first_page(page(10, 1000, 1)) == [2]
    assert pager.result().truncation == "page_cap"


def test_pager_short_and_empty_pages():
    pager = TagPager("t", max_pages=100)
    pager.first_page(page(10, 30, 1, fp=1))
    pager.other_page(2, page(4, 30, 2, fp=2))
    assert pager.result().truncation == "short_page"
    empty_first = TagPager("t", max_pages=100)
    assert empty_first.first_page(page(0, 30, 1)) == []
    assert empty_first.result().truncation == "short_page"


def test_rate_limiter_margin_widens_the_spacing():
    fake = FakeTime()
    limiter = RateLimiter(4.0, clock=fake.clock, sleep=fake.sleep, margin=0.05)
    starts = []
    for _ in range(5):
        limiter.acquire()
        starts.append(fake.now)
    # 5 = rate + 1 consecutive starts span 1 s plus the margin: jitter up to it cannot
    # put them in one second at the API
    assert starts[-1] - starts[0] == pytest.approx(1.05)
