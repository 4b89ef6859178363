"""deploy/web-config.example.yml as a user meets it: alone it fails promtool (its certificates
do not exist yet); after the OpenSSL steps written in its comments, promtool accepts it and the
exporter serves mutual TLS and basic auth with what they made (issue 16, item 14)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from prometheus_client import CollectorRegistry

from smsp_exporter.web import ExporterServer
from smsp_exporter.webconfig import load_web_config

from .helpers import require_tool

EXAMPLE = Path(__file__).resolve().parent.parent / "deploy" / "web-config.example.yml"
PASSWORD = "change-me"  # the example's documented password


def certificate_steps() -> list[str]:
    """The commands in the example's comments, from HOST=... to the chmod."""
    lines = [line[len("#   ") :] for line in EXAMPLE.read_text().splitlines() if line[:4] == "#   "]
    start = next(i for i, line in enumerate(lines) if line.startswith("HOST="))
    end = next(i for i, line in enumerate(lines) if line.startswith("chmod "))
    return lines[start : end + 1]


def promtool_check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_tool("promtool"), "check", "web-config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> Path:
    """The example in a directory of its own, after its certificate steps (HOST=localhost)."""
    if shutil.which("openssl") is None:
        pytest.fail("openssl is missing (Debian package openssl)")
    root = tmp_path_factory.mktemp("webcfg-example")
    shutil.copy(EXAMPLE, root / "web-config.yml")
    script = "\n".join(certificate_steps())
    script, count = re.subn(r"^HOST=\S+", "HOST=localhost", script, flags=re.M)
    assert count == 1
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return root


def test_the_example_alone_fails_promtool_for_want_of_certificates(tmp_path):
    """What the comments warn about: the files must be made first. The exporter says which one
    is missing, in one line, and exits 2."""
    shutil.copy(EXAMPLE, tmp_path / "web-config.yml")
    assert promtool_check(tmp_path / "web-config.yml").returncode != 0
    (tmp_path / "config.yaml").write_text("tags: [promo]\n")
    result = subprocess.run(
        [
            *(sys.executable, "-m", "smsp_exporter", "--config.check"),
            *("--config.file", str(tmp_path / "config.yaml")),
            *("--web.config.file", str(tmp_path / "web-config.yml")),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "SMSP_API_KEY": "k" * 20},
    )
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert "tls_server_config.cert_file: cannot read" in line and "tls/server.crt" in line


def test_the_documented_steps_make_files_promtool_accepts(made):
    result = promtool_check(made / "web-config.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    for name in ("ca.crt", "server.crt", "server.key", "client.crt", "client.key"):
        assert (made / "tls" / name).is_file(), name
    assert (made / "tls" / "server.key").stat().st_mode & 0o077 == 0


@pytest.fixture
def served(made) -> Iterator[str]:
    config = load_web_config(made / "web-config.yml")
    server = ExporterServer(CollectorRegistry(), "127.0.0.1:0", web_config=config)
    server.start()
    try:
        yield f"https://localhost:{server.port}"
    finally:
        server.shutdown()


def test_the_exporter_serves_mutual_tls_with_them(made, served):
    tls = made / "tls"
    client = (str(tls / "client.crt"), str(tls / "client.key"))
    ok = requests.get(
        f"{served}/metrics",
        verify=tls / "ca.crt",
        cert=client,
        auth=("prometheus", PASSWORD),
        timeout=10,
    )
    assert ok.status_code == 200
    wrong_password = requests.get(
        f"{served}/metrics",
        verify=tls / "ca.crt",
        cert=client,
        auth=("prometheus", "x"),
        timeout=10,
    )
    assert wrong_password.status_code == 401
    with pytest.raises(requests.exceptions.RequestException):  # no client certificate
        requests.get(
            f"{served}/metrics", verify=tls / "ca.crt", auth=("prometheus", PASSWORD), timeout=10
        )
