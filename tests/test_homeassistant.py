"""The Home Assistant package (``smsp-exporter homeassistant-package``, whose output for the
demo is deploy/homeassistant/smsp-exporter.yaml: test_homeassistant_package.py) inside a real
Home Assistant core, against a real exporter process and the simulator, all on 127.0.0.1. The
tags are the demo's, and one whose name has every character a template could choke on.

One Home Assistant run drives, in order: a tag failing at Home Assistant's start (it never
succeeded) while the account is off; its recovery; the same tag failing at run time while the
others move on; the exporter stopped, then restarted with the account on; the account failing
and recovering; the exporter restarted with the account off again. After each step every
sensor must show exactly what ``/api/v1/tags`` says (``unavailable`` when the figure is not
known), and Home Assistant's log must hold no warning or error but the two its REST
integration writes while the exporter is unreachable. Home Assistant's recorder must take the
counts, credit and balance as long-term statistics.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from smsp_exporter.homeassistant import demo_package, package
from smsp_exporter.simulator import DEMO_TAGS

from .helpers import API_KEY, campaign, free_port
from .homeassistant import HomeAssistant, home_assistant
from .running import wait_until_up

SHIPPED = Path(__file__).resolve().parent.parent / "deploy" / "homeassistant" / "smsp-exporter.yaml"
# Quotes, a backslash, Jinja and YAML syntax, accents, a character outside the BMP.
AWKWARD = 'Promo "Noël" l\'été {{ x }} #1: \\ 🎄'
TAGS = [spec.name for spec in DEMO_TAGS] + [AWKWARD]
FAILING = "promo-noel"
STEP_LIMIT = 20.0  # seconds for Home Assistant to show a change (it polls every second here)

pytestmark = pytest.mark.timeout(180)

# What Home Assistant may log at WARNING or above: these two always; the EXPORTER_DOWN two,
# which its REST integration writes on every poll the exporter does not answer, in the steps
# where it is down. Nothing else.
ALWAYS_ALLOWED = (
    "Skipping pip installation of required modules",  # the test starts hass with --skip-pip
    "Support for the running Python version",  # 3.11 is deprecated from 2024.4 on
)
EXPORTER_DOWN = (
    "[homeassistant.components.rest.data] Error fetching data: ",
    "[homeassistant.components.rest.util] Empty reply found when expecting JSON data",
)
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+ (?P<level>[A-Z]+) ")


def _figure(document: dict[str, Any] | None, tag: str, *path: str) -> Any:
    value: Any = (document or {}).get("tags", {}).get(tag)
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def expected_states(document: dict[str, Any] | None) -> dict[str, Any]:
    """sensor name -> the number or time the sensor must show, or "unavailable"."""
    out: dict[str, Any] = {}
    for tag in TAGS:
        figures = {
            "delivered": _figure(document, tag, "statuses", "Delivered"),
            "not delivered": _figure(document, tag, "statuses", "Not delivered"),
            "waiting": _figure(document, tag, "statuses", "Waiting"),
            "STOP": _figure(document, tag, "stop"),
        }
        for name, value in figures.items():
            out[f"SMS {tag} {name}"] = value if isinstance(value, int) else "unavailable"
        last = _figure(document, tag, "last_success")
        out[f"SMS {tag} last success"] = ("time", last) if last is not None else "unavailable"
    taken_at = (document or {}).get("taken_at")
    out["SMS Partner exporter"] = ("time", taken_at) if taken_at is not None else "unavailable"
    account = (document or {}).get("account")
    known = account is not None and account["up"]
    credit = account["credits"].get("sms") if known else None
    out["SMS Partner credit"] = credit if credit is not None else "unavailable"
    balance = account["balance"] if known and account["currency"] == "EUR" else None
    out["SMS Partner balance"] = balance if balance is not None else "unavailable"
    return out


def _matches(state: dict[str, Any] | None, want: Any) -> bool:
    if state is None:
        return False
    shown = state["state"]
    if want == "unavailable":
        return shown == "unavailable"
    if isinstance(want, tuple):  # a time: the exporter's rounds move last_success on
        try:
            when = datetime.datetime.fromisoformat(shown).timestamp()
        except ValueError:
            return False
        # Home Assistant read another round than ours; a tag that fails keeps its time.
        return abs(when - want[1]) < STEP_LIMIT + 5
    try:
        return float(shown) == float(want)
    except ValueError:
        return False


class Exporter:
    """The exporter as a process on one fixed port, so that it can stop and come back."""

    def __init__(self, directory: Path, sim_url: str) -> None:
        self.directory = directory
        self.sim_url = sim_url
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[str] | None = None
        (directory / "key.txt").write_text(API_KEY + "\n")

    def start(self, *, account: bool) -> None:
        config = self.directory / "config.yaml"
        tags = "".join(f"  - {json.dumps(tag, ensure_ascii=False)}\n" for tag in TAGS)
        config.write_text(
            f"api:\n  url: {self.sim_url}\n  key_file: key.txt\n  retries: 0\n  timeout: 2s\n"
            f"  max_requests_per_second: 0\n"
            f"collection:\n  mode: scrape\naccount:\n  enabled: {str(account).lower()}\n"
            f"tags:\n{tags}"
        )
        self.proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "smsp_exporter", "--config.file", str(config)),
                *("--web.listen-address", f"127.0.0.1:{self.port}", "--log.level", "warn"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_until_up(self.url, self.proc)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.communicate(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.communicate(timeout=5)
        self.proc = None

    def document(self) -> dict[str, Any]:
        answer = requests.get(f"{self.url}/api/v1/tags", timeout=10)
        answer.raise_for_status()
        return answer.json()


@contextlib.contextmanager
def running_exporter(directory: Path, sim_url: str) -> Iterator[Exporter]:
    exporter = Exporter(directory, sim_url)
    try:
        yield exporter
    finally:
        exporter.stop()


def sensors_by_name(ha: HomeAssistant) -> dict[str, dict[str, Any]]:
    """The sensors' states by friendly name (the names the package gives them)."""
    out: dict[str, dict[str, Any]] = {}
    for entity, state in ha.states().items():
        name = state["attributes"].get("friendly_name")
        if entity.startswith("sensor.") and name is not None:
            assert name not in out, f"two sensors named {name!r}"
            out[name] = state
    return out


