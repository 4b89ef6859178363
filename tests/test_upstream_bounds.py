"""What an upstream can make the exporter export or print stays bounded and secret-free: distinct
statuses capped per tag (not per page), error reasons from a fixed set, the API's message
scrubbed before it is cut, and no key-file path (which may be the key) in a config error."""

from __future__ import annotations

import re

import pytest

from smsp_exporter.config import ConfigError, config_from_dict
from smsp_exporter.errors import (
    DOCUMENTED_API_CODES,
    KNOWN_HTTP_ERRORS,
    REASON_API_CODES,
    ApiCodeError,
    HttpStatusError,
    scrub_api_message,
)
from smsp_exporter.simulator import Message

from .helpers import (
    API_KEY,
    campaign,
    make_config,
    reasons,
    serve,
    statuses_of,
    timed_scrape,
    value,
)

# Every reason sms_api_errors_total / sms_account_errors_total may carry (docs/failure-modes.md,
# "Label values stay bounded"): the fixed ones, one per documented API code, one per real HTTP
# error status.
FIXED_REASONS = {
    "timeout",
    "connection",
    "invalid_response",
    "deadline",
    "redirect",
    "response_too_large",
    "api_code_other",
    "http_other",
}
BOUNDED_REASONS = (
    FIXED_REASONS
    | {f"api_code_{code}" for code in REASON_API_CODES}
    | {f"http_{status}" for status in KNOWN_HTTP_ERRORS}
)


# --- 9: distinct statuses capped per tag -------------------------------------------------------


def test_a_tag_whose_pages_each_bring_new_statuses_cannot_flood_the_series(sim):
    """120 statuses, 10 new ones on each of 12 pages (each page well under the per-page cap):
    the tag is refused (`invalid_response`), not exported as 120 series; a tag under the cap
    and the other tags are unaffected."""
    sim.set_messages(
        "babel", [Message(f"+3361{i:07d}", f"etat-{i}", False, 1_764_000_000) for i in range(120)]
    )
    sim.set_messages(
        "varie",
        [Message(f"+3362{i:07d}", f"etat-{i % 40}", False, 1_764_000_000) for i in range(80)],
    )
    sim.add_tag(campaign("calme", 25))
    with serve(make_config(sim, ["babel", "varie", "calme"])) as url:
        found, _ = timed_scrape(url, 5.0)
    series = [labels for (name, labels) in found if name == "sms_status_total"]
    assert len(series) <= 3 * 50 + 3 * 3, len(series)
    assert value(found, "sms_up", tag="babel") == 0
    assert reasons(found, "babel") == {"invalid_response": 1}
    assert statuses_of(found, "babel") == {}
    assert value(found, "sms_up", tag="varie") == 1
    assert len(statuses_of(found, "varie")) == 40 + 3  # its 40, and the documented three at 0
    assert value(found, "sms_up", tag="calme") == 1


# --- 9: error reasons from a fixed set ---------------------------------------------------------

ODD_CODES = {"code-7": 7, "code-405": 405, "code-long": 10**40, "code-neg": -3}
ODD_STATUSES = {"http-799": 799, "http-599": 599, "http-451": 451, "http-418": 418}


def test_error_reasons_stay_in_the_documented_set(sim):
    """Undocumented API codes (one 41 digits long) share `api_code_other`, made-up HTTP
    statuses share `http_other`; documented ones keep their own reason."""
    tags = [*ODD_CODES, *ODD_STATUSES, "code-10", "ok"]
    for tag in tags:
        sim.add_tag(campaign(tag, 3))
    for tag, code in ODD_CODES.items():
        sim.set_fault(tag, "api_error", code=code)
    sim.set_fault("code-10", "api_error", code=10, status=401)
    for tag, status in ODD_STATUSES.items():
        sim.set_fault(tag, "http_status", status=status)
    with serve(make_config(sim, tags, retries=0)) as url:
        found, _ = timed_scrape(url, 5.0)
    every = {dict(labels)["reason"] for (name, labels) in found if name == "sms_api_errors_total"}
    assert every <= BOUNDED_REASONS, every - BOUNDED_REASONS
    for tag in ODD_CODES:
        assert reasons(found, tag) == {"api_code_other": 1}, tag
    assert reasons(found, "code-10") == {"api_code_10": 1}
    assert reasons(found, "http-799") == {"http_other": 1}
    assert reasons(found, "http-599") == {"http_other": 1}
    assert reasons(found, "http-451") == {"http_451": 1}
    assert reasons(found, "http-418") == {"http_418": 1}
    assert value(found, "sms_up", tag="ok") == 1


