"""The exporter as a real process (``python -m smsp_exporter``), for the lifecycle, load and
memory tests: start it on a free loopback port, read its threads and memory from /proc, stop
it and keep everything it printed."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from .helpers import API_KEY, free_port


@dataclass
class Running:
    proc: subprocess.Popen[str]
    url: str
    port: int
    config: Path
    stdout: str = ""
    stderr: str = ""

    def status(self) -> dict[str, int]:
        """Threads, VmRSS and VmHWM (bytes) of the process, from /proc/PID/status."""
        fields = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            name, _, rest = line.partition(":")
            if name == "Threads":
                fields["threads"] = int(rest)
            elif name in ("VmRSS", "VmHWM"):
                fields[name.lower()] = int(rest.split()[0]) * 1024
        return fields

    def terminate(self, timeout: float) -> int:
        """SIGTERM, then the exit code (TimeoutExpired if it takes longer than ``timeout``)."""
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout)
        self.stdout, self.stderr = self.proc.communicate(timeout=5)
        return code


def wait_until_up(url: str, proc: subprocess.Popen, limit: float = 15) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"exporter exited early: {proc.communicate()[1]}")
        try:
            if requests.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            time.sleep(0.1)
    pytest.fail("exporter did not come up")


def write_config(directory: Path, url: str, tags, api: str = "", collection: str = "") -> Path:
    """A config file whose key is in a key file beside it."""
    (directory / "key.txt").write_text(API_KEY + "\n")
    path = directory / "config.yaml"
    tag_lines = "".join(f"  - {tag!r}\n" for tag in tags)
    collection = collection or "  mode: scrape\n"
    path.write_text(
        f"api:\n  url: {url}\n  key_file: key.txt\n{api}collection:\n{collection}tags:\n{tag_lines}"
    )
    return path


@contextlib.contextmanager
def exporter_process(config: Path, *flags: str, log_format: str = "json") -> Iterator[Running]:
    """The exporter serving ``config``; killed at the end if still running."""
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "smsp_exporter",
            "--config.file",
            str(config),
            "--web.listen-address",
            f"127.0.0.1:{port}",
            "--log.format",
            log_format,
            *flags,
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "SMSP_API_KEY": "", "SMSP_API_KEY_FILE": ""},
    )
    running = Running(proc, f"http://127.0.0.1:{port}", port, config)
    try:
        wait_until_up(running.url, proc)
        yield running
    finally:
        if proc.poll() is None:
            proc.kill()
        if not proc.stdout.closed:
            running.stdout, running.stderr = proc.communicate(timeout=10)
