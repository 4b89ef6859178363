"""Property-based tests: whatever the input, the config loader and the answer parser give a
result or their typed error (``ConfigError``; ``InvalidResponse`` / ``ApiCodeError``), never
another exception, and a config error is one line that never shows the key.

test_parse.py already feeds the parser arbitrary JSON and short byte strings; here it gets
real simulator answers damaged in every way (cut, bytes flipped, fields replaced)."""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from smsp_exporter.config import Config, ConfigError, config_from_dict, load_config
from smsp_exporter.errors import ApiCodeError, InvalidResponse
from smsp_exporter.parse import parse_page, parse_page_reference

KEY = "sk-PROPCANARY-0123456789"
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- the config loader -----------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**20), max_value=10**20)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(["10s", "500ms", "0", "-1s", "1h", "abc", "scrape", "background", ""])
)
yaml_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
api_section = st.fixed_dictionaries(
    {},
    optional={
        "url": st.one_of(
            st.sampled_from(["http://127.0.0.1:1/v1", "https://api.smspartner.fr/v1/", "ftp://x"]),
            yaml_values,
        ),
        "key": st.one_of(st.just(KEY), st.just(f" {KEY}\n"), yaml_values),
        "key_file": yaml_values,
        "timeout": yaml_values,
        "concurrency": yaml_values,
        "max_requests_per_second": yaml_values,
        "max_pages": yaml_values,
        "retries": yaml_values,
        "tiemout": yaml_values,
    },
)
collection_section = st.fixed_dictionaries(
    {},
    optional={
        "mode": yaml_values,
        "interval": yaml_values,
        "min_interval": yaml_values,
        "keep_last_values": yaml_values,
    },
)
config_like = st.fixed_dictionaries(
    {},
    optional={
        "api": st.one_of(api_section, yaml_values),
        "collection": st.one_of(collection_section, yaml_values),
        "tags": st.one_of(st.lists(st.one_of(st.text(max_size=25), yaml_values)), yaml_values),
        "extra": yaml_values,
    },
)


def check_config_outcome(outcome: Config | ConfigError) -> None:
    if isinstance(outcome, ConfigError):
        text = str(outcome)
        assert "\n" not in text
        assert KEY not in text
        assert outcome.key
    else:
        assert outcome.tags
        assert outcome.api.key


@SETTINGS
@given(st.one_of(config_like, yaml_values))
def test_any_document_gives_a_config_or_a_config_error(data):
    try:
        outcome: Config | ConfigError = config_from_dict(data, source="<prop>", env={})
    except ConfigError as err:
        outcome = err
    check_config_outcome(outcome)


@SETTINGS
@given(st.one_of(config_like, yaml_values), st.sampled_from(["dump", "flow", "text"]))
def test_any_file_gives_a_config_or_a_config_error(data, style):
    if style == "text":
        content = str(data).encode()
    else:
        content = yaml.safe_dump(data, default_flow_style=style == "flow").encode()
    check_file(content)


@SETTINGS
@given(st.binary(max_size=200))
def test_any_bytes_as_a_file_give_a_config_or_a_config_error(raw):
    check_file(raw)


@SETTINGS
@given(st.data())
def test_a_valid_file_damaged_anywhere_gives_a_config_or_a_config_error(data):
    valid = (
        f"api:\n  url: http://127.0.0.1:9/v1\n  key: {KEY}\n  timeout: 5s\n"
        "collection:\n  mode: background\n  interval: 30s\ntags:\n  - promo\n  - 'relance'\n"
    ).encode()
    check_file(damage(data, valid))


def check_file(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "config.yaml"
        path.write_bytes(content)
        try:
            outcome: Config | ConfigError = load_config(path, env={})
        except ConfigError as err:
            outcome = err
    check_config_outcome(outcome)


# --- the answer parser -----------------------------------------------------------------------


def damage(data: st.DataObject, raw: bytes) -> bytes:
    """``raw`` cut short, with bytes replaced, inserted or removed."""
    out = bytearray(raw)
    for _ in range(data.draw(st.integers(0, 4))):
        where = data.draw(st.integers(0, max(len(out) - 1, 0)))
        how = data.draw(st.sampled_from(["flip", "insert", "delete", "cut"]))
        byte = data.draw(st.sampled_from(b'{}[]",:0-9aez \x00\xff\\'))
        if how == "flip" and out:
            out[where] = byte
        elif how == "insert":
            out.insert(where, byte)
        elif how == "delete" and out:
            del out[where]
        elif how == "cut":
            del out[where:]
    return bytes(out)


SAMPLE = {
    "success": True,
    "code": 200,
    "currentPage": 1,
    "total": 3,
    "StatutResponse_List": [
        {"phoneNumber": "+33600000001", "status": "Delivered", "stopSMS": False, "date": "1"},
        {"phoneNumber": "+33600000002", "status": "Waiting", "stopSMS": True, "date": "2"},
        {"phoneNumber": "+33600000003", "status": "ko", "stopSMS": False, "date": 3},
    ],
}
field_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(),
    st.text(max_size=70),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


def check_page(raw: bytes) -> None:
    try:
        page = parse_page(raw)
    except (InvalidResponse, ApiCodeError) as err:
        assert "+336" not in str(err)
        return
    assert page.items >= 0 and page.stop <= page.items
    assert sum(page.statuses.values()) == page.items
    assert all(isinstance(s, str) and s for s in page.statuses)


@SETTINGS
@given(st.data())
def test_a_real_answer_damaged_anywhere_gives_a_page_or_a_typed_error(data):
    check_page(damage(data, json.dumps(SAMPLE).encode()))


@SETTINGS
@given(
    st.sampled_from(["success", "code", "currentPage", "total", "StatutResponse_List"]),
    field_values,
    st.integers(0, 2),
    st.sampled_from(["status", "stopSMS", "date", "phoneNumber"]),
    field_values,
)
def test_a_real_answer_with_any_field_replaced(top_field, top_value, index, item_field, item):
    doc = json.loads(json.dumps(SAMPLE))
    doc["StatutResponse_List"][index][item_field] = item
    check_page(json.dumps(doc).encode())
    doc[top_field] = top_value
    check_page(json.dumps(doc).encode())


# --- the same messages in every encoding the parser reads -----------------------------------

PARIS = ZoneInfo("Europe/Paris")


def paris_text(seconds: int) -> str | None:
    """The API's other date format, or None for an hour Paris lives twice (autumn)."""
    text = datetime.fromtimestamp(seconds, PARIS).strftime("%Y-%m-%d %H:%M:%S")
    back = datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=PARIS).timestamp()
    return text if back == seconds else None


