"""Rolling tags: a tag template with a date, expanded to the concrete tags of the last N days.

A daily campaign tagged ``relance-20251124``, ``relance-20251125``… is followed with one entry::

    tags:
      - template: "relance-{date:%Y%m%d}"
        days: 7                  # today and the 6 days before: at most 7 tags
        timezone: Europe/Paris   # whose "today" (default UTC)

The only placeholder is ``{date:FORMAT}`` where FORMAT is a ``strftime`` format made of date
directives (``%Y %y %m %d %j %b %B %a %A %U %W %V %G %g %u %w %C`` and ``%%``). Expansion
happens once per collection round, so the set of tags moves at midnight without a restart; tags
a template produces twice (``{date:%Y%m}`` over 60 days) are collected once. The number of tags
is bounded by ``days``.
"""

from __future__ import annotations

import datetime
import re
import string
import zoneinfo
from dataclasses import dataclass

MAX_DAYS = 366
DEFAULT_DAYS = 7
DEFAULT_TIMEZONE = "UTC"

# strftime directives that depend on the date only, and never yield spaces.
_DATE_DIRECTIVES = frozenset("YymdjbBaAUWVGguwC%")
_DIRECTIVE = re.compile(r"%(.?)")


@dataclass(frozen=True)
class TagTemplate:
    """A checked tag template (build it with :func:`parse_template`)."""

    template: str
    days: int = DEFAULT_DAYS
    timezone: str = DEFAULT_TIMEZONE

    def expand(self, now: float) -> tuple[str, ...]:
        """The tags of the ``days`` days ending at ``now`` (Unix time), today first."""
        today = datetime.datetime.fromtimestamp(now, _zone(self.timezone)).date()
        tags = (
            self.template.format(date=today - datetime.timedelta(days=back))
            for back in range(self.days)
        )
        return tuple(dict.fromkeys(tags))


def _zone(name: str) -> datetime.tzinfo:
    if name == "UTC":
        return datetime.UTC
    return zoneinfo.ZoneInfo(name)


def parse_template(template: object, days: object, timezone: object) -> TagTemplate:
    """Check the three settings of a template; ``ValueError`` names which one is wrong:
    its message starts with ``template:``, ``days:`` or ``timezone:``."""
    if not isinstance(template, str) or not template:
        raise ValueError("template: expected a non-empty string such as 'relance-{date:%Y%m%d}'")
    try:
        fields = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"template: {exc} (write {{{{ and }}}} for literal braces)") from None
    dated = False
    for _, name, spec, conversion in fields:
        if name is None:
            continue
        if name != "date" or conversion is not None:
            raise ValueError(
                f"template: unknown placeholder {{{name}}}: the only one is {{date:FORMAT}}"
            )
        if not spec:
            raise ValueError("template: {date} needs a strftime format, e.g. {date:%Y%m%d}")
        directives = _DIRECTIVE.findall(spec)
        bad = [d for d in directives if d not in _DATE_DIRECTIVES]
        if bad:
            raise ValueError(
                f"template: %{bad[0]} is not a date directive "
                f"(use {' '.join('%' + d for d in sorted(_DATE_DIRECTIVES))})"
            )
        dated = dated or any(d != "%" for d in directives)
    if not dated:
        raise ValueError("template: needs a {date:FORMAT} placeholder, e.g. {date:%Y%m%d}")
    if days is None:
        days = DEFAULT_DAYS
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_DAYS:
        raise ValueError(f"days: must be an integer between 1 and {MAX_DAYS}, got {days!r}")
    if timezone is None:
        timezone = DEFAULT_TIMEZONE
    if not isinstance(timezone, str) or not timezone:
        raise ValueError("timezone: expected an IANA time zone name such as Europe/Paris")
    try:
        _zone(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"timezone: unknown time zone {timezone[:60]!r} (an IANA name such as Europe/Paris)"
        ) from None
    return TagTemplate(template, days, timezone)


def expand_tags(
    static: tuple[str, ...], templates: tuple[TagTemplate, ...], now: float
) -> dict[str, str | None]:
    """Every tag of a round, in order: the static tags (template ``None``), then each template's
    tags (mapped to the template). A tag already listed keeps its first origin."""
    tags: dict[str, str | None] = dict.fromkeys(static)
    for template in templates:
        for tag in template.expand(now):
            tags.setdefault(tag, template.template)
    return tags
