"""The configuration file: defaults, durations, every kind of mistake, the API key's sources."""

from __future__ import annotations

import dataclasses
import math
import os
import re
from pathlib import Path

import msgspec
import pytest
import yaml

from smsp_exporter.config import (
    DEFAULT_API_URL,
    ApiConfig,
    CollectionConfig,
    Config,
    ConfigError,
    ConfigFile,
    TemplateEntry,
    config_from_dict,
    load_config,
    parse_duration,
)
from smsp_exporter.schema import convert

from .helpers import BAD_CONFIGS, expected_key

KEY = "sk-LEAKCANARY-cfg-5e1d7a90b3"
ROOT = Path(__file__).parent.parent
NO_ENV: dict[str, str] = {}


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def minimal(extra_api: str = "", rest: str = "tags:\n  - montag\n") -> str:
    return f'api:\n  key: "{KEY}"\n{extra_api}{rest}'


def load_error(path: Path, env: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(path, env=NO_ENV if env is None else env)
    return check_message(info.value)


def dict_error(data: object, env: dict[str, str] | None = None, **kwargs) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        config_from_dict(data, env=NO_ENV if env is None else env, **kwargs)
    return check_message(info.value)


def check_message(err: ConfigError) -> ConfigError:
    text = str(err)
    assert len(text.splitlines()) == 1, text
    assert text == f"{err.source}: {err.key}: {err.problem}"
    assert KEY not in text and KEY not in repr(err)
    assert "Traceback" not in text
    return err


# --------------------------------------------------------------------------------------------
# Defaults and a full file


def test_minimal_file_gets_every_default(tmp_path):
    path = write(tmp_path, minimal())
    config = load_config(path, env=NO_ENV)
    assert config.tags == ("montag",)
    assert config.api == ApiConfig(key=KEY)
    assert config.api.url == DEFAULT_API_URL == "https://api.smspartner.fr/v1"
    assert config.api.timeout == 10.0
    assert config.api.concurrency == 4
    assert config.api.max_requests_per_second == 5.0
    assert config.api.max_pages == 1000
    assert config.api.retries == 2
    assert config.collection == CollectionConfig()
    assert config.collection.mode == "scrape"
    assert config.collection.interval == 60.0
    assert config.collection.min_interval == 0.0
    assert config.collection.keep_last_values is False
    assert config.source == str(path)
    assert config.key_source == "api.key"
    assert config.warnings == ()


def test_dataclass_defaults():
    config = Config(tags=("a",))
    assert config.api == ApiConfig()
    assert config.collection == CollectionConfig()
    assert config.source == "<memory>"
    assert config.key_source == ""
    assert config.warnings == ()
    with pytest.raises(AttributeError):
        config.tags = ("b",)  # type: ignore[misc]


def test_every_setting_is_read(tmp_path):
    text = f"""
api:
  url: http://127.0.0.1:8080/v1/
  key: "{KEY}"
  timeout: 2.5
  concurrency: 64
  max_requests_per_second: 0
  max_pages: 1
  retries: 0
collection:
  mode: background
  interval: 1m30s
  min_interval: 500ms
  keep_last_values: true
tags:
  - a
  - b
"""
    config = load_config(write(tmp_path, text), env=NO_ENV)
    assert config.api == ApiConfig(
        url="http://127.0.0.1:8080/v1",
        key=KEY,
        timeout=2.5,
        concurrency=64,
        max_requests_per_second=0.0,
        max_pages=1,
        retries=0,
    )
    assert config.collection == CollectionConfig(
        mode="background", interval=90.0, min_interval=0.5, keep_last_values=True
    )
    assert config.tags == ("a", "b")


def test_null_sections_and_values_take_the_defaults(tmp_path):
    text = f'api:\n  key: "{KEY}"\n  timeout:\n  url:\ncollection:\ntags:\n  - a\n'
    config = load_config(write(tmp_path, text), env=NO_ENV)
    assert config.api == ApiConfig(key=KEY)
    assert config.collection == CollectionConfig()


def test_sections_are_optional_with_env_key():
    config = config_from_dict({"tags": ["a"]}, env={"SMSP_API_KEY": KEY})
    assert config.api == ApiConfig(key=KEY)
    assert config.collection == CollectionConfig()
    assert config.source == "<memory>"


def test_url_trailing_slashes_are_stripped():
    config = config_from_dict(
        {"api": {"url": "https://example.test/v1//", "key": KEY}, "tags": ["a"]}, env=NO_ENV
    )
    assert config.api.url == "https://example.test/v1"


def test_the_example_config_loads(monkeypatch):
    monkeypatch.setenv("SMSP_API_KEY", KEY)
    monkeypatch.delenv("SMSP_API_KEY_FILE", raising=False)
    config = load_config(ROOT / "config.example.yaml")
    assert config.key_source == "SMSP_API_KEY"
    assert config.api == ApiConfig(key=KEY)
    assert config.collection == CollectionConfig()
    assert config.tags == ("montag", "promo-noel")
    assert config.warnings == ()


def _example_sections(text: str) -> dict[str, str]:
    """config.example.yaml cut at its top-level keys: each section's text, comments included."""
    parts = re.split(r"^(?=[a-z_]+:)", text, flags=re.M)
    return {part.split(":", 1)[0]: part for part in parts if re.match(r"[a-z_]+:", part)}


def _documented_settings(section: str) -> dict[str, str]:
    """Each setting of a section (``  name: value``, or commented out as ``  # name: value``
    with a one-word or quoted value, unlike prose) and the comment block just above it."""
    found: dict[str, str] = {}
    block: list[str] = []
    for line in section.splitlines()[1:]:
        setting = re.fullmatch(r"  (?:# )?([a-z_]+):(?: (\S+|\"[^\"]*\"))?(?:\s+#.*)?", line)
        if setting and not (line.lstrip().startswith("#") and setting[2] is None):
            found[setting[1]] = "\n".join(block)
            block = []
        elif line.strip().startswith("#"):
            block.append(line.strip().lstrip("# "))
        elif not line.strip():
            block = []
    return found


def test_the_example_documents_exactly_the_declared_keys_and_defaults():
    """config.example.yaml and the declared structure (ConfigFile) cannot drift apart: the same
    sections and keys, the defaults and ranges the example states are the declared ones."""
    text = (ROOT / "config.example.yaml").read_text()
    document = yaml.safe_load(text)
    sections = _example_sections(text)
    shape = msgspec.inspect.type_info(ConfigFile)
    assert isinstance(shape, msgspec.inspect.DataclassType)
    assert set(sections) == {f.encode_name for f in shape.fields}
    checked = 0
    for field in shape.fields:
        if not isinstance(field.type, msgspec.inspect.DataclassType):
            continue
        cls = field.type.cls
        documented = _documented_settings(sections[field.encode_name])
        declared = {f.encode_name: f for f in field.type.fields}
        assert set(documented) == set(declared), field.encode_name
        for name, comment in documented.items():
            where = f"{field.encode_name}.{name}"
            default = declared[name].default
            if default is msgspec.NODEFAULT:
                default = declared[name].default_factory()
            value = (document[field.encode_name] or {}).get(name)
            if value is not None:  # an active setting shows the default
                loaded = convert({name: value}, cls)
                assert getattr(loaded, name) == default, where
                checked += 1
            stated = re.search(r"Default: (\S+?)\.?$", comment, re.M)
            if stated and stated[1] != "none":
                loaded = convert(yaml.safe_load(f"{name}: {stated[1]}"), cls)
                assert getattr(loaded, name) == default, where
                checked += 1
            elif stated:
                assert default is None, where
            kind = declared[name].type
            while isinstance(kind, msgspec.inspect.Metadata):
                kind = kind.type
            if isinstance(kind, msgspec.inspect.CustomType) and "Duration" in comment:
                positive = "Duration, > 0" in comment
                assert kind.cls.__name__ == ("Positive" if positive else "") + "Seconds", where
            elif between := re.search(r"(\d+) to (\d+)", comment):
                assert (kind.ge, kind.le) == (int(between[1]), int(between[2])), where
            elif at_least := re.search(r">= (\d+)", comment):
                assert kind.ge == int(at_least[1]), where
    assert checked >= 15
    entries = [entry for entry in document["tags"] if isinstance(entry, dict)]
    assert {key for entry in entries for key in entry} == set(TemplateEntry.__dataclass_fields__)
    assert "your-api-key" in text


def test_the_example_has_no_active_key_without_environment():
    """Its placeholder is commented out (and refused if uncommented as is)."""
    err = load_error(ROOT / "config.example.yaml")
    assert err.key == "api.key" and err.problem.startswith("missing")


# --------------------------------------------------------------------------------------------
# Durations


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (10, 10.0),
        (0, 0.0),
        (2.5, 2.5),
        ("10", 10.0),
        ("2.5", 2.5),
        ("0", 0.0),
        ("500ms", 0.5),
        ("30s", 30.0),
        ("0.3s", 0.3),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("1m30s500ms", 90.5),
        ("1d", 86400.0),
        ("1w", 7 * 86400.0),
        ("1y", 365 * 86400.0),
        ("2w3d", 17 * 86400.0),
        (" 30s ", 30.0),
    ],
)
def test_durations(value, seconds):
    assert parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("ten", "use seconds (10) or a Prometheus duration"),
        ("", "use seconds"),
        ("5 s", "use seconds"),
        ("5M", "use seconds"),
        ("1m1h", "use seconds"),
        ("10 seconds", "use seconds"),
        ("s", "use seconds"),
        ("1e3", "use seconds"),
        ("-5s", "must not be negative"),
        ("-3", "must not be negative"),
        (-1, "must not be negative"),
        (-0.5, "must not be negative"),
        (math.nan, "finite"),
        (math.inf, "finite"),
        ("9" * 400 + "s", "finite"),
        (10**400, "too large"),
        (True, "boolean"),
        (None, "use seconds"),
        ([1], "use seconds"),
        ({"s": 1}, "use seconds"),
    ],
)
def test_invalid_durations(value, message):
    with pytest.raises(ValueError) as info:
        parse_duration(value)
    text = str(info.value)
    assert text.startswith("invalid duration")
    assert message in text
    assert len(text) < 200 and "\n" not in text


