"""The Home Assistant integration (homeassistant/custom_components/smsp_exporter): its own
tests (homeassistant/tests) run in Home Assistant's virtual environment (.venv-ha, where
pytest-homeassistant-custom-component is), against a real simulator and exporter that they
start with this environment's Python. They must all pass and cover at least 95% of the
integration's code (the quality scale's test-coverage rule); their output is shown if not."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from .homeassistant import HA_VENV, ROOT, hass_binary

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
