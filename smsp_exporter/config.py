"""The YAML configuration file: reading it, checking every value, and saying clearly what is wrong.

A configuration error is one line, ``SOURCE: KEY: PROBLEM``, where KEY is the full path of the
offending setting (``api.timeout``, ``tags[2]``), ``(top level)`` for a problem with the whole
file, or ``(yaml)`` for a YAML syntax error. No message ever contains the API key.

    api:
      url: https://api.smspartner.fr/v1
      key: "..."             # or key_file: /path; SMSP_API_KEY / SMSP_API_KEY_FILE override both
      timeout: 10s
      concurrency: 4
      max_requests_per_second: 5
      max_pages: 1000
      retries: 2
    collection:
      mode: scrape           # scrape | background
      interval: 60s
      min_interval: 0s
      keep_last_values: false
      incremental: true      # re-read only the pages that can change (see incremental.py)
      report_deadline: 48h   # a Waiting message older than this is final
      state_file: /var/lib/smsp-exporter/state.db   # optional: page state across restarts
    tags:
      - montag
      - template: "relance-{date:%Y%m%d}"   # rolling tags, see tags.py
        days: 7
        timezone: Europe/Paris
    probe:                   # which tags /probe?tag=... may collect (default: none)
      allowed_tags: [a, b]
      allowed_pattern: "^promo-[a-z0-9-]+$"  # matched against the whole tag
    account:
      enabled: false         # read the account's credit (GET /v1/me) once per round

A ``null`` value (``timeout:`` with nothing after it) means "use the default".
"""

from __future__ import annotations

import datetime
import difflib
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

import yaml

from .tags import TagTemplate, parse_template

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


@dataclass(frozen=True)
class ApiConfig:
    """How to reach the SMS Partner API, and how politely."""

    url: str = DEFAULT_API_URL
    key: str = field(default="", repr=False)
    timeout: float = 10.0
    concurrency: int = 4
    max_requests_per_second: float = 5.0
    max_pages: int = 1000
    retries: int = 2
    # Bytes of one answer, after decompression (see README, "Failure behaviour").
    max_response_bytes: int = 8 * 1024 * 1024


@dataclass(frozen=True)
class CollectionConfig:
    """When the tags are collected: on each scrape, or in the background."""

    mode: str = "scrape"
    interval: float = 60.0
    min_interval: float = 0.0
    keep_last_values: bool = False
    # Incremental collection (see incremental.py): re-read only the pages that can change.
    incremental: bool = True
    report_deadline: float = 48 * 3600.0  # after this, a Waiting message gets no report
    state_file: str | None = None  # SQLite file keeping the page state across restarts


@dataclass(frozen=True)
class ProbeConfig:
    """Which tags ``/probe?tag=...`` may collect: those listed, and those matching the pattern
    (the whole tag). Nothing else: a probe costs API calls."""

    allowed_tags: frozenset[str] = frozenset()
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
class Config:
    """The whole, checked configuration.

    ``tags`` are the static tags; ``tag_templates`` add, each round, the tags of the last days
    (see :mod:`smsp_exporter.tags`)."""

    tags: tuple[str, ...]
    api: ApiConfig = ApiConfig()
    collection: CollectionConfig = CollectionConfig()
    tag_templates: tuple[TagTemplate, ...] = ()
    probe: ProbeConfig = ProbeConfig()
    account: AccountConfig = AccountConfig()
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
# Durations

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
            raise ValueError(f"invalid duration {_describe(value)}: too large") from None
        return _check_seconds(value, seconds)
    if not isinstance(value, str):
        raise ValueError(f"invalid duration {_describe(value)}: {_DURATION_HELP}")
    text = value.strip()
    if text.startswith("-") and (_PLAIN_SECONDS.fullmatch(text[1:]) or _is_duration(text[1:])):
        raise ValueError(f"invalid duration {_describe(value)}: must not be negative")
    if _PLAIN_SECONDS.fullmatch(text):
        return _check_seconds(value, float(text))
    match = _DURATION.fullmatch(text)
    if not text or match is None or not any(match.groupdict().values()):
        raise ValueError(f"invalid duration {_describe(value)}: {_DURATION_HELP}")
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
        raise ValueError(f"invalid duration {_describe(value)}: must be a finite number")
    if seconds < 0:
        raise ValueError(f"invalid duration {_describe(value)}: must not be negative")
    return seconds


