"""Declared file shapes, and the one translator of their errors into one-line messages.

A configuration file (``config.yaml``, the web configuration) is declared as frozen dataclasses
(or msgspec Structs where keys are not identifiers): the fields and their defaults, ranges as
``Annotated[int, Meta(ge=, le=)]``, enums as ``Literal``. Every declared mapping is closed:
:func:`convert` refuses unknown keys (with a did-you-mean) before msgspec checks the values.
msgspec stops at the first mismatch and reports a JSON path without the value
(``Expected `int` <= 64 - at `$.api.concurrency```); :func:`convert` turns that into a
:class:`SchemaError` with our own key and wording (``api.concurrency``, ``must be between 1 and
64, got 65``): the wording comes from the declaration, the value is read back from the document,
shown quoted and shortened, and never for a field declared secret.

Where the generic wording does not fit, a field says so with its declaration:
``Meta(extra=say(expected="a URL"))``. A record may also carry ``expected`` (what the whole
mapping is) and ``refused`` (keys that exist elsewhere, refused with a reason) as ClassVars.
"""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import functools
import math
import re
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

__all__ = [
    "PARSERS",
    "ByteSize",
    "PositiveSeconds",
    "SchemaError",
    "Seconds",
    "convert",
    "describe",
    "drop_nulls",
    "kind",
    "parse_duration",
    "say",
]

T = TypeVar("T")


