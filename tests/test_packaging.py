"""What users install: the sdist and the wheel built from this repository (``python -m build``),
checked (``twine check``), installed into a clean virtual environment the way the README's
systemd steps say, and run from there (``--version``, ``--config.check``, and the installed unit
through ``systemd-analyze verify``)."""

from __future__ import annotations

import http.server
import importlib.metadata
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tarfile
import threading
import tomllib
import zipfile
from pathlib import Path

import pytest
import requests

from smsp_exporter import __version__

from .helpers import API_KEY, free_port, require_tool
from .running import wait_until_up

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "deploy" / "systemd" / "smsp-exporter.service"


def run(*cmd: str | Path, **kwargs) -> subprocess.CompletedProcess[str]:
    kwargs.setdefault("timeout", 300)
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kwargs)


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The sdist, and the wheel built from it (build's default), without build isolation:
    setuptools comes from the test environment, so no index is needed."""
    out = tmp_path_factory.mktemp("dist")
    result = run(sys.executable, "-m", "build", "--no-isolation", "--outdir", out, ROOT)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    # setuptools prints its deprecation notices between "!!" lines; a build must not need any.
    assert "!!" not in output, output[-4000:]
    (wheel,) = out.glob("*.whl")
    (sdist,) = out.glob("*.tar.gz")
    return {"wheel": wheel, "sdist": sdist}


def test_twine_check_accepts_the_sdist_and_the_wheel(dist):
    result = run(sys.executable, "-m", "twine", "check", "--strict", dist["sdist"], dist["wheel"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("PASSED") == 2, result.stdout


def test_the_changelog_starts_with_unreleased_and_lists_this_version():
    text = (ROOT / "CHANGELOG.md").read_text()
    headings = re.findall(r"^## (.+)$", text, re.M)
    assert headings[0] == "Unreleased"
    assert any(h.startswith(f"{__version__} - ") for h in headings), headings


def test_the_version_is_written_once():
    """smsp_exporter/__init__.py holds it (--version, the User-Agent, build_info read it there);
    pyproject.toml declares it dynamic."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"]
    assert "version" in project["project"]["dynamic"]
    attr = project["tool"]["setuptools"]["dynamic"]["version"]["attr"]
    assert attr == "smsp_exporter.__version__"
    assert re.fullmatch(r"\d+\.\d+\.\d+(?:[ab]\d+|rc\d+|\.dev\d+)?", __version__)


