"""Configuration mistakes that used to pass ``--config.check`` and only showed at run time
(issue 16, items 10 and 11): a wrong ``api.url`` path, the example's placeholder key, the
example's ``key``/``key_file`` pair, and a tag count that ignored templates."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from smsp_exporter.config import ConfigError, config_from_dict, load_config

from .helpers import API_KEY, campaign, free_port, samples
from .running import wait_until_up

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config.example.yaml"
PLACEHOLDER = "your-api-key"


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real command line, with no key from this process's environment."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SMSP_API_KEY")}
    return subprocess.run(
        [sys.executable, "-m", "smsp_exporter", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**clean, **(env or {})},
        stdin=subprocess.DEVNULL,
    )


def url_error(url: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        config_from_dict({"api": {"url": url, "key": API_KEY}, "tags": ["a"]}, env={})
    return info.value


# --- item 10: api.url's path -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("https://api.smspartner.fr", "the path must be /v1, not '/'"),
        ("https://api.smspartner.fr/", "the path must be /v1, not '/'"),
        ("https://API.smspartner.fr/v2", "the path must be /v1, not '/v2'"),
        ("https://api.smspartner.fr/api/v1", "the path must be /v1"),
        ("https://api.smspartner.fr/v1/bulk-status-by-tag", "ends with the endpoint"),
        ("https://api.smspartner.fr/v1/me/", "ends with the endpoint /me"),
        ("http://127.0.0.1:8080/v1/bulk-status-by-tag", "ends with the endpoint"),
        ("https://proxy.internal/smsp/bulk-status-by-tag", "the exporter appends the endpoints"),
    ],
)
def test_a_wrong_api_path_is_a_config_error(url, says):
    err = url_error(url)
    assert err.key == "api.url"
    assert says in err.problem
    assert "/v1" in err.problem  # says what the right URL looks like


@pytest.mark.parametrize(
    "url",
    ["https://api.smspartner.fr/v1", "https://api.smspartner.fr/v1/", "http://10.0.0.5:8080/v1"],
)
def test_a_base_url_ending_in_v1_is_accepted_without_warning(url):
    config = config_from_dict({"api": {"url": url, "key": API_KEY}, "tags": ["a"]}, env={})
    assert config.warnings == ()


def test_another_host_without_v1_is_a_warning_not_an_error():
    """A proxy may serve the API under any path: warn, say why, do not refuse."""
    config = config_from_dict(
        {"api": {"url": "https://egress.internal/smspartner/", "key": API_KEY}, "tags": ["a"]},
        env={},
    )
    (warning,) = config.warnings
    assert warning.startswith("api.url: ")
    assert "/smspartner/bulk-status-by-tag" in warning and "404" in warning


def test_config_check_refuses_an_api_url_without_v1(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(f"api:\n  url: https://api.smspartner.fr\n  key: {API_KEY}\ntags: [promo]\n")
    result = cli("--config.file", str(path), "--config.check")
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"smsp-exporter: invalid configuration: {path}: api.url: "), line
    assert "/v1" in line and "Traceback" not in result.stderr and API_KEY not in line
    assert result.stdout == ""


def test_config_check_warns_about_a_proxy_path_without_v1(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(f"api:\n  url: http://127.0.0.1:9/\n  key: {API_KEY}\ntags: [promo]\n")
    result = cli("--config.file", str(path), "--config.check")
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout
    assert "api.url" in result.stderr and "404" in result.stderr


def test_a_404_at_run_time_points_at_api_url(sim, tmp_path):
    """The simulator answers an unknown path like the API: code 404. The log line of the failed
    tag must send the operator to api.url, not say "the API reported an error"."""
    sim.add_tag(campaign("promo", 5))
    base = sim.url.removesuffix("/v1")
    path = tmp_path / "config.yaml"
    path.write_text(f"api:\n  url: {base}\n  key: {API_KEY}\n  retries: 0\ntags: [promo]\n")
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "smsp_exporter",
            "--config.file",
            str(path),
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("SMSP_API_KEY")},
    )
    try:
        wait_until_up(f"http://127.0.0.1:{port}", proc)
        found = samples(requests.get(f"http://127.0.0.1:{port}/metrics", timeout=20).text)
        assert found[("sms_up", (("tag", "promo"),))] == 0
        assert found[("sms_api_errors_total", (("reason", "api_code_404"), ("tag", "promo")))]
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=20)
    failed = [line for line in stderr.splitlines() if "reason=api_code_404" in line]
    assert failed, stderr
    assert "check api.url" in failed[0] and "https://api.smspartner.fr/v1" in failed[0]
    assert API_KEY not in stderr


# --- item 11: config.example.yaml ------------------------------------------------------------


@pytest.mark.parametrize("placeholder", [PLACEHOLDER, "YOUR-API-KEY", " your-api-key "])
def test_the_documented_placeholder_is_refused_inline(placeholder):
    with pytest.raises(ConfigError) as info:
        config_from_dict({"api": {"key": placeholder}, "tags": ["a"]}, env={})
    assert info.value.key == "api.key"
    assert "placeholder" in info.value.problem


def test_the_inline_placeholder_is_refused_even_when_the_environment_has_a_key():
    with pytest.raises(ConfigError) as info:
        env = {"SMSP_API_KEY": "k" * 20}
        config_from_dict({"api": {"key": PLACEHOLDER}, "tags": ["a"]}, env=env)
    assert info.value.key == "api.key"


def test_the_docker_placeholder_key_file_is_refused(tmp_path):
    """deploy/docker/smsp-api-key.example, mounted as the secret without being replaced."""
    env = {"SMSP_API_KEY_FILE": str(ROOT / "deploy/docker/smsp-api-key.example")}
    with pytest.raises(ConfigError) as info:
        config_from_dict({"tags": ["a"]}, env=env)
    assert info.value.key == "SMSP_API_KEY_FILE" and "placeholder" in info.value.problem


def test_config_check_of_the_example_as_shipped_asks_for_a_key():
    result = cli("--config.file", str(EXAMPLE), "--config.check")
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert f"{EXAMPLE}: api.key: missing" in line


def uncomment(text: str, key: str, value: str) -> str:
    new, count = re.subn(rf"^(\s*)# {key}: .*$", rf"\g<1>{key}: {value}", text, flags=re.M)
    assert count == 1, key
    return new


def test_following_the_readme_with_key_file_works(tmp_path):
    """README: 'cp config.example.yaml config.yaml  # ..., point api.key_file at your key'."""
    config = tmp_path / "config.yaml"
    config.write_text(uncomment(EXAMPLE.read_text(), "key_file", "smsp-api-key"))
    (tmp_path / "smsp-api-key").write_text(API_KEY + "\n")
    result = cli("--config.file", str(config), "--config.check")
    assert result.returncode == 0, result.stderr
    assert load_config(config, env={}).key_source == "api.key_file"


def test_uncommenting_the_example_key_without_editing_it_is_refused(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(uncomment(EXAMPLE.read_text(), "key", f'"{PLACEHOLDER}"'))
    result = cli("--config.file", str(config), "--config.check")
    assert result.returncode == 2
    assert "api.key: is the documentation's placeholder" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_config_check_counts_the_tags_a_template_stands_for(tmp_path):
    """The example has 2 tags and a 7-day template: the exporter serves 9 tags today."""
    result = cli("--config.file", str(EXAMPLE), "--config.check", env={"SMSP_API_KEY": API_KEY})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        f"{EXAMPLE}: valid, 2 tags + 1 template = 9 tags today, mode scrape"
    )


def test_config_check_without_templates_keeps_its_short_line(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(f"api:\n  key: {API_KEY}\ntags: [promo]\n")
    result = cli("--config.file", str(path), "--config.check")
    assert result.stdout.strip() == f"{path}: valid, 1 tag, mode scrape"


def test_the_demo_uses_the_simulators_key_whatever_the_environment_says(tmp_path):
    """The Docker image sets SMSP_API_KEY_FILE; the compose stack runs --demo with the
    placeholder secret mounted: it replaced the simulator's key and every tag was rejected."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMSP_API_KEY")}
    env["SMSP_API_KEY_FILE"] = str(ROOT / "deploy/docker/smsp-api-key.example")
    proc = subprocess.Popen(
        [sys.executable, "-m", "smsp_exporter", "--demo", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        wait_until_up(f"http://127.0.0.1:{port}", proc)
        deadline = time.monotonic() + 20
        while True:
            found = samples(requests.get(f"http://127.0.0.1:{port}/metrics", timeout=20).text)
            up = {dict(labels)["tag"]: v for (name, labels), v in found.items() if name == "sms_up"}
            if (up and all(v == 1 for v in up.values())) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert up and all(v == 1 for v in up.values()), up
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)


def test_the_runbook_explains_a_404():
    text = (ROOT / "docs" / "runbook.md").read_text(encoding="utf-8")
    section = text.split("\n## Error 404", 1)[1].split("\n## ", 1)[0]
    assert "api_code_404" in section and "api.url" in section
    assert "https://api.smspartner.fr/v1" in section


# --- found by tests/test_properties.py: a damaged key line ------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        "  key{ sk-LEAKCANARY-7f3a9c2e5b1d4f60{  timeout: 5s",  # the case hypothesis found
        "  key= sk-LEAKCANARY-7f3a9c2e5b1d4f60 : 1",
    ],
)
def test_a_key_inside_a_damaged_key_line_is_not_echoed(tmp_path, line):
    """The api.key entry is lost, so the key is not known as one; the unknown key's name that
    carries it must not reach the message."""
    assert API_KEY in line
    path = tmp_path / "config.yaml"
    path.write_text(f"api:\n  url: http://127.0.0.1:9/v1\n{line}\ntags: [promo]\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert API_KEY not in str(info.value)
    assert info.value.key.startswith("api.") and "unknown key" in info.value.problem


def test_a_comment_about_the_key_does_not_garble_messages(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("api:\n  # the key itself, or key_file\n  tiemout: 5s\n  key: k123456789\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert str(info.value).endswith("api.tiemout: unknown key (did you mean 'timeout'?)")
