"""``collection.state_file`` is locked by the exporter that uses it: a second exporter (another
process) on the same file stops at start-up, exit 2 and one line naming the file; the lock goes
with the first one however it ends (SIGTERM, SIGKILL); a reload in the same process keeps the
file and its state; ``--config.check`` does not need the lock. Real processes, loopback only."""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from smsp_exporter.collection import statestore
from smsp_exporter.config import config_from_dict
from smsp_exporter.reload import Reloader

from .helpers import API_KEY, campaign, free_port, run_cli, samples, scrape, value
from .running import exporter_process, write_config

NO_KEY_ENV = {"SMSP_API_KEY_FILE": ""}


def locked_config(directory: Path, url: str, state: Path, tags=("promo",)) -> Path:
    collection = f'  mode: scrape\n  state_file: "{state}"\n'
    return write_config(directory, url, tags, collection=collection)


def start_second(config: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    """Another exporter on ``config`` (it must stop by itself); its result and how long it ran."""
    began = time.monotonic()
    result = run_cli(
        "--config.file",
        str(config),
        "--web.listen-address",
        f"127.0.0.1:{free_port()}",
        env=NO_KEY_ENV,
        timeout=20,
    )
    return result, time.monotonic() - began


def refused(state: Path, pid: int, named: Path | None = None) -> str:
    """The one line a second exporter prints; ``named``: the path its configuration gives."""
    return (
        f"smsp-exporter: collection.state_file: {named or state}: in use by another "
        f"smsp-exporter (pid {pid}, lock file {state}.lock)"
    )


def claim_elsewhere(state: Path) -> str:
    """Try to take the file's lock from another process: "free" or the error it got."""
    code = (
        "import sys\n"
        "from smsp_exporter.collection import statestore\n"
        "try:\n"
        "    statestore.claim(sys.argv[1]).release()\n"
        "except statestore.StateFileError as err:\n"
        "    print(err)\n"
        "else:\n"
        "    print('free')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(state)], capture_output=True, text=True, timeout=20
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def tags_in(state: Path) -> set[str]:
    with sqlite3.connect(state) as db:
        return {row[0] for row in db.execute("SELECT tag FROM tags")}


@pytest.fixture
def state(tmp_path) -> Path:
    return tmp_path / "state" / "state.db"


@pytest.fixture
def cfg(sim, tmp_path, state) -> Path:
    sim.add_tag(campaign("promo", 42))
    state.parent.mkdir()
    return locked_config(tmp_path, sim.url, state)


def test_a_second_exporter_on_the_same_state_file_exits_2_with_one_line_naming_it(
    sim, tmp_path, state, cfg
):
    # Another configuration (another directory) reaching the same file by a symbolic link.
    other = tmp_path / "other"
    other.mkdir()
    (other / "link.db").symlink_to(state)
    other_cfg = locked_config(other, sim.url, other / "link.db")
    with exporter_process(cfg) as first:
        assert value(scrape(first.url), "sms_up", tag="promo") == 1
        assert tags_in(state) == {"promo"}
        for config, named in ((cfg, state), (other_cfg, other / "link.db")):
            result, took = start_second(config)
            assert result.returncode == 2, result.stderr
            assert took < 10
            assert result.stderr.splitlines() == [refused(state, first.proc.pid, named)]
            assert "Traceback" not in result.stderr and API_KEY not in result.stderr
        # The first one never noticed.
        assert value(scrape(first.url), "sms_up", tag="promo") == 1
        assert first.terminate(timeout=10) == 0
    assert "state file" not in first.stderr and "state_file" not in first.stderr


@pytest.mark.parametrize("stop", ["sigterm", "sigkill"])
def test_once_the_first_exporter_is_gone_a_new_one_starts_on_the_file(state, cfg, stop):
    with exporter_process(cfg) as first:
        scrape(first.url)
        if stop == "sigterm":
            assert first.terminate(timeout=10) == 0
        else:
            first.proc.send_signal(signal.SIGKILL)
            assert first.proc.wait(timeout=10) == -signal.SIGKILL
    assert tags_in(state) == {"promo"}  # the round's state was written before it went
    with exporter_process(cfg) as again:
        assert value(scrape(again.url), "sms_up", tag="promo") == 1
        assert claim_elsewhere(state) == refused(state, again.proc.pid).split(": ", 1)[1]
        assert again.terminate(timeout=10) == 0
    assert claim_elsewhere(state) == "free"
    assert "Traceback" not in again.stderr and "memory only" not in again.stderr


def test_config_check_succeeds_while_an_exporter_holds_the_file(state, cfg):
    # --config.check checks the configuration, not the run-time state: it does not open the
    # state file, so it neither takes nor needs the lock.
    with exporter_process(cfg) as first:
        scrape(first.url)
        result = run_cli("--config.check", "--config.file", str(cfg), env=NO_KEY_ENV)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == f"{cfg}: valid, 1 tag, mode scrape"
        assert "state_file" not in result.stderr
        # And the running one still holds its file.
        assert claim_elsewhere(state).endswith(f"(pid {first.proc.pid}, lock file {state}.lock)")


def test_a_reload_keeps_the_file_locked_and_its_state_written(sim, tmp_path, state, cfg):
    sim.add_tag(campaign("relance", 15))
    with exporter_process(cfg, "--web.enable-lifecycle") as running:
        scrape(running.url)
        locked_config(tmp_path, sim.url, state, tags=("promo", "relance"))
        assert requests.post(f"{running.url}/-/reload", timeout=10).status_code == 200
        found = samples(scrape(running.url))
        assert value(found, "sms_up", tag="relance") == 1
        assert value(found, "sms_config_last_reload_successful") == 1
        assert tags_in(state) == {"promo", "relance"}  # written by the reloaded exporter
        # SIGHUP too, back to one tag: the file follows (the dropped tag goes).
        locked_config(tmp_path, sim.url, state, tags=("relance",))
        running.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while value(scrape(running.url), "sms_up", tag="promo") is not None:
            assert time.monotonic() < deadline, "the SIGHUP reload did not happen"
            time.sleep(0.1)
        assert tags_in(state) == {"relance"}
        # Still locked against other processes after the reloads ...
        result, _ = start_second(cfg)
        assert result.returncode == 2
        assert result.stderr.splitlines() == [refused(state, running.proc.pid)]
        assert running.terminate(timeout=10) == 0
    # ... and released at the end, though two exporters of the process had opened it.
    assert claim_elsewhere(state) == "free"
    assert "memory only" not in running.stderr and "Traceback" not in running.stderr


def inprocess_config(sim, tags, state: Path | None):
    collection = {} if state is None else {"state_file": str(state)}
    return config_from_dict(
        {
            "api": {"url": sim.url, "key": API_KEY, "max_requests_per_second": 0},
            "collection": collection,
            "tags": list(tags),
        },
        source="<test>",
    )


def test_a_reload_in_the_process_shares_the_lock_and_keeps_the_state(sim, state):
    sim.add_tag(campaign("promo", 300))
    sim.add_tag(campaign("relance", 40))
    state.parent.mkdir()
    configs = [
        inprocess_config(sim, ["promo"], state),
        inprocess_config(sim, ["promo", "relance"], state),
    ]
    reloader = Reloader(lambda: configs[1], configs[0])
    try:
        reloader.exporter.poller.run_round(30)
        kept = reloader.exporter.poller.incremental
        assert reloader.reload()
        assert reloader.exporter.poller.incremental is kept  # the same state, the same store
        snapshot = reloader.exporter.poller.run_round(30)
        # promo goes on from its state (relance, new, is read whole).
        assert {s.tag: s for s in snapshot.tags}["promo"].incremental.mode == "incremental"
        assert kept.store is not None and not kept.store.failed
        assert tags_in(state) == {"promo", "relance"}
        assert f"pid {os.getpid()}," in claim_elsewhere(state)
    finally:
        reloader.close()
    assert claim_elsewhere(state) == "free"


def test_a_reload_to_a_file_another_exporter_holds_keeps_the_state_in_memory(
    sim, tmp_path, state, cfg, caplog
):
    with exporter_process(cfg) as first:
        scrape(first.url)
        configs = [inprocess_config(sim, ["promo"], None), inprocess_config(sim, ["promo"], state)]
        reloader = Reloader(lambda: configs[1], configs[0])
        try:
            with caplog.at_level(logging.ERROR):
                assert reloader.reload()
                for _ in range(2):
                    snapshot = reloader.exporter.poller.run_round(30)
            assert [t.counts is not None for t in snapshot.tags] == [True]
            assert reloader.exporter.poller.incremental.store is None
        finally:
            reloader.close()
        errors = [r.getMessage() for r in caplog.records if "state_file" in r.getMessage()]
        assert errors == [
            f"{refused(state, first.proc.pid).split(': ', 1)[1]}: the page state is kept in "
            "memory only"
        ]
        # The running exporter kept its file.
        assert claim_elsewhere(state).startswith(f"collection.state_file: {state}: in use")


def test_one_process_may_open_its_file_again_and_holds_it_until_the_last_close(tmp_path):
    state = tmp_path / "state.db"
    first = statestore.open_store(str(state))
    second = statestore.open_store(str(state))
    first.close()
    assert "in use by another smsp-exporter" in claim_elsewhere(state)
    second.close()
    second.close()  # twice: no harm, nothing released twice
    assert claim_elsewhere(state) == "free"
    assert (tmp_path / "state.db.lock").stat().st_mode & 0o077 == 0
