"""A real Home Assistant core as a process, for tests/test_homeassistant.py.

Home Assistant lives in its own virtual environment (``.venv-ha``, its pins clash with ours):
``./dev.sh test`` installs it from ``tests/homeassistant-requirements.txt``. A run gets a fresh
configuration directory: ``configuration.yaml`` (HTTP on a loopback port, the REST API, the
packages folder), the package under test in ``packages/``, and an owner with a long-lived
access token written straight into ``.storage/auth`` (what the UI's "Create token" stores), so
the test reads states through Home Assistant's own REST API without any onboarding.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from .helpers import free_port

ROOT = Path(__file__).resolve().parent.parent
HA_VENV = ROOT / os.environ.get("SMSP_HA_VENV", ".venv-ha")  # as dev.sh (relative: to ROOT)
HASS = HA_VENV / "bin" / "hass"
START_LIMIT = 60.0  # seconds for Home Assistant to load the package and answer /api/


PINS = ROOT / "tests" / "homeassistant-requirements.txt"


def hass_binary() -> Path:
    """Home Assistant's ``hass``; the test fails if it is missing or was installed from other
    pins than tests/homeassistant-requirements.txt (``./dev.sh test`` (re)installs it)."""
    if not HASS.exists():
        pytest.fail(f"{HASS} missing: ./dev.sh test installs Home Assistant into {HA_VENV}")
    stamp = HA_VENV / ".installed"  # what dev.sh writes: the pin file's sha256
    want = hashlib.sha256(PINS.read_bytes()).hexdigest()
    if not stamp.exists() or stamp.read_text().strip() != want:
        pytest.fail(f"{HA_VENV} was not installed from {PINS.name}: run ./dev.sh test")
    return HASS


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwt_hs256(claims: dict[str, Any], key: str) -> str:
    """A JWT as Home Assistant signs its access tokens (HS256 with the refresh token's key)."""
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = _b64(json.dumps(claims).encode())
    signature = hmac.new(key.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64(signature)}"


def _auth_storage() -> tuple[dict[str, Any], str]:
    """``.storage/auth`` with an owner and a long-lived token; and that token."""
    user_id, token_id, jwt_key = secrets.token_hex(16), secrets.token_hex(16), secrets.token_hex(64)
    now = int(time.time())
    storage = {
        "version": 1,
        "minor_version": 1,
        "key": "auth",
        "data": {
            "users": [
                {
                    "id": user_id,
                    "group_ids": ["system-admin"],
                    "is_owner": True,
                    "is_active": True,
                    "name": "smsp-exporter tests",
                    "system_generated": False,
                    "local_only": False,
                }
            ],
            "groups": [{"id": "system-admin", "name": "Administrators"}],
            "credentials": [],
            "refresh_tokens": [
                {
                    "id": token_id,
                    "user_id": user_id,
                    "client_id": None,
                    "client_name": "smsp-exporter tests",
                    "client_icon": None,
                    "token_type": "long_lived_access_token",
                    "created_at": "2024-01-01T00:00:00+00:00",
                    "access_token_expiration": 86400.0,
                    "token": secrets.token_hex(64),
                    "jwt_key": jwt_key,
                    "last_used_at": None,
                    "last_used_ip": None,
                    "expire_at": None,
                    "credential_id": None,
                    "version": None,
                }
            ],
        },
    }
    return storage, _jwt_hs256({"iss": token_id, "iat": now, "exp": now + 86400}, jwt_key)


CONFIGURATION = """\
homeassistant:
  name: smsp-exporter tests
  latitude: 48.85
  longitude: 2.35
  elevation: 35
  unit_system: metric
  currency: EUR
  country: FR
  time_zone: UTC
  packages: !include_dir_named packages
http:
  server_host: 127.0.0.1
  server_port: {port}
api:
logger:
  default: info
# docs/homeassistant.md: the source sensor's attributes (the whole answer) are not recorded.
recorder:
  commit_interval: 1
  exclude:
    entities: [sensor.sms_partner_exporter]
"""


@dataclass
class HomeAssistant:
    proc: subprocess.Popen[bytes]
    url: str
    token: str
    log_file: Path
    session: requests.Session = field(default_factory=requests.Session)

    def __post_init__(self) -> None:
        self.session.headers["Authorization"] = f"Bearer {self.token}"

    def states(self) -> dict[str, dict[str, Any]]:
        """Every entity's state object, by entity id."""
        answer = self.session.get(f"{self.url}/api/states", timeout=10)
        answer.raise_for_status()
        return {state["entity_id"]: state for state in answer.json()}

    def log(self) -> str:
        return self.log_file.read_text(encoding="utf-8", errors="replace")

    def websocket(self, *commands: dict[str, Any]) -> list[dict[str, Any]]:
        """Home Assistant's answers to ``commands`` on its WebSocket API (what the REST API
        lacks: the recorder's), through aiohttp in Home Assistant's own environment."""
        request = {"url": f"{self.url}/api/websocket", "token": self.token, "commands": commands}
        done = subprocess.run(
            [str(HA_VENV / "bin" / "python"), "-c", _WEBSOCKET_CLIENT],
            input=json.dumps(request),
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)


_WEBSOCKET_CLIENT = """
import asyncio, json, sys
import aiohttp

async def main(request):
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(request["url"]) as ws:
            assert (await ws.receive_json())["type"] == "auth_required"
            await ws.send_json({"type": "auth", "access_token": request["token"]})
            assert (await ws.receive_json())["type"] == "auth_ok"
            answers = []
            for number, command in enumerate(request["commands"], 1):
                await ws.send_json({"id": number, **command})
                while (answer := await ws.receive_json()).get("id") != number:
                    pass
                answers.append(answer)
            return answers

print(json.dumps(asyncio.run(asyncio.wait_for(main(json.load(sys.stdin)), 20))))
"""


def _wait_for_api(ha: HomeAssistant, limit: float) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if ha.proc.poll() is not None:
            pytest.fail(f"Home Assistant exited early ({ha.proc.returncode}):\n{ha.log()[-4000:]}")
        try:
            if ha.session.get(f"{ha.url}/api/", timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    pytest.fail(f"Home Assistant did not answer within {limit:.0f}s:\n{ha.log()[-4000:]}")


@contextlib.contextmanager
def home_assistant(config_dir: Path, package: str, extra: str = "") -> Iterator[HomeAssistant]:
    """Home Assistant with ``package`` in its packages folder, until the block ends; ``extra``
    is added to its configuration.yaml, and whatever ``config_dir`` already holds (such as
    ``custom_components/``) stays."""
    hass = hass_binary()
    port = free_port()
    (config_dir / "packages").mkdir(parents=True)
    (config_dir / "packages" / "smsp_exporter.yaml").write_text(package)
    (config_dir / "configuration.yaml").write_text(CONFIGURATION.format(port=port) + extra)
    storage, token = _auth_storage()
    (config_dir / ".storage").mkdir()
    (config_dir / ".storage" / "auth").write_text(json.dumps(storage))
    log_file = config_dir / "home-assistant.log"
    proc = subprocess.Popen(
        # --skip-pip: the requirements are in the venv already; nothing is fetched at run time.
        [str(hass), "-c", str(config_dir), "--skip-pip", "--log-file", str(log_file)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ha = HomeAssistant(proc, f"http://127.0.0.1:{port}", token, log_file)
    try:
        _wait_for_api(ha, START_LIMIT)
        yield ha
    finally:
        ha.session.close()
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
