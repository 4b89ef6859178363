"""Turn one bulk-status-by-tag answer body into per-status counts.

The body is validated as it is aggregated: any shape we do not understand raises
:class:`InvalidResponse` (never another exception), an error body raises :class:`ApiCodeError`.
Phone numbers are read by nobody: only ``status``, ``stopSMS`` and ``date`` are looked at.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from .errors import ApiCodeError, InvalidResponse

LIST_KEY = "StatutResponse_List"
# A total above this is not a campaign, it is a broken answer.
MAX_TOTAL = 100_000_000
MAX_STATUS_LENGTH = 64
# Distinct status values kept per page before the answer is judged broken (label cardinality).
MAX_DISTINCT_STATUSES = 50
# "Message not found": what the API answers for a tag without any message.
CODE_NOT_FOUND = 4


@dataclass(frozen=True, slots=True)
class Page:
    """The aggregate of one page of messages."""

    current_page: int | None
    total: int | None
    items: int
    statuses: Mapping[str, int]
    stop: int
    oldest_waiting: int | None  # smallest `date` among Waiting messages
    newest: int | None  # largest `date` of the page
    fingerprint: int  # identifies the page's content, to spot a page served twice


EMPTY_PAGE = Page(
    current_page=None,
    total=0,
    items=0,
    statuses=MappingProxyType({}),
    stop=0,
    oldest_waiting=None,
    newest=None,
    fingerprint=0,
)


def _int_field(doc: Mapping[str, object], key: str) -> int | None:
    value = doc.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise InvalidResponse(f"field {key!r} is not an integer")
    try:
        number = int(value)
    except ValueError:
        raise InvalidResponse(f"field {key!r} is not an integer") from None
    return number


def _date(value: object, index: int) -> int:
    if isinstance(value, str) and value.isdigit() and len(value) <= 12:
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**12:
        return value
    raise InvalidResponse(f"message {index}: 'date' is not a Unix time")


def check_success(doc: object) -> dict[str, object]:
    """Return the answer as a dict if it reports success, else raise the matching error."""
    if not isinstance(doc, dict):
        raise InvalidResponse("the answer is not a JSON object")
    success = doc.get("success")
    code = doc.get("code")
    if success is True and code in (200, "200", None):
        return doc
    if success is False or (success is True and code is not None):
        if isinstance(code, bool) or not isinstance(code, int | str):
            raise InvalidResponse("error answer without a numeric 'code'")
        try:
            number = int(code)
        except ValueError:
            raise InvalidResponse("error answer without a numeric 'code'") from None
        message = doc.get("message")
        raise ApiCodeError(number, message if isinstance(message, str) else "")
    raise InvalidResponse("the answer has no boolean 'success' field")


def parse_page(body: bytes) -> Page:
    """Validate one answer body and aggregate its messages."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        raise InvalidResponse("the answer is not valid JSON") from None
    try:
        doc = check_success(doc)
    except ApiCodeError as err:
        if err.code == CODE_NOT_FOUND:
            return EMPTY_PAGE
        raise
    return aggregate(doc)


def aggregate(doc: Mapping[str, object]) -> Page:
    """Aggregate a decoded success answer."""
    total = _int_field(doc, "total")
    if total is not None and not 0 <= total <= MAX_TOTAL:
        raise InvalidResponse(f"field 'total' is out of range ({total})")
    current = _int_field(doc, "currentPage")
    if current is not None and current < 1:
        raise InvalidResponse(f"field 'currentPage' is out of range ({current})")
    messages = doc.get(LIST_KEY)
    if messages is None and total in (0, None):
        messages = []
    if not isinstance(messages, list):
        raise InvalidResponse(f"field {LIST_KEY!r} is missing or not a list")

    statuses: dict[str, int] = {}
    stop = 0
    oldest_waiting: int | None = None
    newest: int | None = None
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise InvalidResponse(f"message {index} is not an object")
        status = message.get("status")
        if not isinstance(status, str) or not status or len(status) > MAX_STATUS_LENGTH:
            raise InvalidResponse(f"message {index}: 'status' is missing or not a short string")
        stop_sms = message.get("stopSMS")
        if not isinstance(stop_sms, bool):
            raise InvalidResponse(f"message {index}: 'stopSMS' is not a boolean")
        date = _date(message.get("date"), index)
        if status in statuses:
            statuses[status] += 1
        else:
            if len(statuses) >= MAX_DISTINCT_STATUSES:
                raise InvalidResponse(f"more than {MAX_DISTINCT_STATUSES} distinct statuses")
            statuses[status] = 1
        if stop_sms:
            stop += 1
        if newest is None or date > newest:
            newest = date
        if status == "Waiting" and (oldest_waiting is None or date < oldest_waiting):
            oldest_waiting = date

    return Page(
        current_page=current,
        total=total,
        items=len(messages),
        statuses=MappingProxyType(statuses),
        stop=stop,
        oldest_waiting=oldest_waiting,
        newest=newest,
        fingerprint=_fingerprint(messages),
    )


def _fingerprint(messages: list[object]) -> int:
    """A cheap identity of a page: its length and three of its messages."""
    if not messages:
        return 0
    picks = (messages[0], messages[len(messages) // 2], messages[-1])
    return hash((len(messages), *(json.dumps(m, sort_keys=True) for m in picks)))
