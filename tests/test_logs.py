"""Logging: logfmt and JSON lines, one record per line, secrets and phone numbers redacted."""

from __future__ import annotations

import http.server
import io
import json
import logging
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from urllib.parse import quote, quote_plus

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from smsp_exporter.logs import add_secret, clear_secrets, redact, setup_logging

from .helpers import parse_logfmt

SECRET = "sk-LOGCANARY-3e8b1c9d7a2f"
TS_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")

log = logging.getLogger("smsp_exporter.test")


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    hooks = sys.excepthook, threading.excepthook
    clear_secrets()
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        sys.excepthook, threading.excepthook = hooks
        logging.captureWarnings(False)
        clear_secrets()


def capture(fmt: str, emit: Callable[[], None], level: str = "debug") -> list[str]:
    stream = io.StringIO()
    setup_logging(level, fmt, stream)
    emit()
    text = stream.getvalue()
    assert text == "" or text.endswith("\n")
    return text.splitlines()


def one(fmt: str, emit: Callable[[], None]) -> str:
    lines = capture(fmt, emit)
    assert len(lines) == 1, lines
    return lines[0]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- shapes ----------------------------------------------------------------------------------


def test_logfmt_shape_and_extras() -> None:
    line = one("logfmt", lambda: log.info("fetched tag", extra={"tag": "promo-noel", "pages": 3}))
    assert re.fullmatch(
        r"ts=\S+ level=info logger=smsp_exporter\.test msg=\"fetched tag\" tag=promo-noel pages=3",
        line,
    ), line
    fields = parse_logfmt(line)
    assert TS_RE.fullmatch(fields["ts"])
    assert fields == {
        "ts": fields["ts"],
        "level": "info",
        "logger": "smsp_exporter.test",
        "msg": "fetched tag",
        "tag": "promo-noel",
        "pages": "3",
    }


def test_json_shape_and_extras() -> None:
    line = one(
        "json",
        lambda: log.warning(
            "slow page %d", 4, extra={"tag": "t1", "wait": 1.5, "ok": False, "none": None}
        ),
    )
    record = json.loads(line)
    assert TS_RE.fullmatch(record.pop("ts"))
    assert record == {
        "level": "warn",
        "logger": "smsp_exporter.test",
        "msg": "slow page 4",
        "tag": "t1",
        "wait": 1.5,
        "ok": False,
        "none": None,
    }


def test_logfmt_quotes_and_escapes_values() -> None:
    tricky = {
        "space": "a b",
        "quote": 'say "hi"',
        "equals": "k=v",
        "backslash": "C:\\dir\\",
        "newline": "one\ntwo\r\n\tthree",
        "empty": "",
        "unicode": "réussi ✓",
        "separator": "a\u2028b\x85c\x00d",
    }
    line = one("logfmt", lambda: log.info("tricky", extra=tricky))
    fields = parse_logfmt(line)
    for key, value in tricky.items():
        assert fields[key] == value, key
    assert fields["unicode"] == "réussi ✓" and 'unicode="réussi ✓"' in line


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_characters="+%"), max_size=40))
def test_logfmt_round_trips_any_value(value: str) -> None:
    stream = io.StringIO()
    setup_logging("info", "logfmt", stream)
    log.info("value", extra={"value": value})
    text = stream.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n")
    if "apikey" not in value.lower() and "api_key" not in value.lower():
        assert parse_logfmt(text[:-1])["value"] == value


def test_extras_do_not_mask_builtin_fields() -> None:
    line = one("logfmt", lambda: log.info("hello", extra={"level": "fake", "ts": "x"}))
    fields = parse_logfmt(line)
    assert fields["level"] == "info"
    assert fields["level_"] == "fake"
    assert fields["ts_"] == "x"
    assert TS_RE.fullmatch(fields["ts"])


def test_only_extras_not_record_attributes() -> None:
    fields = json.loads(one("json", lambda: log.info("x")))
    assert set(fields) == {"ts", "level", "logger", "msg"}


def test_exception_stays_on_one_line_logfmt() -> None:
    def emit() -> None:
        try:
            raise ValueError("boom\nsecond line")
        except ValueError:
            log.exception("it failed", extra={"tag": "t"})

    line = one("logfmt", emit)
    fields = parse_logfmt(line)
    assert fields["msg"] == "it failed" and fields["level"] == "error" and fields["tag"] == "t"
    assert fields["exc"].startswith("Traceback (most recent call last):\n")
    assert "ValueError: boom\nsecond line" in fields["exc"]
    assert list(fields)[-1] == "exc"


def test_exception_in_json() -> None:
    def emit() -> None:
        try:
            1 / 0  # noqa: B018
        except ZeroDivisionError:
            log.error("division", exc_info=True)

    record = json.loads(one("json", emit))
    assert record["msg"] == "division"
    assert "ZeroDivisionError" in record["exc"] and record["exc"].startswith("Traceback")


