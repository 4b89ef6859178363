"""The status page at /: what it shows of each state (from snapshots built here, including the
scheduler's fields: last_read, deferred, behind_since, the round's budget), its order, its
escaping and headers, and over real HTTP that it costs no API call, needs the same auth as
/metrics, answers HEAD and many GETs at once."""

from __future__ import annotations

import base64
import hashlib
import re
import threading
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from types import MappingProxyType

import bcrypt
import pytest
import requests
from prometheus_client import CollectorRegistry

from smsp_exporter.account import AccountState, Credit
from smsp_exporter.client import TagCounts
from smsp_exporter.collection.model import RoundInfo
from smsp_exporter.collection.rounds import RoundBudget, Snapshot, TagState
from smsp_exporter.config import ConfigError, config_from_dict
from smsp_exporter.exporter import Exporter
from smsp_exporter.logs import add_secret, clear_secrets
from smsp_exporter.reload import Reloader
from smsp_exporter.status import (
    CONTENT_SECURITY_POLICY,
    FAILING,
    FIRST,
    STALE,
    UP,
    RecentOutcomes,
    ReloadInfo,
    Share,
    StatusView,
    classify,
    render,
)
from smsp_exporter.web import ExporterServer
from smsp_exporter.webconfig import WebConfig

from .helpers import API_KEY, campaign, make_config, serve

NOW = 1_764_000_000.0
HOSTILE = "<script>alert('x')</script>\"'&"


def counts(tag: str, delivered=0, not_delivered=0, waiting=0, stop=0, **other) -> TagCounts:
    statuses = {"Delivered": delivered, "Not delivered": not_delivered, "Waiting": waiting}
    statuses.update(other)
    total = sum(statuses.values())
    return TagCounts(tag, MappingProxyType(statuses), stop, total, 1)


def up(tag: str, **kwargs) -> TagState:
    fields = {"last_success": NOW - 30, "counts": counts(tag, 90, 5, 5, 1)}
    fields.update(kwargs)
    return TagState(tag=tag, up=True, **fields)


def failing(tag: str, message: str | None = "rejected", **kwargs) -> TagState:
    return TagState(
        tag=tag,
        up=False,
        counts=None,
        error="api_code_10",
        error_message=message,
        last_success=NOW - 3600,
        **kwargs,
    )


def first_read(tag: str, read: int, known: int) -> TagState:
    info = RoundInfo("first_read", "unknown", read=read, known=known)
    return TagState(tag=tag, up=True, counts=None, incremental=info)


def snapshot(*tags: TagState, **kwargs) -> Snapshot:
    return Snapshot(tuple(tags), NOW - 5, 1.5, 123, **kwargs)


def view(*tags: TagState, **kwargs) -> StatusView:
    snap = kwargs.pop("snapshot", None) or snapshot(*tags)
    kwargs.setdefault("source", "/etc/smsp/config.yaml")
    return StatusView(snapshot=snap, now=NOW, **kwargs)


class Text(HTMLParser):
    """The page as a reader sees it: its text, and the tag names in row order."""

    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.rows: list[str] = []
        self.elements: list[str] = []
        self._in_row_header = False

    def handle_starttag(self, tag, attrs):
        self.elements.append(tag)
        if tag == "th" and ("scope", "row") in attrs:
            self._in_row_header = True
            self.rows.append("")

    def handle_endtag(self, tag):
        if tag == "th":
            self._in_row_header = False

    def handle_data(self, data):
        self.text.append(data)
        if self._in_row_header:
            self.rows[-1] += data


def read(page: str) -> Text:
    parser = Text()
    parser.feed(page)
    parser.close()
    return parser


# --- what each state shows -------------------------------------------------------------------


def test_trouble_sorts_first():
    page = render(
        view(
            up("a-healthy"),
            first_read("b-first", 250, 1000),
            failing("c-failing"),
            up("d-deferred", deferred=3, behind_since=NOW - 600),
            TagState(tag="e-never", up=False, counts=None),
        )
    )
    assert read(page).rows == ["c-failing", "d-deferred", "b-first", "e-never", "a-healthy"]
    assert ">1 failing<" in page and ">1 stale or deferred<" in page
    assert ">2 first read<" in page and ">1 up<" in page


