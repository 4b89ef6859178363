"""The exporter's HTTP server, over real HTTP on 127.0.0.1 (ports chosen by the kernel)."""

from __future__ import annotations

import gzip
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

from smsp_exporter.collector import scrape_timeout
from smsp_exporter.httpd import Limits
from smsp_exporter.web import ExporterServer, Route, parse_listen_address

SECRET = "sk-WEBCANARY-0a1b2c3d4e5f"
IDENTITY = {"Accept-Encoding": "identity"}


class TimeoutCollector:
    """Exposes the scrape timeout the HTTP layer set, -1 when there is none."""

    def collect(self) -> Iterator[Metric]:
        value = scrape_timeout.get()
        family = GaugeMetricFamily("test_scrape_timeout_seconds", "scrape timeout seen")
        family.add_metric([], -1.0 if value is None else value)
        yield family


class FailingCollector:
    def __init__(self) -> None:
        self.fail = False

    def collect(self) -> Iterator[Metric]:
        if self.fail:
            raise RuntimeError(f"upstream exploded with apiKey={SECRET}")
        yield GaugeMetricFamily("test_ok", "fine", value=1.0)


def make_registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    Gauge("test_answer", "the answer", registry=registry).set(42)
    registry.register(TimeoutCollector())  # type: ignore[arg-type]
    return registry


@pytest.fixture
def start() -> Iterator[Callable[..., ExporterServer]]:
    """Start servers; every one is shut down at the end of the test, whatever happens."""
    servers: list[ExporterServer] = []

    def _start(
        registry: CollectorRegistry | None = None, listen: str = "127.0.0.1:0", **kwargs: Any
    ) -> ExporterServer:
        server = ExporterServer(registry or make_registry(), listen, **kwargs)
        servers.append(server)
        server.start()
        return server

    try:
        yield _start
    finally:
        for server in servers:
            server.shutdown()


@pytest.fixture
def server(start: Callable[..., ExporterServer]) -> ExporterServer:
    return start(version="1.2.3")


def get(server: ExporterServer, path: str, **kwargs: Any) -> requests.Response:
    kwargs.setdefault("timeout", 10)
    return requests.get(f"http://127.0.0.1:{server.port}{path}", **kwargs)


def metric_values(text: str) -> dict[str, float]:
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def raw_request(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


# --- listen address --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1:9847", ("127.0.0.1", 9847)),
        (":9847", ("", 9847)),
        ("0.0.0.0:80", ("0.0.0.0", 80)),
        ("localhost:0", ("localhost", 0)),
        ("[::1]:9847", ("::1", 9847)),
        ("[::]:65535", ("::", 65535)),
        ("exporter.example.com:9847", ("exporter.example.com", 9847)),
    ],
)
def test_parse_listen_address(value: str, expected: tuple[str, int]) -> None:
    assert parse_listen_address(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "",
        "9847",
        "localhost",
        "localhost:",
        ":65536",
        ":-1",
        ":98a",
        ": 9847",
        ":٩٨",  # non-ASCII digits
        "::1:9847",
        "[::1]",
        "[::1]9847",
        "[nope]:9847",
        "[127.0.0.1]:9847",
        "bad host:9847",
        "http://localhost:9847",
        ":99999999999999999999",
    ],
)
def test_parse_listen_address_rejects(value: str) -> None:
    with pytest.raises(ValueError, match="listen address"):
        parse_listen_address(value)


def test_start_rejects_a_bad_address() -> None:
    server = ExporterServer(make_registry(), "localhost")
    with pytest.raises(ValueError, match="listen address"):
        server.start()
    server.shutdown()


# --- /metrics --------------------------------------------------------------------------------


def test_metrics_serves_the_registry(server: ExporterServer) -> None:
    response = get(server, "/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    values = metric_values(response.text)
    assert values["test_answer"] == 42
    assert values["test_scrape_timeout_seconds"] == -1  # no header: no timeout


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("7.5", 7.5),
        ("10", 10.0),
        ("abc", -1),
        ("-3", -1),
        ("0", -1),
        ("nan", -1),
        ("inf", -1),
        ("0.1", 1.0),  # clamped: a client cannot ask for rounds too short to succeed
        ("86400", 120.0),  # nor for endless ones
    ],
)
def test_metrics_scrape_timeout_header(
    server: ExporterServer, header: str, expected: float
) -> None:
    response = get(server, "/metrics", headers={"X-Prometheus-Scrape-Timeout-Seconds": header})
    assert response.status_code == 200
    assert metric_values(response.text)["test_scrape_timeout_seconds"] == expected
    # The variable is reset after the request: the next one without the header sees none.
    assert metric_values(get(server, "/metrics").text)["test_scrape_timeout_seconds"] == -1


