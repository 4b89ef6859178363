"""The real things the integration is tested against: the SMS Partner simulator and
smsp-exporter, each a process of the project's own virtual environment (Python of
SMSP_EXPORTER_PYTHON, else SMSP_VENV's, else .venv's, as dev.sh), running this checkout's code,
on 127.0.0.1 only."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import bcrypt
import pytest_socket

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "sim-key"
START_LIMIT = 20.0  # seconds for a process to answer
TEMPLATE = "relance-{date:%Y%m%d}"


def python() -> str:
    explicit = os.environ.get("SMSP_EXPORTER_PYTHON")
    if explicit:
        return explicit
    return str(ROOT / os.environ.get("SMSP_VENV", ".venv") / "bin" / "python")


def free_port() -> int:
    with pytest_socket._true_socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rolling_tags(days: int) -> list[str]:
    """The tags TEMPLATE expands to today (UTC, the exporter's default), today first."""
    today = datetime.datetime.now(datetime.UTC).date()
    return [TEMPLATE.format(date=today - datetime.timedelta(days=n)) for n in range(days)]


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 that nobody trusts, and its key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "server.crt", directory / "server.key"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def _wait(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Until ``url`` answers (any HTTP status), blocking: for set-up, outside the event loop.
    The certificate is not checked here (a test's own self-signed one)."""
    deadline = time.monotonic() + START_LIMIT
    unchecked = ssl.create_default_context()
    unchecked.check_hostname = False
    unchecked.verify_mode = ssl.CERT_NONE
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited: {log.read_text()[-2000:]}")
        try:
            urllib.request.urlopen(url, timeout=2, context=unchecked).close()
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {START_LIMIT}s: {log.read_text()[-2000:]}")


def _env() -> dict[str, str]:
    # This checkout's smsp_exporter, whatever the venv has installed.
    return {**os.environ, "PYTHONPATH": str(ROOT)}


class Simulator:
    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = directory / "simulator.log"
        self.proc = subprocess.Popen(
            [
                *(python(), "-m", "smsp_exporter.simulator", "--listen", f"127.0.0.1:{self.port}"),
                *("--api-key", API_KEY, "--send-spread", "1", "--report-delay", "1"),
                *("--tag", "promo:40", "--tag", "rappel:30"),
                *(arg for tag in rolling_tags(3) for arg in ("--tag", f"{tag}:20")),
            ],
            stdin=subprocess.DEVNULL,
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
            env=_env(),
        )
        _wait(f"{self.url}/_sim/stats", self.proc, self.log)
        # The clock stands still, an hour after the campaigns' start: every figure is final, so
        # what Home Assistant shows can be compared with what the exporter answers.
        for action, body in (("freeze", {}), ("advance", {"seconds": 3600})):
            request = urllib.request.Request(
                f"{self.url}/_sim/{action}", data=json.dumps(body).encode(), method="POST"
            )
            urllib.request.urlopen(request, timeout=5).close()

    async def control(self, action: str, **body: Any) -> None:
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{self.url}/_sim/{action}", json=body) as answer,
        ):
            assert answer.status == 200, await answer.text()

    def stop(self) -> None:
        _stop(self.proc)


class Exporter:
    """smsp-exporter on a fixed port: its tags can change (SIGHUP), it can stop and start
    again, and ask for basic auth."""

    def __init__(
        self, directory: Path, sim: Simulator, password: str | None = None, tls: bool = False
    ) -> None:
        self.directory = directory
        self.sim = sim
        self.port = free_port()
        self.tls = tls
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.password = password
        (directory / "key.txt").write_text(API_KEY + "\n")
        self.tags: list[Any] = ["promo", "rappel"]

    def write_config(self) -> None:
        # ensure_ascii=False: YAML reads \u escapes, but not surrogate pairs (🎄).
        tags = "".join(f"  - {json.dumps(tag, ensure_ascii=False)}\n" for tag in self.tags)
        (self.directory / "config.yaml").write_text(
            f"api:\n  url: {self.sim.url}/v1\n  key_file: key.txt\n  retries: 0\n"
            "  timeout: 2s\n  max_requests_per_second: 0\n"
            f"collection:\n  mode: scrape\naccount:\n  enabled: true\ntags:\n{tags}"
        )

    def start(self) -> None:
        self.write_config()
        flags = []
        web = ""
        if self.password is not None:
            hashed = bcrypt.hashpw(self.password.encode(), bcrypt.gensalt(4)).decode()
            web += f"basic_auth_users:\n  ha: '{hashed}'\n"
            flags.append("--web.healthz-without-auth")
        if self.tls:
            cert_file, key_file = self_signed(self.directory)
            web += f"tls_server_config:\n  cert_file: {cert_file}\n  key_file: {key_file}\n"
        if web:
            (self.directory / "web.yml").write_text(web)
            flags += ["--web.config.file", str(self.directory / "web.yml")]
        log = self.directory / "exporter.log"
        self.proc = subprocess.Popen(
            [
                *(python(), "-m", "smsp_exporter", "--config.file", "config.yaml", *flags),
                *("--web.listen-address", f"127.0.0.1:{self.port}", "--log.level", "warn"),
            ],
            cwd=self.directory,
            stdin=subprocess.DEVNULL,
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            env=_env(),
        )
        _wait(f"{self.url}/healthz", self.proc, log)

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc)
        self.proc = None

    # From a test's event loop: starting and stopping wait for the process (blocking calls).
    async def async_start(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.start)

    async def async_stop(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.stop)

    async def set_tags(self, tags: list[Any]) -> None:
        """Change the exporter's tags at run time (SIGHUP), until /api/v1/tags lists them."""
        self.tags = tags
        self.write_config()
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)
        want = {tag for tag in tags if isinstance(tag, str)}
        deadline = time.monotonic() + 10
        while True:
            document = await self.document()
            static = {t for t, f in document["tags"].items() if f["template"] is None}
            if static == want:
                return
            assert time.monotonic() < deadline, f"the exporter still lists {static}"
            await asyncio.sleep(0.1)

    async def document(self) -> dict[str, Any]:
        auth = aiohttp.BasicAuth("ha", self.password) if self.password else None
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{self.url}/api/v1/tags", auth=auth) as answer,
        ):
            assert answer.status == 200
            return await answer.json()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