def test_each_state_in_words():
    assert classify(up("x")) == (UP, "up")
    assert classify(failing("x"))[0] == FAILING
    kept = failing("x").__class__(**{**_fields(failing("x")), "counts": counts("x", 1)})
    assert classify(kept) == (FAILING, "failing (last counts kept)")
    rank, words = classify(first_read("x", 250, 1000))
    assert rank == FIRST and words.startswith("first read 25 %")
    assert '<progress max="1000" value="250">' in words
    # Never 100 % while it is still a first read, nor a division by zero with nothing known.
    assert classify(first_read("x", 1000, 1000))[1].startswith("first read 99 %")
    assert classify(first_read("x", 0, 0))[1].startswith("first read 0 %")
    assert classify(TagState(tag="x", up=False, counts=None), read=False) == (
        FIRST,
        "waiting for the first round",
    )
    assert classify(TagState(tag="x", up=False, counts=None)) == (FIRST, "not read yet")
    truncated = TagCounts("x", MappingProxyType({}), 0, 0, 1, False, "page_cap")
    assert classify(up("x", counts=truncated)) == (STALE, "incomplete (page_cap)")


def _fields(state: TagState) -> dict:
    return {name: getattr(state, name) for name in state.__slots__}


def test_the_schedulers_fields_when_filled():
    # last_read, deferred and behind_since are filled by the request scheduler (issue 19).
    rank, words = classify(up("x", deferred=2, behind_since=NOW - 1800, last_read=NOW - 1800))
    assert rank == STALE
    clock = time.strftime("%H:%M:%S", time.gmtime(NOW - 1800))
    assert re.fullmatch(
        rf'deferred since <time datetime="[^"]+" title="[^"]+">{clock}</time>, 2 reads', words
    )
    assert classify(up("x", deferred=1))[1] == "deferred, 1 read"
    # A first read's reads are deferred as a matter of course: its progress is what shows.
    info = RoundInfo("first_read", "unknown", read=10, known=100)
    reading = TagState(tag="x", up=True, counts=None, incremental=info, deferred=40)
    assert classify(reading)[1].startswith("first read 10 %")
    page = render(view(up("x", deferred=2, behind_since=NOW - 1800, last_read=NOW - 1800)))
    row = _row_of(page, "x")
    assert "30 min ago" in row  # the last read, not the last success (30 s ago)
    assert "30 s ago" in row


def test_last_read_falls_back_to_the_last_success_until_the_scheduler_fills_it():
    row = _row_of(render(view(up("x", last_success=NOW - 120))), "x")
    assert row.count("2 min ago") == 2  # last read and last success
    never = _row_of(render(view(failing("y"))), "y")
    assert ">never<" in never and "60 min ago" in never


def _row_of(page: str, tag: str) -> str:
    match = re.search(
        rf'<tr class="\w+"><th scope="row" class="tag">{re.escape(tag)}</th>.*?</tr>', page
    )
    assert match, tag
    return match.group(0)


def test_counts_by_status_and_stop():
    state = up("x", counts=counts("x", 1200, 34, 7, stop=3, **{"Expired": 2, "Unknown": 1}))
    row = _row_of(render(view(state)), "x")
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row)
    assert cells[1:6] == [
        "1\u202f200",
        "34",
        "7",
        '<span title="Expired: 2, Unknown: 1">3</span>',
        "3",
    ]


def test_the_round_budget_when_the_scheduler_gives_one():
    budget = RoundBudget(
        requests=120,
        seconds=9.5,
        spent=MappingProxyType({"new": 30, "waiting": 70, "audit": 0}),
        deferred=MappingProxyType({"waiting": 12}),
        spent_total=MappingProxyType({"new": 300}),
    )
    page = render(view(snapshot=snapshot(up("x"), budget=budget)))
    assert "budget 120 requests in 9.5 s; spent 100 (new 30, waiting 70); deferred 12 " in page
    assert "(waiting 12)" in page
    unlimited = RoundBudget(requests=None, seconds=9.5)
    page = render(view(snapshot=snapshot(up("x"), budget=unlimited)))
    assert "budget no request limit in 9.5 s; spent 0; deferred 0" in page
    assert "budget" not in render(view(up("x")))  # before the scheduler: no budget line
    assert "took 1.5 s; 123 API requests since start" in render(view(up("x")))


