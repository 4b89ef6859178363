"""Turn one bulk-status-by-tag answer body into per-status counts.

The body is validated as it is aggregated: any shape we do not understand raises
:class:`InvalidResponse` (never another exception), an error body raises :class:`ApiCodeError`.
Phone numbers are read by nobody: only ``status``, ``stopSMS`` and ``date`` are looked at.

Two paths give the same answer. The fast one decodes the body with msgspec straight into
structs holding only ``status``, ``stopSMS`` and ``date`` (phone numbers are skipped by the
decoder, never made into Python objects), with the per-message checks done by the decoder,
then aggregates with C-level iteration: faster than ``json.loads`` alone. Anything it does not
take as is (an error body, a date sent as a number, a shape it rejects) goes to the reference
path, ``json.loads`` and plain Python, which decides what is valid.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import compress
from operator import attrgetter, countOf
from types import MappingProxyType
from typing import Annotated

import msgspec

from .errors import ApiCodeError, InvalidResponse

LIST_KEY = "StatutResponse_List"
# A total above this is not a campaign, it is a broken answer.
MAX_TOTAL = 100_000_000
MAX_STATUS_LENGTH = 64
# Distinct status values kept per page before the answer is judged broken (label cardinality).
MAX_DISTINCT_STATUSES = 50
# "Message not found": what the API answers for a tag without any message.
CODE_NOT_FOUND = 4
MAX_DATE_DIGITS = 12
WAITING = "Waiting"
# Bytes of the message list hashed, at its start, middle and end, into a page's fingerprint.
FINGERPRINT_SLICE = 1024


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


def _int_field(value: object, key: str) -> int | None:
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
    if isinstance(value, str) and value.isascii() and value.isdigit():
        if len(value) > MAX_DATE_DIGITS:
            raise InvalidResponse(f"message {index}: 'date' is not a Unix time")
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**MAX_DATE_DIGITS:
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


def _label_safe(status: str) -> bool:
    """Whether ``status`` can be written out as UTF-8: a lone surrogate (``"\\ud800"``, valid
    JSON) would make the whole exposition of ``/metrics`` fail, for every tag."""
    if status.isascii():
        return True
    try:
        status.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse_page(body: bytes) -> Page:
    """Validate one answer body and aggregate its messages."""
    if not body.isascii():
        # msgspec checks UTF-8 only in the strings it decodes (not in phone numbers it skips),
        # and raises UnicodeDecodeError, not MsgspecError: the reference path decides.
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            return parse_page_reference(body)
    try:
        answer = _DECODER.decode(body)
    except msgspec.MsgspecError:
        return parse_page_reference(body)
    if answer.success is not True or answer.code not in (200, "200", None):
        return parse_page_reference(body)  # an error answer: small, and decided there
    total, current = _header(answer.total, answer.currentPage)
    raw = answer.StatutResponse_List
    if not raw or (len(raw) == 4 and bytes(raw) == b"null"):
        if total not in (0, None):
            raise InvalidResponse(f"field {LIST_KEY!r} is missing or not a list")
        return Page(current, total, 0, MappingProxyType({}), 0, None, None, 0)
    try:
        messages = _LIST_DECODER.decode(raw)
    except msgspec.MsgspecError:
        return parse_page_reference(body)
    statuses = list(map(_STATUS, messages))
    counts = Counter(statuses)
    if len(counts) > MAX_DISTINCT_STATUSES:
        raise InvalidResponse(f"more than {MAX_DISTINCT_STATUSES} distinct statuses")
    if not all(map(_label_safe, counts)):
        raise InvalidResponse("a message's 'status' is not valid Unicode")
    dates: list[str] = list(map(_DATE, messages))
    joined = "".join(dates)
    lengths = set(map(len, dates))
    if not (
        joined.isascii()
        and not joined.encode("ascii").translate(None, b"0123456789")
        and (not lengths or (min(lengths) >= 1 and max(lengths) <= MAX_DATE_DIGITS))
    ):
        raise InvalidResponse("a message's 'date' is not a Unix time")
    waiting = compress(dates, map(WAITING.__eq__, statuses)) if WAITING in counts else ()
    if len(lengths) == 1:  # digit strings of one length compare as their numbers do
        newest = max(dates, default=None)
        oldest = min(waiting, default=None)
    else:
        newest = max(dates, key=int, default=None)
        oldest = min(waiting, key=int, default=None)
    return Page(
        current_page=current,
        total=total,
        items=len(messages),
        statuses=MappingProxyType(dict(counts)),
        stop=countOf(map(_STOP, messages), True),
        oldest_waiting=None if oldest is None else int(oldest),
        newest=None if newest is None else int(newest),
        fingerprint=_raw_fingerprint(raw, len(messages)),
    )


def parse_page_reference(body: bytes) -> Page:
    """:func:`parse_page` with the standard library alone: the definition of what is valid."""
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


def _header(total_field: object, current_field: object) -> tuple[int | None, int | None]:
    total = _int_field(total_field, "total")
    if total is not None and not 0 <= total <= MAX_TOTAL:
        raise InvalidResponse(f"field 'total' is out of range ({total})")
    current = _int_field(current_field, "currentPage")
    if current is not None and current < 1:
        raise InvalidResponse(f"field 'currentPage' is out of range ({current})")
    return total, current


def aggregate(doc: Mapping[str, object]) -> Page:
    """Aggregate a decoded success answer."""
    total, current = _header(doc.get("total"), doc.get("currentPage"))
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
            if not _label_safe(status):
                raise InvalidResponse(f"message {index}: 'status' is not valid Unicode")
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


def _raw_fingerprint(raw: msgspec.Raw, items: int) -> int:
    """A cheap identity of a page: its size and bytes of its list's start, middle and end.

    Pages read by the reference path are fingerprinted from their decoded messages instead
    (:func:`_fingerprint`): a repeat is still found, as the pages of one tag in one round take
    the same path unless the API changes the shape of its answers within the round."""
    if not items:
        return 0
    view = memoryview(raw)
    size, half = len(view), FINGERPRINT_SLICE // 2
    middle = view[max(0, size // 2 - half) : size // 2 + half]
    return hash(
        (
            items,
            size,
            bytes(view[:FINGERPRINT_SLICE]),
            bytes(middle),
            bytes(view[-FINGERPRINT_SLICE:]),
        )
    )


def _fingerprint(messages: list[object]) -> int:
    """A cheap identity of a page: its length and three of its messages."""
    if not messages:
        return 0
    picks = (messages[0], messages[len(messages) // 2], messages[-1])
    return hash((len(messages), *(json.dumps(m, sort_keys=True) for m in picks)))


# -- the fast path's types: only what is counted is decoded ------------------------------------
class _Message(msgspec.Struct, gc=False):
    status: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_STATUS_LENGTH)]
    stopSMS: bool
    date: str  # a number here goes to the reference path


class _Answer(msgspec.Struct, gc=False):
    success: bool
    code: int | str | None = None
    currentPage: int | str | None = None
    total: int | str | None = None
    StatutResponse_List: msgspec.Raw = msgspec.Raw()  # the raw JSON, decoded apart


_DECODER = msgspec.json.Decoder(_Answer)
_LIST_DECODER = msgspec.json.Decoder(list[_Message])
_STATUS = attrgetter("status")
_STOP = attrgetter("stopSMS")
_DATE = attrgetter("date")
