"""Issue 11, serving side: hostile clients over real sockets on loopback, each case bounded in
time and count. Slow and idle connections, wrong-password floods, reload storms, short
scrape timeouts and probe floods must not keep a legitimate scraper from its answer."""

from __future__ import annotations

import base64
import contextlib
import logging
import secrets
import socket
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace

import bcrypt
import pytest
import requests
from prometheus_client import CollectorRegistry, Gauge

from smsp_exporter.config import config_from_dict, load_config
from smsp_exporter.logs import clear_secrets
from smsp_exporter.reload import Reloader, reload_route
from smsp_exporter.web import ExporterServer, Route
from smsp_exporter.webconfig import WebConfig

from .helpers import API_KEY, campaign, make_config, samples, serve, value
from .running import write_config

PATIENT = {"X-Prometheus-Scrape-Timeout-Seconds": "10"}


def port_of(url: str) -> int:
    return int(url.rstrip("/").rsplit(":", 1)[1])


@contextlib.contextmanager
def dripping(port: int, count: int, interval: float) -> Iterator[list[socket.socket]]:
    """``count`` connections that send a request head one byte every ``interval`` seconds and
    never finish it (slowloris). Closed at the end."""
    socks: list[socket.socket] = []
    stop = threading.Event()

    def drip() -> None:
        while not stop.wait(interval):
            for sock in list(socks):
                with contextlib.suppress(OSError):
                    sock.send(b"a")

    try:
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            socks.append(sock)
        thread = threading.Thread(target=drip, daemon=True)
        thread.start()
        yield socks
    finally:
        stop.set()
        for sock in socks:
            sock.close()


def assert_scrape_ok(url: str, tags: list[str], **kwargs) -> float:
    began = time.monotonic()
    answer = requests.get(f"{url}/metrics", headers=PATIENT, timeout=10, **kwargs)
    assert answer.status_code == 200, answer.text[:200]
    found = samples(answer.text)
    assert {t: value(found, "sms_up", tag=t) for t in tags} == dict.fromkeys(tags, 1.0)
    return time.monotonic() - began


# --- 1. slow and idle clients ------------------------------------------------------------------


def test_hundreds_of_dripping_connections_do_not_starve_scrapes_or_healthz(sim):
    """300 connections (more than the server reads at once) each trickle a header byte every
    0.3 s: /metrics and /healthz keep answering 200, promptly."""
    sim.add_tag(campaign("cible", 12))
    with serve(make_config(sim, ["cible"])) as url, dripping(port_of(url), 300, 0.3):
        time.sleep(1.0)  # every dripping connection has been accepted and has sent bytes
        took = [assert_scrape_ok(url, ["cible"]) for _ in range(3)]
        health = requests.get(f"{url}/healthz", timeout=5)
        assert health.status_code == 200
        found = samples(requests.get(f"{url}/metrics", timeout=10).text)
    assert max(took) < 3, took
    # The oldest unfinished connections made room for the newer ones, and it shows.
    assert value(found, "sms_http_refused_total", reason="evicted") >= 300 - 256


def test_a_request_head_must_arrive_whole_within_the_request_timeout():
    """The deadline is for the whole head, not per read: a byte every 0.2 s does not reset it."""
    registry = CollectorRegistry()
    Gauge("test_value", "a value", registry=registry).set(1)
    with ExporterServer(registry, "127.0.0.1:0", request_timeout=1.0) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(b"GET /metrics HTTP/1.1\r\n")
            began = time.monotonic()
            closed = False
            while time.monotonic() - began < 4:
                try:
                    sock.send(b"X")
                    sock.settimeout(0.2)
                    if sock.recv(1024) == b"":
                        closed = True
                        break
                except TimeoutError:
                    continue
                except OSError:  # reset by the server
                    closed = True
                    break
            elapsed = time.monotonic() - began
        assert closed, "a dripping client kept its connection past the request timeout"
        assert elapsed < 2.5, elapsed
        assert requests.get(f"{server.url}healthz", timeout=5).status_code == 200
        found = samples(requests.get(f"{server.url}metrics", timeout=5).text)
        assert value(found, "sms_http_refused_total", reason="request_timeout") == 1


# --- 1. wrong-password floods, 5. auth timing -------------------------------------------------


