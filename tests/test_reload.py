"""Config reload on a real process: SIGHUP and POST /-/reload; a bad config keeps the old one."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable

import pytest
import requests

from smsp_exporter.config import load_config
from smsp_exporter.logs import clear_secrets, redact
from smsp_exporter.reload import Reloader

from .helpers import API_KEY, campaign, samples, value, write_cli_config


def metrics(url: str) -> dict:
    return samples(requests.get(f"{url}/metrics", timeout=10).text)


def eventually(check: Callable[[], bool], limit: float = 10) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    pytest.fail("condition not met in time")


@pytest.fixture
def running(exporter_process, sim):
    """The exporter as a process, on a config file watching the tag "promo"."""
    proc, url, _, path = exporter_process
    sim.add_tag(campaign("relance", 5))
    return proc, url, path.parent


def test_sighup_reloads_the_tags(running, sim):
    proc, url, tmp_path = running
    before = metrics(url)
    assert value(before, "sms_up", tag="promo") == 1
    assert value(before, "sms_up", tag="relance") is None
    assert value(before, "sms_config_last_reload_successful") == 1
    write_cli_config(tmp_path, sim.url, tags=("promo", "relance"))
    proc.send_signal(signal.SIGHUP)
    eventually(lambda: value(metrics(url), "sms_up", tag="relance") == 1)
    after = metrics(url)
    assert value(after, "sms_config_last_reload_successful") == 1
    assert value(after, "sms_config_last_reload_success_timestamp_seconds") >= value(
        before, "sms_config_last_reload_success_timestamp_seconds"
    )


def test_post_reload_and_a_bad_config_keeps_the_old_one(running, sim):
    proc, url, tmp_path = running
    first = metrics(url)
    stamp = value(first, "sms_config_last_reload_success_timestamp_seconds")

    assert requests.get(f"{url}/-/reload", timeout=5).status_code == 405
    (tmp_path / "config.yaml").write_text("api:\n  timout: 3s\ntags: [promo]\n")
    answer = requests.post(f"{url}/-/reload", timeout=10)
    assert answer.status_code == 500
    assert "timout" not in answer.text  # the reason goes to the log, not to HTTP clients
    bad = metrics(url)
    assert value(bad, "sms_config_last_reload_successful") == 0
    assert value(bad, "sms_config_last_reload_success_timestamp_seconds") == stamp
    assert value(bad, "sms_up", tag="promo") == 1  # the old config keeps serving

    write_cli_config(tmp_path, sim.url, tags=("relance",))
    answer = requests.post(f"{url}/-/reload", timeout=10)
    assert answer.status_code == 200
    good = metrics(url)
    assert value(good, "sms_config_last_reload_successful") == 1
    assert value(good, "sms_up", tag="relance") == 1
    assert value(good, "sms_up", tag="promo") is None

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    _, stderr = proc.communicate(timeout=5)
    failures = [line for line in stderr.splitlines() if "reload failed" in line]
    assert len(failures) == 1 and "api.timout" in failures[0]
    assert API_KEY not in stderr and "Traceback" not in stderr


def test_a_reloaded_key_is_registered_for_redaction(sim, tmp_path):
    new_key = "sk-ROTATED-0c8e1d2f3a4b5c6d"
    path = write_cli_config(tmp_path, sim.url)
    reloader = Reloader(lambda: load_config(path), load_config(path))
    try:
        (tmp_path / "key.txt").write_text(new_key + "\n")
        assert redact(new_key) == new_key
        assert reloader.reload()
        assert reloader.exporter.config.api.key == new_key
        assert redact(f"key {new_key}") == "key <redacted>"
    finally:
        reloader.close()
        clear_secrets()


def test_reload_during_a_scrape_closes_the_old_exporter_only_after_it(sim, tmp_path):
    sim.add_tag(campaign("promo", 42))  # 5 pages of 10
    sim.latency = 0.3
    path = write_cli_config(tmp_path, sim.url)
    reloader = Reloader(lambda: load_config(path), load_config(path))
    old = reloader.exporter
    closed_at: list[float] = []
    real_close = old.close
    old.close = lambda: (closed_at.append(time.monotonic()), real_close())  # type: ignore[method-assign]
    result: dict = {}  # filled by the scrape thread

    def scrape() -> None:
        result["families"] = {f.name: f for f in reloader.collect()}

    thread = threading.Thread(target=scrape)
    try:
        thread.start()
        time.sleep(0.1)  # the round is under way
        assert reloader.reload()
        assert reloader.exporter is not old
        assert thread.is_alive() and not closed_at  # still scraping: not closed under it
        thread.join(timeout=15)
        assert not thread.is_alive()
        up = result["families"]["sms_up"].samples
        assert [(s.labels["tag"], s.value) for s in up] == [("promo", 1.0)]
        assert len(closed_at) == 1  # closed once the scrape was done with it
    finally:
        thread.join(timeout=15)
        reloader.close()
        clear_secrets()


def test_probe_and_tags_api_follow_the_reloaded_config(running, sim):
    _proc, url, tmp_path = running
    assert requests.get(f"{url}/probe", params={"tag": "relance"}, timeout=10).status_code == 403
    tags_before = requests.get(f"{url}/api/v1/tags", timeout=10).json()
    assert "relance" not in str(tags_before)
    write_cli_config(
        tmp_path,
        sim.url,
        tags=("promo", "relance"),
        extra="probe:\n  allowed_tags: [relance]\n",
    )
    assert requests.post(f"{url}/-/reload", timeout=10).status_code == 200
    probed = samples(requests.get(f"{url}/probe", params={"tag": "relance"}, timeout=10).text)
    assert value(probed, "sms_up", tag="relance") == 1
    assert sum(v for (n, _), v in probed.items() if n == "sms_status_total") == 5
    requests.get(f"{url}/metrics", timeout=10)  # a round of the new config's tags
    assert "relance" in str(requests.get(f"{url}/api/v1/tags", timeout=10).json())


def test_post_reload_needs_the_lifecycle_flag(sim, tmp_path):
    """Without --web.enable-lifecycle, POST /-/reload is 403 (as in Prometheus); SIGHUP works."""
    from .running import exporter_process as process
    from .running import write_config as write

    sim.add_tag(campaign("promo", 3))
    sim.add_tag(campaign("relance", 5))
    path = write(tmp_path, sim.url, ["promo"])
    with process(path) as running:
        write(tmp_path, sim.url, ["relance"])
        answer = requests.post(f"{running.url}/-/reload", timeout=10)
        assert answer.status_code == 403
        assert "--web.enable-lifecycle" in answer.text
        assert value(metrics(running.url), "sms_up", tag="promo") == 1  # not reloaded
        running.proc.send_signal(signal.SIGHUP)
        eventually(lambda: value(metrics(running.url), "sms_up", tag="relance") == 1)
        assert running.terminate(timeout=10) == 0