def test_invalid_duration_message_matches_the_documented_text(tmp_path):
    err = load_error(write(tmp_path, minimal("  timeout: ten\n")))
    assert err.key == "api.timeout"
    assert err.problem == (
        "invalid duration 'ten': use seconds (10) or a Prometheus duration (500ms, 30s, 5m, 1h)"
    )


@pytest.mark.parametrize("value", ["0s", "0", 0])
def test_timeout_and_interval_must_be_positive(value):
    for section, name in [("api", "timeout"), ("collection", "interval")]:
        data = {"api": {"key": KEY}, "tags": ["a"]}
        data.setdefault(section, {})[name] = value  # type: ignore[index]
        err = dict_error(data)
        assert err.key == f"{section}.{name}"
        assert "greater than 0" in err.problem


def test_min_interval_may_be_zero():
    data = {"api": {"key": KEY}, "collection": {"min_interval": 0}, "tags": ["a"]}
    assert config_from_dict(data, env=NO_ENV).collection.min_interval == 0.0


# --------------------------------------------------------------------------------------------
# Mistakes


def test_unknown_key_suggests_the_right_one(tmp_path):
    err = load_error(write(tmp_path, minimal("  timout: 10s\n")))
    assert (
        str(err) == f"{tmp_path / 'config.yaml'}: api.timout: unknown key (did you mean 'timeout'?)"
    )