def wait_for_states(ha: HomeAssistant, document: dict[str, Any] | None, step: str) -> None:
    """Until every sensor shows what ``document`` says (None: the exporter is down)."""
    want = expected_states(document)
    deadline = time.monotonic() + STEP_LIMIT
    while True:
        states = sensors_by_name(ha)
        wrong = {
            name: (states.get(name, {}).get("state", "<missing>"), expected)
            for name, expected in want.items()
            if not _matches(states.get(name), expected)
        }
        if not wrong:
            return
        if time.monotonic() > deadline:
            lines = "\n".join(f"  {e}: shows {s!r}, want {w!r}" for e, (s, w) in wrong.items())
            pytest.fail(f"{step}: after {STEP_LIMIT:.0f}s\n{lines}\n{_problems(ha.log())}")
        time.sleep(0.3)


def _problems(log: str, allowed: tuple[str, ...] = ()) -> str:
    """The WARNING and ERROR lines of ``log`` (with their tracebacks) not in ``allowed``."""
    out: list[str] = []
    keep = False
    for line in log.splitlines():
        found = LOG_LINE.match(line)
        if found:
            keep = found["level"] in ("WARNING", "ERROR", "CRITICAL") and not any(
                text in line for text in (*ALWAYS_ALLOWED, *allowed)
            )
        if keep:
            out.append(line)
    return "\n".join(out)


def assert_log_clean(ha: HomeAssistant, since: int, step: str, allowed=()) -> int:
    """No unexpected WARNING or ERROR since offset ``since``; returns the new offset."""
    log = ha.log()
    problems = _problems(log[since:], allowed)
    assert not problems, f"{step}: Home Assistant logged\n{problems}"
    return len(log)


TOTALS = ("delivered", "not delivered", "STOP")
# Long-term statistics need a state_class (and a unit); device classes Home Assistant validates.
STATISTICS = {
    "delivered": ("total_increasing", None, "SMS"),
    "not delivered": ("total_increasing", None, "SMS"),
    "waiting": ("measurement", None, "SMS"),
    "STOP": ("total_increasing", None, "SMS"),
    "last success": (None, "timestamp", None),
}


def assert_statistics_classes(ha: HomeAssistant) -> None:
    states = sensors_by_name(ha)
    want = {
        f"SMS {tag} {figure}": classes for tag in TAGS for figure, classes in STATISTICS.items()
    }
    want["SMS Partner credit"] = ("measurement", None, "SMS")
    want["SMS Partner balance"] = ("total", "monetary", "EUR")
    for name, (state_class, device_class, unit) in want.items():
        attributes = states[name]["attributes"]
        shown = (
            attributes.get("state_class"),
            attributes.get("device_class"),
            attributes.get("unit_of_measurement"),
        )
        assert shown == (state_class, device_class, unit), name


