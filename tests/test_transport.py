"""The transport against a hostile upstream (tests/hostile_upstream.py), over real loopback
sockets: a total deadline per request, a body cap enforced while streaming (decompressed bytes
included), no redirect followed, a ceiling on Retry-After. Each test bounds time and memory."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc

import pytest

from smsp_exporter import transport
from smsp_exporter.client import SmsPartnerClient
from smsp_exporter.collection.reader import read_whole
from smsp_exporter.config import config_from_dict
from smsp_exporter.errors import HttpStatusError
from smsp_exporter.transport import Transport

from .helpers import API_KEY, campaign, make_config, reasons, serve, timed_scrape, value
from .hostile_upstream import (
    HostileUpstream,
    endless,
    garbage,
    gzip_bomb,
    gzip_bomb_bytes,
    redirect,
    trickle_body,
    trickle_head,
    trickle_tls,
)


def hostile_config(url: str, tags, **api):
    section = {
        "url": url,
        "key": API_KEY,
        "timeout": "1s",
        "max_requests_per_second": 0,
        "retries": 1,
        **api,
    }
    return config_from_dict({"api": section, "tags": list(tags)}, source="<test>")


# --- 6: a total deadline per request -----------------------------------------------------------


@pytest.mark.parametrize("behaviour", [trickle_body, trickle_head], ids=["body", "head"])
def test_a_trickling_answer_fails_its_tag_with_timeout_within_api_timeout(behaviour):
    """One byte every half second never trips a per-read timeout; api.timeout (1 s) bounds the
    whole request: the tag fails with `timeout` and its connection is dropped about then, not
    at the round's deadline (7 s here) with every tag still waiting reported `deadline`."""
    with HostileUpstream({"lent": behaviour(interval=0.5, limit=30)}) as up:
        config = hostile_config(up.url, ["lent", "vif", "alerte"], timeout="1s", retries=0)
        with serve(config) as url:
            found, elapsed = timed_scrape(url, 8.0)
        held = [s.held for s in up.requests_for("lent")]
    assert value(found, "sms_up", tag="lent") == 0
    assert reasons(found, "lent") == {"timeout": 1}
    for tag in ("vif", "alerte"):
        assert value(found, "sms_up", tag=tag) == 1
    assert len(held) == 1
    assert held[0] < 2.0, f"the trickling request held a worker {held[0]:.2f} s"
    assert elapsed < 3.0, f"/metrics took {elapsed:.2f} s"


def test_a_trickle_fails_fast_in_the_client_too():
    """The same, one page through the client: the error is a timeout, within api.timeout."""
    with HostileUpstream({"lent": trickle_body(interval=0.2, limit=30)}) as up:
        client = SmsPartnerClient(hostile_config(up.url, ["lent"], timeout="0.6s").api)
        try:
            began = time.monotonic()
            result = read_whole(client, ["lent"], deadline=time.monotonic() + 20)["lent"]
            elapsed = time.monotonic() - began
        finally:
            client.close()
    assert getattr(result, "reason", None) == "timeout", result
    assert elapsed < 1.5, f"{elapsed:.2f} s"


def test_a_tls_handshake_trickling_in_fails_with_timeout():
    """The TLS handshake is bounded too: a server feeding its first record one byte at a time
    fails with `timeout` within api.timeout. (CPython already bounds one handshake as a whole
    by the socket's timeout; the watchdog would cut it anyway: this keeps both honest.)"""
    with HostileUpstream(raw=trickle_tls(interval=0.2, limit=30)) as up:
        url = f"https://127.0.0.1:{up.port}/v1"
        client = SmsPartnerClient(hostile_config(url, ["lent"], timeout="0.8s", retries=0).api)
        try:
            began = time.monotonic()
            result = read_whole(client, ["lent"], deadline=time.monotonic() + 20)["lent"]
            elapsed = time.monotonic() - began
        finally:
            client.close()
        held = [s.held for s in up.seen]
    assert getattr(result, "reason", None) == "timeout", result
    assert elapsed < 1.6, f"{elapsed:.2f} s"
    assert len(held) == 1 and held[0] < 1.6, held


# --- 7: a body cap, enforced while streaming, decompressed bytes included -----------------------

