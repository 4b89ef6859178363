"""What TLS and basic auth cost: bcrypt checks (first, cached, wrong) and /metrics latency over
HTTP and HTTPS on loopback. Prints figures; asserts nothing.

    .venv/bin/python benchmarks/secure_serving.py
"""

from __future__ import annotations

import base64
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path

import bcrypt
import requests
import trustme
from prometheus_client import CollectorRegistry, Gauge

from smsp_exporter.web import ExporterServer
from smsp_exporter.webconfig import BasicAuth, load_web_config

REQUESTS = 200


def timed(call) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def bcrypt_figures() -> None:
    auth = BasicAuth((("u", bcrypt.hashpw(b"pw", bcrypt.gensalt(10))),))
    good = "Basic " + base64.b64encode(b"u:pw").decode()
    bad = "Basic " + base64.b64encode(b"u:nope").decode()
    first = timed(lambda: auth.check(good))
    cached = statistics.median(timed(lambda: auth.check(good)) for _ in range(1000))
    wrong = timed(lambda: auth.check(bad))
    print(
        f"bcrypt cost 10: first check {first * 1e3:.1f} ms, cached {cached * 1e6:.1f} us "
        f"(median of 1000), wrong password {wrong * 1e3:.1f} ms"
    )


def latency_figures() -> None:
    directory = Path(tempfile.mkdtemp())
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(directory / "server.crt")
    cert.private_key_pem.write_to_path(directory / "server.key")
    ca.cert_pem.write_to_path(directory / "ca.crt")
    (directory / "web.yml").write_text(
        f"tls_server_config:\n  cert_file: {directory}/server.crt\n"
        f"  key_file: {directory}/server.key\n"
    )
    registry = CollectorRegistry()
    Gauge("bench_value", "A value", registry=registry).set(1)
    for name, web_config, verify in (
        ("http", None, True),
        ("https", load_web_config(directory / "web.yml"), str(directory / "ca.crt")),
    ):
        server = ExporterServer(registry, "127.0.0.1:0", web_config=web_config)
        server.start()
        url = server.url + "metrics"
        try:
            get = partial(requests.get, url, verify=verify, timeout=5)
            times = [timed(get) for _ in range(REQUESTS)]
        finally:
            server.shutdown()
        print(
            f"{name}: /metrics median {statistics.median(times) * 1e3:.2f} ms "
            f"({REQUESTS} requests, a new connection each)"
        )


if __name__ == "__main__":
    bcrypt_figures()
    latency_figures()