class SchemaError(Exception):
    """The document does not fit its declaration: ``key`` ("" for the whole document) and
    ``problem``, both free of any value declared secret."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(key, problem)
        self.key = key
        self.problem = problem


def say(
    *,
    expected: str | None = None,
    invalid: str | None = None,
    missing: str | None = None,
    secret: bool = False,
) -> dict[str, object]:
    """A field's own wording, for ``Meta(extra=...)``: what it ``expected`` (after "expected"),
    the problem when a constraint fails (``invalid``, ``{got}`` for the value), what a
    ``missing`` required field needs, and whether the value is ``secret`` (never shown)."""
    words = {"expected": expected, "invalid": invalid, "missing": missing, "secret": secret}
    return {name: value for name, value in words.items() if value}


def convert(data: object, cls: type[T]) -> T:
    """``data`` (a YAML document) as ``cls``, or :class:`SchemaError`. The types msgspec does
    not know (durations, sizes, regexes, paths) are built by their parser in :data:`PARSERS`:
    from the raw value, or ``ValueError`` with the whole problem (it becomes the message)."""

    def dec_hook(tp: Any, value: object) -> object:
        parse = PARSERS.get(typing.get_origin(tp) or tp)
        if parse is None:
            raise NotImplementedError(f"no parser for {tp!r}")
        return parse(value)

    unknown = _unknown_key(_Node(cls, data, "", dec_hook))
    if unknown is not None:
        raise unknown
    try:
        return msgspec.convert(data, cls, strict=True, dec_hook=dec_hook)
    except msgspec.ValidationError as exc:
        raise _translate(str(exc), data, cls, dec_hook) from None


def _unknown_key(node: _Node) -> SchemaError | None:
    """The first key the declaration does not have, anywhere in the document (msgspec ignores
    unknown keys of a dataclass: every declared mapping here is closed)."""
    value, record = node.value, node.record()
    if record is not None and isinstance(value, Mapping):
        known = _fields(record)
        for name in value:
            if name not in known:
                return node.unknown(name)
        children = [node.child(name) for name in value]
    elif typing.get_origin(node.base) in (list, tuple, set, frozenset):
        children = (
            [node.child(i) for i in range(len(value))] if isinstance(value, list | tuple) else []
        )
    elif typing.get_origin(node.base) is dict and isinstance(value, Mapping):
        hint = typing.get_args(node.base)[1]
        children = [
            _Node(hint, item, _join(node.key, k), node.dec_hook) for k, item in value.items()
        ]
    else:
        return None
    return next((err for err in map(_unknown_key, children) if err is not None), None)


# --------------------------------------------------------------------------------------------
# The translator

_MISSING = object()
_AT = re.compile(r"(?P<message>.*?)(?: - at (?P<in_key>`key` in )?`(?P<path>[^`]*)`)?", re.S)
_SEGMENT = re.compile(r"\.([^.\[]+)|\[(\d+|\.\.\.)\]")
_UNKNOWN = re.compile(r"Object contains unknown field `(.*)`", re.S)
_REQUIRED = re.compile(r"Object missing required field `(.*)`", re.S)
# msgspec's own messages; any other message comes from one of our parsers and is kept as is.
_MSGSPEC = ("Expected `", "Invalid enum value", "Number out of range")


def _translate(text: str, data: object, cls: type, dec_hook: Callable[..., object]) -> SchemaError:
    match = _AT.fullmatch(text)
    assert match is not None  # the pattern matches any text
    node = _Node(cls, data, "", dec_hook)
    for name, index in _SEGMENT.findall(match["path"] or ""):
        node = node.child(name or (int(index) if index.isdigit() else index))
    message = match["message"]
    if match["in_key"]:
        return node.bad_key()
    if unknown := _UNKNOWN.fullmatch(message):
        return node.unknown(unknown[1])
    if required := _REQUIRED.fullmatch(message):
        field = node.child(required[1])
        need = field.words.get("missing")
        return SchemaError(field.key, f"missing: {need}" if need else "missing")
    if not message.startswith(_MSGSPEC):
        return SchemaError(node.key, message)
    return SchemaError(node.key, node.problem(message))


class _Node:
    """A place in the document: its declared type (``hint``), its raw value, its key."""

    def __init__(self, hint: Any, value: object, key: str, dec_hook: Callable[..., Any]) -> None:
        self.hint, self.value, self.key, self.dec_hook = hint, value, key, dec_hook
        self.base, self.meta, self.words = _unwrap(hint)
        if _is_union(self.base):  # str | record: the string's constraints are the ones
            for option in typing.get_args(self.base):
                base, meta, words = _unwrap(option)
                if base is str:
                    self.meta, self.words = {**meta, **self.meta}, {**words, **self.words}

    def record(self) -> type | None:
        """The declared mapping type here (a dataclass or a Struct), if any."""
        options = typing.get_args(self.base) if _is_union(self.base) else (self.base,)
        found = [t for t in options if _is_record(t)]
        return found[0] if found else None

    def child(self, segment: str | int) -> _Node:
        value = self.value
        if isinstance(segment, int):
            item = value[segment] if isinstance(value, list | tuple) else _MISSING
            return _Node(
                typing.get_args(self.base)[0], item, f"{self.key}[{segment}]", self.dec_hook
            )
        if segment == "...":  # a mapping's value: msgspec does not say which, find it
            value_hint = typing.get_args(self.base)[1]
            for name, item in value.items() if isinstance(value, Mapping) else ():
                if not self._fits(item, value_hint):
                    return _Node(value_hint, item, _join(self.key, name), self.dec_hook)
            return _Node(value_hint, _MISSING, self.key, self.dec_hook)
        record = self.record()
        item = value.get(segment, _MISSING) if isinstance(value, Mapping) else _MISSING
        hint = _fields(record).get(segment, Any) if record is not None else Any
        return _Node(hint, item, _join(self.key, segment), self.dec_hook)

    def _fits(self, value: object, hint: Any) -> bool:
        try:
            msgspec.convert(value, hint, strict=True, dec_hook=self.dec_hook)
        except msgspec.ValidationError:
            return False
        return True

    def unknown(self, name: object) -> SchemaError:
        record = self.record()
        known = list(_fields(record)) if record is not None else []
        key = _join(self.key, name)
        refused: Mapping[str, str] = getattr(record, "refused", {})
        if name in refused:
            return SchemaError(key, refused[str(name)])
        close = difflib.get_close_matches(str(name), known, n=1)
        if close:
            return SchemaError(key, f"unknown key (did you mean {close[0]!r}?)")
        return SchemaError(key, f"unknown key (known keys: {', '.join(known)})")

    def bad_key(self) -> SchemaError:
        """A key msgspec refused: a non-string key of a section, or a mapping's invalid key."""
        keys = list(self.value) if isinstance(self.value, Mapping) else []
        if self.record() is not None:
            return self.unknown(next((k for k in keys if not isinstance(k, str)), "?"))
        key_hint = typing.get_args(self.base)[0]
        bad = next((k for k in keys if not self._fits(k, key_hint)), _MISSING)
        return SchemaError(self.key, _Node(key_hint, bad, self.key, self.dec_hook).problem(""))

    def problem(self, message: str) -> str:
        value, words = self.value, self.words
        got = kind(value) if words.get("secret") else describe(value)
        if typing.get_origin(self.base) is typing.Literal:
            return f"must be one of {', '.join(map(str, typing.get_args(self.base)))}, got {got}"
        if message.startswith("Expected `") and "`, got `" in message:
            if self.record() is not None and self.key and not _is_union(self.base):
                got = kind(value)  # a section given a value: that value may be a misplaced key
            hint = "" if words.get("secret") else self.hint_for(value)
            return f"expected {self.expected()}, got {got}{hint}"
        if isinstance(value, float) and not math.isfinite(value):
            return f"must be a finite number, got {got}"
        if message.startswith("Number out of range"):
            return f"too large, got {got}"
        if words.get("invalid"):
            return str(words["invalid"]).format(got=got)
        ge, le = self.meta.get("ge"), self.meta.get("le")
        if ge is not None and le is not None:
            return f"must be between {_number(ge)} and {_number(le)}, got {got}"
        if ge is not None:
            return f"must be at least {_number(ge)}, got {got}"
        if le is not None:
            return f"must be at most {_number(le)}, got {got}"
        if self.meta.get("min_length") and value == "":
            return "empty: expected a non-empty string"
        return f"expected {self.expected()}, got {got}"  # a pattern, or any other constraint

    def expected(self) -> str:
        if self.words.get("expected"):
            return str(self.words["expected"])
        record = self.record()
        if record is not None and not _is_union(self.base):
            return str(getattr(record, "expected", "a mapping of settings"))
        if self.wants_text():
            return "a string"
        origin = typing.get_origin(self.base) or self.base
        names = {bool: "true or false", int: "an integer", float: "a number", dict: "a mapping"}
        if origin in (list, tuple, set, frozenset):
            return "a list"
        return names.get(origin, f"a {getattr(origin, '__name__', origin)}")

    def wants_text(self) -> bool:
        options = typing.get_args(self.base) if _is_union(self.base) else (self.base,)
        return str in (_unwrap(option)[0] for option in options)

    def hint_for(self, value: object) -> str:
        """Advice for what YAML commonly gets wrong: an unquoted 2024, yes or date where text
        is wanted; a single word where a list is."""
        if self.wants_text():  # only where any text will do: not for a URL, a path, a zone
            return "" if self.words.get("expected") else quote_hint(value)
        is_list = typing.get_origin(self.base) in (list, tuple, set, frozenset)
        if is_list and isinstance(value, str) and self.key:
            name = re.split(r"[.\]]", self.key)[-1]
            return f" (write it as a list: {name}: [{value}])"
        return ""


