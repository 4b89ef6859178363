"""The YAML configuration file: reading it, checking every value, and saying clearly what is wrong.

The file's shape (sections, keys, types, defaults, ranges, enums; unknown keys refused) is
declared once, below, as frozen dataclasses with msgspec constraints (:class:`ConfigFile`);
config.example.yaml documents it and a test keeps the two equal. ``schema.convert`` checks a
document against it; what no type can say (the API key's sources, tag rules and templates, the
API URL's path) is checked after, by :func:`_check`. A ``null`` value means "the default".

A configuration error is one line, ``SOURCE: KEY: PROBLEM``, where KEY is the full path of the
offending setting (``api.timeout``, ``tags[2]``), ``(top level)`` for a problem with the whole
file, or ``(yaml)`` for a YAML syntax error. No message ever contains the API key.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, NoReturn
from urllib.parse import urlsplit

from msgspec import Meta

from .schema import (
    ByteSize,
    PositiveSeconds,
    SchemaError,
    Seconds,
    convert,
    drop_nulls,
    say,
)
from .schema import describe as _describe
from .schema import parse_duration as parse_duration  # part of this module's interface
from .tags import DEFAULT_DAYS, DEFAULT_TIMEZONE, MAX_DAYS, TagTemplate, parse_template
from .yamlfile import YamlFileError, os_reason, read_yaml

DEFAULT_API_URL = "https://api.smspartner.fr/v1"
# The official host serves the API under this path only: any other path there is a mistake.
_OFFICIAL_HOST = "api.smspartner.fr"
_API_PATH = "/v1"
# The API's endpoints (the exporter appends the first two to api.url): a URL ending with one is
# an endpoint's URL pasted where the base URL belongs.
_API_ENDPOINTS = ("bulk-status-by-tag", "me", "bulk-status", "message-status", "send")
# Keys our own documentation shows as examples (config.example.yaml, the systemd and Docker
# steps): never a real key, and otherwise only noticed at run time as "API key rejected".
_PLACEHOLDER_KEYS = frozenset({"your-api-key", "replace-me-with-your-sms-partner-api-key"})

ENV_KEY = "SMSP_API_KEY"
ENV_KEY_FILE = "SMSP_API_KEY_FILE"

# What SMS Partner accepts as a tag when sending: a configured tag breaking these can never match.
TAG_MAX_LENGTH = 20

# A key file larger than this is certainly not a key file (and may be a device that never ends).
_MAX_KEY_FILE_BYTES = 64 * 1024

# Secrets shorter than this are not scrubbed from messages: replacing a 2-letter "key" everywhere
# would garble them, and such a key is not a real one anyway.
_MIN_SCRUB_LENGTH = 6

TOP_LEVEL = "(top level)"
YAML_SYNTAX = "(yaml)"


# --------------------------------------------------------------------------------------------
# The declared shape of config.yaml (config.example.yaml documents it; a test keeps them equal)


def _says(**words: Any) -> Meta:
    return Meta(extra=say(**words))


_FilePath = Annotated[
    str,
    Meta(
        pattern=r"\S", extra=say(expected="a file path", invalid="expected a file path, got {got}")
    ),
]
_Tag = Annotated[
    str, Meta(min_length=1, extra=say(invalid="empty tag: each tag must be a non-empty string"))
]


@dataclass(frozen=True)
class ApiConfig:
    """How to reach the SMS Partner API, and how politely."""

    url: Annotated[str, _says(expected="a URL")] = DEFAULT_API_URL
    # The key in use, whichever source won (see _api_key): never shown, not even its type.
    key: Annotated[str, _says(secret=True)] = field(default="", repr=False)
    # Read into `key` when the file is loaded (so None in a loaded configuration).
    key_file: (
        Annotated[str, Meta(pattern=r"\S", extra=say(expected="a file path", invalid="empty path"))]
        | None
    ) = None
    timeout: PositiveSeconds = 10.0
    concurrency: Annotated[int, Meta(ge=1, le=64)] = 4
    # le: the largest float, so that infinity (which msgspec accepts as a float) is refused.
    max_requests_per_second: Annotated[
        float,
        Meta(
            ge=0,
            le=sys.float_info.max,
            extra=say(
                expected="a number (0 means unlimited)",
                invalid="must be 0 (unlimited) or more, got {got}",
            ),
        ),
    ] = 5.0
    max_pages: Annotated[int, Meta(ge=1)] = 1000
    retries: Annotated[int, Meta(ge=0, le=10)] = 2
    # Bytes of one answer, after decompression (see docs/failure-modes.md).
    max_response_bytes: ByteSize = 8 * 1024 * 1024


@dataclass(frozen=True)
class CollectionConfig:
    """When the tags are collected: on each scrape, or in the background."""

    mode: Literal["scrape", "background"] = "scrape"
    interval: PositiveSeconds = 60.0
    min_interval: Seconds = 0.0
    keep_last_values: bool = False
    # Incremental collection (see collection/state.py): re-read only the pages that can change.
    incremental: bool = True
    report_deadline: PositiveSeconds = 48 * 3600.0  # after this, a Waiting message gets no report
    # A quiet tag's total is read at least this often (s): a new message on it is counted
    # within this time. Ten minutes: 0.1 request a tag a minute, so 200 finished campaigns
    # cost 20 requests a minute at 5 requests/s (about 7 % of the API's rate).
    cold_check_interval: PositiveSeconds = 600.0
    # SQLite file keeping the page state across restarts; made absolute (from the config
    # file's directory) when the file is loaded.
    state_file: _FilePath | None = None


@dataclass(frozen=True)
class ProbeConfig:
    """Which tags ``/probe?tag=...`` may collect: those listed, and those matching the pattern
    (the whole tag). Nothing else: a probe costs API calls."""

    allowed_tags: Annotated[frozenset[_Tag], _says(expected="a list of tags")] = frozenset()
    allowed_pattern: re.Pattern[str] | None = None

    def allows(self, tag: str) -> bool:
        if tag in self.allowed_tags:
            return True
        return self.allowed_pattern is not None and self.allowed_pattern.fullmatch(tag) is not None

    @property
    def enabled(self) -> bool:
        return bool(self.allowed_tags) or self.allowed_pattern is not None


@dataclass(frozen=True)
class AccountConfig:
    """Whether the account's credit is read (``GET /v1/me``, once per round)."""

    enabled: bool = False


