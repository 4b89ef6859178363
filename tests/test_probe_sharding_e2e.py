"""End to end: the real Prometheus, our sharded scrape config, two exporter replicas.

The Prometheus configuration is deploy/prometheus/prometheus-sharded.yml itself, with only the
replicas' addresses, the file_sd path and the intervals replaced: each tag must be scraped by
exactly one replica, and every tag by one.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from pathlib import Path

import pytest
import requests
import yaml

from smsp_exporter.config import config_from_dict

from .helpers import API_KEY, campaign, free_port, require_tool, serve

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "deploy" / "prometheus" / "prometheus-sharded.yml"
TAGS = [f"promo-{name}" for name in ("a", "b", "c", "d", "e", "f", "g", "h")]


def sharded_config(replicas: list[str], sd_file: Path) -> dict:
    config = yaml.safe_load(EXAMPLE.read_text())
    config["global"] = {
        "scrape_interval": "1s",
        "scrape_timeout": "1s",
        "evaluation_interval": "1s",
    }
    probe_jobs = [job for job in config["scrape_configs"] if job.get("metrics_path") == "/probe"]
    assert len(probe_jobs) == len(replicas) == 2
    for job, address in zip(probe_jobs, replicas, strict=True):
        job["file_sd_configs"] = [{"files": [str(sd_file)], "refresh_interval": "1s"}]
        target = [r for r in job["relabel_configs"] if r.get("target_label") == "__address__"]
        assert len(target) == 1
        target[0]["replacement"] = address
    config["scrape_configs"] = probe_jobs
    return config


@contextlib.contextmanager
def prometheus(config: dict, tmp_path: Path):
    binary = require_tool("prometheus")
    config_file = tmp_path / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config))
    port = free_port()
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config_file}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "prometheus.log").open("wb"),
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def query(url: str, expr: str) -> list[dict]:
    try:
        answer = requests.get(f"{url}/api/v1/query", params={"query": expr}, timeout=5)
    except requests.ConnectionError:
        return []
    if answer.status_code != 200:
        return []
    return answer.json()["data"]["result"]


def test_each_tag_is_scraped_by_exactly_one_replica(sim, tmp_path):
    for tag in TAGS:
        sim.add_tag(campaign(tag, 3))
    config = config_from_dict(
        {
            "api": {"url": sim.url, "key": API_KEY, "max_requests_per_second": 0},
            "probe": {"allowed_pattern": "promo-[a-z]+"},
        },
        env={},
    )
    sd_file = tmp_path / "tags.yml"
    sd_file.write_text(yaml.safe_dump([{"targets": TAGS, "labels": {"team": "marketing"}}]))
    with serve(config) as replica0, serve(config) as replica1:
        addresses = [replica0.removeprefix("http://"), replica1.removeprefix("http://")]
        with prometheus(sharded_config(addresses, sd_file), tmp_path) as url:
            deadline = time.monotonic() + 35
            series: list[dict] = []
            while time.monotonic() < deadline:
                series = query(url, 'sms_up{job=~"smsp-probe-.*"}')
                if {s["metric"]["tag"] for s in series} == set(TAGS):
                    break
                time.sleep(0.5)
            else:
                log = (tmp_path / "prometheus.log").read_text()[-2000:]
                pytest.fail(f"not every tag was scraped: {series}\n{log}")
            # Let a few more scrapes happen: a tag must never show up on a second replica.
            time.sleep(2.5)
            by_tag = query(
                url, 'count by (tag) (count_over_time(sms_up{job=~"smsp-probe-.*"}[1m]) > 0)'
            )
            per_replica = query(url, "count by (tag, replica, instance) (sms_up)")
    assert {s["metric"]["tag"]: s["value"][1] for s in by_tag} == {tag: "1" for tag in TAGS}
    replicas = {s["metric"]["tag"]: s["metric"]["replica"] for s in per_replica}
    assert set(replicas) == set(TAGS)
    assert set(replicas.values()) == {"0", "1"}  # both replicas got a share
    assert all(s["metric"]["instance"] == s["metric"]["tag"] for s in per_replica)
    assert set(sim.stats()["by_tag"]) == set(TAGS)