def test_unknown_key_without_a_close_match_lists_the_known_ones():
    err = dict_error({"api": {"key": KEY}, "collection": {"zzz": 1}, "tags": ["a"]})
    assert err.key == "collection.zzz"
    assert "unknown key" in err.problem and "keep_last_values" in err.problem


def test_unknown_top_level_key():
    err = dict_error({"api": {"key": KEY}, "tag": ["a"]})
    assert err.key == "tag"
    assert "did you mean 'tags'?" in err.problem


def test_unknown_non_string_key_is_named():
    err = dict_error({"api": {"key": KEY, 3: "x"}, "tags": ["a"]})
    assert err.key == "api.3"


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("concurrency", "four", "api.concurrency: expected an integer, got 'four'"),
        ("concurrency", True, "api.concurrency: expected an integer, got a boolean (true)"),
        ("concurrency", 4.0, "api.concurrency: expected an integer, got 4.0"),
        ("concurrency", "4", "api.concurrency: expected an integer, got '4'"),
        ("concurrency", 0, "api.concurrency: must be between 1 and 64, got 0"),
        ("concurrency", 65, "api.concurrency: must be between 1 and 64, got 65"),
        ("retries", 11, "api.retries: must be between 0 and 10, got 11"),
        ("retries", -1, "api.retries: must be between 0 and 10, got -1"),
        ("max_pages", 0, "api.max_pages: must be at least 1, got 0"),
        ("max_pages", [1], "api.max_pages: expected an integer, got a list"),
        ("max_requests_per_second", -1, "api.max_requests_per_second: must be 0"),
        ("max_requests_per_second", "5", "api.max_requests_per_second: expected a number"),
        ("max_requests_per_second", False, "api.max_requests_per_second: expected a number"),
        ("max_requests_per_second", math.inf, "api.max_requests_per_second: must be a finite"),
        ("max_requests_per_second", math.nan, "api.max_requests_per_second: must be a finite"),
        ("timeout", {"s": 1}, "api.timeout: invalid duration a mapping"),
        ("url", "ftp://example.test", "api.url: must start with http:// or https://"),
        ("url", "api.smspartner.fr/v1", "api.url: must start with http:// or https://"),
        ("url", "https://", "api.url: has no host name"),
        ("url", "https://x.test/v1?a=b", "api.url: must not contain a query string"),
        ("url", "https://x.test:port/v1", "api.url: not a valid URL"),
        ("url", "https://x .test/v1", "api.url: must not contain whitespace"),
        ("url", "", "api.url: empty"),
        ("url", 42, "api.url: expected a URL, got 42"),
    ],
)
def test_wrong_api_values(name, value, expected):
    err = dict_error({"api": {"key": KEY, name: value}, "tags": ["a"]}, source="s.yaml")
    assert str(err).startswith(f"s.yaml: {expected}"), str(err)


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("mode", "fast", "collection.mode: must be one of scrape, background, got 'fast'"),
        ("mode", "Scrape", "collection.mode: must be one of scrape, background, got 'Scrape'"),
        ("mode", 1, "collection.mode: must be one of scrape, background, got 1"),
        ("keep_last_values", "yes", "collection.keep_last_values: expected true or false"),
        ("keep_last_values", 1, "collection.keep_last_values: expected true or false, got 1"),
        ("interval", "often", "collection.interval: invalid duration 'often'"),
        ("min_interval", "-1s", "collection.min_interval: invalid duration '-1s': must not be"),
    ],
)
def test_wrong_collection_values(name, value, expected):
    data = {"api": {"key": KEY}, "collection": {name: value}, "tags": ["a"]}
    err = dict_error(data, source="s.yaml")
    assert str(err).startswith(f"s.yaml: {expected}"), str(err)


