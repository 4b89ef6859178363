"""pytest's hooks and the shared fixtures: a frozen simulator of the SMS Partner API, the
exporter as a command-line process, log capture. Plain helpers live in helpers.py: test modules
import those from there, never from this file."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from smsp_exporter.simulator import Simulator

from .helpers import (
    API_KEY,
    campaign,
    free_port,
    log_streams,
    require_tool,
    write_cli_config,
)
from .running import wait_until_up


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "needs(*programs): the test runs one of these programs (see require_tool)"
    )
    config.addinivalue_line(
        "markers",
        "slow: runs in real time for tens of seconds (a quick run: pytest -m 'not slow')",
    )


def pytest_runtest_setup(item: pytest.Item) -> None:
    for mark in item.iter_markers("needs"):
        require_tool(*mark.args)


@pytest.fixture
def sim() -> Iterator[Simulator]:
    """A frozen simulator: counts change only when a test advances its clock."""
    simulator = Simulator(api_key=API_KEY, page_size=10, seed=7).start()
    simulator.freeze()
    try:
        yield simulator
    finally:
        simulator.stop()


@pytest.fixture
def exporter_process(sim, tmp_path):
    """`python -m smsp_exporter` serving tag `promo` (42 messages) of `sim`, with
    --web.enable-lifecycle and JSON logs: (process, base URL, port, config path)."""
    sim.add_tag(campaign("promo", 42))
    port = free_port()
    path = write_cli_config(tmp_path, sim.url)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "smsp_exporter",
            "--config.file",
            str(path),
            "--web.listen-address",
            f"127.0.0.1:{port}",
            "--log.format",
            "json",
            "--web.enable-lifecycle",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "SMSP_API_KEY": ""},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url, proc)
        yield proc, url, port, path
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


@pytest.fixture
def both_logs():
    """Every log line of the block, in logfmt and in JSON, with the key registered as secret."""
    with log_streams() as (json_logs, logfmt_logs):
        yield lambda: {"json": json_logs.getvalue(), "logfmt": logfmt_logs.getvalue()}
