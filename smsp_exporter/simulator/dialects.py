"""Dialects: plausible encodings of a success answer beyond the one the API documents.

A tag served in a dialect (:meth:`.Simulator.set_dialect`) must still be read with every status
counted and the tag up: booleans as 0/1 or words, ``statut`` for ``status``, dates in Paris
local time, in milliseconds or ISO 8601, and Waiting messages whose date and STOP flag are null,
empty, absent or MySQL's zero date.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from .wire import LIST_KEY, WAITING

# The time zone of the API's "YYYY-MM-DD HH:MM:SS" dates (its message-status endpoint's).
PARIS = ZoneInfo("Europe/Paris")


def _readable_date(item: dict[str, Any]) -> None:
    item["date"] = datetime.fromtimestamp(int(item["date"]), PARIS).strftime("%Y-%m-%d %H:%M:%S")


def _stop_as_string(item: dict[str, Any]) -> None:
    item["stopSMS"] = "true" if item["stopSMS"] else "false"


def _stop_as_int(item: dict[str, Any]) -> None:
    item["stopSMS"] = int(item["stopSMS"])


def _stop_as_digit(item: dict[str, Any]) -> None:
    item["stopSMS"] = str(int(item["stopSMS"]))


def _date_as_int(item: dict[str, Any]) -> None:
    item["date"] = int(item["date"])


def _date_in_millis(item: dict[str, Any]) -> None:
    item["date"] = item["date"] + "000"


def _iso_date(item: dict[str, Any]) -> None:
    when = datetime.fromtimestamp(int(item["date"]), UTC)
    item["date"] = when.isoformat().replace("+00:00", "Z")


def _spelled_statut(item: dict[str, Any]) -> None:
    item["statut"] = item.pop("status")


def _waiting(fn: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    def apply(item: dict[str, Any]) -> None:
        if item.get("status", item.get("statut")) == WAITING:
            fn(item)

    return apply


_LEFT_OUT = object()  # _blank: remove the field


def _blank(value: Any, *fields: str) -> Callable[[dict[str, Any]], None]:
    def apply(item: dict[str, Any]) -> None:
        for name in fields:
            if value is _LEFT_OUT:
                item.pop(name, None)
            else:
                item[name] = value

    return apply


@dataclass(frozen=True)
class Dialect:
    """A way the real API may write its answers, beyond the one documented example.

    ``header`` rewrites the answer's top-level fields, ``items`` each message (in order);
    ``unknown`` names the fields left unreadable on Waiting messages (whose STOP flag the
    campaign model keeps false: hiding it hides no STOP)."""

    items: tuple[Callable[[dict[str, Any]], None], ...] = ()
    header: Callable[[dict[str, Any]], Any] | None = None
    unknown: frozenset[str] = frozenset()


def _header_as_php(doc: dict[str, Any]) -> None:
    doc["success"], doc["code"], doc["total"] = 1, "200", str(doc["total"])


_DATE_AND_STOP = frozenset({"date", "stopSMS"})

# Plausible encodings of a success answer, beyond the documented one: served per tag
# (Simulator.set_dialect), each must be read with every status counted and the tag up.
DIALECTS: dict[str, Dialect] = {
    "documented": Dialect(),
    # A PHP back end: numbers for booleans, integers for numeric strings.
    "php": Dialect((_stop_as_int, _date_as_int), header=_header_as_php),
    # Booleans as words, success included.
    "strings": Dialect((_stop_as_string,), header=lambda doc: doc.update(success="true")),
    # As the API's message-status endpoint writes a message: `statut`, Paris local time.
    "message-status": Dialect((_spelled_statut, _readable_date, _stop_as_digit)),
    "millis": Dialect((_date_in_millis,), header=lambda doc: doc.pop("code")),
    "iso": Dialect((_iso_date,)),
    # A message without a report yet has no date and no STOP flag, written as null, "" or
    # left out...
    "waiting-null": Dialect((_waiting(_blank(None, "date", "stopSMS")),), unknown=_DATE_AND_STOP),
    "waiting-empty": Dialect((_waiting(_blank("", "date", "stopSMS")),), unknown=_DATE_AND_STOP),
    "waiting-missing": Dialect(
        (_waiting(_blank(_LEFT_OUT, "date", "stopSMS")),), unknown=_DATE_AND_STOP
    ),
    # ...or as MySQL's "no date", among 0/1 flags.
    "waiting-zero-date": Dialect(
        (_stop_as_int, _waiting(_blank("0000-00-00 00:00:00", "date"))),
        header=_header_as_php,
        unknown=frozenset({"date"}),
    ),
}
# The demo shows two of them: one all readable, one with Waiting messages without a date.
DEMO_DIALECTS: dict[str, str] = {"rappel-rdv": "message-status", "alerte-stock": "waiting-null"}


def speak(dialect: Dialect, doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` (a success answer in the documented encoding) written in ``dialect``."""
    for item in doc[LIST_KEY]:
        for fn in dialect.items:
            fn(item)
    if dialect.header is not None:
        dialect.header(doc)
    return doc