MISSING = object()  # the field is left out of the message
DATE_ENCODINGS = {
    "string": str,
    "integer": int,
    "float": float,
    "millis": lambda d: d * 1000 + 999,
    "millis-string": lambda d: str(d * 1000),
    "paris": paris_text,
    "iso-utc": lambda d: datetime.fromtimestamp(d, UTC).isoformat().replace("+00:00", "Z"),
    "iso-offset": lambda d: datetime.fromtimestamp(d, timezone(timedelta(hours=-5))).isoformat(),
}
UNKNOWN_DATES = [None, "", MISSING, "0000-00-00 00:00:00", "0", 0, "n/a", False]
STOP_ENCODINGS = {
    True: [True, 1, "1", "true", "True"],
    False: [False, 0, "0", "false", "FALSE"],
    None: [None, "", MISSING, 2, "oui", 1.0],
}

canonical_messages = st.lists(
    st.tuples(
        st.sampled_from(["Delivered", "Not delivered", "Waiting", "DELIVRD"]),
        st.sampled_from([True, False, None]),  # None: unknown
        # None: unknown. From 2001 to 2096: ten digits, thirteen in milliseconds.
        st.one_of(st.none(), st.integers(1_000_000_000, 4_000_000_000)),
    ),
    max_size=12,
)


@st.composite
def encoded(draw, messages):
    """One way of writing ``messages`` (status, stop, date) as an answer body."""
    items = []
    for index, (status, stop, date) in enumerate(messages):
        item = {"phoneNumber": f"+3360000{index:04d}"}
        item[draw(st.sampled_from(["status", "statut"]))] = status
        item["stopSMS"] = draw(st.sampled_from(STOP_ENCODINGS[stop]))
        if date is None:
            item["date"] = draw(st.sampled_from(UNKNOWN_DATES))
        else:
            text = draw(st.sampled_from(sorted(DATE_ENCODINGS)))
            item["date"] = DATE_ENCODINGS[text](date)
            assume(item["date"] is not None)
        items.append({k: v for k, v in item.items() if v is not MISSING})
    doc = {
        "success": draw(st.sampled_from([True, "true", 1, "1"])),
        "code": draw(st.sampled_from([200, "200", MISSING])),
        "currentPage": draw(st.sampled_from([1, "1", MISSING])),
        "total": draw(st.sampled_from([len(items), str(len(items))])),
        "StatutResponse_List": items,
    }
    return json.dumps({k: v for k, v in doc.items() if v is not MISSING}).encode()


def summary(page):
    return (
        dict(page.statuses),
        page.stop,
        dict(page.unreadable),
        page.waiting_dates,
        page.waiting_unknown,
        page.first_date,
        page.last_date,
        page.oldest_waiting,
        page.newest,
        page.content_key,
    )


@SETTINGS
@given(st.data(), canonical_messages)
def test_the_same_messages_in_any_encoding_read_the_same(data, messages):
    first = data.draw(encoded(messages))
    second = data.draw(encoded(messages))
    fast, reference = parse_page(first), parse_page_reference(first)
    assert summary(fast) == summary(reference)  # both parsers agree on every variant
    assert summary(fast) == summary(parse_page(second))  # and every encoding reads the same
    statuses = Counter(status for status, _, _ in messages)
    assert dict(fast.statuses) == statuses  # every message counted, whatever its fields
    assert fast.stop == sum(1 for _, stop, _ in messages if stop)
    unknown = {
        "date": sum(1 for _, _, date in messages if date is None),
        "stopSMS": sum(1 for _, stop, _ in messages if stop is None),
    }
    assert dict(fast.unreadable) == {k: n for k, n in unknown.items() if n}
    waiting = [date for status, _, date in messages if status == "Waiting"]
    assert fast.waiting_dates == tuple(sorted(d for d in waiting if d is not None))
    assert fast.waiting_unknown == waiting.count(None)
    if messages:
        assert (fast.first_date, fast.last_date) == (messages[0][2], messages[-1][2])
