"""Logging: one record per line (logfmt or JSON), with secrets and phone numbers redacted.

Redaction happens in the formatter, on every field before it is encoded and again on the
final line, so it covers every logger that reaches the root handler, third-party ones
included (urllib3 prints full request URLs, query string and ``apiKey`` with them, at debug).

    ts=2026-11-25T11:22:13.123Z level=info logger=smsp_exporter.client msg="fetched tag" pages=3
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import re
import sys
import threading
from typing import Any, TextIO
from urllib.parse import quote, quote_plus

__all__ = ["add_secret", "clear_secrets", "redact", "setup_logging"]

REDACTED = "<redacted>"
PHONE = "<phone>"
MIN_SECRET_LENGTH = 4

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
FORMATS = ("logfmt", "json")

# International phone number: "+" (or its URL-encoded form) then 8 to 15 digits, with at most
# one space, dot, dash (or URL-encoded space) between two digits.
_PHONE_RE = re.compile(r"(?:\+|%2B)\d(?:(?:[ .\-]|%20)?\d){7,14}", re.IGNORECASE)
# The value of an apiKey query parameter (also URL-encoded "apiKey%3D...").
_APIKEY_PARAM_RE = re.compile(r"(api_?key(?:=|%3D))[^&\s\"'#;,()<>\\]+", re.IGNORECASE)
# The value of an apiKey in JSON or in a Python dict repr, escaped or not:
#   {"apiKey": "..."}, {'apiKey': '...'}, {\"apiKey\": \"...\"}
_APIKEY_FIELD_RE = re.compile(r"""(\\?["']api_?key\\?["']\s*:\s*\\?["'])[^"'\\]+""", re.IGNORECASE)

_secrets_lock = threading.Lock()
_secrets: set[str] = set()
_secrets_re: re.Pattern[str] | None = None


def add_secret(value: str) -> None:
    """Register a secret (the API key) to be replaced by ``<redacted>`` in every log line.

    Its URL-encoded, JSON-escaped, logfmt-escaped and repr() forms are registered with it.
    Empty and very short values (under 4 characters) are ignored: redacting them would
    garble every line.
    """
    global _secrets_re
    if not isinstance(value, str) or len(value) < MIN_SECRET_LENGTH:
        return
    forms = {
        value,
        quote(value, safe=""),
        quote(value),
        quote_plus(value),
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
        repr(value)[1:-1],
        _logfmt_escape(value),
    }
    with _secrets_lock:
        _secrets.update(form for form in forms if len(form) >= MIN_SECRET_LENGTH)
        # Longest first, so that a form is never cut short by one of its prefixes.
        ordered = sorted(_secrets, key=lambda form: (-len(form), form))
        _secrets_re = re.compile("|".join(re.escape(form) for form in ordered), re.IGNORECASE)


def clear_secrets() -> None:
    """Forget every registered secret (for tests)."""
    global _secrets_re
    with _secrets_lock:
        _secrets.clear()
        _secrets_re = None


def redact(text: str) -> str:
    """``text`` with registered secrets, ``apiKey`` values and phone numbers masked."""
    pattern = _secrets_re
    if pattern is not None:
        text = pattern.sub(REDACTED, text)
    text = _APIKEY_PARAM_RE.sub(r"\1" + REDACTED, text)
    text = _APIKEY_FIELD_RE.sub(r"\1" + REDACTED, text)
    return _PHONE_RE.sub(PHONE, text)


# --- formatting ------------------------------------------------------------------------------

# Attributes every LogRecord has: anything else on a record came from ``extra=``.
_RECORD_ATTRIBUTES = frozenset(
    logging.LogRecord("", logging.INFO, "", 0, "", None, None).__dict__
) | {"message", "asctime", "taskName"}
_BASE_FIELDS = ("ts", "level", "logger", "msg", "exc", "stack")
_LEVEL_NAMES = {
    logging.DEBUG: "debug",
    logging.INFO: "info",
    logging.WARNING: "warn",
    logging.ERROR: "error",
    logging.CRITICAL: "critical",
}
_KEY_BAD_CHARS = re.compile(r"[^A-Za-z0-9_.\-/]")


def _logfmt_escape(value: str) -> str:
    out = []
    for ch in value:
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif not ch.isprintable() and ch != " ":
            # Control characters and Unicode line/paragraph separators: one record, one line.
            # JSON's escapes (\\uXXXX, surrogate pairs beyond the BMP).
            out.append(json.dumps(ch)[1:-1])
        else:
            out.append(ch)
    return "".join(out)


