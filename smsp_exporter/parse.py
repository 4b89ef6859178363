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

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from itertools import compress
from operator import attrgetter
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


# Tag of the content key's encoding: a change of encoding changes every key (state files then
# see every page as changed, which is safe), instead of silently comparing unlike keys.
CONTENT_KEY_PERSON = b"smsp-page-v1"
# A message's STOP flag in the content key: 0 no, 1 yes, 2 unknown.
STOP_UNKNOWN = 2
_NOTHING_UNREADABLE: Mapping[str, int] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Page:
    """The aggregate of one page of messages.

    Dates are Unix seconds. A message whose date is unknown is left out of every date field
    (and counted in ``waiting_unknown`` if it is Waiting, and in ``unreadable["date"]``)."""

    current_page: int | None
    total: int | None
    items: int
    statuses: Mapping[str, int]
    stop: int
    oldest_waiting: int | None  # smallest `date` among Waiting messages
    newest: int | None  # largest `date` of the page
    fingerprint: int  # identifies the page's content, to spot a page served twice
    # The known dates of the page's Waiting messages, ascending.
    waiting_dates: tuple[int, ...] = ()
    waiting_unknown: int = 0  # Waiting messages whose date is unknown
    # field ("date", "stopSMS") -> messages whose field was missing, null, empty or unreadable;
    # only fields with at least one such message are present.
    unreadable: Mapping[str, int] = field(default_factory=lambda: _NOTHING_UNREADABLE)
    # A stable 64-bit (signed, so that SQLite stores it as an INTEGER) hash of the messages'
    # (status, stopSMS, date) in listing order, phone numbers left out: equal across restarts
    # and across both parsing paths; 0 for a page without messages.
    content_key: int = 0
    first_date: int | None = None  # date of the first message listed (None: unknown or none)
    last_date: int | None = None  # date of the last message listed


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


def content_key(statuses: list[str], distinct: Iterable[str], stops: bytes, dates: str) -> int:
    """The page's content key from its messages' statuses, STOP flags (:data:`STOP_UNKNOWN`
    for unknown) and dates (decimal Unix seconds without leading zeros, ``""`` for unknown,
    joined by NUL), in listing order.

    The encoding is injective: the count first; the statuses, escaped so that none contains
    NUL, joined by NUL, in UTF-8 (never a 0xFF byte); 0xFF; one byte per STOP flag; the dates
    (digits only) joined by NUL. ``distinct`` holds the distinct statuses: escaping is the
    identity on statuses without NUL or 0x01, so it is applied only when one needs it."""
    if not statuses:
        return 0
    if any("\x00" in s or "\x01" in s for s in distinct):
        escaped = {s: s.replace("\x01", "\x01\x01").replace("\x00", "\x01\x02") for s in distinct}
        statuses = list(map(escaped.__getitem__, statuses))
    digest = hashlib.blake2b(digest_size=8, person=CONTENT_KEY_PERSON)
    digest.update(len(statuses).to_bytes(8, "big"))
    digest.update("\x00".join(statuses).encode("utf-8"))
    digest.update(b"\xff")
    digest.update(stops)
    digest.update(dates.encode("ascii"))
    return int.from_bytes(digest.digest(), "big", signed=True)


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


_DIGITS_AND_NUL = b"0123456789\x00"


def _plain_seconds(joined: str, count: int) -> bool | None:
    """Whether ``count`` (>= 1) dates joined by NUL are all plain Unix seconds, as the API
    documents them: 1 to 12 ASCII digits, no leading zero (so that a date's text is its
    number's, as the content key needs). True if they are and all have one length, False if
    they are of several lengths, None if one is not plain. Slices, not a loop: this runs on
    every message of every page read."""
    if not joined.isascii() or joined.encode("ascii").translate(None, _DIGITS_AND_NUL):
        return None
    if joined.count("\x00") != count - 1:  # a NUL inside a date
        return None
    width = joined.find("\x00") if count > 1 else len(joined)
    if len(joined) == count * (width + 1) - 1 and not joined[width :: width + 1].strip("\x00"):
        # Every date is `width` digits long.
        if not 1 <= width <= MAX_DATE_DIGITS or "0" in joined[:: width + 1]:
            return None
        return True
    lengths = set(map(len, joined.split("\x00")))
    if min(lengths) < 1 or max(lengths) > MAX_DATE_DIGITS:
        return None
    if joined.startswith("0") or "\x000" in joined:
        return None
    return False


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
    if not messages:
        return Page(current, total, 0, MappingProxyType({}), 0, None, None, 0)
    statuses = list(map(_STATUS, messages))
    counts = Counter(statuses)
    if len(counts) > MAX_DISTINCT_STATUSES:
        raise InvalidResponse(f"more than {MAX_DISTINCT_STATUSES} distinct statuses")
    if not all(map(_label_safe, counts)):
        raise InvalidResponse("a message's 'status' is not valid Unicode")
    dates: list[str] = list(map(_DATE, messages))
    joined = "\x00".join(dates)
    uniform = _plain_seconds(joined, len(dates))
    if uniform is None:
        # Not all plain Unix seconds: the reference path reads the other encodings.
        return parse_page_reference(body)
    waiting_dates: tuple[int, ...] = ()
    if WAITING in counts:
        waiting_dates = tuple(sorted(map(int, compress(dates, map(WAITING.__eq__, statuses)))))
    # Digit strings of one length compare as their numbers do.
    newest = max(dates) if uniform else max(dates, key=int)
    stops = bytes(map(_STOP, messages))
    return Page(
        current_page=current,
        total=total,
        items=len(messages),
        statuses=MappingProxyType(dict(counts)),
        stop=stops.count(1),
        oldest_waiting=waiting_dates[0] if waiting_dates else None,
        newest=int(newest),
        fingerprint=_raw_fingerprint(raw, len(messages)),
        waiting_dates=waiting_dates,
        content_key=content_key(statuses, counts, stops, joined),
        first_date=int(dates[0]),
        last_date=int(dates[-1]),
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
    listed: list[str] = []
    stops = bytearray()
    dates: list[int | None] = []
    waiting_dates: list[int] = []
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
        listed.append(status)
        stops.append(int(stop_sms))
        dates.append(date)
        if status == WAITING and date is not None:
            waiting_dates.append(date)

    known = [d for d in dates if d is not None]
    waiting_dates.sort()
    return Page(
        current_page=current,
        total=total,
        items=len(messages),
        statuses=MappingProxyType(statuses),
        stop=stops.count(1),
        oldest_waiting=waiting_dates[0] if waiting_dates else None,
        newest=max(known, default=None),
        fingerprint=_fingerprint(messages),
        waiting_dates=tuple(waiting_dates),
        waiting_unknown=statuses.get(WAITING, 0) - len(waiting_dates),
        content_key=content_key(
            listed, statuses, bytes(stops), "\x00".join("" if d is None else str(d) for d in dates)
        ),
        first_date=dates[0] if dates else None,
        last_date=dates[-1] if dates else None,
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
