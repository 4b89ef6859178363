"""Stopping: SIGTERM in the middle of a round ends the process within a few seconds with code
0, however slow the upstream, in both collection modes."""

from __future__ import annotations

import contextlib
import threading
import time

import pytest
import requests

from .helpers import API_KEY, campaign
from .running import exporter_process, write_config

# Far longer than a clean stop may take: a stop that waits for the upstream shows at once.
SLOW = 20.0
STOP_WITHIN = 4.0


def scrape_in_background(url: str) -> threading.Thread:
    def one() -> None:
        with contextlib.suppress(requests.RequestException):
            requests.get(
                f"{url}/metrics",
                headers={"X-Prometheus-Scrape-Timeout-Seconds": "30"},
                timeout=40,
            )

    thread = threading.Thread(target=one, daemon=True)
    thread.start()
    return thread


def wait_for(condition, limit: float = 10.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, "the condition never came true"
        time.sleep(0.02)


def assert_clean_exit(running) -> None:
    began = time.monotonic()
    code = running.terminate(timeout=STOP_WITHIN + 6)
    elapsed = time.monotonic() - began
    assert code == 0, running.stderr
    assert elapsed < STOP_WITHIN, f"SIGTERM took {elapsed:.1f} s"
    assert "Traceback" not in running.stderr
    assert API_KEY not in running.stdout + running.stderr
    assert '"stopping"' in running.stderr


@pytest.mark.parametrize("mode", ["scrape", "background"])
def test_sigterm_while_a_request_hangs_upstream(sim, tmp_path, mode):
    sim.add_tag(campaign("lent", 25))
    sim.add_tag(campaign("vite", 5))
    sim.set_fault("lent", "delay", seconds=SLOW)
    config = write_config(
        tmp_path,
        sim.url,
        ["lent", "vite"],
        api="  timeout: 30s\n",
        collection=f"  mode: {mode}\n  interval: 40s\n",
    )
    with exporter_process(config) as running:
        if mode == "scrape":
            scrape_in_background(running.url)
        wait_for(lambda: sim.stats()["in_flight"] >= 1 and sim.stats()["by_tag"].get("vite"))
        assert_clean_exit(running)


def test_sigterm_while_waiting_out_a_long_retry_after(sim, tmp_path):
    sim.add_tag(campaign("limite", 5))
    sim.set_fault("limite", "rate_limit", retry_after=int(SLOW))
    config = write_config(tmp_path, sim.url, ["limite"], api="  timeout: 30s\n  retries: 3\n")
    with exporter_process(config) as running:
        scrape_in_background(running.url)
        wait_for(lambda: sim.stats()["by_status"].get(429))
        time.sleep(0.2)  # the client is now sleeping before its retry
        assert_clean_exit(running)
    assert sim.stats()["by_tag"]["limite"] == 1  # no retry was sent while stopping