@pytest.mark.parametrize("section", ["api", "collection"])
def test_a_section_must_be_a_mapping(section):
    data = {"api": {"key": KEY}, "tags": ["a"], section: ["x"]}
    err = dict_error(data)
    assert err.key == section
    assert err.problem == "expected a mapping of settings, got a list"
    data[section] = "text"
    assert dict_error(data).problem == "expected a mapping of settings, got a string"


def test_long_values_are_shortened_in_messages():
    err = dict_error({"api": {"key": KEY, "timeout": "x" * 500}, "tags": ["a"]})
    assert len(str(err)) < 250


# --------------------------------------------------------------------------------------------
# Tags


def test_tags_missing():
    err = dict_error({"api": {"key": KEY}})
    assert err.key == "tags"
    assert "missing" in err.problem


@pytest.mark.parametrize("tags", [[], (), None])
def test_tags_empty(tags):
    err = dict_error({"api": {"key": KEY}, "tags": tags})
    assert err.key == "tags"
    assert "at least one" in err.problem


def test_tags_not_a_list():
    err = dict_error({"api": {"key": KEY}, "tags": "montag"})
    assert err.key == "tags"
    assert (
        err.problem == "expected a list of tags, got 'montag' (write it as a list: tags: [montag])"
    )


def test_tags_a_mapping():
    err = dict_error({"api": {"key": KEY}, "tags": {"a": 1}})
    assert str(err) == "<memory>: tags: expected a list of tags, got a mapping"


def test_duplicate_tag():
    err = dict_error({"api": {"key": KEY}, "tags": ["x", "a", "b", "x"]})
    assert str(err) == "<memory>: tags[3]: duplicate tag 'x' (also tags[0])"


def test_tags_differing_by_case_are_not_duplicates():
    config = config_from_dict({"api": {"key": KEY}, "tags": ["promo", "Promo"]}, env=NO_ENV)
    assert config.tags == ("promo", "Promo")


def test_empty_tag():
    err = dict_error({"api": {"key": KEY}, "tags": ["a", "b", ""]})
    assert err.key == "tags[2]"
    assert "non-empty string" in err.problem


def test_number_tag_advises_quoting(tmp_path):
    err = load_error(write(tmp_path, minimal(rest="tags:\n  - montag\n  - 2024\n")))
    assert err.key == "tags[1]"
    assert err.problem.startswith("expected a string, got 2024")
    assert 'quote it in the YAML (e.g. "2024")' in err.problem


@pytest.mark.parametrize(
    ("item", "got"),
    [
        ("yes", "a boolean (true)"),
        ("2024-12-25", "a date (2024-12-25)"),
        ("1.5", "1.5"),
        ("", "null"),
        ("[a, b]", "a list"),
    ],
)
def test_non_string_tags(tmp_path, item, got):
    err = load_error(write(tmp_path, minimal(rest=f"tags:\n  - {item}\n")))
    assert err.key == "tags[0]"
    assert err.problem.startswith(f"expected a string, got {got}")


def test_tags_are_kept_exactly_as_written(tmp_path):
    text = minimal(rest="tags:\n  - ' padded '\n  - MixedCase\n  - a&b é c\n  - promo-noël\n")
    config = load_config(write(tmp_path, text), env=NO_ENV)
    assert config.tags == (" padded ", "MixedCase", "a&b é c", "promo-noël")


def test_tags_breaking_the_api_rules_are_accepted_with_a_warning():
    tags = ["ok", "Promo Noel", "x" * 21, "x" * 20, "a&b é c", "promo-noël", "tab\there"]
    config = config_from_dict({"api": {"key": KEY}, "tags": tags}, env=NO_ENV)
    assert config.tags == tuple(tags)
    assert len(config.warnings) == 4
    first = config.warnings[0]
    assert first.startswith(
        "tags[1]: tag 'Promo Noel' can never match: SMS Partner tags are at most "
        "20 characters, lowercase, without spaces"
    )
    assert "uppercase letters and whitespace" in first
    assert config.warnings[1].startswith("tags[2]: ") and "21 characters" in config.warnings[1]
    assert config.warnings[2].startswith("tags[4]: tag 'a&b é c'")
    assert "whitespace" in config.warnings[2] and "uppercase" not in config.warnings[2]
    assert config.warnings[3].startswith("tags[6]: tag 'tab\\there'")
    assert all(len(w.splitlines()) == 1 for w in config.warnings)


def test_valid_tags_have_no_warning():
    tags = ["montag", "promo-noel", "a&b", "été", "x" * 20, "2024", "a_b.c/d"]
    config = config_from_dict({"api": {"key": KEY}, "tags": tags}, env=NO_ENV)
    assert config.warnings == ()


# --------------------------------------------------------------------------------------------
# The API key


def test_missing_key():
    err = dict_error({"tags": ["a"]}, source="c.yaml")
    assert str(err) == (
        "c.yaml: api.key: missing: set api.key, api.key_file or the SMSP_API_KEY "
        "environment variable"
    )