def test_metrics_openmetrics_negotiation(server: ExporterServer) -> None:
    response = get(
        server, "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/openmetrics-text")
    assert response.text.endswith("# EOF\n")
    assert "test_answer 42.0" in response.text


def test_metrics_gzip(server: ExporterServer) -> None:
    response = get(server, "/metrics", headers={"Accept-Encoding": "gzip"}, stream=True)
    assert response.headers["Content-Encoding"] == "gzip"
    body = response.raw.read()
    assert int(response.headers["Content-Length"]) == len(body)
    assert "test_answer 42.0" in gzip.decompress(body).decode()
    plain = get(server, "/metrics", headers=IDENTITY)
    assert "Content-Encoding" not in plain.headers
    assert "test_answer 42.0" in plain.text


def test_metrics_name_filter(server: ExporterServer) -> None:
    values = metric_values(get(server, "/metrics?name[]=test_answer").text)
    assert set(values) == {"test_answer"}


def test_metrics_head(server: ExporterServer) -> None:
    full = get(server, "/metrics", headers=IDENTITY)
    response = requests.head(server.url + "metrics", headers=IDENTITY, timeout=10)
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["Content-Type"] == full.headers["Content-Type"]
    assert response.headers["Content-Length"] == str(len(full.content))


def test_metrics_post_is_not_allowed(server: ExporterServer) -> None:
    for path in ("/metrics", "/", "/healthz"):
        response = requests.post(server.url.rstrip("/") + path, data=b"x", timeout=10)
        assert response.status_code == 405, path
        assert response.headers["Allow"] == "GET, HEAD"
    assert requests.options(server.url + "metrics", timeout=10).status_code == 405