def _logfmt_value(value: str) -> str:
    if value and not any(ch in ' ="\\' or not ch.isprintable() for ch in value):
        return value
    return f'"{_logfmt_escape(value)}"'


def _logfmt_key(key: str) -> str:
    return _KEY_BAD_CHARS.sub("_", key) or "_"


def _is_plain(value: Any) -> bool:
    """Written as is: None, booleans, integers and finite floats (no text to redact)."""
    if value is None or isinstance(value, bool | int):
        return True
    return isinstance(value, float) and math.isfinite(value)


def _str(value: Any) -> str:
    try:
        return str(value)
    except Exception:  # a broken __str__ must not lose the record
        return f"<unprintable {type(value).__name__}>"


def _text(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return _str(value)


class _Formatter(logging.Formatter):
    """One line per record: ts, level, logger, msg, the ``extra=`` fields, exc, stack."""

    def __init__(self, fmt: str) -> None:
        super().__init__()
        self.fmt = fmt

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        when = dt.datetime.fromtimestamp(record.created, tz=dt.UTC)
        return f"{when:%Y-%m-%dT%H:%M:%S}.{int(record.msecs):03d}Z"

    def fields(self, record: logging.LogRecord) -> dict[str, Any]:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not lose the record
            message = f"{record.msg!s} (log arguments did not match: {record.args!r})"
        out: dict[str, Any] = {
            "ts": self.formatTime(record),
            "level": _LEVEL_NAMES.get(record.levelno, record.levelname.lower()),
            "logger": record.name,
            "msg": redact(message),
        }
        for key, value in record.__dict__.items():
            if key in _RECORD_ATTRIBUTES or key.startswith("_"):
                continue
            name = key
            while name in out or name in _BASE_FIELDS:  # extra={"level": ...} must not mask ours
                name += "_"
            if _is_plain(value):
                out[name] = value
            else:
                out[name] = redact(_str(value))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exc"] = redact(record.exc_text)
        if record.stack_info:
            out["stack"] = redact(self.formatStack(record.stack_info))
        return out

    def format(self, record: logging.LogRecord) -> str:
        fields = self.fields(record)
        if self.fmt == "json":
            line = json.dumps(fields, ensure_ascii=True, default=str)
        else:
            line = " ".join(
                f"{_logfmt_key(key)}={_logfmt_value(_text(value))}" for key, value in fields.items()
            )
        # Second pass on the final line: nothing that reached the output escapes redaction.
        return redact(line)


class _Handler(logging.StreamHandler):
    """The handler :func:`setup_logging` installs (recognised when it is called again)."""

    def handleError(self, record: logging.LogRecord) -> None:
        # The default prints a traceback (with the record's arguments) to stderr: a broken
        # stream or an unformattable record must not leak anything, nor crash the caller.
        pass


def setup_logging(level: str = "info", fmt: str = "logfmt", stream: TextIO | None = None) -> None:
    """Configure the root logger: one handler writing ``fmt`` lines to ``stream`` (stderr).

    ``level`` is debug, info, warn (warning) or error; ``fmt`` is logfmt or json. A handler
    installed by an earlier call is replaced; handlers installed by others are left alone.
    """
    levelno = LEVELS.get(level.lower() if isinstance(level, str) else level)
    if levelno is None:
        raise ValueError(f"invalid log level {level!r}: use one of debug, info, warn, error")
    if fmt not in FORMATS:
        raise ValueError(f"invalid log format {fmt!r}: use logfmt or json")
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _Handler):
            root.removeHandler(handler)
            handler.close()
    handler = _Handler(stream if stream is not None else sys.stderr)
    handler.setFormatter(_Formatter(fmt))
    root.addHandler(handler)
    root.setLevel(levelno)
    # What Python would print to stderr itself goes through the formatter too: warnings, and
    # the traceback of an exception nothing caught, in the main thread or in any other.
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_uncaught_in_thread


def _log_uncaught(exc_type: type[BaseException], exc: BaseException, tb: Any) -> None:
    logging.getLogger("smsp_exporter").error("uncaught exception", exc_info=(exc_type, exc, tb))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if issubclass(args.exc_type, SystemExit):  # silent, as with the default hook
        return
    logging.getLogger("smsp_exporter").error(
        "uncaught exception in a thread",
        extra={"thread_name": args.thread.name if args.thread is not None else "-"},
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),  # type: ignore[arg-type]
    )