@pytest.mark.parametrize("key", ["", "   ", None])
def test_empty_key_is_missing(key):
    err = dict_error({"api": {"key": key}, "tags": ["a"]})
    assert err.key == "api.key"
    assert err.problem.startswith("missing:")


@pytest.mark.parametrize("env", [{"SMSP_API_KEY": ""}, {"SMSP_API_KEY": "  "}])
def test_empty_environment_key_is_ignored(env):
    config = config_from_dict({"api": {"key": KEY}, "tags": ["a"]}, env=env)
    assert config.key_source == "api.key"
    err = dict_error({"tags": ["a"]}, env=env)
    assert err.key == "api.key"


def test_key_and_key_file_together(tmp_path):
    (tmp_path / "key.txt").write_text(KEY)
    text = minimal("  key_file: key.txt\n")
    err = load_error(write(tmp_path, text))
    assert err.key == "api.key_file"
    assert "api.key" in err.problem and "only one" in err.problem
    # Still an error when the environment would override both.
    err = load_error(write(tmp_path, text), env={"SMSP_API_KEY": KEY})
    assert err.key == "api.key_file"


@pytest.mark.parametrize(
    ("key", "got"), [(12345678, "an integer"), (True, "a boolean"), (["k"], "a list")]
)
def test_key_of_the_wrong_type_is_not_shown(key, got):
    err = dict_error({"api": {"key": key}, "tags": ["a"]})
    assert err.key == "api.key"
    assert err.problem == f"expected a string, got {got}"
    assert "12345678" not in str(err)


@pytest.mark.parametrize("inner", ["sk-LEAK CANARY", "sk-LEAK\tCANARY", "sk-\x00LEAKCANARY"])
def test_key_with_whitespace_inside_is_refused_without_being_shown(inner, tmp_path):
    err = dict_error({"api": {"key": inner}, "tags": ["a"]})
    assert err.key == "api.key"
    assert "whitespace" in err.problem
    assert "LEAK" not in str(err) and "CANARY" not in str(err)
    (tmp_path / "k").write_text(inner)
    err = dict_error({"tags": ["a"]}, env={"SMSP_API_KEY_FILE": str(tmp_path / "k")})
    assert err.key == "SMSP_API_KEY_FILE"
    assert "LEAK" not in str(err)
    err = dict_error({"tags": ["a"]}, env={"SMSP_API_KEY": inner})
    assert err.key == "SMSP_API_KEY"
    assert "LEAK" not in str(err)


def test_key_surrounding_whitespace_is_stripped():
    config = config_from_dict({"api": {"key": f"  {KEY}\n"}, "tags": ["a"]}, env=NO_ENV)
    assert config.api.key == KEY