def _is_record(hint: Any) -> bool:
    is_struct = isinstance(hint, type) and issubclass(hint, msgspec.Struct)
    return is_struct or (isinstance(hint, type) and dataclasses.is_dataclass(hint))


@functools.cache
def _fields(record: type) -> dict[str, Any]:
    """A record's keys, as written in the file, and their declared types."""
    hints = typing.get_type_hints(record, include_extras=True)
    if issubclass(record, msgspec.Struct):
        names = zip(record.__struct_encode_fields__, record.__struct_fields__, strict=True)
        return {key: hints[name] for key, name in names}
    return {f.name: hints[f.name] for f in dataclasses.fields(record)}  # type: ignore[arg-type]


def _unwrap(hint: Any) -> tuple[Any, dict[str, object], dict[str, object]]:
    """A declared type without ``Annotated`` and ``| None``: the type, its constraints (ge, le,
    min_length...) and its wording (:func:`say`)."""
    meta: dict[str, object] = {}
    words: dict[str, object] = {}
    while True:
        if typing.get_origin(hint) is typing.Annotated:
            hint, *extras = typing.get_args(hint)
            for item in extras:
                if isinstance(item, msgspec.Meta):
                    names = ("ge", "gt", "le", "lt", "min_length", "max_length", "pattern")
                    meta.update(
                        {n: getattr(item, n) for n in names if getattr(item, n) is not None}
                    )
                    words.update(item.extra or {})
            continue
        if _is_union(hint):
            options = [t for t in typing.get_args(hint) if t is not type(None)]
            if len(options) == 1:
                hint = options[0]
                continue
        return hint, meta, words


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def _number(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


# --------------------------------------------------------------------------------------------
# Value types a declaration may use beyond msgspec's own: durations, sizes, regexes, paths

if TYPE_CHECKING:  # to the rest of the code, plain numbers
    from typing import TypeAlias

    Seconds: TypeAlias = float
    PositiveSeconds: TypeAlias = float
    ByteSize: TypeAlias = int
else:  # to msgspec, types whose values come from their parser (PARSERS)

    class Seconds(float):
        """A duration: seconds or a Prometheus duration (see :func:`parse_duration`)."""

    class PositiveSeconds(Seconds):
        """A duration greater than 0."""

    class ByteSize(int):
        """Bytes: an integer, or a string with a binary unit (512KiB, 8MiB, 1GiB)."""


# Durations (Prometheus' spelling)

_UNIT_SECONDS = {
    "y": 365 * 86400.0,
    "w": 7 * 86400.0,
    "d": 86400.0,
    "h": 3600.0,
    "m": 60.0,
    "s": 1.0,
    "ms": 0.001,
}
_NUMBER = r"[0-9]+(?:\.[0-9]+)?"
_PLAIN_SECONDS = re.compile(_NUMBER)
# Prometheus order: each unit at most once, largest first. Decimals are accepted too ("0.5s").
_DURATION = re.compile(
    "".join(rf"(?:(?P<{unit}>{_NUMBER}){unit})?" for unit in ("y", "w", "d", "h", "m", "s", "ms"))
)
_DURATION_HELP = "use seconds (10) or a Prometheus duration (500ms, 30s, 5m, 1h)"


def parse_duration(value: object) -> float:
    """Seconds, from a number of seconds or a Prometheus duration string.

    Accepted: ``10``, ``2.5``, ``"10"``, ``"500ms"``, ``"30s"``, ``"5m"``, ``"1h30m"``, ``"1d"``,
    ``"1w"``, ``"1y"`` (365 days), ``"0.5s"``. Negative, NaN, infinite or unreadable values raise
    ``ValueError`` with a message starting ``invalid duration``.
    """
    if isinstance(value, bool):
        spelled = "true" if value else "false"
        raise ValueError(f"invalid duration {spelled} (a boolean): {_DURATION_HELP}")
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:
            raise ValueError(f"invalid duration {describe(value)}: too large") from None
        return _check_seconds(value, seconds)
    if not isinstance(value, str):
        raise ValueError(f"invalid duration {describe(value)}: {_DURATION_HELP}")
    text = value.strip()
    if text.startswith("-") and (_PLAIN_SECONDS.fullmatch(text[1:]) or _is_duration(text[1:])):
        raise ValueError(f"invalid duration {describe(value)}: must not be negative")
    if _PLAIN_SECONDS.fullmatch(text):
        return _check_seconds(value, float(text))
    match = _DURATION.fullmatch(text)
    if not text or match is None or not any(match.groupdict().values()):
        raise ValueError(f"invalid duration {describe(value)}: {_DURATION_HELP}")
    seconds = sum(
        float(amount) * _UNIT_SECONDS[unit]
        for unit, amount in match.groupdict().items()
        if amount is not None
    )
    return _check_seconds(value, seconds)


def _is_duration(text: str) -> bool:
    match = _DURATION.fullmatch(text)
    return bool(text) and match is not None and any(match.groupdict().values())


def _check_seconds(value: object, seconds: float) -> float:
    if math.isnan(seconds) or math.isinf(seconds):
        raise ValueError(f"invalid duration {describe(value)}: must be a finite number")
    if seconds < 0:
        raise ValueError(f"invalid duration {describe(value)}: must not be negative")
    return seconds


_SIZE_UNITS = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}
_SIZE = re.compile(r"(\d{1,12})\s*(B|KiB|MiB|GiB)?")


