"""What the integration accepts as the exporter's answer and as its URL (no server needed)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from custom_components.smsp_exporter.api import NotExporter, check_document, normalize_url

TAG = {
    "up": True,
    "last_success": 1764000000.5,
    "error": None,
    "statuses": {"Delivered": 12, "Not delivered": 1, "Waiting": 3},
    "stop": 2,
    "complete": True,
    "oldest_waiting": 1763999000,
    "last_status": 1764000000,
    "template": None,
}
ACCOUNT = {
    "up": True,
    "credits": {"sms": 9984, "sms_eco": 20000, "hlr": 0},
    "balance": 499.28,
    "currency": "EUR",
    "last_success": 1764000000.5,
}
DOCUMENT = {"schema_version": 1, "taken_at": 1764000000.5, "tags": {"t": TAG}, "account": ACCOUNT}


def changed(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    document = copy.deepcopy(DOCUMENT)
    target = document
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return document


def test_the_documented_example_is_accepted():
    assert check_document(copy.deepcopy(DOCUMENT)) == DOCUMENT
    assert check_document(changed(("account",), None))["account"] is None


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("taken_at",), "now"),
        (("tags",), []),
        (("tags", "t", "up"), "yes"),
        (("tags", "t", "statuses", "Delivered"), True),
        (("tags", "t", "last_success"), "yesterday"),
        (("tags", "t", "oldest_waiting"), float("nan")),
        (("tags", "t", "stop"), -1),
        (("tags", "t", "error"), 503),
        (("tags", "t", "template"), ["x"]),
        (("account",), []),
        (("account", "up"), None),
        (("account", "credits"), [1]),
        (("account", "credits", "sms"), "many"),
        (("account", "balance"), "499"),
        (("account", "last_success"), "now"),
        (("account", "currency"), 978),
        (("account", "extra"), 1),
    ],
    ids=lambda part: "/".join(part) if isinstance(part, tuple) else None,
)
def test_anything_else_is_not_an_exporter(path, value):
    with pytest.raises(NotExporter):
        check_document(changed(path, value))


def test_missing_keys_are_not_an_exporter():
    document = copy.deepcopy(DOCUMENT)
    del document["taken_at"]
    with pytest.raises(NotExporter, match="missing"):
        check_document(document)


@pytest.mark.parametrize(
    ("text", "url"),
    [
        ("http://exporter.lan:9847", "http://exporter.lan:9847"),
        (" https://exporter.lan/smsp/ ", "https://exporter.lan/smsp"),
        ("http://127.0.0.1:9847/api/v1/tags", "http://127.0.0.1:9847"),
    ],
)
def test_urls(text, url):
    assert normalize_url(text) == url


@pytest.mark.parametrize(
    "text", ["http://x:99999", "http://x/?a=1", "http://x/#f", "http://u@x", "mailto:a@b"]
)
def test_urls_refused(text):
    with pytest.raises(ValueError):
        normalize_url(text)
