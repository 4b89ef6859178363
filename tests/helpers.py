"""What the tests share, in one module: the simulator's key, free ports, campaigns, an exporter
served over real HTTP on loopback, reading an exposition, running the command line, the
configuration corpus, system programs a test needs. Test modules import from here (or from the
other helper modules: running, monitoring, homeassistant, hostile_upstream), never from each
other nor from conftest.py, which holds only pytest's hooks and fixtures."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

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
    "chromium": "chromium",
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


def timed_scrape(url: str, timeout: float) -> tuple[dict, float]:
    """One /metrics scrape announcing `timeout` as Prometheus does: its samples and how long it
    took."""
    began = time.monotonic()
    response = requests.get(
        f"{url}/metrics",
        headers={"X-Prometheus-Scrape-Timeout-Seconds": str(timeout)},
        timeout=timeout + 30,
    )
    assert response.status_code == 200
    return samples(response.text), time.monotonic() - began


def reasons(found: dict, tag: str) -> dict[str, float]:
    """{reason: count} of the tag's non-zero sms_api_errors_total."""
    return {
        dict(labels)["reason"]: v
        for (name, labels), v in found.items()
        if name == "sms_api_errors_total" and dict(labels)["tag"] == tag and v
    }


# Statuses every successfully collected tag exports, at 0 when empty.
DOCUMENTED = {"Delivered", "Not delivered", "Waiting"}


def expected_statuses(sim: Simulator, tag: str) -> dict[str, float]:
    """sms_status_total of `tag` as the simulator's own truth says it must be."""
    truth = sim.expected(tag)["statuses"]
    return {status: float(truth.get(status, 0)) for status in DOCUMENTED | set(truth)}


LOGFMT_PAIR = re.compile(r'([^\s=]+)=("(?:[^"\\]|\\.)*"|\S*)')


def parse_logfmt(line: str) -> dict[str, str]:
    """A strict enough logfmt reader: the whole line must be key=value pairs."""
    out: dict[str, str] = {}
    pos = 0
    while pos < len(line):
        match = LOGFMT_PAIR.match(line, pos)
        assert match, f"not logfmt at {pos}: {line[pos:]!r}"
        key, raw = match.groups()
        if raw.startswith('"'):
            raw = json.loads(raw)  # same escapes: \\ \" \n \r \t \uXXXX
        out[key] = raw
        pos = match.end()
        if pos < len(line):
            assert line[pos] == " ", line
            pos += 1
    return out


# --- the command line ------------------------------------------------------------------------

# The bad-configuration corpus: each file's first line says which key its error must name.
BAD_CONFIGS = sorted((Path(__file__).parent / "configs" / "bad").glob("*.yaml"))


def expected_key(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    match = re.match(r"#\s*expect:\s*(\S.*?)\s*$", first)
    assert match, f"{path.name} lacks its '# expect: KEY' first line"
    return match.group(1)


def run_cli(*args: str, env=None, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """`python -m smsp_exporter ARGS`, with no key from the environment unless `env` gives one."""
    return subprocess.run(
        [sys.executable, "-m", "smsp_exporter", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "SMSP_API_KEY": "", **(env or {})},
        stdin=subprocess.DEVNULL,
    )


def write_cli_config(tmp_path: Path, url: str, tags=("promo",), extra: str = "") -> Path:
    """A config file for the command line, its key in key.txt beside it."""
    path = tmp_path / "config.yaml"
    tag_lines = "".join(f"  - {t!r}\n" for t in tags)
    path.write_text(f"api:\n  url: {url}\n  key_file: key.txt\n{extra}tags:\n{tag_lines}")
    (tmp_path / "key.txt").write_text(API_KEY + "\n")
    return path


@contextlib.contextmanager
def log_streams() -> Iterator[tuple[io.StringIO, io.StringIO]]:
    """Every log line of the block, in JSON and in logfmt at once (debug level), with the test
    key registered as a secret; logging set back to its default afterwards."""
    from smsp_exporter.logs import _Formatter, add_secret, clear_secrets, setup_logging

    json_logs, logfmt_logs = io.StringIO(), io.StringIO()
    setup_logging("debug", "json", stream=json_logs)
    second = logging.StreamHandler(logfmt_logs)
    second.setFormatter(_Formatter("logfmt"))
    logging.getLogger().addHandler(second)
    add_secret(API_KEY)
    try:
        yield json_logs, logfmt_logs
    finally:
        logging.getLogger().removeHandler(second)
        setup_logging("info", "logfmt")
        clear_secrets()