MEMORY_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    from smsp_exporter.client import SmsPartnerClient
    from smsp_exporter.collection.reader import read_whole
    from smsp_exporter.config import config_from_dict

    def rss(field):
        for line in open("/proc/self/status"):
            if line.startswith(field):
                return int(line.split()[1]) // 1024  # MiB

    url, key = sys.argv[1], sys.argv[2]
    api = {"url": url, "key": key, "timeout": "30s", "concurrency": 4,
           "max_requests_per_second": 0, "retries": 0}
    config = config_from_dict({"api": api, "tags": ["x"]}, source="<memory>")
    client = SmsPartnerClient(config.api)
    base = rss("VmRSS")
    one = read_whole(client, ["huge-0"], deadline=time.monotonic() + 60)
    after_one = rss("VmHWM")
    four = read_whole(client, [f"huge-{i}" for i in range(1, 5)], deadline=time.monotonic() + 60)
    client.close()
    out = {tag: getattr(r, "reason", "ok") for tag, r in {**one, **four}.items()}
    print(json.dumps({"reasons": out, "base": base, "one": after_one, "peak": rss("VmHWM")}))
    """
)

HUGE = 600 * 1024 * 1024  # more than the old 256 MiB buffer


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: endless(HUGE), id="streamed"),
        pytest.param(lambda: endless(HUGE, length=True), id="content-length"),
        pytest.param(lambda: gzip_bomb(512 * 1024 * 1024), id="gzip-bomb"),
    ],
)
def test_huge_answers_stay_well_under_the_memory_limit(make):
    """One huge answer, then four at once (api.concurrency 4): each fails its tag with
    `response_too_large` once the cap is passed, and the process's peak RSS stays well under
    the Kubernetes manifest's 256 Mi."""
    gzip_bomb_bytes(512 * 1024 * 1024)  # built before the clock starts
    with HostileUpstream({f"huge-{i}": make() for i in range(5)}) as up:
        began = time.monotonic()
        run = subprocess.run(
            [sys.executable, "-c", MEMORY_SCRIPT, up.url, API_KEY],
            capture_output=True,
            text=True,
            timeout=120,
        )
        elapsed = time.monotonic() - began
    assert run.returncode == 0, run.stderr[-2000:]
    figures = json.loads(run.stdout)
    print(f"\nmemory (MiB): {figures}, {elapsed:.1f} s")
    assert figures["peak"] < 128, figures
    assert figures["reasons"] == {f"huge-{i}": "response_too_large" for i in range(5)}


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        pytest.param(lambda: endless(64 * 1024 * 1024), "response_too_large", id="over-the-cap"),
        pytest.param(lambda: garbage(1_500_000), "invalid_response", id="not-json"),
    ],
)
def test_a_failed_body_is_freed_without_the_cycle_collector(make, reason):
    """With the cycle collector off, eight failed answers (over the 2 MiB cap, or under it but
    not JSON) leave (almost) nothing behind: no reference cycle through an exception's
    traceback or context keeps a failed body alive."""
    cap = 2 * 1024 * 1024
    with HostileUpstream({f"huge-{i}": make() for i in range(8)}) as up:
        config = hostile_config(up.url, ["x"], timeout="10s", max_response_bytes=cap, retries=0)
        client = SmsPartnerClient(config.api)
        gc.collect()
        gc.disable()
        tracemalloc.start()
        try:
            before, _ = tracemalloc.get_traced_memory()
            for i in range(8):
                result = read_whole(client, [f"huge-{i}"], deadline=time.monotonic() + 20)
                assert result[f"huge-{i}"].reason == reason
            del result
            kept = tracemalloc.get_traced_memory()[0] - before
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
            gc.enable()
            client.close()
    print(f"\nkept {kept / 2**20:.2f} MiB after 8 failed bodies, peak {peak / 2**20:.1f} MiB")
    assert kept < cap, f"{kept} bytes still alive"
    assert peak < 6 * cap


def test_an_honest_big_page_under_the_cap_is_read():
    """A gzip answer of a few hundred kilobytes, well under the cap, is counted as usual."""
    with HostileUpstream() as up:
        client = SmsPartnerClient(hostile_config(up.url, ["petit"]).api)
        try:
            result = read_whole(client, ["petit"], deadline=time.monotonic() + 10)["petit"]
        finally:
            client.close()
    assert result.messages == 3 and dict(result.statuses) == {"Delivered": 3}


# --- 8: no redirect followed -------------------------------------------------------------------


def test_a_redirect_is_refused_and_the_key_never_reaches_the_other_host():
    with HostileUpstream() as elsewhere:
        away = redirect(lambda seen: f"http://127.0.0.1:{elsewhere.port}{seen.path}?{seen.query}")
        with HostileUpstream({"ailleurs": away, "me": away}) as up:
            config = config_from_dict(
                {
                    "api": {"url": up.url, "key": API_KEY, "max_requests_per_second": 0,
                            "retries": 2, "timeout": "2s"},
                    "tags": ["ailleurs", "reste"],
                    "account": {"enabled": True},
                },
                source="<test>",
            )  # fmt: skip
            with serve(config) as url:
                found, _ = timed_scrape(url, 5.0)
            asked = up.requests_for("ailleurs")
    assert elsewhere.seen == [], "a request reached the redirect's target"
    assert len(asked) == 1  # not retried either
    assert API_KEY in asked[0].query  # the test is meaningful: the Location carried the key
    assert value(found, "sms_up", tag="ailleurs") == 0
    assert reasons(found, "ailleurs") == {"redirect": 1}
    assert value(found, "sms_up", tag="reste") == 1
    assert value(found, "sms_account_up") == 0
    assert value(found, "sms_account_errors_total", reason="redirect") == 1


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_loop_costs_one_request(status):
    loop = redirect(lambda seen: f"{seen.path}?{seen.query}", status=status)
    with HostileUpstream({"boucle": loop}) as up:
        client = SmsPartnerClient(hostile_config(up.url, ["boucle"], retries=3).api)
        try:
            result = read_whole(client, ["boucle"], deadline=time.monotonic() + 10)["boucle"]
        finally:
            client.close()
        assert len(up.seen) == 1, f"{len(up.seen)} requests for one page"
    assert result.reason == "redirect"
    assert "127.0.0.1" in result.message and API_KEY not in result.message


