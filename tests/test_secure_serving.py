"""TLS, mutual TLS and basic auth of the HTTP server, over real HTTPS on loopback.

Certificates are made at test time with trustme; passwords are hashed with bcrypt.
"""

from __future__ import annotations

import base64
import contextlib
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest
import requests
import trustme
from prometheus_client import CollectorRegistry, Gauge

from smsp_exporter import webconfig
from smsp_exporter.web import ExporterServer
from smsp_exporter.webconfig import BasicAuth, WebConfigError, load_web_config

PASSWORD = "s3cret-pass"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def pki(ca, tmp_path_factory) -> dict[str, Path]:
    """Server certificate for 127.0.0.1, the CA, a client certificate and a stranger's."""
    root = tmp_path_factory.mktemp("pki")
    server = ca.issue_cert("127.0.0.1", "localhost")
    server.cert_chain_pems[0].write_to_path(root / "server.crt")
    server.private_key_pem.write_to_path(root / "server.key")
    ca.cert_pem.write_to_path(root / "ca.crt")
    client = ca.issue_cert("prometheus@example.test")
    client.private_key_and_cert_chain_pem.write_to_path(root / "client.pem")
    stranger = trustme.CA().issue_cert("intruder@example.test")
    stranger.private_key_and_cert_chain_pem.write_to_path(root / "stranger.pem")
    return {name: root / name for name in ("server.crt", "server.key", "ca.crt")} | {
        "client": root / "client.pem",
        "stranger": root / "stranger.pem",
        "dir": root,
    }


def bcrypt_hash(password: str, prefix: str = "$2y$") -> str:
    # Cost 4 keeps the suite fast; htpasswd writes "$2y$", which bcrypt reads like "$2b$".
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()
    return prefix + hashed[4:]


def write_web_config(directory: Path, text: str) -> Path:
    path = directory / "web.yml"
    path.write_text(text)
    return path


@contextlib.contextmanager
def serving(web_config_path: Path | None, *, healthz_without_auth: bool = False) -> Iterator[str]:
    registry = CollectorRegistry()
    Gauge("secure_test_value", "A value to scrape", registry=registry).set(42)
    config = load_web_config(web_config_path) if web_config_path else None
    if config is not None and healthz_without_auth:
        from dataclasses import replace

        config = replace(config, healthz_without_auth=True)
    server = ExporterServer(registry, "127.0.0.1:0", web_config=config, request_timeout=5)
    server.start()
    try:
        yield server.url.rstrip("/")
    finally:
        server.shutdown()


def tls_config(pki, extra: str = "") -> str:
    return (
        "tls_server_config:\n"
        f"  cert_file: {pki['server.crt']}\n"
        f"  key_file: {pki['server.key']}\n" + extra
    )


# --- TLS ---------------------------------------------------------------------------------------


def test_tls_serves_https_and_refuses_plain_http(pki, tmp_path):
    with serving(write_web_config(tmp_path, tls_config(pki))) as url:
        assert url.startswith("https://127.0.0.1:")
        answer = requests.get(f"{url}/metrics", verify=pki["ca.crt"], timeout=10)
        assert answer.status_code == 200
        assert "secure_test_value 42.0" in answer.text
        with pytest.raises(requests.ConnectionError):
            requests.get(url.replace("https://", "http://") + "/metrics", timeout=5)
        # An untrusted server certificate is refused by a verifying client.
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(f"{url}/metrics", timeout=5)
        # The server survived both.
        assert requests.get(f"{url}/healthz", verify=pki["ca.crt"], timeout=5).status_code == 200


def test_a_silent_tls_client_does_not_block_other_connections(pki, tmp_path):
    with serving(write_web_config(tmp_path, tls_config(pki))) as url:
        port = int(url.rsplit(":", 1)[1])
        silent = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(3)]
        try:
            started = time.monotonic()
            answer = requests.get(f"{url}/metrics", verify=pki["ca.crt"], timeout=4)
            assert answer.status_code == 200
            assert time.monotonic() - started < 4
        finally:
            for sock in silent:
                sock.close()


def test_hundreds_of_stalled_tls_handshakes_do_not_starve_a_scraper(pki, tmp_path):
    """300 connections (more than the server reads at once): half send nothing, half a partial
    ClientHello. An HTTPS scrape is still answered, promptly, and the TLS stays usable."""
    with serving(write_web_config(tmp_path, tls_config(pki))) as url:
        port = int(url.rsplit(":", 1)[1])
        stalled = []
        try:
            for index in range(300):
                sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                if index % 2:
                    sock.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
                stalled.append(sock)
            time.sleep(0.5)
            for _ in range(3):
                began = time.monotonic()
                answer = requests.get(f"{url}/metrics", verify=pki["ca.crt"], timeout=5)
                assert answer.status_code == 200 and "secure_test_value" in answer.text
                assert time.monotonic() - began < 3
        finally:
            for sock in stalled:
                sock.close()


