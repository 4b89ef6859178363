"""Load and size, against the exporter as a real process (its threads and memory read from
/proc): 50 concurrent scrapers for 30 s, and a tag of 100,000 messages.

Run with ``-s`` to see the figures."""

from __future__ import annotations

import os
import threading
import time

import pytest
import requests

from .helpers import API_KEY, campaign, expected_statuses, samples, statuses_of, value
from .running import exporter_process, write_config

pytestmark = pytest.mark.skipif(
    not os.path.exists("/proc/self/status"), reason="reads /proc (Linux)"
)

SCRAPERS = 50
DURATION = 30.0
MIN_INTERVAL = 1.0
HEADERS = {"X-Prometheus-Scrape-Timeout-Seconds": "10"}


def wait_until(condition, limit: float = 10.0) -> bool:
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_50_scrapers_for_30_seconds(sim, tmp_path):
    tags = ["charge-a", "charge-b", "charge-c"]
    for tag in tags:
        sim.add_tag(campaign(tag, 25, report_delay=5))  # 3 pages of 10 each
    sim.advance(10)
    sim.latency = 0.01
    config = write_config(
        tmp_path,
        sim.url,
        tags,
        api="  max_requests_per_second: 100\n  timeout: 5s\n",
        collection=f"  mode: scrape\n  min_interval: {MIN_INTERVAL}s\n",
    )
    with exporter_process(config, "--log.level", "warn") as running:
        # Warm up: the fetch workers and a few request threads exist from here on.
        warm = [
            threading.Thread(target=requests.get, args=(f"{running.url}/metrics",))
            for _ in range(8)
        ]
        for thread in warm:
            thread.start()
        for thread in warm:
            thread.join(20)
        time.sleep(0.5)
        # What one steady round asks (the frozen simulator changes nothing between rounds, so
        # every round asks the same pages): the load's upstream requests are whole rounds.
        time.sleep(MIN_INTERVAL)
        sim.reset_stats()
        requests.get(f"{running.url}/metrics", headers=HEADERS, timeout=20)
        pages_per_round = sim.stats()["requests"]
        assert 1 <= pages_per_round <= 9
        time.sleep(MIN_INTERVAL)
        before = running.status()
        sim.reset_stats()

        codes: list[int] = []
        failures: list[str] = []
        latencies: list[float] = []
        lock = threading.Lock()
        stop_at = time.monotonic() + DURATION

        def scraper() -> None:
            with requests.Session() as session:
                while time.monotonic() < stop_at:
                    began = time.monotonic()
                    try:
                        response = session.get(
                            f"{running.url}/metrics", headers=HEADERS, timeout=15
                        )
                        code, text = response.status_code, response.text
                    except requests.RequestException as err:
                        with lock:
                            failures.append(type(err).__name__)
                        continue
                    with lock:
                        codes.append(code)
                        latencies.append(time.monotonic() - began)
                        if code == 200 and len(codes) % 97 == 0:
                            found = samples(text)
                            for tag in tags:
                                assert statuses_of(found, tag) == expected_statuses(sim, tag)

        threads = [threading.Thread(target=scraper, daemon=True) for _ in range(SCRAPERS)]
        began = time.monotonic()
        for thread in threads:
            thread.start()
        time.sleep(DURATION / 3)
        middle = running.status()
        for thread in threads:
            thread.join(DURATION + 30)
        elapsed = time.monotonic() - began
        assert not any(thread.is_alive() for thread in threads)

        assert wait_until(lambda: sim.stats()["in_flight"] == 0)
        upstream = sim.stats()["requests"]
        # Request threads end with their connection: the count returns to where it was.
        settled = wait_until(lambda: running.status()["threads"] <= before["threads"])
        after = running.status()
        final = samples(requests.get(f"{running.url}/metrics", timeout=10).text)
        assert running.proc.poll() is None

    latencies.sort()
    rounds = upstream / pages_per_round
    print(
        f"\nload: {SCRAPERS} scrapers x {elapsed:.1f} s: {len(codes)} answers "
        f"({len(codes) / elapsed:.0f}/s), p50 {latencies[len(latencies) // 2] * 1000:.0f} ms, "
        f"p99 {latencies[int(len(latencies) * 0.99)] * 1000:.0f} ms, "
        f"max {latencies[-1] * 1000:.0f} ms; upstream {upstream} requests ({rounds:.0f} rounds); "
        f"threads {before['threads']} -> {middle['threads']} -> {after['threads']}; "
        f"RSS {before['vmrss'] >> 20} -> {middle['vmrss'] >> 20} -> {after['vmrss'] >> 20} MiB"
    )
    assert failures == []
    assert codes and set(codes) == {200}
    # Shared rounds, at most one per min_interval: whole rounds only, and few of them.
    assert upstream % pages_per_round == 0
    assert 1 <= rounds <= elapsed / MIN_INTERVAL + 2
    assert settled, f"threads: {before['threads']} before, {after['threads']} after"
    assert after["vmrss"] - middle["vmrss"] < 16 << 20  # flat: no growth over the last 20 s
    for tag in tags:
        assert value(final, "sms_up", tag=tag) == 1
    assert API_KEY not in running.stdout + running.stderr


def test_a_tag_of_100000_messages_without_memory_blowup(sim, tmp_path):
    sim.page_size = 1000  # 100 pages
    sim.add_tag(campaign("enorme", 100_000, report_delay=30))
    sim.advance(60)
    config = write_config(
        tmp_path,
        sim.url,
        ["enorme"],
        api="  max_requests_per_second: 0\n  timeout: 10s\n",
    )
    with exporter_process(config, "--log.level", "warn") as running:
        before = running.status()
        began = time.monotonic()
        text = requests.get(
            f"{running.url}/metrics",
            headers={"X-Prometheus-Scrape-Timeout-Seconds": "60"},
            timeout=90,
        ).text
        elapsed = time.monotonic() - began
        after = running.status()
    found = samples(text)
    growth = after["vmhwm"] - before["vmrss"]
    print(
        f"\n100,000 messages in {sim.stats()['requests']} pages: {elapsed:.2f} s, "
        f"peak RSS {before['vmrss'] >> 20} -> {after['vmhwm'] >> 20} MiB"
    )
    assert value(found, "sms_up", tag="enorme") == 1
    assert statuses_of(found, "enorme") == expected_statuses(sim, "enorme")
    assert sum(statuses_of(found, "enorme").values()) == 100_000
    assert value(found, "sms_collection_complete", tag="enorme") == 1
    # Pages are counted as they arrive and dropped: the peak is a few pages, never the tag
    # (100,000 decoded messages would take some 50 MiB).
    assert growth < 24 << 20, f"peak RSS grew by {growth >> 20} MiB"