def test_stack_info_on_one_line() -> None:
    fields = parse_logfmt(one("logfmt", lambda: log.info("where", stack_info=True)))
    assert fields["stack"].startswith("Stack (most recent call last):\n")


def test_bad_format_arguments_do_not_lose_the_record() -> None:
    stream = io.StringIO()
    setup_logging("info", "logfmt", stream)
    (ours,) = [h for h in logging.getLogger().handlers if getattr(h, "stream", None) is stream]
    # Straight to our handler: pytest's own capture handler would fail on this record.
    ours.handle(log.makeRecord(log.name, logging.INFO, __file__, 1, "%d pages", ("many",), None))
    fields = parse_logfmt(stream.getvalue().rstrip("\n"))
    assert fields["msg"].startswith("%d pages")


# --- levels and setup ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("level", "expected"),
    [
        ("debug", ["debug", "info", "warn", "error"]),
        ("info", ["info", "warn", "error"]),
        ("warn", ["warn", "error"]),
        ("warning", ["warn", "error"]),
        ("error", ["error"]),
    ],
)
def test_level_filtering(level: str, expected: list[str]) -> None:
    def emit() -> None:
        log.debug("d")
        log.info("i")
        log.warning("w")
        log.error("e")

    lines = capture("logfmt", emit, level=level)
    assert [parse_logfmt(line)["level"] for line in lines] == expected


@pytest.mark.parametrize(("level", "fmt"), [("verbose", "logfmt"), ("", "json"), ("info", "xml")])
def test_bad_level_or_format(level: str, fmt: str) -> None:
    with pytest.raises(ValueError, match="invalid log"):
        setup_logging(level, fmt, io.StringIO())


def test_setup_again_replaces_its_handler_only() -> None:
    root = logging.getLogger()
    other = logging.NullHandler()
    root.addHandler(other)
    first, second = io.StringIO(), io.StringIO()
    setup_logging("info", "logfmt", first)
    setup_logging("info", "json", second)
    log.info("hello")
    assert first.getvalue() == ""
    assert json.loads(second.getvalue())["msg"] == "hello"
    assert other in root.handlers
    ours = [h for h in root.handlers if h.formatter is not None and h is not other]
    assert len([h for h in ours if getattr(h, "stream", None) in (first, second)]) == 1


def test_third_party_loggers_go_through_the_formatter() -> None:
    line = one("json", lambda: logging.getLogger("urllib3.connectionpool").debug("x %s", "y"))
    assert json.loads(line)["logger"] == "urllib3.connectionpool"


# --- redaction -------------------------------------------------------------------------------


def test_registered_secret_redacted_in_message_extra_exception_and_stack() -> None:
    add_secret(SECRET)

    def emit() -> None:
        log.info("key is %s", SECRET, extra={"url": f"https://x/?k={SECRET}", "k": SECRET})
        try:
            raise RuntimeError(f"failed with {SECRET!r}")
        except RuntimeError:
            log.exception("oops")
        log.info("here", stack_info=True, extra={"note": SECRET})

    for fmt in ("logfmt", "json"):
        lines = capture(fmt, emit)
        assert len(lines) == 3
        text = "\n".join(lines)
        assert SECRET not in text
        assert text.count("<redacted>") >= 5


def test_secret_forms_url_encoded_and_escaped() -> None:
    secret = 'a/b+c=d e&f"g\\h'
    add_secret(secret)
    forms = [
        secret,
        quote(secret, safe=""),
        quote_plus(secret),
        quote(secret),
        quote(secret, safe="").lower(),
    ]
    for form in forms:
        assert "<redacted>" in redact(f"GET /x?k={form} HTTP/1.1")
        assert form not in redact(f"GET /x?k={form} HTTP/1.1")
    for fmt in ("logfmt", "json"):
        text = "\n".join(capture(fmt, lambda: log.info("m", extra={"v": secret, "w": forms[1]})))
        assert "<redacted>" in text
        for escaped in ("a/b+c=d", "a%2Fb%2Bc", "d e&f"):
            assert escaped not in text


def test_short_secrets_are_ignored() -> None:
    add_secret("")
    add_secret("abc")
    assert redact("abc def") == "abc def"
    add_secret("abcd")
    assert redact("abc abcd") == "abc <redacted>"
    clear_secrets()
    assert redact("abcd") == "abcd"