def auth_header(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@contextlib.contextmanager
def auth_server(cost: int, password: str) -> Iterator[str]:
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(cost))
    registry = CollectorRegistry()
    Gauge("secure_value", "a value", registry=registry).set(42)
    config = WebConfig("<test>", basic_auth_users=(("prometheus", hashed),))
    with ExporterServer(registry, "127.0.0.1:0", web_config=config) as server:
        yield server.url.rstrip("/")


def test_a_flood_of_wrong_passwords_at_a_high_cost_does_not_starve_a_scraper():
    """80 clients send new wrong passwords in a loop against a cost-12 hash (a quarter of a
    second each): the scraper, whose password was checked once, is still answered, promptly."""
    password = "right-" + secrets.token_hex(4)
    with auth_server(12, password) as url:
        good = {"Authorization": auth_header("prometheus", password)}
        assert requests.get(f"{url}/metrics", headers=good, timeout=10).status_code == 200
        port = port_of(url)
        stop = time.monotonic() + 5
        seen: list[int] = []

        def flood() -> None:
            while time.monotonic() < stop:
                header = auth_header("prometheus", secrets.token_hex(8))
                request = f"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: {header}\r\n\r\n"
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                        sock.sendall(request.encode())
                        answer = sock.recv(64)
                    if answer.startswith(b"HTTP/"):
                        seen.append(int(answer.split(b" ", 2)[1]))
                except OSError:
                    pass

        threads = [threading.Thread(target=flood, daemon=True) for _ in range(80)]
        for thread in threads:
            thread.start()
        try:
            time.sleep(1.0)  # the flood is on
            took = []
            for _ in range(3):
                began = time.monotonic()
                answer = requests.get(f"{url}/metrics", headers=good, timeout=10)
                took.append(time.monotonic() - began)
                assert answer.status_code == 200
                assert "secure_value 42.0" in answer.text
            assert requests.get(f"{url}/healthz", headers=good, timeout=10).status_code == 200
        finally:
            for thread in threads:
                thread.join(15)
    assert seen and set(seen) <= {401, 503}, set(seen)
    assert 503 in seen  # the password checks were bounded: the flood was turned away
    assert max(took) < 4, took


def test_an_unknown_user_costs_what_a_wrong_password_costs_whatever_the_cost():
    """Hashes at cost 8 (the dummy hash used to be cost 10): the two medians within 2x."""
    password = "right-" + secrets.token_hex(4)
    with auth_server(8, password) as url:

        def timed(user: str) -> float:
            header = {"Authorization": auth_header(user, secrets.token_hex(8))}
            began = time.perf_counter()
            assert requests.get(f"{url}/metrics", headers=header, timeout=10).status_code == 401
            return time.perf_counter() - began

        timed("prometheus")  # warm up the connection machinery
        known, unknown = [], []
        for _ in range(7):
            known.append(timed("prometheus"))
            unknown.append(timed("nobody-" + secrets.token_hex(3)))
    ratio = statistics.median(unknown) / statistics.median(known)
    assert 0.5 < ratio < 2, (ratio, statistics.median(known), statistics.median(unknown))


# --- 2. reload ---------------------------------------------------------------------------------


@contextlib.contextmanager
def reloadable(path, *routes_extra) -> Iterator[tuple[Reloader, str]]:
    reloader = Reloader(lambda: load_config(path), load_config(path))
    registry = CollectorRegistry()
    registry.register(reloader)
    server = ExporterServer(
        registry,
        "127.0.0.1:0",
        extra_routes={**reloader.routes(), "/-/reload": reload_route(reloader)},
    )
    server.start()
    reloader.start()
    try:
        yield reloader, server.url.rstrip("/")
    finally:
        server.shutdown()
        reloader.close()
        clear_secrets()


def refreshers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "smsp-refresh" and t.is_alive()]