# --- 10: Retry-After has a ceiling -------------------------------------------------------------


def test_an_absurd_retry_after_is_capped(sim):
    """`Retry-After: 100000` pauses every request for the ceiling (MAX_RETRY_AFTER), not a day."""
    sim.add_tag(campaign("limite", 5))
    sim.set_fault(None, "rate_limit", retry_after=100000, times=1)
    client = SmsPartnerClient(make_config(sim, ["limite"], retries=0).api)
    try:
        with pytest.raises(HttpStatusError) as failed:
            client.fetch_page("limite", deadline=time.monotonic() + 5)
        paused = client.limiter._next - time.monotonic()
    finally:
        client.close()
    assert failed.value.status == 429
    assert 0 < paused <= 300, f"every request held back {paused:.0f} s"
    assert paused <= transport.MAX_RETRY_AFTER


def test_collection_resumes_after_the_capped_retry_after(sim, monkeypatch):
    """The same through the exporter, with the ceiling lowered to 1 s for the test: the tag is
    down (`http_429`), then collected again a second later, not a day later."""
    monkeypatch.setattr(transport, "MAX_RETRY_AFTER", 1.0, raising=False)
    sim.add_tag(campaign("limite", 5))
    sim.set_fault(None, "rate_limit", retry_after=100000, times=1)
    with serve(make_config(sim, ["limite"], retries=0)) as url:
        found, _ = timed_scrape(url, 3.0)
        assert reasons(found, "limite") == {"http_429": 1}
        deadline = time.monotonic() + 6
        while value(found, "sms_up", tag="limite") != 1:
            assert time.monotonic() < deadline, "collection never resumed"
            time.sleep(0.3)
            found, _ = timed_scrape(url, 3.0)


# --- the watchdog itself -----------------------------------------------------------------------


def test_a_late_watchdog_never_cuts_a_connection_already_handed_back(sim):
    """A guard firing after its request gave its connection back to the pool (the request
    ended just at its deadline) must not cut that connection: it is serving another request."""
    sim.add_tag(campaign("lent", 3))
    sim.set_fault("lent", "delay", seconds=0.6)
    pool = transport._AbortingHTTPPool("127.0.0.1", sim.port, maxsize=1, block=True)
    guard = transport.Guard(time.monotonic())
    transport._current.guard = guard
    try:
        first = pool.urlopen("GET", f"/v1/me?apiKey={API_KEY}", preload_content=False)
        first.read()
        first.release_conn()  # back in the pool
    finally:
        transport._current.guard = None
    answers = []
    second = threading.Thread(
        target=lambda: answers.append(
            pool.urlopen("GET", f"/v1/bulk-status-by-tag?apiKey={API_KEY}&tag=lent", retries=0)
        )
    )
    second.start()  # on the same keep-alive connection (the pool holds one)
    time.sleep(0.2)
    guard.fire()  # late, while the connection serves the second request
    second.join(5)
    pool.close()
    assert answers and answers[0].status == 200 and b'"success":true' in answers[0].data


def test_many_requests_through_one_watchdog(sim):
    """150 pages over keep-alive connections, four at a time: every count exact, the
    watchdog's queue empties once the deadlines have passed, its thread ends with the client."""
    tags = [f"lot-{i}" for i in range(30)]
    for tag in tags:
        sim.add_tag(campaign(tag, 45))  # 5 pages of 10
    client = SmsPartnerClient(make_config(sim, tags, timeout="1s").api)
    try:
        results = read_whole(client, tags, deadline=time.monotonic() + 60)
        for tag in tags:
            assert results[tag].complete and results[tag].messages == 45, results[tag]
        assert client.requests_made == 150
        time.sleep(1.4)
        assert client.transport.watchdog._heap == []
    finally:
        client.close()
    assert not client.transport.watchdog._thread.is_alive()


def test_the_apis_clock_is_read_from_its_date_header_and_an_odd_one_changes_nothing():
    transport = Transport("https://api.example.org/v1", 1, 1024)
    try:
        assert transport.clock_offset is None
        for odd in (None, "", "yesterday", "Sun, 06 Nov 1994 08:49:37", "x" * 1000):
            transport._note_date(odd)
            assert transport.clock_offset is None, odd
        transport._note_date("Sun, 06 Nov 1994 08:49:37 GMT")  # RFC 9110's own example
        assert transport.clock_offset == pytest.approx(784111777 - time.time(), abs=5)
        transport._note_date("garbage")
        assert transport.clock_offset == pytest.approx(784111777 - time.time(), abs=5)
    finally:
        transport.close()