def assert_long_term_statistics(ha: HomeAssistant) -> None:
    """Home Assistant's recorder lists the counts, credit and balance as statistics: a mean for
    measurements, a sum for totals; none for the times; no validation issue."""
    listed, issues = ha.websocket(
        {"type": "recorder/list_statistic_ids"},
        {"type": "recorder/validate_statistics"},
    )
    assert listed["success"] and issues["success"], (listed, issues)
    names = {state["entity_id"]: name for name, state in sensors_by_name(ha).items()}
    found = {
        names[item["statistic_id"]]: (item["has_mean"], item["has_sum"])
        for item in listed["result"]
        if item["statistic_id"] in names
    }
    want = {f"SMS {tag} {figure}": (False, True) for tag in TAGS for figure in TOTALS}
    want |= {f"SMS {tag} waiting": (True, False) for tag in TAGS}
    want["SMS Partner credit"] = (True, False)
    want["SMS Partner balance"] = (False, True)
    assert found == want
    assert issues["result"] == {}


def test_the_package_in_a_real_home_assistant(sim, tmp_path):
    # What runs below is the generator's output; the shipped example must be that too.
    assert SHIPPED.read_text() == demo_package(), "smsp-exporter homeassistant-package --demo"
    for spec in DEMO_TAGS:
        sim.add_tag(campaign(spec.name, 25, report_delay=30.0, stop=0.1))
    sim.add_tag(campaign(AWKWARD, 12, report_delay=30.0, stop=0.1))
    sim.advance(10)
    sim.set_fault(FAILING, "http_status", status=503)
    (tmp_path / "exporter").mkdir()
    with running_exporter(tmp_path / "exporter", sim.url) as exporter:
        exporter.start(account=False)
        started = time.monotonic()
        text = package(TAGS, url=exporter.url, scan_interval=1)
        with home_assistant(tmp_path / "ha", text) as ha:
            print(f"Home Assistant answered in {time.monotonic() - started:.1f}s")
            # 1. A tag failing since before Home Assistant started (never succeeded); account
            # off (null): their sensors are unavailable, the other tags show their figures.
            document = exporter.document()
            assert document["account"] is None and _figure(document, FAILING, "up") is False
            assert _figure(document, FAILING, "last_success") is None
            wait_for_states(ha, document, "a tag failing at start, account off")
            assert_statistics_classes(ha)
            seen = assert_log_clean(ha, 0, "a tag failing at start, account off")

            # 2. It recovers: its sensors come alive without a restart of Home Assistant.
            sim.clear_faults()
            sim.advance(5)
            wait_for_states(ha, exporter.document(), "the tag recovered")
            seen = assert_log_clean(ha, seen, "the tag recovered")

            # 3. It fails at run time: its counts become unavailable (not frozen), its last
            # success stays, and the other tags keep moving.
            before = exporter.document()
            sim.set_fault(FAILING, "http_status", status=503)
            sim.advance(10)
            document = exporter.document()
            assert _figure(document, FAILING, "up") is False
            moved = [t for t in TAGS if t != FAILING and document["tags"][t] != before["tags"][t]]
            assert any(
                _figure(document, t, "statuses") != _figure(before, t, "statuses") for t in moved
            ), "the other tags' counts must move for this step to mean anything"
            wait_for_states(ha, document, "a tag failing at run time")
            seen = assert_log_clean(ha, seen, "a tag failing at run time")
            sim.clear_faults()

            # 4. The exporter stops: everything is unavailable. It comes back with the account
            # on: everything shows again, credit and balance included.
            exporter.stop()
            wait_for_states(ha, None, "the exporter stopped")
            log = ha.log()[seen:]
            assert all(line in log for line in EXPORTER_DOWN), "the log read is not HA's"
            seen = assert_log_clean(ha, seen, "the exporter stopped", EXPORTER_DOWN)
            sim.advance(5)
            exporter.start(account=True)
            document = exporter.document()
            assert document["account"]["up"] is True
            wait_for_states(ha, document, "the exporter back, account on")
            assert_long_term_statistics(ha)
            # Lines written by a poll that failed just before the restart are allowed.
            seen = assert_log_clean(ha, seen, "the exporter back, account on", EXPORTER_DOWN)

            # 5. The account's reading fails, then recovers.
            sim.set_fault(None, "http_status", status=503, endpoint="me")
            document = exporter.document()
            assert document["account"]["up"] is False
            wait_for_states(ha, document, "the account failing")
            sim.clear_faults()
            wait_for_states(ha, exporter.document(), "the account recovered")
            seen = assert_log_clean(ha, seen, "the account failing and recovering")

            # 6. The exporter restarted with the account off again.
            exporter.stop()
            exporter.start(account=False)
            wait_for_states(ha, exporter.document(), "the exporter back, account off")
            assert_log_clean(ha, seen, "the exporter back, account off", EXPORTER_DOWN)