def test_a_reload_storm_under_scrapes_and_slow_probes_ends_with_one_poller(sim, tmp_path, caplog):
    """Background mode, a multi-page tag, scrapes and slow probes in flight, 30 concurrent
    reloads: afterwards one refresher polls (the upstream sees one exporter's traffic), and
    nothing was logged at error level (no 'cannot schedule new futures after shutdown')."""
    sim.add_tag(campaign("promo", 42))  # 5 pages of 10
    sim.add_tag(campaign("lente", 3))
    sim.set_fault("lente", "delay", seconds=0.4)
    sim.latency = 0.05
    path = write_config(
        tmp_path,
        sim.url,
        ["promo"],
        api="  max_requests_per_second: 0\n  concurrency: 2\n",
        collection="  mode: background\n  interval: 1s\n",
    )
    path.write_text(path.read_text() + "probe:\n  allowed_tags: [lente]\n")
    stop = threading.Event()
    failures: list[str] = []

    def loop(call: Callable[[], requests.Response]) -> None:
        while not stop.is_set():
            try:
                code = call().status_code
            except requests.RequestException as err:
                failures.append(type(err).__name__)
                continue
            if code != 200:
                failures.append(str(code))

    with caplog.at_level(logging.INFO, logger="smsp_exporter"), reloadable(path) as (_, url):
        assert requests.get(f"{url}/metrics", timeout=10).status_code == 200
        workers = [
            threading.Thread(
                target=loop, args=(lambda: requests.get(f"{url}/metrics", timeout=10),)
            )
            for _ in range(3)
        ] + [
            threading.Thread(
                target=loop,
                args=(lambda: requests.get(f"{url}/probe?tag=lente", timeout=10),),
            )
            for _ in range(3)
        ]
        for worker in workers:
            worker.start()
        codes: list[int] = []

        def reload() -> None:
            for _ in range(3):
                codes.append(requests.post(f"{url}/-/reload", timeout=30).status_code)
                time.sleep(0.05)

        storm = [threading.Thread(target=reload) for _ in range(10)]
        for thread in storm:
            thread.start()
        for thread in storm:
            thread.join(60)
        stop.set()
        for worker in workers:
            worker.join(15)
        assert codes == [200] * 30
        # Retired exporters close when their last user is done: one refresher is left.
        deadline = time.monotonic() + 10
        while len(refreshers()) > 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(refreshers()) == 1, len(refreshers())
        sim.reset_stats()
        time.sleep(3.0)
        upstream = sim.stats()["by_tag"].get("promo", 0)
    # One exporter, a round a second, 5 pages a round: 3 s make about 15 requests, not 30x.
    assert upstream <= 25, upstream
    assert failures == [], failures[:10]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]


def test_a_reload_keeps_the_last_account_reading(sim, tmp_path):
    """Issue 16 item 13: the credit stays exported while /v1/me fails, across a reload too."""
    sim.add_tag(campaign("promo", 3))
    path = write_config(tmp_path, sim.url, ["promo"])
    path.write_text(path.read_text() + "account:\n  enabled: true\n")
    with reloadable(path) as (_reloader, url):
        first = samples(requests.get(f"{url}/metrics", timeout=10).text)
        credit = value(first, "sms_account_credits", kind="sms")
        assert credit is not None and value(first, "sms_account_up") == 1
        sim.set_fault(None, "http_status", status=500, endpoint="me")
        assert requests.post(f"{url}/-/reload", timeout=10).status_code == 200
        after = samples(requests.get(f"{url}/metrics", timeout=10).text)
    assert value(after, "sms_account_up") == 0
    assert value(after, "sms_account_credits", kind="sms") == credit
    assert value(after, "sms_account_last_success_timestamp_seconds") == value(
        first, "sms_account_last_success_timestamp_seconds"
    )


# --- 3. shared rounds: one client does not set everyone's deadline ----------------------------


def test_short_timeout_scrapers_do_not_take_tags_down_for_a_patient_one(sim):
    """A client loops with X-Prometheus-Scrape-Timeout-Seconds: 0.1 while rounds take about a
    second: a scraper with a 10 s timeout sees every tag up, every time."""
    tags = ["t1", "t2", "t3"]
    for tag in tags:
        sim.add_tag(campaign(tag, 25))  # 3 pages each
    sim.latency = 0.25
    config = make_config(sim, tags, concurrency=3)
    stop = threading.Event()
    with serve(config) as url:

        def hurry() -> None:
            while not stop.is_set():
                with contextlib.suppress(requests.RequestException):
                    requests.get(
                        f"{url}/metrics",
                        headers={"X-Prometheus-Scrape-Timeout-Seconds": "0.1"},
                        timeout=10,
                    )

        hurried = [threading.Thread(target=hurry) for _ in range(3)]
        for thread in hurried:
            thread.start()
        try:
            time.sleep(0.3)
            for _ in range(3):
                assert_scrape_ok(url, tags)
        finally:
            stop.set()
            for thread in hurried:
                thread.join(15)