def test_min_version_tls13_refuses_a_tls12_client(pki, tmp_path):
    path = write_web_config(tmp_path, tls_config(pki, "  min_version: TLS13\n"))
    with serving(path) as url:
        port = int(url.rsplit(":", 1)[1])
        context = ssl.create_default_context(cafile=pki["ca.crt"])
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        with (
            pytest.raises(ssl.SSLError),
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1"),
        ):
            pass
        context13 = ssl.create_default_context(cafile=pki["ca.crt"])
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            context13.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            assert tls.version() == "TLSv1.3"


# --- mutual TLS --------------------------------------------------------------------------------


def test_mutual_tls_requires_a_client_certificate_from_the_ca(pki, tmp_path):
    extra = f"  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {pki['ca.crt']}\n"
    with serving(write_web_config(tmp_path, tls_config(pki, extra))) as url:
        good = requests.get(
            f"{url}/metrics", verify=pki["ca.crt"], cert=str(pki["client"]), timeout=10
        )
        assert good.status_code == 200 and "secure_test_value" in good.text
        for cert in (None, str(pki["stranger"])):
            with pytest.raises(requests.exceptions.ConnectionError):
                requests.get(f"{url}/metrics", verify=pki["ca.crt"], cert=cert, timeout=5)


def test_verify_client_cert_if_given_accepts_none_but_refuses_a_strangers(pki, tmp_path):
    extra = f"  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: {pki['ca.crt']}\n"
    with serving(write_web_config(tmp_path, tls_config(pki, extra))) as url:
        assert requests.get(f"{url}/metrics", verify=pki["ca.crt"], timeout=10).ok
        assert requests.get(
            f"{url}/metrics", verify=pki["ca.crt"], cert=str(pki["client"]), timeout=10
        ).ok
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(
                f"{url}/metrics", verify=pki["ca.crt"], cert=str(pki["stranger"]), timeout=5
            )


# --- basic auth --------------------------------------------------------------------------------


def auth_config(extra: str = "") -> str:
    return f"basic_auth_users:\n  prometheus: '{bcrypt_hash(PASSWORD)}'\n" + extra


def test_basic_auth_over_tls(pki, tmp_path):
    path = write_web_config(tmp_path, tls_config(pki) + auth_config())
    with serving(path) as url:
        ok = requests.get(
            f"{url}/metrics", verify=pki["ca.crt"], auth=("prometheus", PASSWORD), timeout=10
        )
        assert ok.status_code == 200 and "secure_test_value" in ok.text
        denied = requests.get(f"{url}/metrics", verify=pki["ca.crt"], timeout=10)
        assert denied.status_code == 401
        assert denied.headers["WWW-Authenticate"].startswith("Basic ")


@pytest.mark.parametrize(
    "auth",
    [None, ("prometheus", "wrong"), ("nobody", PASSWORD), ("prometheus", PASSWORD + "x"), ("", "")],
    ids=["none", "wrong-password", "unknown-user", "longer-password", "empty"],
)
def test_basic_auth_refuses_wrong_or_missing_credentials(tmp_path, auth):
    with serving(write_web_config(tmp_path, auth_config())) as url:
        for path in ("/metrics", "/", "/healthz", "/no-such-page"):
            answer = requests.get(f"{url}{path}", auth=auth, timeout=10)
            assert answer.status_code == 401, path
            assert answer.headers["WWW-Authenticate"].startswith("Basic realm=")
            assert "secure_test_value" not in answer.text
        assert requests.get(f"{url}/metrics", auth=("prometheus", PASSWORD), timeout=10).ok


@pytest.mark.parametrize(
    "header",
    ["Bearer abc", "Basic", "Basic !!!notbase64", "Basic " + base64.b64encode(b"x").decode()],
)
def test_malformed_authorization_headers_get_401(tmp_path, header):
    with serving(write_web_config(tmp_path, auth_config())) as url:
        answer = requests.get(f"{url}/metrics", headers={"Authorization": header}, timeout=10)
        assert answer.status_code == 401


def test_healthz_without_auth_only_when_asked(tmp_path):
    path = write_web_config(tmp_path, auth_config())
    with serving(path, healthz_without_auth=True) as url:
        assert requests.get(f"{url}/healthz", timeout=10).status_code == 200
        assert requests.get(f"{url}/metrics", timeout=10).status_code == 401
        assert requests.get(f"{url}/", timeout=10).status_code == 401