def test_collector_error_is_a_500_without_its_text(
    start: Callable[..., ExporterServer],
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    collector = FailingCollector()
    registry = CollectorRegistry()
    registry.register(collector)  # type: ignore[arg-type]
    server = start(registry)
    assert get(server, "/metrics").status_code == 200
    collector.fail = True
    with caplog.at_level(logging.ERROR, logger="smsp_exporter.web"):
        response = get(server, "/metrics")
    assert response.status_code == 500
    assert response.text == "internal server error\n"
    assert SECRET not in response.text and "exploded" not in response.text
    assert any(record.exc_info for record in caplog.records)  # logged, with the traceback
    assert capfd.readouterr().err == ""  # and nothing printed to stderr
    collector.fail = False
    assert get(server, "/metrics").status_code == 200


# --- other routes ----------------------------------------------------------------------------


def test_landing_page(start: Callable[..., ExporterServer]) -> None:
    server = start(title="SMS <Partner> & co", version='1.0"<x>')
    response = get(server, "/")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert 'href="/metrics"' in response.text
    assert 'href="/healthz"' in response.text
    assert "SMS &lt;Partner&gt; &amp; co" in response.text
    assert "1.0&quot;&lt;x&gt;" in response.text
    assert "<Partner>" not in response.text


def test_an_extra_route_replaces_the_landing_page(start: Callable[..., ExporterServer]) -> None:
    # The exporter's status page (smsp_exporter/status.py) takes "/" this way.
    def status(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
        return [b"<p>status</p>"]

    server = start(extra_routes={"/": status})
    assert get(server, "/").text == "<p>status</p>"
    assert requests.head(server.url, timeout=10).status_code == 200
    assert requests.post(server.url, timeout=10).status_code == 405
    for path in ("/metrics", "/healthz"):  # those stay built in
        with pytest.raises(ValueError, match="built in"):
            ExporterServer(make_registry(), "127.0.0.1:0", extra_routes={path: status})


def test_healthz(start: Callable[..., ExporterServer]) -> None:
    healthy = {"value": True}
    server = start(health=lambda: healthy["value"])
    response = get(server, "/healthz")
    assert (response.status_code, response.text) == (200, "ok\n")
    assert response.headers["Content-Type"].startswith("text/plain")
    healthy["value"] = False
    response = get(server, "/healthz")
    assert (response.status_code, response.text) == (503, "unhealthy\n")


def test_healthz_default_and_failing_check(start: Callable[..., ExporterServer]) -> None:
    assert get(start(), "/healthz").status_code == 200

    def broken() -> bool:
        raise RuntimeError("no")

    assert get(start(health=broken), "/healthz").status_code == 503


def test_unknown_path_is_404(server: ExporterServer) -> None:
    for path in ("/nope", "/metrics/", "/metricsx", "/favicon.ico"):
        response = get(server, path)
        assert (response.status_code, response.text) == (404, "not found\n"), path
    assert requests.post(server.url + "nope", timeout=10).status_code == 404


def test_extra_routes(start: Callable[..., ExporterServer]) -> None:
    seen: list[tuple[str, str]] = []

    def reload_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        seen.append((environ["REQUEST_METHOD"], environ["QUERY_STRING"]))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"reloaded", b"\n"]

    def tags_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        seen.append((environ["REQUEST_METHOD"], environ["QUERY_STRING"]))
        start_response("200 OK", [("Content-Type", "application/json")])
        return [b"{}"]

    server = start(extra_routes={"/-/reload": Route.post(reload_app), "/api/v1/tags": tags_app})
    response = requests.post(server.url + "-/reload?x=1", timeout=10)
    assert (response.status_code, response.text) == (200, "reloaded\n")
    assert response.headers["Content-Length"] == "9"
    # The route table answers 405 (with Allow) itself: the handler never sees a GET.
    for method in ("GET", "HEAD", "PUT"):
        response = requests.request(method, server.url + "-/reload", timeout=10)
        assert (response.status_code, response.headers["Allow"]) == (405, "POST"), method
    # A plain WSGI app is a GET route; HEAD gets the GET's headers, without the body.
    assert get(server, "/api/v1/tags").text == "{}"
    head = requests.head(server.url + "api/v1/tags", timeout=10)
    assert (head.status_code, head.content, head.headers["Content-Length"]) == (200, b"", "2")
    response = requests.post(server.url + "api/v1/tags", timeout=10)
    assert (response.status_code, response.headers["Allow"]) == (405, "GET, HEAD")
    assert seen == [("POST", "x=1"), ("GET", ""), ("GET", "")]


def test_extra_routes_are_checked() -> None:
    app = make_registry()
    with pytest.raises(ValueError, match="built in"):
        ExporterServer(app, ":0", extra_routes={"/metrics": lambda e, s: []})
    with pytest.raises(ValueError, match="start with"):
        ExporterServer(app, ":0", extra_routes={"probe": lambda e, s: []})


# --- limits and robustness -------------------------------------------------------------------


def test_huge_query_string_is_refused_and_server_survives(
    server: ExporterServer, capfd: pytest.CaptureFixture[str]
) -> None:
    response = get(server, "/metrics?q=" + "a" * 100_000)
    assert response.status_code == 414
    assert get(server, "/metrics").status_code == 200
    assert capfd.readouterr().err == ""


def test_huge_header_is_refused_and_server_survives(server: ExporterServer) -> None:
    response = get(server, "/metrics", headers={"X-Big": "a" * 70_000})
    assert response.status_code == 431
    assert get(server, "/healthz").status_code == 200


def test_idle_connections_take_no_worker(start: Callable[..., ExporterServer]) -> None:
    server = start(max_threads=2)
    idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(10)]
    try:
        time.sleep(0.3)
        assert get(server, "/healthz").status_code == 200  # answered by one of the 2 workers
    finally:
        for sock in idle:
            sock.close()