def test_scrapes_as_patient_as_the_round_share_it_and_a_more_patient_one_gets_the_next(sim):
    """Two scrapes with the same timeout share one round; a more patient one arriving during a
    round started with a short timeout waits for the next round, which has its patience."""
    sim.add_tag(campaign("t1", 25))  # 3 pages
    sim.latency = 0.3
    with serve(make_config(sim, ["t1"], concurrency=1)) as url:
        results: list[float] = []

        def scrape(timeout: str, delay: float) -> None:
            time.sleep(delay)
            answer = requests.get(
                f"{url}/metrics",
                headers={"X-Prometheus-Scrape-Timeout-Seconds": timeout},
                timeout=20,
            )
            results.append(value(answer.text, "sms_up", tag="t1"))

        same = [threading.Thread(target=scrape, args=("10", d)) for d in (0.0, 0.3)]
        for thread in same:
            thread.start()
        for thread in same:
            thread.join(20)
        assert results == [1.0, 1.0]
        assert sim.stats()["requests"] == 3  # one round for both
        # A fresh source (nothing remembered): a 1 s scrape starts a round too short for the
        # tag; a 10 s scrape joining it waits for the next one, which has 9 s.
    sim.reset_stats()
    # Whole reads: an incremental first read cut short is progress (sms_up 1), not a failure.
    whole = {"incremental": False}
    with serve(make_config(sim, ["t1"], concurrency=1, collection=whole)) as url:
        results.clear()
        mixed = [
            threading.Thread(target=scrape, args=("1", 0.0)),
            threading.Thread(target=scrape, args=("10", 0.2)),
        ]
        for thread in mixed:
            thread.start()
        for thread in mixed:
            thread.join(20)
    assert sorted(results) == [0.0, 1.0]


def test_a_closed_scrape_source_answers_at_once(sim):
    from smsp_exporter.exporter import Exporter

    sim.add_tag(campaign("t1", 3))
    exporter = Exporter(make_config(sim, ["t1"]))
    try:
        assert exporter.source.snapshot(10).tags[0].up
        exporter.close()
        began = time.monotonic()
        assert exporter.source.snapshot(10).tags[0].tag == "t1"  # the latest one, at once
        assert time.monotonic() - began < 0.5
    finally:
        exporter.close()


# --- 4. /probe: coalesced, and within its share ------------------------------------------------


def probe_config(sim, tags, **api):
    base = make_config(sim, tags, **api)
    return replace(
        base,
        probe=config_from_dict(
            {"api": {"url": sim.url, "key": API_KEY}, "probe": {"allowed_tags": ["sonde"]}},
            env={},
        ).probe,
    )


def test_probes_of_one_tag_at_the_same_time_share_one_fetch(sim):
    sim.add_tag(campaign("sonde", 42))  # 5 pages
    sim.latency = 0.2
    sim.add_tag(campaign("m0", 1))
    with serve(probe_config(sim, ["m0"])) as url:
        answers: list[requests.Response] = []

        def probe() -> None:
            answers.append(requests.get(f"{url}/probe?tag=sonde", headers=PATIENT, timeout=10))

        threads = [threading.Thread(target=probe) for _ in range(8)]
        for thread in threads:
            thread.start()
            time.sleep(0.02)
        for thread in threads:
            thread.join(15)
    assert [a.status_code for a in answers] == [200] * 8
    for answer in answers:
        assert value(answer.text, "sms_up", tag="sonde") == 1
    assert sim.stats()["by_tag"]["sonde"] == 5  # one fetch of its 5 pages, not eight


