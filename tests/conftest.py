"""Shared fixtures: a simulator of the SMS Partner API and an exporter served over real HTTP,
both on 127.0.0.1 with ports chosen by the kernel."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
from collections.abc import Iterator

import pytest
import requests
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from smsp_exporter.config import Config, config_from_dict
from smsp_exporter.exporter import Exporter
from smsp_exporter.simulator import Simulator, TagSpec
from smsp_exporter.web import ExporterServer

# Programs of the system some tests run, and the Debian package that has each.
SYSTEM_TOOLS = {
    "promtool": "prometheus",
    "prometheus": "prometheus",
    "amtool": "prometheus-alertmanager",
    "prometheus-alertmanager": "prometheus-alertmanager",
    "alertmanager": "prometheus-alertmanager",
    "docker-compose": "docker-compose",
    "systemd-analyze": "systemd",
}
# Set by ./dev.sh test, which installs them all: there a missing program is a failure, not a skip.
REQUIRE_TOOLS = "SMSP_REQUIRE_TOOLS"


def require_tool(*names: str) -> str:
    """The path of the first of `names` on PATH. None there: the test is skipped with a message
    naming the program and its Debian package (plain pytest on a machine without them), or
    fails under ./dev.sh test (SMSP_REQUIRE_TOOLS=1), which must run everything."""
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    packages = sorted({SYSTEM_TOOLS[name] for name in names if name in SYSTEM_TOOLS})
    where = (
        f" (Debian package {', '.join(packages)}): ./dev.sh test installs it" if packages else ""
    )
    message = f"needs {' or '.join(names)} on PATH{where}"
    if os.environ.get(REQUIRE_TOOLS) == "1":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "needs(*programs): the test runs one of these programs (see require_tool)"
    )


def pytest_runtest_setup(item: pytest.Item) -> None:
    for mark in item.iter_markers("needs"):
        require_tool(*mark.args)


# Looks like a real key, so that a leak of it anywhere is easy to find.
API_KEY = "sk-LEAKCANARY-7f3a9c2e5b1d4f60"


def free_port() -> int:
    """A loopback port free right now (for processes that take a port, not port 0)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def campaign(name: str, messages: int, **fields) -> TagSpec:
    """A campaign whose messages are all sent at simulated t=0 (unless told otherwise)."""
    fields.setdefault("send_spread", 0.0)
    return TagSpec(name, messages, **fields)


@pytest.fixture
def sim() -> Iterator[Simulator]:
    """A frozen simulator: counts change only when a test advances its clock."""
    simulator = Simulator(api_key=API_KEY, page_size=10, seed=7).start()
    simulator.freeze()
    try:
        yield simulator
    finally:
        simulator.stop()


def make_config(sim: Simulator, tags, *, collection=None, **api) -> Config:
    api_section = {
        "url": sim.url,
        "key": API_KEY,
        "timeout": "2s",
        "max_requests_per_second": 0,
        "retries": 1,
    }
    api_section.update(api)
    return config_from_dict(
        {"api": api_section, "collection": collection or {}, "tags": list(tags)},
        source="<test>",
    )


@contextlib.contextmanager
def serve(config: Config) -> Iterator[str]:
    """The exporter for `config` on a free loopback port; yields its base URL."""
    exporter = Exporter(config)
    registry = CollectorRegistry()
    registry.register(exporter.collector)
    server = ExporterServer(registry, "127.0.0.1:0", extra_routes=exporter.routes())
    server.start()
    exporter.start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.shutdown()
        exporter.close()


def scrape(base_url: str, headers=None) -> str:
    response = requests.get(f"{base_url}/metrics", headers=headers, timeout=20)
    assert response.status_code == 200
    return response.text


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} of an exposition text."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(text_or_samples, name: str, **labels) -> float | None:
    found = samples(text_or_samples) if isinstance(text_or_samples, str) else text_or_samples
    return found.get((name, tuple(sorted(labels.items()))))


def statuses_of(found, tag: str) -> dict[str, float]:
    return {
        dict(labels)["status"]: v
        for (name, labels), v in found.items()
        if name == "sms_status_total" and dict(labels)["tag"] == tag
    }