def test_account_configuration_and_reload():
    account = AccountState(
        True, Credit(MappingProxyType({"sms": 9984.0, "hlr": 0.0}), 499.28, "EUR"), NOW - 60
    )
    page = render(
        view(
            snapshot=snapshot(up("x"), account=account),
            loaded_at=NOW - 7200,
            reload=ReloadInfo(False, NOW - 7200),
            mode="background",
            interval=60.0,
        )
    )
    assert "hlr 0, sms 9984; balance 499.28 EUR; read <time" in page
    assert "/etc/smsp/config.yaml</span>, loaded <time" in page and "2.0 h ago" in page
    assert "the last reload failed" in page
    assert "mode background, a round every 60 s" in page
    failed = AccountState(False, None, None)
    assert "<dt>Account</dt><dd>not read yet</dd>" in render(
        view(snapshot=snapshot(up("x"), account=failed))
    )
    assert "<dt>Account</dt>" not in render(view(up("x")))  # account.enabled false
    assert "the last reload failed" not in render(view(up("x"), reload=ReloadInfo(True, NOW)))


def test_rolling_tags_are_grouped_under_their_template_and_probes_apart():
    template = "relance-{date:%Y%m%d}"
    page = render(
        view(
            up("static"),
            up("relance-20251124", template=template),
            failing("relance-20251123", template=template),
            probed=[up("probed-only")],
        )
    )
    reader = read(page)
    # The group in trouble first, its failing tag at its top; the probed tag after, apart.
    assert reader.rows == ["relance-20251123", "relance-20251124", "static", "probed-only"]
    assert "Rolling tags of template" in page and "relance-{date:%Y%m%d}" in page
    assert "2 tags: 1 failing, 1 up" in page
    assert page.index("<h2>Probed tags</h2>") < page.index(">probed-only<")


def test_the_reason_and_the_apis_message_are_shown_scrubbed_as_logged():
    add_secret(API_KEY)
    try:
        message = f"cle {API_KEY} refusee pour +33612345678 <script>x()</script>"
        page = render(view(failing("x", message=message)))
    finally:
        clear_secrets()
    row = _row_of(page, "x")
    assert "<b>api_code_10</b>" in row
    assert API_KEY not in page and "LEAKCANARY" not in page
    assert "33612345678" not in page and "612345678" not in page
    assert "&lt;script&gt;x()&lt;/script&gt;" in row


# --- hostile input ---------------------------------------------------------------------------


def test_everything_from_the_configuration_or_the_api_is_escaped():
    template = f"{HOSTILE}-{{date:%Y%m%d}}"
    account = AccountState(True, Credit(MappingProxyType({HOSTILE: 1.0}), 1.0, HOSTILE), NOW)
    state = up(HOSTILE, counts=counts(HOSTILE, **{HOSTILE: 4}))
    page = render(
        view(
            snapshot=snapshot(
                state,
                failing(HOSTILE + "2", message=HOSTILE),
                up(HOSTILE + "3", template=template),
                TagState(
                    tag=HOSTILE + "4",
                    up=True,
                    counts=TagCounts(HOSTILE, MappingProxyType({}), 0, 0, 1, False, HOSTILE),
                ),
                account=account,
            ),
            source=HOSTILE,
        )
    )
    reader = read(page)
    assert "script" not in reader.elements
    assert set(reader.elements) <= {
        *("html", "head", "meta", "title", "style", "body", "h1", "h2", "span", "p", "a"),
        *("div", "dl", "dt", "dd", "table", "thead", "tbody", "tr", "th", "td", "time"),
        *("b", "q", "progress"),
    }
    assert HOSTILE not in page  # never raw: escaped wherever it shows
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;&quot;&#x27;&amp;" in page
    assert HOSTILE in "".join(reader.text)  # and reads as the text it is