def test_key_file_relative_to_the_config_directory(tmp_path, monkeypatch):
    conf_dir = tmp_path / "etc"
    (conf_dir / "secrets").mkdir(parents=True)
    (conf_dir / "secrets" / "key.txt").write_text(f"\n  {KEY}\n\n")
    path = write(conf_dir, 'api:\n  key_file: secrets/key.txt\ntags: ["a"]\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config(path, env=NO_ENV)
    assert config.api.key == KEY
    assert config.key_source == "api.key_file"
    # Also through a relative path to the config file itself.
    config = load_config(os.path.relpath(path), env=NO_ENV)
    assert config.api.key == KEY


def test_key_file_base_dir_for_config_from_dict(tmp_path, monkeypatch):
    (tmp_path / "key.txt").write_text(KEY)
    data = {"api": {"key_file": "key.txt"}, "tags": ["a"]}
    assert config_from_dict(data, env=NO_ENV, base_dir=tmp_path).api.key == KEY
    monkeypatch.chdir(tmp_path)
    assert config_from_dict(data, env=NO_ENV).api.key == KEY  # default: current directory


def test_key_file_absolute_path(tmp_path):
    key_path = tmp_path / "abs.key"
    key_path.write_text(KEY + "\n")
    data = {"api": {"key_file": str(key_path)}, "tags": ["a"]}
    assert config_from_dict(data, env=NO_ENV, base_dir="/nonexistent").api.key == KEY


def test_key_file_missing(tmp_path):
    path = write(tmp_path, 'api:\n  key_file: nope/key.txt\ntags: ["a"]\n')
    err = load_error(path)
    assert str(err) == (
        f"{path}: api.key_file: cannot read the file it names: No such file or directory"
    )


def test_key_file_is_a_directory(tmp_path):
    (tmp_path / "dir").mkdir()
    err = dict_error({"api": {"key_file": "dir"}, "tags": ["a"]}, base_dir=tmp_path)
    assert err.key == "api.key_file"
    assert err.problem.startswith("cannot read the file it names:")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_key_file_unreadable(tmp_path):
    key_path = tmp_path / "key.txt"
    key_path.write_text(KEY)
    key_path.chmod(0)
    err = dict_error({"api": {"key_file": str(key_path)}, "tags": ["a"]})
    assert err.problem == "cannot read the file it names: Permission denied"


@pytest.mark.parametrize("content", [b"", b"\n", b"  \n\t\n"])
def test_key_file_empty(tmp_path, content):
    (tmp_path / "key.txt").write_bytes(content)
    err = dict_error({"api": {"key_file": "key.txt"}, "tags": ["a"]}, base_dir=tmp_path)
    assert str(err) == "<memory>: api.key_file: the file it names is empty"


def test_key_file_not_text(tmp_path):
    (tmp_path / "key.bin").write_bytes(b"\xff\xfe\x00garbage")
    err = dict_error({"api": {"key_file": "key.bin"}, "tags": ["a"]}, base_dir=tmp_path)
    assert err.problem.endswith("is not UTF-8 text")


def test_key_file_too_large(tmp_path):
    (tmp_path / "big").write_bytes(b"k" * 100_000)
    err = dict_error({"api": {"key_file": "big"}, "tags": ["a"]}, base_dir=tmp_path)
    assert "too large" in err.problem


@pytest.mark.parametrize(("value", "problem"), [(3, "expected a file path, got 3"), ("", "empty")])
def test_key_file_wrong_value(value, problem):
    err = dict_error({"api": {"key_file": value}, "tags": ["a"]})
    assert err.key == "api.key_file"
    assert err.problem.startswith(problem)


def test_environment_key_wins_over_file_keys(tmp_path):
    (tmp_path / "key.txt").write_text("from-the-key-file")
    for api in ({"key": "from-the-config"}, {"key_file": "key.txt"}, {}):
        data = {"api": api, "tags": ["a"]}
        env = {"SMSP_API_KEY": KEY, "SMSP_API_KEY_FILE": str(tmp_path / "key.txt")}
        config = config_from_dict(data, env=env, base_dir=tmp_path)
        assert config.api.key == KEY
        assert config.key_source == "SMSP_API_KEY"


def test_environment_key_means_a_missing_key_file_is_never_read(tmp_path):
    data = {"api": {"key_file": "absent.txt"}, "tags": ["a"]}
    config = config_from_dict(data, env={"SMSP_API_KEY": f"{KEY}\n"}, base_dir=tmp_path)
    assert config.api.key == KEY


def test_environment_key_file_wins_over_config_keys(tmp_path):
    (tmp_path / "env.key").write_text(KEY + "\n")
    (tmp_path / "conf.key").write_text("from-the-config-file")
    env = {"SMSP_API_KEY_FILE": str(tmp_path / "env.key")}
    for api in ({"key": "from-the-config"}, {"key_file": "conf.key"}, {}):
        config = config_from_dict({"api": api, "tags": ["a"]}, env=env, base_dir=tmp_path)
        assert config.api.key == KEY
        assert config.key_source == "SMSP_API_KEY_FILE"


def test_environment_key_file_relative_to_the_current_directory(tmp_path, monkeypatch):
    (tmp_path / "env.key").write_text(KEY)
    monkeypatch.chdir(tmp_path)
    config = config_from_dict(
        {"tags": ["a"]}, env={"SMSP_API_KEY_FILE": "env.key"}, base_dir="/nonexistent"
    )
    assert config.api.key == KEY


def test_environment_key_file_problems_name_the_variable(tmp_path):
    err = dict_error({"tags": ["a"]}, env={"SMSP_API_KEY_FILE": str(tmp_path / "absent")})
    assert str(err) == (
        "<memory>: SMSP_API_KEY_FILE: cannot read the file it names: No such file or directory"
    )
    (tmp_path / "empty").write_text("\n")
    err = dict_error({"tags": ["a"]}, env={"SMSP_API_KEY_FILE": str(tmp_path / "empty")})
    assert err.key == "SMSP_API_KEY_FILE" and err.problem.endswith("is empty")


def test_env_defaults_to_os_environ(monkeypatch):
    monkeypatch.setenv("SMSP_API_KEY", KEY)
    assert config_from_dict({"tags": ["a"]}).key_source == "SMSP_API_KEY"
    monkeypatch.delenv("SMSP_API_KEY")
    monkeypatch.delenv("SMSP_API_KEY_FILE", raising=False)
    with pytest.raises(ConfigError):
        config_from_dict({"tags": ["a"]})


def test_key_never_in_repr_or_str(tmp_path):
    config = load_config(write(tmp_path, minimal()), env=NO_ENV)
    assert config.api.key == KEY
    for text in (repr(config), str(config), repr(config.api), str(config.api)):
        assert KEY not in text
    assert config.key_source == "api.key"


def test_key_is_scrubbed_even_where_the_user_misplaced_it():
    # The key pasted as a tag, as a URL, as a duration: the messages never echo it.
    cases = [
        {"api": {"key": KEY, "timeout": KEY}, "tags": ["a"]},
        {"api": {"key": KEY, "url": f"ftp://{KEY}"}, "tags": ["a"]},
        {"api": {"key": KEY}, "collection": {"mode": KEY}, "tags": ["a"]},
        {"api": {"key": KEY}, "tags": [KEY, KEY]},
        {"api": {"key": KEY}, "tags": "x", KEY: 1},
    ]
    for data in cases:
        dict_error(data, env={"SMSP_API_KEY": KEY})
        dict_error(data)
    dict_error({"tags": [KEY, KEY]}, env={"SMSP_API_KEY": KEY})
    # Where the key cannot be known yet, the values that may be one are not shown.
    assert dict_error({"api": KEY, "tags": ["a"]}).problem.endswith("got a string")
    assert KEY not in str(dict_error({"api": {"url": f"x.test/?apiKey={KEY}"}, "tags": ["a"]}))
    config = config_from_dict({"api": {"key": KEY}, "tags": [KEY.upper()]}, env=NO_ENV)
    assert config.warnings  # uppercase: a warning, which does not echo the key either
    config = config_from_dict({"api": {"key": KEY}, "tags": [KEY + " x"]}, env=NO_ENV)
    assert all(KEY not in w for w in config.warnings)


# --------------------------------------------------------------------------------------------
# The file itself


def test_missing_file(tmp_path):
    err = load_error(tmp_path / "absent.yaml")
    assert str(err) == (
        f"{tmp_path / 'absent.yaml'}: (top level): cannot read the file: No such file or directory"
    )


def test_directory_instead_of_file(tmp_path):
    err = load_error(tmp_path)
    assert err.key == "(top level)"
    assert err.problem.startswith("cannot read the file:")


@pytest.mark.parametrize("text", ["", "\n\n", "   \n"])
def test_empty_file(tmp_path, text):
    err = load_error(write(tmp_path, text))
    assert err.key == "(top level)"
    assert "empty" in err.problem


def test_file_of_comments_only(tmp_path):
    err = load_error(write(tmp_path, "# nothing\n"))
    assert err.key == "(top level)"


@pytest.mark.parametrize(
    ("text", "got"),
    [("- a\n- b\n", "a list"), ("just words\n", "'just words'"), ("42\n", "42")],
)
def test_top_level_not_a_mapping(tmp_path, text, got):
    err = load_error(write(tmp_path, text))
    assert err.key == "(top level)"
    assert err.problem == f"expected a mapping with the keys api, collection, tags, got {got}"


def test_top_level_not_a_mapping_from_dict():
    assert dict_error(["a"]).key == "(top level)"
    assert dict_error(None).key == "(top level)"


def test_yaml_syntax_error_names_the_line(tmp_path):
    text = f'api:\n  key: "{KEY}"\n  timeout: 10s\n concurrency: 4\ntags: [a]\n'
    err = load_error(write(tmp_path, text))
    assert err.key == "(yaml)"
    assert re.match(r"line 4 column \d+: ", err.problem), err.problem
    assert KEY not in str(err)


def test_yaml_syntax_error_unclosed_quote_does_not_echo_the_line(tmp_path):
    text = f'api:\n  key: "{KEY}\ntags: [a]\n'
    err = load_error(write(tmp_path, text))
    assert err.key == "(yaml)"
    assert "line " in err.problem and "column " in err.problem


def test_yaml_tab_indentation(tmp_path):
    err = load_error(write(tmp_path, "api:\n\tkey: x\ntags: [a]\n"))
    assert err.key == "(yaml)" and err.problem.startswith("line 2 column 1: ")


def test_yaml_duplicate_key(tmp_path):
    text = minimal("  timeout: 10s\n  timeout: 20s\n")
    err = load_error(write(tmp_path, text))
    assert err.key == "(yaml)"
    assert err.problem == "line 4 column 3: duplicate key 'timeout' (first at line 3)"


def test_yaml_anchors_and_merge_keys_work(tmp_path):
    # A merged value that the mapping overrides is not a duplicate key.
    text = (
        "tags: [a, b]\n"
        "api:\n"
        "  <<: {timeout: 5s, retries: 1}\n"
        "  timeout: 7s\n"
        f'  key: "{KEY}"\n'
        "collection: &c {mode: scrape}\n"
    )
    config = load_config(write(tmp_path, text), env=NO_ENV)
    assert config.api.timeout == 7.0 and config.api.retries == 1


def test_yaml_unsafe_tags_are_refused(tmp_path):
    text = "tags: !!python/object/apply:os.system ['true']\n"
    err = load_error(write(tmp_path, text))
    assert err.key == "(yaml)"


def test_yaml_several_documents(tmp_path):
    err = load_error(write(tmp_path, minimal() + "---\ntags: [b]\n"))
    assert err.key == "(yaml)"


def test_file_not_utf8(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("tags:\n  - promo-noël\n".encode("latin-1"))
    err = load_error(path)
    assert err.key == "(top level)" and "UTF-8" in err.problem


def test_control_character_in_file(tmp_path):
    path = tmp_path / "nul.yaml"
    path.write_bytes(b"tags:\n  - a\x01b\n")
    err = load_error(path)
    assert err.key == "(yaml)" and err.problem.startswith("line 2:")


def test_deeply_nested_yaml(tmp_path):
    err = load_error(write(tmp_path, "tags: " + "[" * 5000 + "]" * 5000 + "\n"))
    assert err.key == "(yaml)"


def test_utf8_bom_is_accepted(tmp_path):
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + minimal().encode())
    assert load_config(path, env=NO_ENV).tags == ("montag",)


def test_path_like_and_source(tmp_path):
    path = write(tmp_path, minimal())
    assert load_config(path, env=NO_ENV).source == str(path)
    assert load_config(str(path), env=NO_ENV).source == str(path)


# --------------------------------------------------------------------------------------------
# ConfigError itself


def test_config_error_is_one_line_even_with_newlines():
    err = ConfigError("a\nb.yaml", "tags[0]", "bad\r\nthing\u2028here")
    assert len(str(err).splitlines()) == 1
    assert (err.source, err.key) == ("a\\nb.yaml", "tags[0]")
    assert str(err) == "a\\nb.yaml: tags[0]: bad\\r\\nthing\\u2028here"


def test_config_error_attributes():
    err = ConfigError("c.yaml", "api.timeout", "too long")
    assert (err.source, err.key, err.problem) == ("c.yaml", "api.timeout", "too long")
    assert str(err) == "c.yaml: api.timeout: too long"
    assert isinstance(err, Exception)


def test_tag_with_a_newline_gives_a_one_line_error():
    err = dict_error({"api": {"key": KEY}, "tags": ["a\nb", "a\nb"]})
    assert err.key == "tags[1]"


# --------------------------------------------------------------------------------------------
# The corpus of broken files (shared with the command-line tests)


def test_the_corpus_is_there():
    assert len(BAD_CONFIGS) >= 12


@pytest.mark.parametrize("path", BAD_CONFIGS, ids=lambda p: p.name)
def test_broken_config_names_its_key(path):
    key = expected_key(path)
    err = load_error(path)
    text = str(err)
    assert err.key == key, text
    assert text.startswith(f"{path}: {key}: ")
    assert "CORPUS" not in text  # the corpus's API key


@pytest.mark.parametrize("path", BAD_CONFIGS, ids=lambda p: p.name)
def test_broken_config_fails_the_same_with_an_environment_key(path):
    key = expected_key(path)
    if path.name in {"key-missing.yaml", "key-with-space.yaml", "key-file-absent.yaml"}:
        pytest.skip("the environment key replaces the faulty one")
    err = load_error(path, env={"SMSP_API_KEY": "sk-CORPUS-env-000000"})
    assert err.key == key


# --------------------------------------------------------------------------------------------
# The declared structure itself


def test_sections_are_frozen_dataclasses_other_modules_can_replace():
    """probe.py and the tests use dataclasses.replace on the sections and on Config."""
    config = config_from_dict({"api": {"key": KEY}, "tags": ["a"]}, env=NO_ENV)
    smaller = dataclasses.replace(config.api, concurrency=2)
    assert smaller.concurrency == 2 and smaller.key == KEY and KEY not in repr(smaller)
    assert dataclasses.replace(config, tags=()).api is config.api
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.collection.mode = "background"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("section", "data", "key", "problem"),
    [
        ("api", {"max_requests_per_second": 10**400}, "api.max_requests_per_second", "too large"),
        ("probe", {"allowed_tags": "a"}, "probe.allowed_tags", "(write it as a list"),
        ("probe", {"allowed_pattern": "a("}, "probe.allowed_pattern", "invalid regular exp"),
        ("api", {"max_response_bytes": "8 MB"}, "api.max_response_bytes", "expected a size"),
        ("account", {"enabled": "yes"}, "account.enabled", "expected true or false, got 'yes'"),
        ("account", {"enable": True}, "account.enable", "unknown key (did you mean 'enabled'?)"),
    ],
)
def test_more_declared_checks(section, data, key, problem):
    base = {"api": {"key": KEY}, "tags": ["a"]}
    base[section] = {**base.get(section, {}), **data}  # type: ignore[dict-item]
    err = dict_error(base)
    assert err.key == key and problem in err.problem, str(err)


