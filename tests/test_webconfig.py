"""The web configuration file: our parser and promtool's agree, errors are one line."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import trustme

from smsp_exporter.webconfig import WebConfigError, load_web_config

from .helpers import require_tool

EXAMPLE = Path(__file__).parent.parent / "deploy" / "web-config.example.yml"


@pytest.fixture(scope="module")
def example_dir(tmp_path_factory) -> Path:
    """The example web config beside the tls/ files it names, made by trustme."""
    root = tmp_path_factory.mktemp("webcfg")
    shutil.copy(EXAMPLE, root / "web-config.yml")
    ca = trustme.CA()
    server = ca.issue_cert("localhost")
    (root / "tls").mkdir()
    server.cert_chain_pems[0].write_to_path(root / "tls" / "server.crt")
    server.private_key_pem.write_to_path(root / "tls" / "server.key")
    ca.cert_pem.write_to_path(root / "tls" / "ca.crt")
    return root


def promtool(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_tool("promtool"), "check", "web-config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_example_is_accepted_by_promtool_and_by_us(example_dir):
    path = example_dir / "web-config.yml"
    result = promtool(path)
    assert result.returncode == 0, result.stdout + result.stderr
    config = load_web_config(path)
    assert config.tls is not None
    assert config.tls.client_auth_type == "RequireAndVerifyClientCert"
    assert config.tls.cert_file == example_dir / "tls" / "server.crt"
    assert [user for user, _ in config.basic_auth_users] == ["prometheus"]


def test_example_hash_is_that_of_the_documented_password():
    import bcrypt

    config_text = EXAMPLE.read_text()
    hashed = config_text.split("prometheus:")[1].split()[0]
    assert bcrypt.checkpw(b"change-me", hashed.encode())


def write(tmp_path: Path, text: str, example_dir: Path | None = None) -> Path:
    if example_dir is not None:
        text = text.replace("TLS/", f"{example_dir}/tls/")
    path = tmp_path / "web.yml"
    path.write_text(text)
    return path


TLS = "tls_server_config:\n  cert_file: TLS/server.crt\n  key_file: TLS/server.key\n"

# (name, text, key named in our error, promtool must also reject it)
BAD = [
    ("unknown-top-key", "tls_config: {}\n", "tls_config", True),
    ("unknown-tls-key", TLS + "  client_ca: x\n", "tls_server_config.client_ca", False),
    ("typo-tls-key", TLS + "  min_versio: TLS12\n", "tls_server_config.min_versio", True),
    ("bad-client-auth", TLS + "  client_auth_type: Always\n", "client_auth_type", True),
    ("bad-min-version", TLS + "  min_version: TLS9\n", "tls_server_config.min_version", True),
    ("missing-key-file", "tls_server_config:\n  cert_file: TLS/server.crt\n", "key_file", True),
    (
        "verify-without-ca",
        TLS + "  client_auth_type: RequireAndVerifyClientCert\n",
        "tls_server_config.client_ca_file",
        False,
    ),
    ("not-bcrypt", "basic_auth_users:\n  alice: plaintext\n", "basic_auth_users.alice", False),
    ("users-not-a-map", "basic_auth_users: [alice]\n", "basic_auth_users", True),
    ("bad-header", "http_server_config:\n  headers:\n    X-Foo: bar\n", "headers.X-Foo", True),
    ("not-yaml", "tls_server_config: [\n", "<yaml>", True),
]


@pytest.mark.parametrize(("name", "text", "key", "promtool_rejects"), BAD, ids=[b[0] for b in BAD])
def test_bad_web_configs_name_the_key(tmp_path, example_dir, name, text, key, promtool_rejects):
    path = write(tmp_path, text, example_dir)
    with pytest.raises(WebConfigError) as caught:
        load_web_config(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and key in message
    assert "\n" not in message
    assert "plaintext" not in message  # a password value is never echoed
    if promtool_rejects:
        assert promtool(path).returncode != 0, name


def test_missing_file(tmp_path):
    with pytest.raises(WebConfigError, match="cannot read the file"):
        load_web_config(tmp_path / "absent.yml")


def test_empty_file_means_plain_http_without_auth(tmp_path):
    config = load_web_config(write(tmp_path, ""))
    assert config.tls is None and config.basic_auth_users == ()


def test_cli_exits_2_with_one_line_on_a_bad_web_config(tmp_path):
    path = write(tmp_path, "basic_auth_users:\n  alice: plaintext-password\n")
    result = subprocess.run(
        [sys.executable, "-m", "smsp_exporter", "--demo", "--web.config.file", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "basic_auth_users.alice" in lines[0]
    assert "plaintext-password" not in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "tls_server_confg: {}\n",
            "tls_server_confg: unknown key (did you mean 'tls_server_config'?)",
        ),
        (
            "http_server_config:\n  headers:\n    X-Frame-Option: DENY\n",
            "http_server_config.headers.X-Frame-Option: unknown key "
            "(did you mean 'X-Frame-Options'?)",
        ),
        (
            'http_server_config:\n  headers:\n    X-Frame-Options: "DENY\\r\\nSet-Cookie: a=b"\n',
            "http_server_config.headers.X-Frame-Options: expected a one-line string",
        ),
        (
            "http_server_config:\n  http2: 'yes'\n",
            "http_server_config.http2: expected true or false",
        ),
        (
            "basic_auth_users:\n  alice: 123456789\n",
            "basic_auth_users.alice: expected a string, got an integer",
        ),
        ("basic_auth_users:\n  'a:b': x\n", "basic_auth_users: invalid user name 'a:b'"),
        (
            "basic_auth_users:\n  alice: x\n  alice: y\n",
            "<yaml>: line 3 column 3: duplicate key 'alice' (first at line 2)",
        ),
        (
            TLS + "  min_version: TLS13\n  max_version: TLS12\n",
            "tls_server_config.min_version: is above max_version",
        ),
    ],
)
def test_web_config_messages(tmp_path, example_dir, text, message):
    path = write(tmp_path, text, example_dir)
    with pytest.raises(WebConfigError) as caught:
        load_web_config(path)
    assert str(caught.value).startswith(f"{path}: {message}")
    assert "123456789" not in str(caught.value)  # a hash (even a wrong one) is never shown


def test_an_empty_tls_section_means_plain_http(tmp_path):
    """As in the exporter-toolkit: no certificate and no key, no TLS."""
    config = load_web_config(write(tmp_path, "tls_server_config: {}\n"))
    assert config.tls is None


def test_relative_tls_paths_are_from_the_files_directory(tmp_path, example_dir):
    path = example_dir / "relative.yml"
    path.write_text(TLS.replace("TLS/", "tls/"))
    config = load_web_config(path)
    assert config.tls is not None and config.tls.key_file == example_dir / "tls" / "server.key"