def test_a_very_long_tag_name_is_cut():
    tag = "x" * 5000
    page = render(view(up(tag)))
    assert "x" * 200 + "…" in page and "x" * 201 not in page


def test_500_tags_render_small_and_fast():
    states = [up(f"campagne-{i:03d}") for i in range(490)] + [
        failing(f"casse-{i}", message="Cle API invalide") for i in range(10)
    ]
    started = time.perf_counter()
    page = render(view(*states, shares={s.tag: Share(3, 100, 3000) for s in states}))
    elapsed = time.perf_counter() - started
    assert len(read(page).rows) == 500
    assert len(page.encode()) < 1_000_000, len(page)
    assert elapsed < 1.0, elapsed  # about 10 ms on a developer's machine


# --- the recent Not-delivered share ----------------------------------------------------------


def test_the_recent_share_of_not_delivered():
    outcomes = RecentOutcomes(window=3600, step=300)
    outcomes.record(Snapshot((up("x", counts=counts("x", 100, 10)),), NOW, 1, 0))
    now_state = up("x", counts=counts("x", 190, 20))
    assert outcomes.share(up("x", counts=counts("x", 100, 10)), NOW) is None  # read once
    outcomes.record(Snapshot((now_state,), NOW + 60, 1, 0))
    assert outcomes.share(now_state, NOW + 60) == Share(10, 100, 60)
    page = render(view(now_state, shares={"x": Share(10, 100, 60)}))
    assert "10.0 % <span" in page and "of 100 reports in 60 s" in page
    assert "no report in 60 s" in render(view(now_state, shares={"x": Share(0, 0, 60)}))
    # Failing, or in its first read: not known.
    assert outcomes.share(failing("x"), NOW + 60) is None


