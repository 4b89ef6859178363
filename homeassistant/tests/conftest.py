"""Fixtures of the integration's tests: Home Assistant's test harness
(pytest-homeassistant-custom-component) with this folder's custom_components, and a real
simulator and exporter on 127.0.0.1 (the harness blocks every other address)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import pytest_socket

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # custom_components

from smsp_servers import Exporter, Simulator

pytest_plugins = ["pytest_homeassistant_custom_component"]


@pytest.fixture(autouse=True)
def _integration(enable_custom_integrations: None, socket_enabled: None) -> None:
    """Our custom integration loads; sockets to 127.0.0.1 are allowed (the harness still
    refuses any other address)."""


@pytest.fixture(scope="session")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    pytest_socket.enable_socket()  # set-up waits for the process over loopback HTTP
    simulator = Simulator(tmp_path_factory.mktemp("simulator"))
    try:
        yield simulator
    finally:
        simulator.stop()


@pytest.fixture
def exporter(sim: Simulator, tmp_path: Path) -> Iterator[Exporter]:
    """A fresh exporter (static tags promo and rappel, the account read), no auth."""
    pytest_socket.enable_socket()
    running = Exporter(tmp_path, sim)
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def auth_exporter(sim: Simulator, tmp_path: Path) -> Iterator[Exporter]:
    """The same, asking for basic auth: user ``ha``, password ``first-secret``."""
    pytest_socket.enable_socket()
    running = Exporter(tmp_path, sim, password="first-secret")
    running.start()
    try:
        yield running
    finally:
        running.stop()


SECRETS = ("first-secret", "second-secret", "wrong-secret")


@pytest.fixture(autouse=True)
def _clean_log(request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Every test: no ERROR in Home Assistant's log and no WARNING of the integration (unless
    marked ``allow_errors``), and no password anywhere in it, debug lines included."""
    caplog.set_level(logging.DEBUG, logger="custom_components.smsp_exporter")
    yield
    # The harness's own storage mock logs what it writes (config entries included): not a log
    # of Home Assistant's.
    records = [
        r
        for r in (*caplog.get_records("setup"), *caplog.get_records("call"), *caplog.records)
        if not r.name.startswith("pytest_homeassistant")
    ]
    text = "\n".join(r.getMessage() for r in records)
    assert not [s for s in SECRETS if s in text], "a password was logged"
    if request.node.get_closest_marker("allow_errors") is None:
        errors = [
            r
            for r in records
            if r.levelno >= logging.ERROR
            or (r.levelno >= logging.WARNING and r.name.startswith("custom_components"))
        ]
        assert not errors, "\n".join(r.getMessage() for r in errors)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "allow_errors: the test logs an error on purpose")


@pytest.fixture
def tls_exporter(sim: Simulator, tmp_path: Path) -> Iterator[Exporter]:
    """The same, over TLS with a self-signed certificate (that Home Assistant does not trust)."""
    pytest_socket.enable_socket()
    running = Exporter(tmp_path, sim, tls=True)
    running.start()
    try:
        yield running
    finally:
        running.stop()
