"""The credit and stuck-message alert rules, checked and unit-tested by the real promtool."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "prometheus" / "rules" / "smsp-credit-and-stuck.rules.yml"
TESTS = ROOT / "tests" / "rules" / "smsp-credit-and-stuck.test.yml"

promtool = shutil.which("promtool") or "promtool"  # dev.sh installs it


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, *args], capture_output=True, text=True, timeout=60, cwd=ROOT, check=False
    )


def test_rules_are_valid():
    result = run("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 rules found" in result.stdout


def test_rule_unit_tests_pass():
    result = run("test", "rules", str(TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