def test_verdicts_are_cached_and_an_unknown_user_costs_one_check(monkeypatch):
    calls = []
    real = bcrypt.checkpw

    def counting(password, hashed):
        calls.append(password)
        return real(password, hashed)

    monkeypatch.setattr(webconfig.bcrypt, "checkpw", counting)
    auth = BasicAuth((("prometheus", bcrypt_hash(PASSWORD).encode()),))
    good = "Basic " + base64.b64encode(f"prometheus:{PASSWORD}".encode()).decode()
    bad = "Basic " + base64.b64encode(b"prometheus:nope").decode()
    assert auth.check(good) and auth.check(good)
    assert len(calls) == 1
    # A wrong password repeated (a misconfigured scraper, a flood) costs one check, not one each.
    assert not auth.check(bad) and not auth.check(bad)
    assert len(calls) == 2
    # An unknown user still costs one bcrypt check (no user enumeration by timing).
    assert not auth.check("Basic " + base64.b64encode(b"ghost:x").decode())
    assert len(calls) == 3


def test_concurrent_password_checks_are_bounded(monkeypatch):
    """A check waiting too long for a bcrypt slot is BUSY (503), freeing its thread; a cached
    verdict never waits."""
    auth = BasicAuth((("prometheus", bcrypt_hash(PASSWORD).encode()),), max_checks=1, wait=0.05)
    good = "Basic " + base64.b64encode(f"prometheus:{PASSWORD}".encode()).decode()
    assert auth.verify(good) is webconfig.AuthResult.OK
    release = threading.Event()
    real = bcrypt.checkpw

    def stuck(password, hashed):
        release.wait(5)
        return real(password, hashed)

    monkeypatch.setattr(webconfig.bcrypt, "checkpw", stuck)
    first = threading.Thread(
        target=auth.verify, args=("Basic " + base64.b64encode(b"prometheus:a").decode(),)
    )
    first.start()
    time.sleep(0.1)
    try:
        other = "Basic " + base64.b64encode(b"prometheus:b").decode()
        assert auth.verify(other) is webconfig.AuthResult.BUSY
        assert auth.verify(good) is webconfig.AuthResult.OK  # cached: no slot needed
    finally:
        release.set()
        first.join(5)


def test_security_headers_from_http_server_config(tmp_path):
    text = "http_server_config:\n  headers:\n    X-Frame-Options: deny\n"
    with serving(write_web_config(tmp_path, text)) as url:
        assert requests.get(f"{url}/metrics", timeout=10).headers["X-Frame-Options"] == "deny"


def test_unreadable_tls_files_are_a_config_error(pki, tmp_path):
    text = f"tls_server_config:\n  cert_file: {pki['server.crt']}\n  key_file: missing.key\n"
    with pytest.raises(WebConfigError) as caught:
        load_web_config(write_web_config(tmp_path, text))
    assert "tls_server_config.key_file" in str(caught.value)


def test_an_encrypted_tls_key_is_refused_without_asking_for_a_passphrase(pki, tmp_path):
    """Without a password callback OpenSSL prompts on the terminal (and a service blocks)."""
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(pki["server.key"].read_bytes(), password=None)
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    text = f"tls_server_config:\n  cert_file: {pki['server.crt']}\n  key_file: {encrypted}\n"
    path = write_web_config(tmp_path, text)
    result = subprocess.run(
        [sys.executable, "-m", "smsp_exporter", "--demo", f"--web.config.file={path}"],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # no controlling terminal: OpenSSL would prompt on stderr
    )
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "tls_server_config.key_file" in line and "encrypted" in line, line


def test_the_command_line_serves_tls_with_basic_auth_and_an_open_healthz(pki, tmp_path):
    """--web.config.file and --web.healthz-without-auth on a real process (demo mode)."""
    path = write_web_config(tmp_path, tls_config(pki) + auth_config())
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "smsp_exporter",
            "--demo",
            f"--web.listen-address=127.0.0.1:{port}",
            f"--web.config.file={path}",
            "--web.healthz-without-auth",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    url = f"https://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while True:
            assert proc.poll() is None, proc.communicate()[1]
            try:
                health = requests.get(f"{url}/healthz", verify=pki["ca.crt"], timeout=2)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "the exporter did not come up"
                time.sleep(0.1)
        assert health.status_code == 200
        assert requests.get(f"{url}/metrics", verify=pki["ca.crt"], timeout=10).status_code == 401
        answer = requests.get(
            f"{url}/metrics", verify=pki["ca.crt"], auth=("prometheus", PASSWORD), timeout=15
        )
        assert answer.status_code == 200 and "sms_status_total" in answer.text
        reload = requests.post(f"{url}/-/reload", verify=pki["ca.crt"], timeout=10)
        assert reload.status_code == 401
        for path in ("/", "/probe?tag=x", "/api/v1/tags", "/nothing-here"):
            answer = requests.get(f"{url}{path}", verify=pki["ca.crt"], timeout=10)
            assert answer.status_code == 401, path
            assert answer.headers["WWW-Authenticate"].startswith("Basic "), path
    finally:
        proc.kill()
        proc.communicate(timeout=10)
