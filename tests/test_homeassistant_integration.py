"""The Home Assistant integration (homeassistant/custom_components/smsp_exporter), set up from
the UI of a real Home Assistant core; and its own tests (homeassistant/tests), run in Home
Assistant's virtual environment (.venv-ha, where pytest-homeassistant-custom-component is)
against a real simulator and exporter that they start with this environment's Python. Those
must all pass and cover at least 95% of the integration's code (the quality scale's
test-coverage rule); their output is shown if not."""

from __future__ import annotations

import datetime
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import replace

import pytest
import requests

from smsp_exporter.config import AccountConfig

from .helpers import campaign, free_port, make_config, serve
from .homeassistant import HA_VENV, ROOT, hass_binary, home_assistant

INTEGRATION = ROOT / "homeassistant" / "custom_components" / "smsp_exporter"

pytestmark = pytest.mark.timeout(240)
LIMIT = 180  # seconds for the whole integration suite (about 10 s on two cores)


def test_the_integration_suite_passes(tmp_path):
    hass_binary()  # fails clearly when .venv-ha is missing or was made from other pins
    env = {
        **os.environ,
        "SMSP_EXPORTER_PYTHON": sys.executable,
        "COVERAGE_FILE": str(tmp_path / "coverage"),  # not in the checkout
    }
    env.pop("PYTHONPATH", None)
    started = time.monotonic()
    done = subprocess.run(
        [
            *(str(HA_VENV / "bin" / "python"), "-m", "pytest", "-p", "no:cacheprovider", "-q"),
            *("--cov=custom_components.smsp_exporter", "--cov-report=term-missing"),
            "--cov-fail-under=95",
        ],
        cwd=ROOT / "homeassistant",
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=LIMIT,
    )
    print(f"homeassistant/tests: {time.monotonic() - started:.1f}s")
    output = done.stdout[-20000:] + done.stderr[-5000:]
    assert done.returncode == 0, output
    assert " passed" in done.stdout and "skipped" not in done.stdout, output


# What a real Home Assistant may log at WARNING or above with the integration: its start-up
# notes, the one it writes for any custom integration, and nothing else.
ALLOWED = (
    "Skipping pip installation of required modules",  # hass runs with --skip-pip
    "Support for the running Python version",  # 3.11 is deprecated from 2024.4 on
    "We found a custom integration smsp_exporter which has not been tested by Home Assistant",
)
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+ (?P<level>[A-Z]+) ")
STEP_LIMIT = 20.0


def _unexpected(log: str) -> list[str]:
    out, keep = [], False
    for line in log.splitlines():
        if found := LOG_LINE.match(line):
            keep = found["level"] in ("WARNING", "ERROR", "CRITICAL")
            keep = keep and not any(text in line for text in ALLOWED)
        if keep:
            out.append(line)
    return out


def test_set_up_from_the_ui_of_a_real_home_assistant(sim, tmp_path):
    """The folder copied into a real Home Assistant core's custom_components, the entry made
    through the REST API the UI uses (a wrong address first): the devices and sensors come,
    rolling tag included, with the exporter's figures, and the log stays clean."""
    template = "relance-{date:%Y%m%d}"
    today = datetime.datetime.now(datetime.UTC).date()
    dated = [template.format(date=today - datetime.timedelta(days=n)) for n in range(2)]
    for name in ("promo", *dated):
        sim.add_tag(campaign(name, 20, report_delay=5.0, stop=0.1))
    sim.advance(60)
    tags = ["promo", {"template": template, "days": 2}]
    config = replace(make_config(sim, tags, retries=0), account=AccountConfig(True))
    config_dir = tmp_path / "ha"
    shutil.copytree(INTEGRATION, config_dir / "custom_components" / "smsp_exporter")
    with serve(config) as url, home_assistant(config_dir, "{}\n", "config:\n") as ha:
        flows = f"{ha.url}/api/config/config_entries/flow"
        form = ha.session.post(flows, json={"handler": "smsp_exporter"}, timeout=30).json()
        assert (form["type"], form["step_id"], form["errors"]) == ("form", "user", {}), form
        answer = ha.session.post(
            f"{flows}/{form['flow_id']}", json={"url": f"http://127.0.0.1:{free_port()}"}
        ).json()
        assert answer["errors"] == {"base": "cannot_connect"}, answer
        answer = ha.session.post(f"{flows}/{form['flow_id']}", json={"url": url}).json()
        assert answer["type"] == "create_entry", answer

        document = requests.get(f"{url}/api/v1/tags", timeout=10).json()
        figures = {"promo": document["tags"]["promo"], "relance": document["tags"][dated[0]]}
        want = {
            "sensor.sms_promo_delivered": figures["promo"]["statuses"]["Delivered"],
            "sensor.sms_promo_stop": figures["promo"]["stop"],
            "sensor.sms_relance_date_y_m_d_delivered": figures["relance"]["statuses"]["Delivered"],
            "sensor.sms_relance_date_y_m_d_waiting": figures["relance"]["statuses"]["Waiting"],
            "sensor.sms_partner_account_sms_credit": document["account"]["credits"]["sms"],
            "binary_sensor.sms_promo_problem": "off",
        }
        deadline = time.monotonic() + STEP_LIMIT
        while True:
            states = ha.states()
            shown = {e: states[e]["state"] if e in states else None for e in want}
            if shown == {e: str(v) for e, v in want.items()}:
                break
            assert time.monotonic() < deadline, f"{shown} != {want}\n{ha.log()[-3000:]}"
            time.sleep(0.3)
        relance = states["sensor.sms_relance_date_y_m_d_delivered"]["attributes"]
        assert relance["tag"] == dated[0] and relance["tags"] == dated
        assert relance["friendly_name"] == f"SMS {template} Delivered"
        assert _unexpected(ha.log()) == []