# --------------------------------------------------------------------------------------------
# Loading


class _Loader(yaml.SafeLoader):
    """The safe loader, refusing a key written twice in one mapping (YAML would keep the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[object, yaml.Mark] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                first = seen.get(key)
            except TypeError:  # unhashable: the base class reports it
                continue
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {_describe(key)} (first at line {first.line + 1})",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


def load_config(path: str | os.PathLike, env: Mapping[str, str] | None = None) -> Config:
    """Read and check a YAML configuration file. Raises ``ConfigError`` for anything wrong."""
    source = os.fsdecode(path)
    try:
        raw = Path(source).read_bytes()
    except OSError as exc:
        raise ConfigError(source, TOP_LEVEL, f"cannot read the file: {_os_reason(exc)}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            source, TOP_LEVEL, f"not UTF-8 text (invalid byte at offset {exc.start})"
        ) from None
    if not text.strip():
        raise ConfigError(source, TOP_LEVEL, "the file is empty: it needs at least a tags list")
    try:
        data = yaml.load(text, Loader=_Loader)  # a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        raise ConfigError(source, YAML_SYNTAX, _yaml_problem(exc)) from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        raise ConfigError(
            source, YAML_SYNTAX, f"line {line}: character {exc.character!r} is not allowed in YAML"
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(source, YAML_SYNTAX, f"invalid YAML ({type(exc).__name__})") from None
    except RecursionError:
        raise ConfigError(source, YAML_SYNTAX, "the document is nested too deeply") from None
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


def _yaml_problem(exc: yaml.MarkedYAMLError) -> str:
    """Where and what, from PyYAML's error, without the quoted excerpt of the file (it could
    hold the API key)."""
    problem = exc.problem or exc.context or "invalid YAML"
    mark = exc.problem_mark or exc.context_mark
    text = f"line {mark.line + 1} column {mark.column + 1}: {problem}" if mark else problem
    if exc.context and exc.problem:
        text += f" ({exc.context}"
        if exc.context_mark is not None:
            text += f" at line {exc.context_mark.line + 1} column {exc.context_mark.column + 1}"
        text += ")"
    return text


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
        config = _Builder(source, env, base_dir).build(data)
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
# Checking

_TOP_KEYS = ("account", "api", "collection", "probe", "tags")
_API_KEYS = (
    "url",
    "key",
    "key_file",
    "timeout",
    "concurrency",
    "max_requests_per_second",
    "max_pages",
    "retries",
    "max_response_bytes",
)
_COLLECTION_KEYS = (
    "mode",
    "interval",
    "min_interval",
    "keep_last_values",
    "incremental",
    "report_deadline",
    "state_file",
)
_TEMPLATE_KEYS = ("template", "days", "timezone")
_PROBE_KEYS = ("allowed_tags", "allowed_pattern")
_ACCOUNT_KEYS = ("enabled",)
_MODES = ("scrape", "background")


class _Builder:
    def __init__(
        self, source: str, env: Mapping[str, str], base_dir: str | os.PathLike | None
    ) -> None:
        self.source = str(source)
        self.env = env
        self.base_dir = Path(base_dir) if base_dir is not None else None

    def fail(self, key: str, problem: str) -> NoReturn:
        raise ConfigError(self.source, key, problem)

    def build(self, data: object) -> Config:
        if data is None:
            self.fail(TOP_LEVEL, "the configuration is empty: it needs at least a tags list")
        if not isinstance(data, Mapping):
            self.fail(
                TOP_LEVEL,
                f"expected a mapping with the keys api, collection, tags, got {_describe(data)}",
            )
        self.check_keys(data, "", _TOP_KEYS)
        api_data = self.section(data, "api", _API_KEYS)
        collection_data = self.section(data, "collection", _COLLECTION_KEYS)
        probe_data = self.section(data, "probe", _PROBE_KEYS)
        account_data = self.section(data, "account", _ACCOUNT_KEYS)
        api = self.api(api_data)
        collection = self.collection(collection_data)
        probe = self.probe(probe_data)
        tags, templates, warnings = self.tags(data, probe_only=probe.enabled)
        warnings = (*self.url_warnings(str(api["url"])), *warnings)
        key, key_source = self.api_key(api_data)
        return Config(
            tags=tags,
            api=ApiConfig(key=key, **api),
            collection=CollectionConfig(**collection),
            tag_templates=templates,
            probe=probe,
            account=AccountConfig(enabled=self.boolean(account_data, "account", "enabled", False)),
            source=self.source,
            key_source=key_source,
            warnings=warnings,
        )

    # -- structure

    def check_keys(self, data: Mapping, prefix: str, allowed: tuple[str, ...]) -> None:
        for name in data:
            if name in allowed:
                continue
            path = _join(prefix, name)
            close = difflib.get_close_matches(str(name), allowed, n=1)
            if close:
                self.fail(path, f"unknown key (did you mean {close[0]!r}?)")
            self.fail(path, f"unknown key (known keys: {', '.join(allowed)})")

    def section(self, data: Mapping, name: str, allowed: tuple[str, ...]) -> Mapping:
        value = data.get(name)
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            # Only the type: a value here may be a misplaced secret (``api: <the key>``).
            self.fail(name, f"expected a mapping of settings, got {_kind(value)}")
        self.check_keys(value, name, allowed)
        return value

    # -- sections

    def api(self, data: Mapping) -> dict[str, Any]:
        defaults = ApiConfig()
        return {
            "url": self.url(data.get("url")),
            "timeout": self.duration(data, "api", "timeout", defaults.timeout, positive=True),
            "concurrency": self.integer(data, "api", "concurrency", defaults.concurrency, 1, 64),
            "max_requests_per_second": self.rate(data.get("max_requests_per_second")),
            "max_pages": self.integer(data, "api", "max_pages", defaults.max_pages, 1, None),
            "retries": self.integer(data, "api", "retries", defaults.retries, 0, 10),
            "max_response_bytes": self.size(data.get("max_response_bytes")),
        }

    def collection(self, data: Mapping) -> dict[str, Any]:
        defaults = CollectionConfig()
        mode = data.get("mode")
        if mode is None:
            mode = defaults.mode
        elif not isinstance(mode, str) or mode not in _MODES:
            self.fail(
                "collection.mode", f"must be one of {', '.join(_MODES)}, got {_describe(mode)}"
            )
        keep = data.get("keep_last_values")
        if keep is None:
            keep = defaults.keep_last_values
        elif not isinstance(keep, bool):
            self.fail(
                "collection.keep_last_values", f"expected true or false, got {_describe(keep)}"
            )
        return {
            "mode": mode,
            "interval": self.duration(
                data, "collection", "interval", defaults.interval, positive=True
            ),
            "min_interval": self.duration(
                data, "collection", "min_interval", defaults.min_interval, positive=False
            ),
            "keep_last_values": keep,
            "incremental": self.boolean(data, "collection", "incremental", True),
            "report_deadline": self.duration(
                data, "collection", "report_deadline", defaults.report_deadline, positive=True
            ),
            "state_file": self.state_file(data.get("state_file")),
        }

    def state_file(self, value: object) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            self.fail("collection.state_file", f"expected a file path, got {_describe(value)}")
        return str(_absolute(value, self.base_dir))

    def tags(
        self, data: Mapping, *, probe_only: bool = False
    ) -> tuple[tuple[str, ...], tuple[TagTemplate, ...], tuple[str, ...]]:
        """Static tags, templates and warnings. With ``probe`` set, no tag is needed."""
        if "tags" not in data:
            if probe_only:
                return (), (), ()
            self.fail("tags", "missing: list the SMS Partner tags to export")
        value = data["tags"]
        if not value and probe_only and isinstance(value, list | tuple | type(None)):
            return (), (), ()
        if value is None:
            self.fail("tags", "empty: list at least one SMS Partner tag")
        if not isinstance(value, list | tuple):
            hint = f" (write it as a list: tags: [{value}])" if isinstance(value, str) else ""
            self.fail("tags", f"expected a list of tags, got {_describe(value)}{hint}")
        if not value:
            self.fail("tags", "empty: list at least one SMS Partner tag")
        first_seen: dict[str, int] = {}
        static: list[str] = []
        templates: list[TagTemplate] = []
        warnings = []
        for index, tag in enumerate(value):
            path = f"tags[{index}]"
            if isinstance(tag, Mapping):
                template = self.template(tag, path)
                if template.template in first_seen:
                    self.fail(
                        f"{path}.template",
                        f"duplicate template (also tags[{first_seen[template.template]}])",
                    )
                first_seen[template.template] = index
                templates.append(template)
                warnings.extend(self.tag_warnings(f"{path}.template", template.expand(0)[0]))
                continue
            if not isinstance(tag, str):
                self.fail(path, f"expected a string, got {_describe(tag)}{_quote_hint(tag)}")
            if not tag:
                self.fail(path, "empty tag: each tag must be a non-empty string")
            if tag in first_seen:
                self.fail(path, f"duplicate tag {tag!r} (also tags[{first_seen[tag]}])")
            first_seen[tag] = index
            static.append(tag)
            warnings.extend(self.tag_warnings(path, tag))
        return tuple(static), tuple(templates), tuple(warnings)

    def tag_warnings(self, path: str, tag: str) -> list[str]:
        broken = _tag_rules_broken(tag)
        if not broken:
            return []
        return [
            f"{path}: tag {tag!r} can never match: SMS Partner tags are at most "
            f"{TAG_MAX_LENGTH} characters, lowercase, without spaces "
            f"(this one has {_and(broken)})"
        ]

    def template(self, data: Mapping, path: str) -> TagTemplate:
        self.check_keys(data, path, _TEMPLATE_KEYS)
        if "template" not in data:
            self.fail(f"{path}.template", "missing: a tag with a {date:FORMAT} placeholder")
        try:
            return parse_template(data.get("template"), data.get("days"), data.get("timezone"))
        except ValueError as exc:
            key, _, problem = str(exc).partition(": ")
            self.fail(f"{path}.{key}", problem)

    def probe(self, data: Mapping) -> ProbeConfig:
        listed = data.get("allowed_tags")
        if listed is None:
            listed = []
        if not isinstance(listed, list | tuple):
            self.fail("probe.allowed_tags", f"expected a list of tags, got {_describe(listed)}")
        for index, tag in enumerate(listed):
            if not isinstance(tag, str) or not tag:
                self.fail(
                    f"probe.allowed_tags[{index}]",
                    f"expected a non-empty string, got {_describe(tag)}{_quote_hint(tag)}",
                )
        pattern = data.get("allowed_pattern")
        compiled = None
        if pattern is not None:
            if not isinstance(pattern, str) or not pattern:
                self.fail("probe.allowed_pattern", f"expected a regex, got {_describe(pattern)}")
            try:
                compiled = re.compile(pattern)
            except re.error as exc:
                self.fail("probe.allowed_pattern", f"invalid regular expression: {exc}")
        return ProbeConfig(frozenset(listed), compiled)

    # -- the API key

    def api_key(self, data: Mapping) -> tuple[str, str]:
        key = data.get("key")
        key_file = data.get("key_file")
        if key is not None and not isinstance(key, str):
            # Only the type: the value is (a mistyped) secret.
            self.fail("api.key", f"expected a string, got {_kind(key)}")
        if key_file is not None:
            if not isinstance(key_file, str):
                self.fail("api.key_file", f"expected a file path, got {_describe(key_file)}")
            if not key_file.strip():
                self.fail("api.key_file", "empty path")
        if key is not None and key_file is not None:
            self.fail("api.key_file", "cannot be used together with api.key: set only one of them")
        if key is not None:
            # Even when the environment's key wins: left active, it is used the day it does not.
            self.not_a_placeholder("api.key", key.strip())

        env_key = str(self.env.get(ENV_KEY) or "").strip()
        if env_key:
            return self.checked_key(ENV_KEY, env_key), ENV_KEY
        env_file = str(self.env.get(ENV_KEY_FILE) or "")
        if env_file.strip():
            path = _absolute(env_file, None)
            return self.checked_key(ENV_KEY_FILE, self.read_key_file(ENV_KEY_FILE, path)), (
                ENV_KEY_FILE
            )
        if key is not None and key.strip():
            return self.checked_key("api.key", key.strip()), "api.key"
        if key_file is not None:
            path = _absolute(key_file, self.base_dir)
            return self.checked_key("api.key_file", self.read_key_file("api.key_file", path)), (
                "api.key_file"
            )
        self.fail(
            "api.key", f"missing: set api.key, api.key_file or the {ENV_KEY} environment variable"
        )

    def read_key_file(self, origin: str, path: Path) -> str:
        # The path is never printed: a key pasted where its file's path belongs would be.
        try:
            with path.open("rb") as handle:
                raw = handle.read(_MAX_KEY_FILE_BYTES + 1)
        except OSError as exc:
            self.fail(origin, f"cannot read the file it names: {_os_reason(exc)}")
        if len(raw) > _MAX_KEY_FILE_BYTES:
            self.fail(origin, "the file it names is too large to hold an API key")
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            self.fail(origin, "the file it names is not UTF-8 text")
        key = text.strip()
        if not key:
            self.fail(origin, "the file it names is empty")
        return key

    def not_a_placeholder(self, origin: str, key: str) -> None:
        if key.lower() in _PLACEHOLDER_KEYS:
            # Not echoed: the message names where it came from, which is enough to find it.
            self.fail(
                origin,
                "is the documentation's placeholder, not an API key: "
                "put the key of your SMS Partner account there",
            )

    def checked_key(self, origin: str, key: str) -> str:
        self.not_a_placeholder(origin, key)
        if any(c.isspace() or not c.isprintable() for c in key):
            self.fail(
                origin,
                "the API key contains whitespace or control characters "
                "(an API key is a single word: check for a copy-paste error)",
            )
        return key

    # -- values

    def url(self, value: object) -> str:
        path = "api.url"
        if value is None:
            return DEFAULT_API_URL
        if not isinstance(value, str):
            self.fail(path, f"expected a URL, got {_describe(value)}")
        if not value:
            self.fail(path, "empty: remove it to use the default, " + DEFAULT_API_URL)
        if any(c.isspace() or not c.isprintable() for c in value):
            self.fail(path, "must not contain whitespace or control characters")
        if "?" in value or "#" in value:
            # Checked first, and the URL not shown: a query string may hold an API key.
            self.fail(
                path,
                "must not contain a query string (?...) or a fragment (#...): "
                "the exporter adds the API key and the tag itself",
            )
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - raises ValueError for a bad port
        except ValueError:
            self.fail(path, "not a valid URL (check the host name and port)")
        if parts.scheme not in ("http", "https"):
            self.fail(path, f"must start with http:// or https://, got {_describe(value)}")
        if not parts.hostname:
            self.fail(path, "has no host name")
        # The exporter appends "/bulk-status-by-tag" and "/me": a wrong path passes every other
        # check and only shows at run time as an API "404" on every tag.
        url_path = parts.path.rstrip("/")
        last = url_path.rpartition("/")[2]
        if last in _API_ENDPOINTS:
            self.fail(
                path,
                f"ends with the endpoint /{last}: give the API's base URL "
                f"(e.g. {DEFAULT_API_URL}); the exporter appends the endpoints itself",
            )
        if parts.hostname == _OFFICIAL_HOST and url_path != _API_PATH:
            self.fail(
                path,
                f"the SMS Partner API is at {DEFAULT_API_URL}: the path must be {_API_PATH}, "
                f"not {url_path or '/'!r}",
            )
        return value.rstrip("/")

    def url_warnings(self, url: str) -> list[str]:
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

    def boolean(self, data: Mapping, section: str, name: str, default: bool) -> bool:
        value = data.get(name)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.fail(f"{section}.{name}", f"expected true or false, got {_describe(value)}")
        return value

    def duration(
        self, data: Mapping, section: str, name: str, default: float, *, positive: bool
    ) -> float:
        path = f"{section}.{name}"
        value = data.get(name)
        if value is None:
            return default
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            self.fail(path, str(exc))
        if positive and seconds <= 0:
            self.fail(path, f"must be greater than 0, got {_describe(value)}")
        return seconds

    def integer(
        self, data: Mapping, section: str, name: str, default: int, low: int, high: int | None
    ) -> int:
        path = f"{section}.{name}"
        value = data.get(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(path, f"expected an integer, got {_describe(value)}")
        if high is not None and not low <= value <= high:
            self.fail(path, f"must be between {low} and {high}, got {_describe(value)}")
        if value < low:
            self.fail(path, f"must be at least {low}, got {_describe(value)}")
        return value

    def size(self, value: object) -> int:
        """``api.max_response_bytes``: bytes, as an integer or a string with a binary unit."""
        path = "api.max_response_bytes"
        if value is None:
            return ApiConfig().max_response_bytes
        if isinstance(value, bool) or not isinstance(value, int | str):
            self.fail(path, f"expected a size such as 8MiB or 8388608, got {_describe(value)}")
        if isinstance(value, str):
            match = _SIZE.fullmatch(value.strip())
            if match is None:
                self.fail(path, f"expected a size such as 8MiB or 8388608, got {_describe(value)}")
            value = int(match.group(1)) * _SIZE_UNITS[match.group(2) or "B"]
        low, high = _SIZE_UNITS["KiB"] * 64, _SIZE_UNITS["GiB"]
        if not low <= value <= high:
            self.fail(path, f"must be between 64KiB and 1GiB, got {_describe(value)}")
        return value

    def rate(self, value: object) -> float:
        path = "api.max_requests_per_second"
        if value is None:
            return ApiConfig().max_requests_per_second
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(path, f"expected a number (0 means unlimited), got {_describe(value)}")
        try:
            rate = float(value)
        except OverflowError:
            self.fail(path, f"too large, got {_describe(value)} (0 means unlimited)")
        if not math.isfinite(rate):
            self.fail(path, f"must be a finite number (0 means unlimited), got {_describe(value)}")
        if rate < 0:
            self.fail(path, f"must be 0 (unlimited) or more, got {_describe(value)}")
        return rate


# --------------------------------------------------------------------------------------------
# Helpers

_PLAIN_NAME = re.compile(r"[A-Za-z0-9_-]+")
_SIZE_UNITS = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}
_SIZE = re.compile(r"(\d{1,12})\s*(B|KiB|MiB|GiB)?")


def _join(prefix: str, name: object) -> str:
    shown = name if isinstance(name, str) and _PLAIN_NAME.fullmatch(name) else _describe(name)
    return f"{prefix}.{shown}" if prefix else str(shown)


def _absolute(path: str, base_dir: Path | None) -> Path:
    expanded = Path(os.path.expanduser(path))
    if not expanded.is_absolute():
        expanded = (base_dir if base_dir is not None else Path.cwd()) / expanded
    return Path(os.path.abspath(expanded))


def _os_reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe(value: object) -> str:
    """A value, as a message shows it: quoted strings, YAML spellings, no huge dumps."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({'true' if value else 'false'})"
    if isinstance(value, int | float):
        return _short(repr(value), 40)
    if isinstance(value, str):
        return repr(_short(value))
    if isinstance(value, datetime.date):
        return f"a date ({value.isoformat()})"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, bytes):
        return "binary data"
    return f"a {type(value).__name__}"


def _kind(value: object) -> str:
    """The type of a value, without the value (for the API key)."""
    if value is None:
        return "null"
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
    for types, name in kinds:
        if isinstance(value, types):
            return name
    return f"a {type(value).__name__}"


def _quote_hint(value: object) -> str:
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


def _tag_rules_broken(tag: str) -> list[str]:
    broken = []
    if len(tag) > TAG_MAX_LENGTH:
        broken.append(f"{len(tag)} characters")
    if any(c.isupper() for c in tag):
        broken.append("uppercase letters")
    if any(c.isspace() for c in tag):
        broken.append("whitespace")
    return broken


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