class _RecordingHandler(http.server.BaseHTTPRequestHandler):
    agents: list[str] = []

    def do_GET(self) -> None:
        type(self).agents.append(self.headers.get("User-Agent", ""))
        body = b'{"success": false, "code": 404, "message": "Not Found"}'
        self.send_response(404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_the_installed_program_reports_the_one_version(tmp_path):
    """In this (editable) install: --version, the package metadata and the User-Agent sent to
    the API all say smsp_exporter.__version__."""
    program = Path(sys.executable).parent / "smsp-exporter"
    version = run(program, "--version")
    assert version.stdout.strip() == f"smsp-exporter {__version__}"
    assert importlib.metadata.version("smsp-exporter") == __version__

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RecordingHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    config = tmp_path / "config.yaml"
    config.write_text(
        f"api:\n  url: http://127.0.0.1:{server.server_port}/v1\n  key: {API_KEY}\n"
        "  retries: 0\ntags: [promo]\n"
    )
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMSP_API_KEY")}
    proc = subprocess.Popen(
        [program, f"--config.file={config}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        wait_until_up(f"http://127.0.0.1:{port}", proc)
        requests.get(f"http://127.0.0.1:{port}/metrics", timeout=20)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        server.shutdown()
        server.server_close()
    assert _RecordingHandler.agents
    assert set(_RecordingHandler.agents) == {f"smsp-exporter/{__version__}"}


def test_the_packages_carry_the_version_and_the_license(dist):
    license_text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    assert dist["wheel"].name == f"smsp_exporter-{__version__}-py3-none-any.whl"
    with zipfile.ZipFile(dist["wheel"]) as wheel:
        info = f"smsp_exporter-{__version__}.dist-info"
        metadata = wheel.read(f"{info}/METADATA").decode()
        assert wheel.read(f"{info}/licenses/LICENSE").decode() == license_text
        assert "smsp_exporter/cli.py" in wheel.namelist()
        entry_points = wheel.read(f"{info}/entry_points.txt").decode()
    assert f"\nVersion: {__version__}\n" in metadata
    assert "\nLicense-Expression: Apache-2.0\n" in metadata
    assert "smsp-exporter = smsp_exporter.cli:main" in entry_points
    with tarfile.open(dist["sdist"]) as sdist:
        names = sdist.getnames()
    top = f"smsp_exporter-{__version__}"
    assert {f"{top}/LICENSE", f"{top}/README.md", f"{top}/pyproject.toml"} <= set(names)


# --- the README's systemd steps ------------------------------------------------------------------


def readme_systemd_steps() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("\n### systemd\n", 1)[1].split("\n### ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, "README's systemd section has no ```sh block"
    return [line.strip() for line in block.group(1).splitlines() if line.strip()]


def unit_header_steps() -> list[str]:
    lines = UNIT.read_text().splitlines()
    return [line[len("#   ") :].strip() for line in lines if line.startswith("#   ")]


def exec_start_program() -> str:
    (line,) = [line for line in UNIT.read_text().splitlines() if line.startswith("ExecStart=")]
    return shlex.split(line.removeprefix("ExecStart="))[0]


def test_the_unit_repeats_the_readme_steps():
    assert unit_header_steps() == readme_systemd_steps()


def test_the_steps_install_into_a_venv_where_execstart_looks():
    """Debian 12 refuses ``pip install`` into the system Python (PEP 668): the steps make a
    virtual environment, install into it with its own pip, and the unit runs its program."""
    steps = readme_systemd_steps()
    venvs = [shlex.split(s)[-1] for s in steps if re.match(r"python3 -m venv \S+$", s)]
    assert len(venvs) == 1, steps
    (venv,) = venvs
    pips = [s for s in steps if "pip install" in s]
    assert pips and all(s.startswith(f"{venv}/bin/pip install ") for s in pips), pips
    assert exec_start_program() == f"{venv}/bin/smsp-exporter"


def relocate(text: str, root: Path) -> str:
    """/opt/... and /etc/... moved under `root` (not /dev/stdin, not relative paths)."""
    return re.sub(r"(?<![\w./-])/(opt|etc)/", rf"{root}/\1/", text)


def test_the_systemd_steps_run_as_written(dist, tmp_path):
    """The README's steps, run one by one with bash, relocated under a temporary root. The only
    changes: `.` is the wheel built from this repository (as the README allows), the key is a
    test key, and `systemctl` (no systemd as PID 1 here) is left out. This is also the wheel's
    install into a clean virtual environment, and its run from there."""
    test_the_steps_install_into_a_venv_where_execstart_looks()  # never pip into this Python
    root = tmp_path / "root"
    (root / "etc" / "systemd" / "system").mkdir(parents=True)  # there on any systemd machine
    checkout = tmp_path / "checkout"  # "from the repository root", with the user's config.yaml
    checkout.mkdir()
    (checkout / "deploy").symlink_to(ROOT / "deploy")
    (checkout / "config.yaml").write_text((ROOT / "config.example.yaml").read_text())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SMSP_", "VIRTUAL_ENV"))}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"

    *steps, last = readme_systemd_steps()
    assert last == "systemctl daemon-reload && systemctl enable --now smsp-exporter"
    for step in steps:
        command = relocate(step, root).replace("'YOUR-API-KEY'", shlex.quote(API_KEY))
        command = re.sub(r"(/bin/pip install) \.$", rf"\1 {dist['wheel']}", command)
        result = run("bash", "-euo", "pipefail", "-c", command, cwd=checkout, env=env)
        assert result.returncode == 0, f"{step}\n{result.stdout[-2000:]}{result.stderr[-2000:]}"

    installed_unit = root / "etc" / "systemd" / "system" / "smsp-exporter.service"
    assert installed_unit.read_text() == UNIT.read_text()
    key_file = root / "etc" / "smsp-exporter" / "api-key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    program = Path(relocate(exec_start_program(), root))

    version = run(program, "--version", env=env)
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"smsp-exporter {__version__}"
    # What the unit gives the exporter: its config file, and the key through SMSP_API_KEY_FILE.
    check = run(
        program,
        f"--config.file={root}/etc/smsp-exporter/config.yaml",
        "--config.check",
        env={**env, "SMSP_API_KEY_FILE": str(key_file)},
    )
    assert check.returncode == 0, check.stderr
    assert API_KEY not in check.stdout + check.stderr

    verify_dir = tmp_path / "verify"
    verify_dir.mkdir()
    unit = verify_dir / "smsp-exporter.service"
    unit.write_text(installed_unit.read_text().replace(exec_start_program(), str(program)))
    result = run(require_tool("systemd-analyze"), "verify", unit, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == "", result.stderr


def test_the_dockerfile_build_stage_copies_what_the_build_needs(tmp_path):
    """Its build stage copies a few files, then builds the wheel: with only those (pyproject's
    license-files and readme included), the build must succeed."""
    text = (ROOT / "deploy" / "docker" / "Dockerfile").read_text().replace("\\\n", " ")
    build_stage = text.split("\nFROM ", 2)[1]
    context = tmp_path / "context"
    context.mkdir()
    for line in build_stage.splitlines():
        words = line.split()
        if words[:1] == ["COPY"] and not any(w.startswith("--") for w in words):
            *sources, destination = words[1:]
            target = context / destination if destination not in (".", "./") else context
            for source in sources:
                if (ROOT / source).is_dir():
                    shutil.copytree(ROOT / source, target, ignore=IGNORED)
                else:
                    shutil.copy(ROOT / source, context / source)
    assert (context / "pyproject.toml").is_file()
    out = tmp_path / "out"
    result = run(
        sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", out, context
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "did not match any files" not in result.stdout + result.stderr  # license-files
    (wheel,) = out.glob("*.whl")
    assert wheel.name == f"smsp_exporter-{__version__}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as built:
        assert f"smsp_exporter-{__version__}.dist-info/licenses/LICENSE" in built.namelist()


IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc")