def test_a_probe_flood_leaves_metrics_tags_collected(sim):
    """20 clients probe a 5-page tag in a loop under a 20 requests/s budget: the /metrics tags
    keep being collected, and the probes use at most their share of the budget."""
    tags = ["m1", "m2", "m3"]
    for tag in tags:
        sim.add_tag(campaign(tag, 25))  # 3 pages each
    sim.add_tag(campaign("sonde", 42))  # 5 pages
    sim.latency = 0.05
    config = probe_config(sim, tags, max_requests_per_second=20)
    stop = threading.Event()
    with serve(config) as url:

        def flood() -> None:
            while not stop.is_set():
                with contextlib.suppress(requests.RequestException):
                    requests.get(f"{url}/probe?tag=sonde", headers=PATIENT, timeout=10)

        flooders = [threading.Thread(target=flood) for _ in range(20)]
        for thread in flooders:
            thread.start()
        try:
            time.sleep(0.5)
            sim.reset_stats()
            began = time.monotonic()
            took = [assert_scrape_ok(url, tags) for _ in range(3)]
            elapsed = time.monotonic() - began
            probed = sim.stats()["by_tag"].get("sonde", 0)
        finally:
            stop.set()
            for thread in flooders:
                thread.join(15)
    assert max(took) < 4, took
    # The probes' share is half the budget: 10 requests/s (and a little slack for timing).
    assert probed <= 10 * elapsed + 6, (probed, elapsed)


# --- the request reader, attacked ------------------------------------------------------------


def echo_server(**kwargs) -> ExporterServer:
    """A server whose /echo route (GET and POST) answers the method, body and a header."""

    def echo(environ, start_response):
        body = environ["wsgi.input"].read()
        seen = environ.get("HTTP_X_PROMETHEUS_SCRAPE_TIMEOUT_SECONDS", "-")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [f"{environ['REQUEST_METHOD']} {len(body)} {seen}\n".encode(), body]

    registry = CollectorRegistry()
    routes = {"/echo": Route({"GET": echo, "POST": echo})}
    return ExporterServer(registry, "127.0.0.1:0", extra_routes=routes, **kwargs)


def raw(port: int, data: bytes, pause: float = 0.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        if pause:
            for byte in data:
                sock.send(bytes([byte]))
                time.sleep(pause)
        else:
            sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize(
    ("request_bytes", "status", "body"),
    [
        (b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n", 200, b"GET 0 -\n"),
        (b"\r\n\r\nGET /echo HTTP/1.0\n\n", 200, b"GET 0 -\n"),  # leading CRLF, bare LF
        (b"POST /echo HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", 200, b"POST 5 -\nhello"),
        (b"POST /echo HTTP/1.1\r\nContent-Length: 65537\r\n\r\n", 413, None),
        (
            b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            501,
            None,
        ),
        (b"POST /echo HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400, None),
        (b"POST /echo HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400, None),
        (b"GET /echo HTTP/1.1\r\nX-A: b\r\n  folded\r\n\r\n", 400, None),
        (b"GET /echo HTTP/1.1\r\nBad Header: b\r\n\r\n", 400, None),
        (b"GET /echo HTTP/2.0\r\n\r\n", 505, None),
        (b"GET echo HTTP/1.1\r\n\r\n", 400, None),
        # An underscore would pass for a dash in the WSGI environ: such headers are dropped.
        (
            b"GET /echo HTTP/1.1\r\nX-Prometheus-Scrape_Timeout-Seconds: 5\r\n\r\n",
            200,
            b"GET 0 -\n",
        ),
    ],
)
def test_the_request_reader(request_bytes, status, body):
    with echo_server() as server:
        answer = raw(server.port, request_bytes)
        head, _, content = answer.partition(b"\r\n\r\n")
        assert int(head.split(b" ", 2)[1]) == status, answer[:200]
        assert b"Connection: close" in head
        if body is not None:
            assert content == body
        assert requests.get(f"{server.url}healthz", timeout=5).status_code == 200


def test_a_request_sent_in_pieces_is_read_whole():
    with echo_server() as server:
        answer = raw(server.port, b"POST /echo HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", 0.002)
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"POST 3 -\nabc")


def test_a_body_trickling_past_the_request_timeout_is_cut():
    with echo_server(request_timeout=1.0) as server:
        began = time.monotonic()
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(b"POST /echo HTTP/1.1\r\nContent-Length: 100\r\n\r\n")
            with contextlib.suppress(OSError):
                while time.monotonic() - began < 4:
                    sock.send(b"x")
                    sock.settimeout(0.2)
                    with contextlib.suppress(TimeoutError):
                        if sock.recv(1024) == b"":
                            break
        assert time.monotonic() - began < 2.5


def test_expect_100_continue_is_honoured():
    with echo_server() as server, socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.settimeout(5)
        sock.sendall(b"POST /echo HTTP/1.1\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n")
        assert sock.recv(1024).startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(b"ok")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 200 OK") and answer.endswith(b"POST 2 -\nok")