def _positive_seconds(value: object) -> PositiveSeconds:
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError(f"must be greater than 0, got {describe(value)}")
    return PositiveSeconds(seconds)


def _byte_size(value: object) -> ByteSize:  # the range: api.max_response_bytes', its one user
    wrong = f"expected a size such as 8MiB or 8388608, got {describe(value)}"
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(wrong)
    if isinstance(value, str):
        match = _SIZE.fullmatch(value.strip())
        if match is None:
            raise ValueError(wrong)
        value = int(match.group(1)) * _SIZE_UNITS[match.group(2) or "B"]
    if not _SIZE_UNITS["KiB"] * 64 <= value <= _SIZE_UNITS["GiB"]:
        raise ValueError(f"must be between 64KiB and 1GiB, got {describe(value)}")
    return ByteSize(value)


def _regex(value: object) -> re.Pattern[str]:
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected a regex, got {describe(value)}")
    try:
        return re.compile(value)
    except re.error as exc:
        raise ValueError(f"invalid regular expression: {exc}") from None


def _path(value: object) -> Path:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected a file path, got {describe(value)}")
    return Path(value)


# How convert builds each type msgspec does not know: from the raw value, or ValueError.
PARSERS: dict[Any, Callable[[object], object]] = {
    Seconds: lambda value: Seconds(parse_duration(value)),
    PositiveSeconds: _positive_seconds,
    ByteSize: _byte_size,
    re.Pattern: _regex,
    Path: _path,
}


