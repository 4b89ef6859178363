"""The declared-shape checker and its translator (smsp_exporter/schema.py), on small shapes of
its own: every msgspec error becomes our one-line KEY and PROBLEM, the value read back from the
document, never a secret's."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Annotated, ClassVar, Literal

import msgspec
import pytest
from msgspec import Meta

from smsp_exporter.schema import PositiveSeconds, SchemaError, convert, drop_nulls, say

SECRET = "sk-SCHEMACANARY-42"


@dataclass(frozen=True)
class Inner:
    refused: ClassVar[dict[str, str]] = {"inline": "inline values are not supported: use file"}

    name: Annotated[str, Meta(extra=say(missing="every inner needs a name"))]
    level: Literal["low", "high"] = "low"
    file: str = ""


Word = Annotated[str, Meta(min_length=1)]


@dataclass(frozen=True)
class Shape:
    expected: ClassVar[str] = "a mapping with the key inner"

    count: Annotated[int, Meta(ge=1, le=9)] = 1
    floor: Annotated[int, Meta(ge=2)] = 2
    rate: Annotated[float, Meta(ge=0, le=1e9)] = 1.0
    token: Annotated[str, Meta(extra=say(secret=True))] = field(default="", repr=False)
    hashes: dict[
        Annotated[str, Meta(pattern=r"\A[a-z]+\Z", extra=say(invalid="bad user {got}"))],
        Annotated[str, Meta(pattern=r"\A\$", extra=say(secret=True, invalid="not a hash"))],
    ] = field(default_factory=dict)
    words: tuple[Word | Inner, ...] = ()
    wait: PositiveSeconds = 1.0
    inner: Inner | None = None


def error(data: object) -> SchemaError:
    with pytest.raises(SchemaError) as info:
        convert(data, Shape)
    err = info.value
    assert SECRET not in f"{err.key} {err.problem}"
    assert "\n" not in err.problem
    return err


@pytest.mark.parametrize(
    ("data", "key", "problem"),
    [
        ({"count": 10}, "count", "must be between 1 and 9, got 10"),
        ({"count": "3"}, "count", "expected an integer, got '3'"),
        ({"count": True}, "count", "expected an integer, got a boolean (true)"),
        ({"floor": 1}, "floor", "must be at least 2, got 1"),
        ({"rate": math.inf}, "rate", "must be a finite number, got inf"),
        ({"rate": math.nan}, "rate", "must be a finite number, got nan"),
        ({"rate": 10**400}, "rate", "too large, got 1000000000000000000000000000000000000..."),
        ({"words": ["a", 2024]}, "words[1]", "expected a string, got 2024: quote it in the YAML"),
        ({"words": ["a", ""]}, "words[1]", "empty: expected a non-empty string"),
        ({"words": "a"}, "words", "expected a list, got 'a' (write it as a list: words: [a])"),
        ({"words": [{"nme": "x"}]}, "words[0].nme", "unknown key (did you mean 'name'?)"),
        ({"words": [{"level": "low"}]}, "words[0].name", "missing: every inner needs a name"),
        ({"inner": {"name": "x", "level": "mid"}}, "inner.level", "must be one of low, high"),
        ({"inner": {"name": "x", "inline": 1}}, "inner.inline", "inline values are not supp"),
        ({"inner": ["x"]}, "inner", "expected a mapping of settings, got a list"),
        ({"inner": {"name": "x"}, "zzz": 1}, "zzz", "unknown key (known keys: count, floor,"),
        ({"inner": {"name": "x"}, 3: 1}, "3", "unknown key"),
        ({"hashes": {"bob": "$x", "ann": "plain"}}, "hashes.ann", "not a hash"),
        ({"hashes": {"bob": "$x", "B:b": "$y"}}, "hashes", "bad user 'B:b'"),
        ({"wait": "0s"}, "wait", "must be greater than 0, got '0s'"),
        ({"wait": "soon"}, "wait", "invalid duration 'soon': use seconds"),
        (["x"], "", "expected a mapping with the key inner, got a list"),
    ],
)
def test_each_kind_of_mistake_has_its_key_and_problem(data, key, problem):
    err = error(data)
    assert err.key == key
    assert err.problem.startswith(problem), err.problem


def test_unknown_keys_are_found_before_any_value_is_checked():
    """As the hand-written checks did: a misspelt key anywhere wins over a wrong value."""
    err = error({"count": 99, "inner": {"name": "x", "levl": "low"}})
    assert (err.key, err.problem) == ("inner.levl", "unknown key (did you mean 'level'?)")


@pytest.mark.parametrize("value", [12345678, True, [SECRET], {"a": SECRET}])
def test_a_secret_is_shown_by_its_kind_only_without_a_quoting_hint(value):
    err = error({"token": value})
    assert err.key == "token"
    assert err.problem.startswith("expected a string, got a")
    assert "12345678" not in err.problem and "quote" not in err.problem
    err = error({"hashes": {"bob": value if not isinstance(value, str) else 5}})
    assert err.key == "hashes.bob" and "12345678" not in err.problem


def test_a_wrong_secret_value_is_never_echoed():
    err = error({"hashes": {"bob": SECRET}})
    assert (err.key, err.problem) == ("hashes.bob", "not a hash")


def test_a_valid_document_converts_with_defaults():
    shape = convert({"words": ["a", {"name": "n"}], "wait": "1m"}, Shape)
    assert shape.words == ("a", Inner(name="n"))
    assert shape.wait == 60.0 and shape.count == 1 and shape.hashes == {}


def test_nulls_mean_defaults_but_null_list_items_stay():
    data = {"count": None, "inner": {"name": "x", "file": None}, "words": ["a", None]}
    assert drop_nulls(data) == {"inner": {"name": "x"}, "words": ["a", None]}
    assert drop_nulls({"words": None}, keep=("words",)) == {"words": None}
    assert error(drop_nulls(data)).key == "words[1]"


def test_shapes_stay_frozen():
    shape = convert({}, Shape)
    with pytest.raises(AttributeError):
        shape.count = 2  # type: ignore[misc]
    assert isinstance(msgspec.inspect.type_info(Shape), msgspec.inspect.DataclassType)