@dataclass(frozen=True)
class TemplateEntry:
    """A rolling tag in the tags list (checked further by tags.parse_template)."""

    template: Annotated[str, _says(missing="a tag with a {date:FORMAT} placeholder")]
    days: Annotated[
        int, Meta(ge=1, le=MAX_DAYS, extra=say(expected=f"an integer between 1 and {MAX_DAYS}"))
    ] = DEFAULT_DAYS
    timezone: Annotated[str, _says(expected="an IANA time zone name such as Europe/Paris")] = (
        DEFAULT_TIMEZONE
    )


@dataclass(frozen=True)
class ConfigFile:
    """The whole file. ``tags`` is checked further by _tags (required unless probe is set)."""

    expected: ClassVar[str] = "a mapping with the keys api, collection, tags"

    api: ApiConfig = field(default_factory=ApiConfig)
    collection: CollectionConfig = field(default_factory=CollectionConfig)
    tags: (
        Annotated[
            tuple[_Tag | TemplateEntry, ...],
            _says(expected="a list of tags"),
        ]
        | None
    ) = None
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    account: AccountConfig = field(default_factory=AccountConfig)


@dataclass(frozen=True)
class Config:
    """The whole, checked configuration.

    ``tags`` are the static tags; ``tag_templates`` add, each round, the tags of the last days
    (see :mod:`smsp_exporter.tags`)."""

    tags: tuple[str, ...]
    api: ApiConfig = field(default_factory=ApiConfig)
    collection: CollectionConfig = field(default_factory=CollectionConfig)
    tag_templates: tuple[TagTemplate, ...] = ()
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    account: AccountConfig = field(default_factory=AccountConfig)
    source: str = "<memory>"
    key_source: str = ""
    warnings: tuple[str, ...] = ()


_LINE_BREAKS = {ord(c): repr(c)[1:-1] for c in "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"}


def _one_line(text: str) -> str:
    """Escape every character that ``str.splitlines`` would break a line on."""
    return text.translate(_LINE_BREAKS)