def test_when_workers_and_queue_are_full_a_request_gets_503_at_once(
    start: Callable[..., ExporterServer],
) -> None:
    release = threading.Event()
    entered = threading.Semaphore(0)

    def slow(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        entered.release()
        release.wait(10)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"slow\n"]

    server = start(limits=Limits(workers=1, queue_size=1), extra_routes={"/slow": slow})
    results: list[int] = []
    first = threading.Thread(target=lambda: results.append(get(server, "/slow").status_code))
    first.start()
    assert entered.acquire(timeout=5)  # the only worker is busy
    second = threading.Thread(target=lambda: results.append(get(server, "/healthz").status_code))
    second.start()
    time.sleep(0.3)  # queued
    try:
        began = time.monotonic()
        response = get(server, "/healthz")
        assert time.monotonic() - began < 2
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "1"
    finally:
        release.set()
        first.join(10)
        second.join(10)
    assert sorted(results) == [200, 200]


def test_slow_client_is_timed_out(start: Callable[..., ExporterServer]) -> None:
    server = start(request_timeout=0.3, max_threads=1)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # never finishes its headers
        began = time.monotonic()
        assert sock.recv(1024) == b""  # the server hung up
        assert time.monotonic() - began < 3
    assert get(server, "/healthz").status_code == 200  # and its only slot is free again


def test_raw_http_10_request(server: ExporterServer) -> None:
    answer = raw_request(server.port, b"GET /healthz HTTP/1.0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.0 200 OK\r\n")
    assert answer.endswith(b"\r\n\r\nok\n")


def test_garbage_request_line(server: ExporterServer) -> None:
    answer = raw_request(server.port, b"\x16\x03\x01 not http at all\r\n\r\n")
    assert answer.startswith(b"HTTP/1.0 400")
    assert get(server, "/healthz").status_code == 200


# --- lifecycle -------------------------------------------------------------------------------


def test_port_and_url(server: ExporterServer) -> None:
    assert server.port > 0
    assert server.url == f"http://127.0.0.1:{server.port}/"


def test_all_interfaces(start: Callable[..., ExporterServer]) -> None:
    server = start(listen=":0")
    assert server.url == f"http://localhost:{server.port}/"
    assert get(server, "/healthz").status_code == 200


def _ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback")
def test_ipv6(start: Callable[..., ExporterServer]) -> None:
    server = start(listen="[::1]:0")
    assert server.url == f"http://[::1]:{server.port}/"
    assert requests.get(server.url + "healthz", timeout=10).text == "ok\n"


def test_second_server_on_same_port_fails(start: Callable[..., ExporterServer]) -> None:
    first = start()
    second = ExporterServer(make_registry(), f"127.0.0.1:{first.port}")
    with pytest.raises(OSError, match=r"cannot listen on 127\.0\.0\.1:\d+: Address already in use"):
        second.start()
    second.shutdown()
    assert get(first, "/healthz").status_code == 200


def test_shutdown_is_prompt_and_idempotent(start: Callable[..., ExporterServer]) -> None:
    server = start()
    port = server.port
    assert get(server, "/healthz").status_code == 200
    # A client that connected and sent nothing must not delay the shutdown.
    idle = socket.create_connection(("127.0.0.1", port))
    try:
        began = time.monotonic()
        server.shutdown()
        assert time.monotonic() - began < 2
        began = time.monotonic()
        server.shutdown()
        assert time.monotonic() - began < 0.5
    finally:
        idle.close()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
    with pytest.raises(RuntimeError):
        server.start()


def test_shutdown_without_start() -> None:
    server = ExporterServer(make_registry(), "127.0.0.1:0")
    server.shutdown()
    server.shutdown()


def test_context_manager() -> None:
    with ExporterServer(make_registry(), "127.0.0.1:0") as server:
        assert get(server, "/healthz").status_code == 200
        port = server.port
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2)


def test_requests_are_logged_at_debug_only(
    server: ExporterServer, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    with caplog.at_level(logging.DEBUG, logger="smsp_exporter"):
        get(server, "/healthz?token=abc")
        deadline = time.monotonic() + 5
        # The server logs the request after the answer is sent: wait for it.
        while not (records := [r for r in caplog.records if r.getMessage() == "http request"]):
            assert time.monotonic() < deadline, "request not logged"
            time.sleep(0.01)
    assert all(r.levelno == logging.DEBUG for r in records)
    assert records[0].path == "/healthz"  # type: ignore[attr-defined]
    assert capfd.readouterr().err == ""
