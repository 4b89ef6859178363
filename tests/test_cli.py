"""The command line, run as a real process: config errors, serving, signals, the demo."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from .helpers import (
    API_KEY,
    BAD_CONFIGS,
    campaign,
    expected_key,
    free_port,
    require_tool,
    run_cli,
    samples,
    statuses_of,
    value,
    write_cli_config,
)
from .running import wait_until_up


@pytest.mark.parametrize("path", BAD_CONFIGS, ids=lambda p: p.name)
def test_broken_config_exits_2_with_one_line_naming_the_key(path):
    result = run_cli("--config.file", str(path), "--config.check")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert str(path) in lines[0]
    assert expected_key(path) in lines[0]
    assert result.stdout == ""


def test_missing_config_file_exits_2(tmp_path):
    result = run_cli("--config.file", str(tmp_path / "absent.yaml"))
    assert result.returncode == 2
    assert "absent.yaml" in result.stderr and "Traceback" not in result.stderr


def test_config_check_accepts_a_valid_file_and_warns_about_impossible_tags(tmp_path):
    path = write_cli_config(tmp_path, "http://127.0.0.1:9/v1", tags=("promo", "Promo Noel"))
    result = run_cli("--config.file", str(path), "--config.check")
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout
    assert "Promo Noel" in result.stderr and "never match" in result.stderr
    assert API_KEY not in result.stdout + result.stderr


def test_example_config_is_valid():
    example = Path(__file__).parent.parent / "config.example.yaml"
    result = run_cli(
        "--config.file", str(example), "--config.check", env={"SMSP_API_KEY": "x" * 16}
    )
    assert result.returncode == 0, result.stderr


def test_serves_metrics_and_stops_cleanly_on_sigterm(exporter_process):
    proc, url, _, _ = exporter_process
    found = samples(requests.get(f"{url}/metrics", timeout=10).text)
    assert sum(statuses_of(found, "promo").values()) == 42
    assert value(found, "sms_up", tag="promo") == 1
    assert "process_cpu_seconds_total" in {name for name, _ in found}
    landing = requests.get(url, timeout=5)
    assert landing.status_code == 200 and "/metrics" in landing.text
    assert requests.get(f"{url}/healthz", timeout=5).status_code == 200
    assert requests.get(f"{url}/nothing-here", timeout=5).status_code == 404
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    _, stderr = proc.communicate(timeout=5)
    assert API_KEY not in stderr
    assert "Traceback" not in stderr


def test_second_process_on_the_same_port_fails_clearly(exporter_process):
    _, _, port, path = exporter_process
    result = run_cli("--config.file", str(path), "--web.listen-address", f"127.0.0.1:{port}")
    assert result.returncode == 1
    assert f"{port}" in result.stderr and "Traceback" not in result.stderr


def test_demo_runs_without_account_or_config(tmp_path):
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "smsp_exporter",
            "--demo",
            "--web.listen-address",
            f"127.0.0.1:{port}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url, proc)
        found = samples(requests.get(f"{url}/metrics", timeout=15).text)
        tags = {dict(labels)["tag"] for (name, labels), _ in found.items() if name == "sms_up"}
        assert len(tags) >= 3
        assert all(value(found, "sms_up", tag=tag) == 1 for tag in tags)
        assert sum(v for (name, _), v in found.items() if name == "sms_status_total") > 0
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
        stdout, _ = proc.communicate(timeout=5)
        assert f"http://127.0.0.1:{port}/metrics" in stdout
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)


def test_simulate_subcommand_help():
    result = run_cli("simulate", "--help")
    assert result.returncode == 0
    assert "--page-size" in result.stdout


def test_promtool_check_metrics_flags_only_the_two_contract_names(exporter_process):
    _, url, _, _ = exporter_process
    text = requests.get(f"{url}/metrics", timeout=10).text
    result = subprocess.run(
        [require_tool("promtool"), "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=30,
    )
    problems = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    flagged = {line.split()[0] for line in problems}
    assert flagged == {"sms_status_total", "sms_stop_total"}, problems


# --- start-up: bad flags, signals before the server is up ------------------------------------


@pytest.mark.parametrize("address", ["bogus", "127.0.0.1:99999", "[zz]:1", "::1:9847"])
def test_bad_listen_address_exits_2_with_one_line(tmp_path, address):
    path = write_cli_config(tmp_path, "http://127.0.0.1:9/v1")
    result = run_cli("--config.file", str(path), "--web.listen-address", address)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--web.listen-address" in lines[0], result.stderr


def test_deeply_nested_web_config_exits_2_with_one_line(tmp_path):
    path = write_cli_config(tmp_path, "http://127.0.0.1:9/v1")
    web = tmp_path / "web.yml"
    web.write_text("[" * 5000 + "]" * 5000 + "\n")
    result = run_cli("--config.file", str(path), "--web.config.file", str(web))
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.endswith(f"{web}: <yaml>: the document is nested too deeply"), line


@contextlib.contextmanager
def starting_on_a_fifo(tmp_path, sim) -> Iterator[tuple[subprocess.Popen, int, int]]:
    """An exporter held in start-up: its --web.config.file is a FIFO it is reading from.

    Yields the process, the FIFO's write end (write the web config and close it to let
    start-up go on) and the port it will listen on.
    """
    path = write_cli_config(tmp_path, sim.url)
    fifo = tmp_path / "web.yml"
    os.mkfifo(fifo)
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "smsp_exporter",
            f"--config.file={path}",
            f"--web.config.file={fifo}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "SMSP_API_KEY": ""},
    )
    writer = -1
    try:
        deadline = time.monotonic() + 15
        while writer < 0:  # opens once the exporter has opened the FIFO to read it
            try:
                writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:
                assert proc.poll() is None, proc.communicate()[1]
                assert time.monotonic() < deadline, "the exporter never read its web config"
                time.sleep(0.05)
        # Then wait for it to block reading: a signal that comes between the open and the
        # read is only seen by Python once that read returns.
        wchan = Path(f"/proc/{proc.pid}/wchan")
        deadline = time.monotonic() + 1
        while time.monotonic() < deadline and "pipe" not in wchan.read_text():
            time.sleep(0.02)
        yield proc, writer, port
    finally:
        if writer >= 0:
            with contextlib.suppress(OSError):
                os.close(writer)
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


def test_sighup_during_start_up_is_a_reload_once_up(tmp_path, sim):
    sim.add_tag(campaign("promo", 3))
    with starting_on_a_fifo(tmp_path, sim) as (proc, writer, port):
        proc.send_signal(signal.SIGHUP)  # the default action would kill the process
        time.sleep(0.3)
        os.write(writer, b"{}\n")
        os.close(writer)
        wait_until_up(f"http://127.0.0.1:{port}", proc)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        _, stderr = proc.communicate(timeout=5)
    assert "config reloaded" in stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_sigterm_or_sigint_during_start_up_stops_cleanly(tmp_path, sim, signum):
    with starting_on_a_fifo(tmp_path, sim) as (proc, _writer, _port):
        proc.send_signal(signum)
        assert proc.wait(timeout=10) == 0
        _, stderr = proc.communicate(timeout=5)
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    assert "stopping before start-up finished" in stderr