@pytest.mark.parametrize(
    ("data", "key", "problem"),
    [
        ({"state_file": 3}, "collection.state_file", "expected a file path, got 3"),
        ({"state_file": "  "}, "collection.state_file", "expected a file path, got '  '"),
        ({"report_deadline": "0s"}, "collection.report_deadline", "must be greater than 0"),
        ({"report_deadline": "2d1h"}, None, None),
        ({"incremental": "no"}, "collection.incremental", "expected true or false, got 'no'"),
        (
            {"incremental_": True},
            "collection.incremental_",
            "unknown key (did you mean 'incremental'?)",
        ),
    ],
)
def test_incremental_collection_settings(data, key, problem):
    document = {"api": {"key": KEY}, "collection": data, "tags": ["a"]}
    if key is None:
        assert config_from_dict(document, env=NO_ENV).collection.report_deadline == 49 * 3600
        return
    err = dict_error(document)
    assert err.key == key and err.problem.startswith(problem), str(err)


def test_state_file_is_relative_to_the_config_files_directory(tmp_path, monkeypatch):
    path = write(tmp_path, minimal(rest="collection:\n  state_file: state/s.db\ntags: [a]\n"))
    monkeypatch.chdir("/")
    config = load_config(path, env=NO_ENV)
    assert config.collection.state_file == str(tmp_path / "state" / "s.db")
    assert config.collection.incremental is True
    assert config.collection.report_deadline == 48 * 3600
    assert load_config(write(tmp_path, minimal()), env=NO_ENV).collection.state_file is None
