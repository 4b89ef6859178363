"""Turn one bulk-status-by-tag answer body into per-status counts.

The body is validated as it is aggregated: any shape we do not understand raises
:class:`InvalidResponse` (never another exception), an error body raises :class:`ApiCodeError`.
Phone numbers are read by nobody: only ``status``, ``stopSMS`` and ``date`` are looked at.

Strict where it changes the counts (the shape, ``success``/``code``, the list, each message's
status), tolerant elsewhere: ``stopSMS`` and ``date`` are read from every plausible encoding
(:func:`read_stop`, :func:`read_date`), and a value that is null, empty, missing or unreadable
is *unknown* (counted in :attr:`Page.unreadable`), never a broken page.

Two paths give the same answer. The fast one decodes the body with msgspec straight into
structs holding only ``status`` (or ``statut``), ``stopSMS`` and ``date`` (phone numbers are
skipped by the decoder, never made into Python objects), with the per-message checks done by
the decoder, then aggregates with C-level iteration: faster than ``json.loads`` alone, for the
documented encoding (booleans, dates as strings of digits). Other values are read one by one
with the reference path's own readers. Anything it does not take (an error body, a shape it
rejects) goes to the reference path, ``json.loads`` and plain Python, which decides what is
valid.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from itertools import compress, repeat
from operator import attrgetter, eq
from types import MappingProxyType
from typing import Annotated
from zoneinfo import ZoneInfo

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
# Longer than any ISO 8601 date with microseconds and an offset: not a date.
MAX_DATE_TEXT = 40
# The time zone of a date written without one: SMS Partner is in France, and its
# message-status endpoint writes local times ("2015-02-07 22:39:46").
API_TIME_ZONE = ZoneInfo("Europe/Paris")
# The fields read leniently, as named in Page.unreadable and in the metrics.
DATE = "date"
STOP = "stopSMS"
UNREADABLE_FIELDS = (DATE, STOP)
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


def _seconds(number: int) -> int | None:
    """Unix seconds from a number of seconds (up to 12 digits) or milliseconds (13 digits);
    None for 0, a negative number or a longer one (0 is what a back end writes for "none")."""
    if 1 <= number < 10**MAX_DATE_DIGITS:
        return number
    if 10**MAX_DATE_DIGITS <= number < 10 ** (MAX_DATE_DIGITS + 1):
        return number // 1000
    return None


def read_date(value: object) -> int | None:
    """A message's ``date`` as Unix seconds, or None when it is unknown: null, empty, missing
    (the caller passes None) or unreadable.

    Read: Unix seconds as an integer, a float or a string of digits; milliseconds (13 digits);
    ISO 8601 and the API's other format ``YYYY-MM-DD HH:MM:SS``, in the time zone shown or
    else Europe/Paris (where SMS Partner is)."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return _seconds(value)
    if isinstance(value, float):
        return _seconds(int(value)) if math.isfinite(value) else None
    if not isinstance(value, str) or not value.isascii() or len(value) > MAX_DATE_TEXT:
        return None
    if value.isdigit():
        return _seconds(int(value))
    try:
        when = datetime.fromisoformat(value)
        if when.tzinfo is None:
            when = when.replace(tzinfo=API_TIME_ZONE)
        return _seconds(math.floor(when.timestamp()))
    except (ValueError, OverflowError):
        return None


def read_stop(value: object) -> int:
    """A message's ``stopSMS`` as 0 or 1, or :data:`STOP_UNKNOWN`: read from a boolean, 0 or 1,
    and the strings ``"0"``, ``"1"``, ``"true"``, ``"false"`` (in any case)."""
    if value is True or value is False:
        return int(value)
    if type(value) is int and value in (0, 1):
        return value
    if isinstance(value, str):
        return _STOP_WORDS.get(value.lower(), STOP_UNKNOWN)
    return STOP_UNKNOWN


_STOP_WORDS = {"0": 0, "1": 1, "false": 0, "true": 1}
# `success` as an API's back end may write it; anything else is not an answer we know.
_TRUE = frozenset({"true", "1"})
_FALSE = frozenset({"false", "0"})


def _success(value: object) -> bool | None:
    if value is True or value is False:
        return value
    if type(value) is int and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.lower()
        return True if word in _TRUE else False if word in _FALSE else None
    return None


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
    success = _success(doc.get("success"))
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
    if _success(answer.success) is not True or answer.code not in (200, "200", None):
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
    if msgspec.UNSET in counts:  # a message without `status`: its `statut`, if it has one
        statuses = [
            m.statut if s is msgspec.UNSET else s for s, m in zip(statuses, messages, strict=True)
        ]
        counts = Counter(statuses)
        if msgspec.UNSET in counts:
            return parse_page_reference(body)  # no status at all: the reference path says so
    if len(counts) > MAX_DISTINCT_STATUSES:
        raise InvalidResponse(f"more than {MAX_DISTINCT_STATUSES} distinct statuses")
    if not all(map(_label_safe, counts)):
        raise InvalidResponse("a message's 'status' is not valid Unicode")
    stops = _stop_flags(list(map(_STOP, messages)))
    dates = list(map(_DATE, messages))
    try:
        joined = "\x00".join(dates)
    except TypeError:  # a number or null among them
        uniform = None
    else:
        uniform = _plain_seconds(joined, len(dates))
    if uniform is None:
        # Not all plain Unix seconds (the documented encoding): read each one as the reference
        # path does. Slower, still without json.loads's dicts.
        return _page_of(current, total, statuses, counts, stops, list(map(read_date, dates)), raw)
    waiting_dates: tuple[int, ...] = ()
    if WAITING in counts:
        waiting = dates if counts[WAITING] == len(dates) else compress(dates, _waiting(statuses))
        # msgspec reads digits into ints faster than int() one by one (no leading zeros here,
        # so the text is valid JSON).
        text = "[" + ",".join(waiting) + "]"
        numbers = _INTS.decode(text.encode("ascii"))
        numbers.sort()
        waiting_dates = tuple(numbers)
    # Digit strings of one length compare as their numbers do.
    newest = max(dates) if uniform else max(dates, key=int)
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
        unreadable=_unreadable(0, stops.count(STOP_UNKNOWN)),
        content_key=content_key(statuses, counts, stops, joined),
        first_date=int(dates[0]),
        last_date=int(dates[-1]),
    )