# --------------------------------------------------------------------------------------------
# Showing values


_PLAIN_NAME = re.compile(r"[A-Za-z0-9_-]+")


def _join(prefix: str, name: object) -> str:
    shown = name if isinstance(name, str) and _PLAIN_NAME.fullmatch(name) else describe(name)
    return f"{prefix}.{shown}" if prefix else str(shown)


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe(value: object) -> str:
    """A value, as a message shows it: quoted strings, YAML spellings, no huge dumps."""
    if value is None or value is _MISSING:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({'true' if value else 'false'})"
    if isinstance(value, int | float):
        return _short(repr(value), 40)
    if isinstance(value, str):
        return repr(_short(value))
    if isinstance(value, datetime.date):
        return f"a date ({value.isoformat()})"
    return kind(value)


def kind(value: object) -> str:
    """The type of a value, without the value (for secrets, and what may be one)."""
    kinds: list[tuple[type | tuple[type, ...], str]] = [
        (str, "a string"),
        (bool, "a boolean"),
        (int, "an integer"),
        (float, "a number"),
        (datetime.date, "a date"),
        (Mapping, "a mapping"),
        ((list, tuple), "a list"),
        (bytes, "binary data"),
    ]
    if value is None or value is _MISSING:
        return "null"
    for types_, name in kinds:
        if isinstance(value, types_):
            return name
    return f"a {type(value).__name__}"


def quote_hint(value: object) -> str:
    """For a scalar YAML did not read as text (2024, yes, 2024-12-25): advise quoting it."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, int | float):
        text = _short(str(value), 40)
    elif isinstance(value, datetime.date):
        text = value.isoformat()
    else:
        return ""
    return f': quote it in the YAML (e.g. "{text}") so that it is read as text'


def drop_nulls(data: object, keep: tuple[str, ...] = ()) -> object:
    """The document without its ``null`` settings, which mean "the default" (``timeout:`` with
    nothing after it), at any depth; list items stay (a ``null`` tag is an error). Top-level
    keys in ``keep`` stay even when null, for rules that tell null from absent."""
    if isinstance(data, Mapping):
        return {
            k: drop_nulls(v)
            for k, v in data.items()
            if v is not None or (isinstance(k, str) and k in keep)
        }
    if isinstance(data, list | tuple):
        return [drop_nulls(item) for item in data]
    return data