class ConfigError(Exception):
    """The configuration is invalid. ``str(err)`` is one line: ``source: key: problem``."""

    def __init__(self, source: str, key: str, problem: str) -> None:
        self.source = _one_line(str(source))
        self.key = _one_line(str(key))
        self.problem = _one_line(str(problem))
        super().__init__(self.source, self.key, self.problem)

    def __str__(self) -> str:
        return f"{self.source}: {self.key}: {self.problem}"


# --------------------------------------------------------------------------------------------
# Loading


def load_config(path: str | os.PathLike, env: Mapping[str, str] | None = None) -> Config:
    """Read and check a YAML configuration file. Raises ``ConfigError`` for anything wrong."""
    source = os.fsdecode(path)
    try:
        text, data = read_yaml(source)
    except YamlFileError as err:
        key = TOP_LEVEL if err.part == "file" else YAML_SYNTAX
        raise ConfigError(source, key, err.problem) from None
    if not text.strip():
        raise ConfigError(source, TOP_LEVEL, "the file is empty: it needs at least a tags list")
    if data is None:
        raise ConfigError(
            source, TOP_LEVEL, "the file holds no settings (only comments?): it needs a tags list"
        )
    base_dir = Path(source).absolute().parent
    try:
        return config_from_dict(data, source=source, env=env, base_dir=base_dir)
    except ConfigError as err:
        # config_from_dict scrubs the api.key it finds; a damaged file may have lost that
        # entry and carry the key inside another token (an unknown key's name): scrub what
        # follows the word "key" in the text too.
        uncommented = _COMMENT.sub("", text)  # "the key itself" in a comment is no key
        hidden = tuple(set(_AFTER_KEY_WORD.findall(uncommented)))
        raise ConfigError(
            _scrub(err.source, hidden), _scrub(err.key, hidden), _scrub(err.problem, hidden)
        ) from None


_COMMENT = re.compile(r"(?:^|[ \t])#[^\n]*", re.MULTILINE)
# A token after the word "key" and a few separators (": ", "{ ", "= "): a key, or what is left
# of one in a damaged file.
_AFTER_KEY_WORD = re.compile(
    r"""key[^\w\n]{1,4}([^\s'"{}\[\],#:]{""" + str(_MIN_SCRUB_LENGTH) + ",})",
    re.IGNORECASE,
)


def config_from_dict(
    data: object,
    source: str = "<memory>",
    env: Mapping[str, str] | None = None,
    base_dir: str | os.PathLike | None = None,
) -> Config:
    """Check an already parsed configuration (the YAML document as Python objects).

    ``base_dir`` is where a relative ``api.key_file`` is looked for (default: the current
    directory). ``env`` defaults to ``os.environ``.
    """
    env = os.environ if env is None else env
    secrets = _secrets_in(data, env)
    try:
        config = _check(data, str(source), env, Path(base_dir) if base_dir is not None else None)
    except ConfigError as err:
        raise ConfigError(
            _scrub(err.source, secrets), _scrub(err.key, secrets), _scrub(err.problem, secrets)
        ) from None
    if any(secret in warning for warning in config.warnings for secret in secrets):
        return replace(config, warnings=tuple(_scrub(w, secrets) for w in config.warnings))
    return config


def _secrets_in(data: object, env: Mapping[str, str]) -> tuple[str, ...]:
    """The key values that may be known before checking: they are scrubbed from every message."""
    found = []
    if isinstance(data, Mapping):
        api = data.get("api")
        if isinstance(api, Mapping) and isinstance(api.get("key"), str):
            found.append(api["key"].strip())
    found.append(str(env.get(ENV_KEY, "")).strip())
    return tuple(s for s in found if len(s) >= _MIN_SCRUB_LENGTH)