def _stop_flags(values: list[object]) -> bytes:
    """The STOP flags as bytes (0, 1, :data:`STOP_UNKNOWN`): at C speed when all are booleans
    (or 0 and 1), else read one by one as the reference path does."""
    try:
        flags = bytes(values)  # type: ignore[arg-type]
    except (TypeError, ValueError):  # null, a string, a number out of 0..255
        pass
    else:
        if not flags.translate(None, b"\x00\x01"):
            return flags
    return bytes(map(read_stop, values))


def _unreadable(dates: int, stops: int) -> Mapping[str, int]:
    if not (dates or stops):
        return _NOTHING_UNREADABLE
    return MappingProxyType({k: n for k, n in ((DATE, dates), (STOP, stops)) if n})


def _page_of(
    current: int | None,
    total: int | None,
    statuses: list[str],
    counts: Mapping[str, int],
    stops: bytes,
    dates: list[int | None],
    raw: msgspec.Raw | None,
    messages: list[object] | None = None,
) -> Page:
    """A page from its messages' statuses, STOP flags and dates as read (None: unknown). The
    fingerprint comes from the raw list if given, else from the decoded ``messages``."""
    known = [d for d in dates if d is not None]
    waiting_dates: list[int] = []
    if WAITING in counts:
        waiting_dates = sorted(d for d in compress(dates, _waiting(statuses)) if d is not None)
    return Page(
        current_page=current,
        total=total,
        items=len(statuses),
        statuses=MappingProxyType(dict(counts)),
        stop=stops.count(1),
        oldest_waiting=waiting_dates[0] if waiting_dates else None,
        newest=max(known, default=None),
        fingerprint=(
            _raw_fingerprint(raw, len(statuses))
            if raw is not None
            else _fingerprint(messages or [])
        ),
        waiting_dates=tuple(waiting_dates),
        waiting_unknown=counts.get(WAITING, 0) - len(waiting_dates),
        unreadable=_unreadable(len(dates) - len(known), stops.count(STOP_UNKNOWN)),
        content_key=content_key(
            statuses, counts, stops, "\x00".join("" if d is None else str(d) for d in dates)
        ),
        first_date=dates[0] if dates else None,
        last_date=dates[-1] if dates else None,
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
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise InvalidResponse(f"message {index} is not an object")
        # `statut` is how the API's message-status endpoint spells it.
        status = message["status"] if "status" in message else message.get("statut")
        if not isinstance(status, str) or not status or len(status) > MAX_STATUS_LENGTH:
            raise InvalidResponse(f"message {index}: 'status' is missing or not a short string")
        stop_sms = read_stop(message.get("stopSMS"))
        date = read_date(message.get("date"))
        if status in statuses:
            statuses[status] += 1
        else:
            if len(statuses) >= MAX_DISTINCT_STATUSES:
                raise InvalidResponse(f"more than {MAX_DISTINCT_STATUSES} distinct statuses")
            if not _label_safe(status):
                raise InvalidResponse(f"message {index}: 'status' is not valid Unicode")
            statuses[status] = 1
        listed.append(status)
        stops.append(stop_sms)
        dates.append(date)

    return _page_of(current, total, listed, statuses, bytes(stops), dates, None, messages)


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
_StatusText = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_STATUS_LENGTH)]


class _Message(msgspec.Struct, gc=False):
    status: _StatusText | msgspec.UnsetType = msgspec.UNSET
    statut: _StatusText | msgspec.UnsetType = msgspec.UNSET  # read only without `status`
    # Documented: a boolean and a string of digits. The other types are read by read_stop and
    # read_date, as on the reference path; anything else (a list...) goes to the reference path.
    stopSMS: bool | int | str | None = None
    date: str | int | float | None = None


class _Answer(msgspec.Struct, gc=False):
    success: bool | int | str | None = None
    code: int | str | None = None
    currentPage: int | str | None = None
    total: int | str | None = None
    StatutResponse_List: msgspec.Raw = msgspec.Raw()  # the raw JSON, decoded apart


_DECODER = msgspec.json.Decoder(_Answer)
_LIST_DECODER = msgspec.json.Decoder(list[_Message])
_INTS = msgspec.json.Decoder(list[int])


def _waiting(statuses: list[str]) -> Iterable[bool]:
    """Whether each status is Waiting (operator.eq over repeat(): the cheapest C-level map)."""
    return map(eq, statuses, repeat(WAITING))


_STATUS = attrgetter("status")  # a str, or UNSET
_STOP = attrgetter("stopSMS")
_DATE = attrgetter("date")
