"""Tests that run a system program (promtool, prometheus, amtool, docker-compose,
systemd-analyze) skip with a message naming it under plain pytest, and fail under
./dev.sh test (SMSP_REQUIRE_TOOLS=1), which installs them all and must run everything."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# A promtool test: the example web config checked by promtool and by us.
PROMTOOL_TEST = "tests/test_webconfig.py::test_example_is_accepted_by_promtool_and_by_us"


def pytest_without_tools(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """pytest on PROMTOOL_TEST with a PATH holding nothing but this Python."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(sys.executable)
    clean = {k: v for k, v in os.environ.items() if k != "SMSP_REQUIRE_TOOLS"}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", PROMTOOL_TEST],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**clean, "PATH": str(bin_dir), **env},
    )


def test_a_missing_tool_skips_with_its_name_under_plain_pytest(tmp_path):
    result = pytest_without_tools(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 skipped" in result.stdout
    assert "needs promtool on PATH (Debian package prometheus)" in result.stdout


def test_a_missing_tool_fails_under_dev_sh_test(tmp_path):
    result = pytest_without_tools(tmp_path, SMSP_REQUIRE_TOOLS="1")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 failed" in result.stdout
    assert "needs promtool on PATH" in result.stdout


def test_dev_sh_test_requires_the_tools():
    text = (ROOT / "dev.sh").read_text()
    assert 'SMSP_REQUIRE_TOOLS=1 exec "$VENV/bin/python" -m pytest' in text


MARKED_TEST = """
import pytest

@pytest.mark.needs("no-such-program-smsp")
def test_marked():
    raise AssertionError("not reached: the marker stops it first")
"""


def test_the_needs_marker_skips_or_fails_before_the_test_runs(tmp_path):
    (tmp_path / "test_marked.py").write_text(MARKED_TEST)
    command = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider"]
    command += ["-p", "tests.conftest", str(tmp_path / "test_marked.py")]
    clean = {k: v for k, v in os.environ.items() if k != "SMSP_REQUIRE_TOOLS"}
    plain = subprocess.run(
        command, capture_output=True, text=True, timeout=120, cwd=ROOT, env=clean
    )
    assert plain.returncode == 0, plain.stdout + plain.stderr
    assert "1 skipped" in plain.stdout and "needs no-such-program-smsp on PATH" in plain.stdout
    required = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**clean, "SMSP_REQUIRE_TOOLS": "1"},
    )
    assert required.returncode == 1, required.stdout + required.stderr
    assert "needs no-such-program-smsp on PATH" in required.stdout
    assert "not reached" not in required.stdout