def test_reasons_are_bounded_whatever_the_number():
    for code in (*DOCUMENTED_API_CODES, 0, 2, 11, 200, 999, 10**4000, -(10**30)):
        reason = ApiCodeError(code).reason
        assert reason in BOUNDED_REASONS, code
        assert len(ApiCodeError(code).message) < 200
    for status in range(100, 1000):
        assert HttpStatusError(status).reason in BOUNDED_REASONS, status
    assert len(BOUNDED_REASONS) <= 61


# --- 11: the API's message scrubbed before it is cut -------------------------------------------


@pytest.mark.parametrize("cut_at", range(1, 14))
def test_an_echoed_key_leaves_no_prefix_behind(cut_at):
    """Wherever the 200-character cut falls inside an echoed key, nothing of it is left."""
    message = "x" * (200 - cut_at - 1) + " " + API_KEY + " fin"
    scrubbed = scrub_api_message(message)
    assert len(scrubbed) <= 203
    assert API_KEY[:cut_at] not in scrubbed.replace("x", "")


def test_the_api_message_is_still_readable():
    assert scrub_api_message("Clé API incorrecte") == "Clé API incorrecte"
    assert scrub_api_message("appelez le 06 12 34 56 78 svp") == "appelez le <redacted> svp"
    long = scrub_api_message("mot " * 100)
    assert long.endswith("...") and len(long) <= 203 and "mo..." not in long


def test_an_api_message_echoing_the_key_at_the_cut_leaks_none_of_it(sim, both_logs):
    """Over HTTP: the API answers code 10 with a message quoting the key so that the 200th
    character falls in its first letters (`sk-LEAKC`, no digit among them)."""
    message = "Clé API incorrecte: " + "mot " * 43 + API_KEY
    assert message.index(API_KEY) == 192
    sim.add_tag(campaign("cible", 3))
    sim.set_fault("cible", "api_error", code=10, message=message)
    with serve(make_config(sim, ["cible"])) as url:
        found, _ = timed_scrape(url, 5.0)
    assert reasons(found, "cible") == {"api_code_10": 1}
    logs = "".join(both_logs().values())
    assert "Clé API incorrecte" in logs  # the message was logged...
    assert "sk-LEAK" not in logs  # ...without the first characters of the key
    assert "LEAKCANARY" not in logs


# --- 11: no key-file path in a config error ----------------------------------------------------

KEYLIKE = "sk-PASTEDKEY-9d8e7f6a5b4c"


def key_file_error(tmp_path, env_or_key: str, content: bytes | None) -> str:
    path = tmp_path / KEYLIKE
    if content is not None:
        path.write_bytes(content)
    data = {"tags": ["t"], "api": {}}
    env = {}
    if env_or_key == "env":
        env["SMSP_API_KEY_FILE"] = str(path)
    else:
        data["api"]["key_file"] = KEYLIKE  # relative: looked for beside the config
    with pytest.raises(ConfigError) as failed:
        config_from_dict(data, source="/etc/smsp/config.yaml", env=env, base_dir=tmp_path)
    return str(failed.value)


@pytest.mark.parametrize("origin", ["key_file", "env"])
@pytest.mark.parametrize(
    "content",
    [None, b"x" * 70_000, b"\xff\xfe\xfa", b"   \n"],
    ids=["missing", "too-large", "not-utf8", "empty"],
)
def test_a_key_pasted_as_the_key_file_path_is_never_printed(tmp_path, origin, content):
    """`api.key_file: <the key>` (or SMSP_API_KEY_FILE=<the key>): the key is the path, so
    the error says what is wrong with the file without naming it."""
    text = key_file_error(tmp_path, origin, content)
    assert "PASTEDKEY" not in text, text
    assert re.search(r"api\.key_file|SMSP_API_KEY_FILE", text), text
    assert "\n" not in text


def test_the_failure_modes_page_lists_the_reason_set():
    """docs/failure-modes.md is the operators' list of reasons: it must stay the code's."""
    from pathlib import Path

    page = (Path(__file__).parent.parent / "docs" / "failure-modes.md").read_text()
    for reason in FIXED_REASONS:
        assert f"`{reason}`" in page, reason
    codes = ", ".join(str(code) for code in sorted(DOCUMENTED_API_CODES))
    assert codes in page.replace("\n", " ")


def test_404_keeps_its_own_reason_the_runbook_names():
    """404 is not documented, but it is what a wrong api.url gets: its own bounded reason."""
    assert ApiCodeError(404).reason == "api_code_404"
    assert ApiCodeError(405).reason == "api_code_other"