def test_api_key_parameter_redacted_without_registration() -> None:
    assert (
        redact("https://api.smspartner.fr/v1/bulk-status-by-tag?apiKey=abc123xyz&tag=t1")
        == "https://api.smspartner.fr/v1/bulk-status-by-tag?apiKey=<redacted>&tag=t1"
    )
    assert (
        redact("/v1/x?tag=t&apikey=Zz9-_~.x HTTP/1.1") == "/v1/x?tag=t&apikey=<redacted> HTTP/1.1"
    )
    assert redact("url: /x?APIKEY=q'") == "url: /x?APIKEY=<redacted>'"
    assert redact("next=%2Fx%3FapiKey%3Dabcdef") == "next=%2Fx%3FapiKey%3D<redacted>"
    assert redact('{"apiKey": "abcdef", "x": 1}') == '{"apiKey": "<redacted>", "x": 1}'
    assert redact("{'apiKey': 'abcdef'}") == "{'apiKey': '<redacted>'}"
    line = one("logfmt", lambda: log.info("GET %s", "/v1/x?apiKey=unregistered-key&tag=t"))
    assert "unregistered-key" not in line and "apiKey=<redacted>" in line


@pytest.mark.parametrize(
    "phone",
    [
        "+33612345678",
        "+33 6 12 34 56 78",
        "+33.6.12.34.56.78",
        "+33-6-12-34-56-78",
        "+1 202-555-0143",
        "+447911123456",
        "+861391234567890",
        "%2B33612345678",
        "%2b33%206%2012%2034%2056%2078",
    ],
)
def test_phone_numbers_redacted(phone: str) -> None:
    assert redact(f"sent to {phone}, ok") == "sent to <phone>, ok"
    for fmt in ("logfmt", "json"):
        text = "\n".join(capture(fmt, lambda: log.info("to %s", phone, extra={"recipient": phone})))
        assert phone not in text
        assert "612345678" not in text and "555-0143" not in text
        assert text.count("<phone>") == 2


@pytest.mark.parametrize(
    "text",
    [
        "+1234567",  # 7 digits: not a phone number
        "2026-11-25T11:22:13+01:00",
        "version 1.2.3 build 33612345678",  # no '+'
        "x=1e+10",
    ],
)
def test_not_phone_numbers(text: str) -> None:
    assert redact(text) == text


def test_requests_exception_with_key_in_url_is_redacted() -> None:
    """A real requests/urllib3 failure (exception text and urllib3's retry warning)."""
    add_secret(SECRET)
    url = f"http://127.0.0.1:{closed_port()}/v1/bulk-status-by-tag?apiKey={SECRET}&tag=t"

    def emit() -> None:
        with requests.Session() as session:
            session.mount("http://", HTTPAdapter(max_retries=Retry(total=1, backoff_factor=0)))
            try:
                session.get(url, timeout=2)
            except requests.RequestException as err:
                log.error("request failed: %s", err, exc_info=True, extra={"error": repr(err)})

    for fmt in ("logfmt", "json"):
        lines = capture(fmt, emit)
        text = "\n".join(lines)
        assert any("Retrying" in line for line in lines), lines  # urllib3's own warning
        assert "ConnectionError" in text or "Max retries" in text
        assert SECRET not in text
        assert "apiKey=<redacted>" in text


def test_urllib3_debug_url_lines_are_redacted() -> None:
    """urllib3 logs the full request URL at debug: the key must not survive it."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        key = "unregistered-" + SECRET
        add_secret(SECRET)

        def emit() -> None:
            port = server.server_address[1]
            requests.get(
                f"http://127.0.0.1:{port}/v1/x?apiKey={quote(key)}&to=%2B33612345678", timeout=5
            )

        lines = capture("logfmt", emit)
        url_lines = [line for line in lines if "GET /v1/x" in line]
        assert url_lines, lines
        text = "\n".join(lines)
        assert SECRET not in text and "unregistered" not in text
        assert "33612345678" not in text
        assert "apiKey=<redacted>" in url_lines[0]
    finally:
        server.shutdown()
        server.server_close()


UNCAUGHT = """
import sys, threading, warnings
from smsp_exporter.logs import add_secret, setup_logging

setup_logging("warn")
add_secret("K3y-0f-the-API-1234")

def fail():
    raise RuntimeError("upstream said K3y-0f-the-API-1234 for +33612345678")

thread = threading.Thread(target=fail, name="smsp-exporter-reload")
thread.start()
thread.join()
warnings.warn("deprecated call with apiKey=K3y-0f-the-API-1234")
raise ValueError("at exit: K3y-0f-the-API-1234")
"""


def test_uncaught_exceptions_and_warnings_go_through_the_formatter() -> None:
    """A thread's uncaught exception (the SIGHUP reload thread, say), a Python warning and an
    uncaught exception in the main thread: Python would print them to stderr as they are."""
    result = subprocess.run(
        [sys.executable, "-c", UNCAUGHT], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 3, result.stderr
    assert all(line.startswith("ts=") for line in lines), result.stderr
    assert "K3y-0f-the-API" not in result.stderr and "+336" not in result.stderr
    thread, warning, main = (parse_logfmt(line) for line in lines)
    assert thread["thread_name"] == "smsp-exporter-reload" and "RuntimeError" in thread["exc"]
    assert warning["logger"] == "py.warnings" and warning["level"] == "warn"
    assert main["msg"] == "uncaught exception" and "ValueError" in main["exc"]