def _scrub(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        text = text.replace(secret, "<redacted>")
    return text


# --------------------------------------------------------------------------------------------
# Checking: the declared shape first, then the rules no type can say


def _check(data: object, source: str, env: Mapping[str, str], base_dir: Path | None) -> Config:
    def fail(key: str, problem: str) -> NoReturn:
        raise ConfigError(source, key, problem)

    if data is None:
        fail(TOP_LEVEL, "the configuration is empty: it needs at least a tags list")
    try:
        # A null setting means its default; a null tags list is "empty", not "missing".
        file = convert(drop_nulls(data, keep=("tags",)), ConfigFile)
    except SchemaError as err:
        fail(err.key or TOP_LEVEL, err.problem)
    assert isinstance(data, Mapping)  # convert refused anything else
    url = _check_url(file.api.url, fail)
    tags, templates, warnings = _tags(file.tags, "tags" in data, file.probe.enabled, fail)
    key, key_source = _api_key(file.api, env, base_dir, fail)
    return Config(
        tags=tags,
        api=replace(file.api, url=url, key=key, key_file=None),
        collection=_collection(file.collection, base_dir),
        tag_templates=templates,
        probe=file.probe,
        account=file.account,
        source=source,
        key_source=key_source,
        warnings=(*_url_warnings(url), *warnings),
    )


_Fail = Callable[[str, str], NoReturn]


def _collection(collection: CollectionConfig, base_dir: Path | None) -> CollectionConfig:
    if collection.state_file is None:
        return collection
    return replace(collection, state_file=str(_absolute(collection.state_file, base_dir)))


def _tags(
    entries: tuple[str | TemplateEntry, ...] | None, present: bool, probe_only: bool, fail: _Fail
) -> tuple[tuple[str, ...], tuple[TagTemplate, ...], tuple[str, ...]]:
    """Static tags, templates and warnings. With ``probe`` set, no tag is needed."""
    if not entries:
        if probe_only:
            return (), (), ()
        if not present:
            fail("tags", "missing: list the SMS Partner tags to export")
        fail("tags", "empty: list at least one SMS Partner tag")
    first_seen: dict[str, int] = {}
    static: list[str] = []
    templates: list[TagTemplate] = []
    warnings: list[str] = []
    for index, entry in enumerate(entries):
        path = f"tags[{index}]"
        if isinstance(entry, str):
            if not _is_text(entry):
                # YAML's "\ud83c\udf84" escapes give two halves of a character, not the
                # character: such a tag can never be sent (nor match).
                fail(
                    path,
                    "not valid text (a lone surrogate, e.g. from an escape like \\ud83c): "
                    "write the character itself",
                )
            if entry in first_seen:
                fail(path, f"duplicate tag {entry!r} (also tags[{first_seen[entry]}])")
            first_seen[entry] = index
            static.append(entry)
            warnings.extend(_tag_warnings(path, entry))
            continue
        try:
            template = parse_template(entry.template, entry.days, entry.timezone)
        except ValueError as exc:
            key, _, problem = str(exc).partition(": ")
            fail(f"{path}.{key}", problem)
        if template.template in first_seen:
            also = first_seen[template.template]
            fail(f"{path}.template", f"duplicate template (also tags[{also}])")
        first_seen[template.template] = index
        templates.append(template)
        warnings.extend(_tag_warnings(f"{path}.template", template.expand(0)[0]))
    return tuple(static), tuple(templates), tuple(warnings)


def _is_text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _tag_warnings(path: str, tag: str) -> list[str]:
    broken = []
    if len(tag) > TAG_MAX_LENGTH:
        broken.append(f"{len(tag)} characters")
    if any(c.isupper() for c in tag):
        broken.append("uppercase letters")
    if any(c.isspace() for c in tag):
        broken.append("whitespace")
    if not broken:
        return []
    listed = broken[0] if len(broken) == 1 else ", ".join(broken[:-1]) + " and " + broken[-1]
    return [
        f"{path}: tag {tag!r} can never match: SMS Partner tags are at most "
        f"{TAG_MAX_LENGTH} characters, lowercase, without spaces (this one has {listed})"
    ]


def _check_url(value: str, fail: _Fail) -> str:
    if not value:
        fail("api.url", "empty: remove it to use the default, " + DEFAULT_API_URL)
    if any(c.isspace() or not c.isprintable() for c in value):
        fail("api.url", "must not contain whitespace or control characters")
    if "?" in value or "#" in value:
        # Checked first, and the URL not shown: a query string may hold an API key.
        fail(
            "api.url",
            "must not contain a query string (?...) or a fragment (#...): "
            "the exporter adds the API key and the tag itself",
        )
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        fail("api.url", "not a valid URL (check the host name and port)")
    if parts.scheme not in ("http", "https"):
        fail("api.url", f"must start with http:// or https://, got {_describe(value)}")
    if not parts.hostname:
        fail("api.url", "has no host name")
    # The exporter appends "/bulk-status-by-tag" and "/me": a wrong path passes every other
    # check and only shows at run time as an API "404" on every tag.
    url_path = parts.path.rstrip("/")
    last = url_path.rpartition("/")[2]
    if last in _API_ENDPOINTS:
        fail(
            "api.url",
            f"ends with the endpoint /{last}: give the API's base URL "
            f"(e.g. {DEFAULT_API_URL}); the exporter appends the endpoints itself",
        )
    if parts.hostname == _OFFICIAL_HOST and url_path != _API_PATH:
        fail(
            "api.url",
            f"the SMS Partner API is at {DEFAULT_API_URL}: the path must be {_API_PATH}, "
            f"not {url_path or '/'!r}",
        )
    return value.rstrip("/")


def _url_warnings(url: str) -> list[str]:
    """Another host (a proxy, a mirror) may serve the API under any path, so a path without
    the version prefix is only a warning there (on the official host it is an error)."""
    url_path = urlsplit(url).path.rstrip("/")
    if url_path.endswith(_API_PATH):
        return []
    return [
        f"api.url: the path {url_path or '/'!r} does not end with {_API_PATH}, the API's "
        f"version prefix: requests will go to {url_path}/bulk-status-by-tag, which SMS "
        "Partner answers with error 404 (fine only if this host is a proxy that maps it)"
    ]


# -- the API key: SMSP_API_KEY, then SMSP_API_KEY_FILE, then api.key, then api.key_file


def _api_key(
    api: ApiConfig, env: Mapping[str, str], base_dir: Path | None, fail: _Fail
) -> tuple[str, str]:
    if api.key and api.key_file is not None:
        fail("api.key_file", "cannot be used together with api.key: set only one of them")
    # Even when the environment's key wins: left active, it is used the day it does not.
    _not_a_placeholder("api.key", api.key.strip(), fail)
    env_key = str(env.get(ENV_KEY) or "").strip()
    if env_key:
        return _checked_key(ENV_KEY, env_key, fail), ENV_KEY
    env_file = str(env.get(ENV_KEY_FILE) or "")
    if env_file.strip():
        key = _read_key_file(ENV_KEY_FILE, _absolute(env_file, None), fail)
        return _checked_key(ENV_KEY_FILE, key, fail), ENV_KEY_FILE
    if api.key.strip():
        return _checked_key("api.key", api.key.strip(), fail), "api.key"
    if api.key_file is not None:
        key = _read_key_file("api.key_file", _absolute(api.key_file, base_dir), fail)
        return _checked_key("api.key_file", key, fail), "api.key_file"
    fail("api.key", f"missing: set api.key, api.key_file or the {ENV_KEY} environment variable")


def _read_key_file(origin: str, path: Path, fail: _Fail) -> str:
    # The path is never printed: a key pasted where its file's path belongs would be.
    try:
        with path.open("rb") as handle:
            raw = handle.read(_MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        fail(origin, f"cannot read the file it names: {os_reason(exc)}")
    if len(raw) > _MAX_KEY_FILE_BYTES:
        fail(origin, "the file it names is too large to hold an API key")
    try:
        key = raw.decode("utf-8-sig").strip()
    except UnicodeDecodeError:
        fail(origin, "the file it names is not UTF-8 text")
    if not key:
        fail(origin, "the file it names is empty")
    return key


def _not_a_placeholder(origin: str, key: str, fail: _Fail) -> None:
    if key.lower() in _PLACEHOLDER_KEYS:
        # Not echoed: the message names where it came from, which is enough to find it.
        fail(
            origin,
            "is the documentation's placeholder, not an API key: "
            "put the key of your SMS Partner account there",
        )


def _checked_key(origin: str, key: str, fail: _Fail) -> str:
    _not_a_placeholder(origin, key, fail)
    if any(c.isspace() or not c.isprintable() for c in key):
        fail(
            origin,
            "the API key contains whitespace or control characters "
            "(an API key is a single word: check for a copy-paste error)",
        )
    return key


# --------------------------------------------------------------------------------------------
# Helpers


def _absolute(path: str, base_dir: Path | None) -> Path:
    expanded = Path(os.path.expanduser(path))
    if not expanded.is_absolute():
        expanded = (base_dir if base_dir is not None else Path.cwd()) / expanded
    return Path(os.path.abspath(expanded))
