"""What the log says when the API cannot be read (issue: "connection errors say nothing useful",
"account reading failures are never logged"): the host and the cause, in both log formats, and
never the key, nor the URL that holds it."""

from __future__ import annotations

import json
import socket
from dataclasses import replace

import pytest

from smsp_exporter.config import AccountConfig

from .helpers import API_KEY, campaign, make_config, parse_logfmt, serve, timed_scrape

UNKNOWN_HOST = "api.smsp.invalid"


def records(logs: dict[str, str], prefix: str) -> list[tuple[dict, dict]]:
    """(JSON record, logfmt record) pairs of the lines whose message starts with ``prefix``."""
    as_json = [json.loads(line) for line in logs["json"].splitlines()]
    as_logfmt = [parse_logfmt(line) for line in logs["logfmt"].splitlines()]
    assert len(as_json) == len(as_logfmt)
    return [(j, f) for j, f in zip(as_json, as_logfmt, strict=True) if j["msg"].startswith(prefix)]


def assert_no_key(logs: dict[str, str]) -> None:
    text = "".join(logs.values())
    assert API_KEY not in text
    assert "LEAKCANARY" not in text.upper()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def unresolvable(monkeypatch):
    """Name resolution of UNKNOWN_HOST fails, as a mistyped host does (without sending a DNS
    query off this machine: the tests stay on loopback)."""
    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        if host == UNKNOWN_HOST:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


CASES = {
    "refused": ("connection", "connection refused"),
    "dns": ("connection", "cannot resolve the host name (DNS)"),
    "tls": ("connection", "TLS error"),
    "timeout": ("timeout", "no complete answer within 0.5 s"),
}


@pytest.mark.parametrize("case", CASES)
def test_a_connection_error_names_the_host_and_the_cause(sim, both_logs, request, case):
    reason, cause = CASES[case]
    sim.add_tag(campaign("cible", 3))
    if case == "refused":
        host = f"127.0.0.1:{closed_port()}"
        url = f"http://{host}/v1"
    elif case == "dns":
        request.getfixturevalue("unresolvable")
        host = f"{UNKNOWN_HOST}:{sim.port}"
        url = f"http://{host}/v1"
    elif case == "tls":  # https against a plain-HTTP server
        host = f"127.0.0.1:{sim.port}"
        url = f"https://{host}/v1"
    else:
        sim.set_fault("cible", "delay", seconds=3.0)
        host = f"127.0.0.1:{sim.port}"
        url = sim.url
    with serve(make_config(sim, ["cible"], url=url, timeout="0.5s", retries=0)) as exporter:
        timed_scrape(exporter, 5.0)
    logs = both_logs()
    failures = records(logs, "collecting tag failed")
    assert len(failures) == 1, logs
    for record in failures[0]:
        assert record["level"] in ("warn", "warning")
        assert record["tag"] == "cible" and record["reason"] == reason
        assert host in record["msg"], record["msg"]
        assert cause in record["msg"], record["msg"]
        assert "://" not in record["msg"] and "apiKey" not in record["msg"]
    assert_no_key(logs)


def test_an_account_reading_failure_is_logged_once_per_change(sim, both_logs):
    """Three failed readings log one warning with the reason; the reading that works again
    logs one line too; a working reading logs nothing."""
    sim.add_tag(campaign("cible", 3))
    config = replace(make_config(sim, ["cible"], retries=0), account=AccountConfig(enabled=True))
    with serve(config) as exporter:
        timed_scrape(exporter, 5.0)
        sim.set_fault(None, "api_error", code=10, endpoint="me")
        for _ in range(3):
            timed_scrape(exporter, 5.0)
        sim.clear_faults()
        sim.set_fault(None, "http_status", status=500, endpoint="me")
        timed_scrape(exporter, 5.0)
        sim.clear_faults()
        for _ in range(2):
            timed_scrape(exporter, 5.0)
    logs = both_logs()
    failed = records(logs, "reading the account's credit failed")
    assert [j["reason"] for j, _ in failed] == ["api_code_10", "http_500"]
    for as_json, as_logfmt in failed:
        assert as_json["level"] == "warn" and as_logfmt["level"] == "warn"
        assert as_logfmt["reason"] == as_json["reason"]
    assert "key was rejected" in failed[0][0]["msg"]
    assert len(records(logs, "reading the account's credit works again")) == 1
    assert_no_key(logs)
