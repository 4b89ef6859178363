"""Hostile HTTP requests to the exporter itself (a real exporter on a simulator): each gets a
clean 4xx, never a file, a traceback or the key; the thread count stays bounded; /metrics
still works afterwards. (test_web.py covers huge query strings and headers, the 503 when all
request threads are busy and the slow-client timeout on a bare server.)"""

from __future__ import annotations

import socket
import threading
import time

import pytest
import requests

from smsp_exporter.web import DEFAULT_WORKERS

from .helpers import API_KEY, campaign, make_config, samples, serve, value


def raw(url: str, request: bytes, timeout: float = 5.0) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


@pytest.fixture
def exporter(sim, capfd):
    sim.add_tag(campaign("cible", 12))
    with serve(make_config(sim, ["cible"])) as url:
        requests.get(f"{url}/metrics", timeout=10)  # the fetch thread and upstream connection
        yield url
        found = samples(requests.get(f"{url}/metrics", timeout=10).text)
        assert value(found, "sms_up", tag="cible") == 1  # still serving, still collecting
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err and API_KEY not in out + err


TRAVERSALS = [
    "/../../../../etc/passwd",
    "/metrics/../../etc/passwd",
    "/%2e%2e/%2e%2e/etc/passwd",
    "/..%2f..%2fetc%2fpasswd",
    "/%252e%252e/etc/passwd",
    "/....//....//etc/passwd",
    "/metrics%00.html",
    "/metrics/",
    "/%c0%ae%c0%ae/etc/passwd",
    "/\\..\\..\\windows\\win.ini",
    "/.git/config",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_path_traversal_is_a_plain_404(exporter, path):
    answer = raw(exporter, f"GET {path} HTTP/1.0\r\n\r\n".encode())
    assert status_of(answer) == 404
    assert b"root:" not in answer and b"[core]" not in answer and b"sms_" not in answer


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"])
def test_other_methods_are_405_on_every_route(exporter, method):
    for path in ("/", "/metrics", "/healthz"):
        response = requests.request(method, f"{exporter}{path}", data=b"x" * 100, timeout=5)
        assert response.status_code == 405
        assert response.headers["Allow"] == "GET, HEAD"


@pytest.mark.parametrize(
    "request_line",
    [
        b"CONNECT 127.0.0.1:22 HTTP/1.1",
        b"FOO /metrics HTTP/1.1",
        b"G\x00ET /metrics HTTP/1.1",
        b"GET http://evil.example/metrics HTTP/1.1",
        b"GET /metrics HTTP/9.9",
        b"GET /metrics HTTP/1.1 extra",
        b"GET",
        b"GET /metrics?" + b"%" * 5000 + b" HTTP/1.1",
        b"GET /metrics?name[]=" + b"x" * 60_000 + b" HTTP/1.1",
        b"GET /\xff\xfe HTTP/1.1",
    ],
)
def test_malformed_requests_get_a_4xx_or_5xx_answer_never_a_crash(exporter, request_line):
    answer = raw(exporter, request_line + b"\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.")
    assert 200 <= status_of(answer) < 600  # a complete answer, whatever it says
    assert b"Traceback" not in answer


def test_too_many_headers_is_431(exporter):
    headers = b"".join(b"X-H%d: v\r\n" % i for i in range(150))
    answer = raw(exporter, b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
    assert status_of(answer) == 431


def test_many_slow_clients_take_no_thread_and_do_not_block_others(exporter):
    """Slowloris: many connections, each sending half a request. They are read by the event
    loop: no thread is started for them, and other requests are answered meanwhile."""
    port = int(exporter.rsplit(":", 1)[1])
    baseline = threading.active_count()
    sockets = []
    try:
        for _ in range(DEFAULT_WORKERS * 4):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # never finished
            sockets.append(sock)
        time.sleep(0.5)
        assert threading.active_count() <= baseline
        assert requests.get(f"{exporter}/healthz", timeout=5).status_code == 200
        assert requests.get(f"{exporter}/metrics", timeout=10).status_code == 200
    finally:
        for sock in sockets:
            sock.close()
