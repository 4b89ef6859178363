"""Paths and helpers shared by the tests of the bundled dashboard, rules and Alertmanager
config (grafana/, deploy/prometheus/, deploy/alertmanager/)."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import requests
import yaml

from .helpers import require_tool

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD_JSON = ROOT / "grafana" / "dashboards" / "smsp-exporter.json"
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
PROMETHEUS_YML = PROMETHEUS_DIR / "prometheus.yml"
RECORDING_RULES = PROMETHEUS_DIR / "rules" / "smsp-exporter.rules.yml"
ALERT_RULES = PROMETHEUS_DIR / "rules" / "smsp-exporter.alerts.yml"
RULE_FILES = sorted((PROMETHEUS_DIR / "rules").glob("*.yml"))  # every file, recording included
RULE_TESTS = sorted((PROMETHEUS_DIR / "tests").glob("*.test.yml"))
ALERTMANAGER_YML = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
RUNBOOK = ROOT / "docs" / "runbook.md"


def binary(*names: str) -> str:
    """The first of `names` on PATH; if none, a skip naming them (a failure under ./dev.sh
    test, which installs them)."""
    return require_tool(*names)


def dashboard_generator() -> ModuleType:
    """grafana/dashboard.py, imported from its path (it is not part of the package)."""
    spec = importlib.util.spec_from_file_location("smsp_dashboard", ROOT / "grafana/dashboard.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD_JSON.read_text(encoding="utf-8"))


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows and the panels inside collapsed rows included."""
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def alert_rules() -> list[dict[str, Any]]:
    """Every alerting rule of every rule file under deploy/prometheus/rules/."""
    return [
        rule
        for path in RULE_FILES
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]


# What Grafana puts in a query before sending it, for a given selection of the variables.
def substitute(expr: str, values: dict[str, str], rate_interval: str = "1m") -> str:
    expr = expr.replace("$__rate_interval", rate_interval).replace("$__interval", rate_interval)
    expr = expr.replace("$__range", "1h")

    def var(match: re.Match[str]) -> str:
        return values[match.group(1) or match.group(2)]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", var, expr)


# --- running Prometheus and Alertmanager --------------------------------------------------


def wait_for(what: str, check: Callable[[], Any], timeout: float = 45.0) -> Any:
    """Poll `check` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(requests.RequestException):
            result = check()
            if result:
                return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.25)


@contextlib.contextmanager
def process(args: list[str], log: Path, ready_url: str) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    try:

        def ready() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"{args[0]} exited {proc.returncode}:\n{log.read_text()[-3000:]}")
            return requests.get(ready_url, timeout=2).status_code == 200

        wait_for(f"{args[0]} to be ready", ready, timeout=30)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


class PromAPI:
    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, expr: str) -> list[dict[str, Any]]:
        answer = requests.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        body = answer.json()
        assert body["status"] == "success", (expr, body)
        return body["data"]["result"]

    def series(self, match: str) -> list[dict[str, str]]:
        answer = requests.get(f"{self.url}/api/v1/series", params={"match[]": match}, timeout=10)
        body = answer.json()
        assert body["status"] == "success", (match, body)
        return body["data"]

    def alerts(self) -> list[dict[str, Any]]:
        return requests.get(f"{self.url}/api/v1/alerts", timeout=10).json()["data"]["alerts"]