def test_the_recent_outcomes_stay_bounded():
    outcomes = RecentOutcomes(window=3600, step=300)
    for minute in range(180):  # three hours of a round a minute
        tags = tuple(up(f"t{i}", counts=counts(f"t{i}", minute, minute // 10)) for i in range(100))
        outcomes.record(Snapshot(tags, NOW + 60 * minute, 1, 0))
    assert len(outcomes) == 100 * (3600 // 300)  # 12 samples a tag, whatever the uptime
    # A tag gone from the rounds is forgotten; one whose counts fell starts afresh.
    outcomes.record(Snapshot((up("t1", counts=counts("t1", 0, 0)),), NOW + 86400, 1, 0))
    assert len(outcomes) == 1
    fresh = up("t1", counts=counts("t1", 5, 5))
    assert outcomes.share(fresh, NOW + 86400 + 60) == Share(5, 10, 60)


def test_the_recent_outcomes_survive_a_reload():
    old, new = RecentOutcomes(), RecentOutcomes()
    old.record(Snapshot((up("x", counts=counts("x", 10, 0)),), NOW, 1, 0))
    new.carry_from(old)
    assert new.share(up("x", counts=counts("x", 20, 10)), NOW + 100) == Share(10, 20, 100)


# --- over HTTP -------------------------------------------------------------------------------


def test_the_page_costs_no_api_call_even_in_scrape_mode(sim):
    sim.add_tag(campaign("promo", 25))
    with serve(make_config(sim, ["promo"])) as url:
        before = requests.get(url + "/", timeout=10)
        assert before.status_code == 200
        assert "waiting for the first round" in before.text
        assert sim.stats()["requests"] == 0
        assert requests.get(url + "/metrics", timeout=20).status_code == 200
        made = sim.stats()["requests"]
        for _ in range(3):
            page = requests.get(url + "/", timeout=10)
        assert sim.stats()["requests"] == made
    assert ">promo<" in page.text and ">up<" in page.text
    assert ">25<" in page.text  # every message counted, all Delivered at t=0


def test_headers_head_and_methods(sim):
    sim.add_tag(campaign("promo", 5))
    with serve(make_config(sim, ["promo"])) as url:
        page = requests.get(url + "/", timeout=10)
        head = requests.head(url + "/", timeout=10)
        post = requests.post(url + "/", data=b"x", timeout=10)
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    csp = page.headers["Content-Security-Policy"]
    assert csp == CONTENT_SECURITY_POLICY
    assert "default-src 'none'" in csp and "img-src 'none'" in csp
    assert "script-src" not in csp and "unsafe" not in csp  # no script, by default-src
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert page.headers["Cache-Control"] == "no-store"
    assert head.status_code == 200 and head.content == b""
    assert head.headers["Content-Security-Policy"] == csp
    assert post.status_code == 405 and post.headers["Allow"] == "GET, HEAD"
    # The one inline style sheet is the one the policy's hash allows.
    style = re.search(r"<style>(.*?)</style>", page.text, re.S).group(1)
    digest = base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()
    assert f"'sha256-{digest}'" in csp
    assert 'href="/metrics"' in page.text and 'href="/healthz"' in page.text
    assert 'href="/api/v1/tags"' in page.text


@pytest.fixture
def authed(sim) -> Iterator[str]:
    sim.add_tag(campaign("promo", 5))
    exporter = Exporter(make_config(sim, ["promo"]))
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(4))
    web = WebConfig("<test>", basic_auth_users=(("prometheus", hashed),))
    server = ExporterServer(
        CollectorRegistry(), "127.0.0.1:0", extra_routes=exporter.routes(), web_config=web
    )
    server.start()
    try:
        yield server.url.rstrip("/")
    finally:
        server.shutdown()
        exporter.close()


def test_same_auth_as_metrics(authed):
    for method in (requests.get, requests.head):
        answer = method(authed + "/", timeout=10)
        assert answer.status_code == 401
        assert answer.headers["WWW-Authenticate"].startswith("Basic ")
        assert "promo" not in answer.text
    wrong = requests.get(authed + "/", auth=("prometheus", "nope"), timeout=10)
    assert wrong.status_code == 401
    right = requests.get(authed + "/", auth=("prometheus", "s3cret"), timeout=10)
    assert right.status_code == 200 and ">promo<" in right.text


def test_many_pages_at_once(sim):
    sim.add_tag(campaign("promo", 5))
    with serve(make_config(sim, [f"t{i}" for i in range(50)])) as url:
        requests.get(url + "/metrics", timeout=20)
        answers: list[int] = []

        def fetch() -> None:
            for _ in range(5):
                response = requests.get(url + "/", timeout=20)
                answers.append(response.status_code if ">t49<" in response.text else -1)

        threads = [threading.Thread(target=fetch) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    assert answers == [200] * 40


def test_probe_only_tags_are_listed_apart(sim):
    sim.add_tag(campaign("listed", 5))
    sim.add_tag(campaign("promo", 5))
    config = config_from_dict(
        {
            "api": {"url": sim.url, "key": API_KEY, "max_requests_per_second": 0},
            "tags": ["promo"],
            "probe": {"allowed_tags": ["listed", "promo"]},
        },
        source="<test>",
    )
    with serve(config) as url:
        assert requests.get(url + "/probe", params={"tag": "listed"}, timeout=20).ok
        assert requests.get(url + "/probe", params={"tag": "promo"}, timeout=20).ok
        page = requests.get(url + "/", timeout=10).text
    assert read(page).rows == ["promo", "listed"]  # promo, in the rounds, is not repeated
    assert page.index("Probed tags") < page.index(">listed<")


def test_a_failed_reload_shows(sim, tmp_path):
    sim.add_tag(campaign("promo", 5))
    config = make_config(sim, ["promo"])
    answers: list = []

    def load():
        if not answers:
            raise ConfigError("config.yaml", "tags", "must be a list")
        return answers.pop()

    reloader = Reloader(load, config)
    try:
        routes = reloader.routes()

        def page() -> str:
            chunks: list[bytes] = []
            body = routes["/"]({"REQUEST_METHOD": "GET"}, lambda *args: None)
            chunks.extend(body)
            return b"".join(chunks).decode()

        assert "the last reload failed" not in page()
        assert reloader.reload() is False
        assert "the last reload failed" in page()
    finally:
        reloader.close()
