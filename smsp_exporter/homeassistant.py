"""The Home Assistant package for the configured tags (``smsp-exporter homeassistant-package``).

One RESTful sensor reads ``/api/v1/tags`` once per poll and keeps the answer's ``tags`` and
``account`` as attributes; one template sensor per figure reads them. Each template sensor has
an explicit ``availability``: the figure is a number in the latest answer. So a tag that fails
makes its counts ``unavailable`` (not frozen, no error), a sensor born while its tag fails
comes alive when the tag recovers, ``account: null`` leaves the account sensors unavailable,
and the exporter being down makes everything unavailable, without Home Assistant logging an
error for any of them. (Reading the figures straight in RESTful sensors does not: a failing
tag raises inside Home Assistant and stops the update of the sensors listed after it.)

The templates never touch a missing key (``.get`` everywhere): Home Assistant logs a warning
on every render that reads an undefined value.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from collections.abc import Iterable, Sequence

DEFAULT_URL = "http://127.0.0.1:9847"  # where ./dev.sh demo listens
DEFAULT_SCAN_INTERVAL = 60
SOURCE_NAME = "SMS Partner exporter"
SOURCE_ENTITY = "sensor.sms_partner_exporter"  # Home Assistant's entity id for SOURCE_NAME
CURRENCY = "EUR"  # the unit of the balance sensor; another currency makes it unavailable

# (entity suffix, label in the name, JSON path inside a tag, state_class)
# Delivered, Not delivered and STOP only grow while a campaign lasts and restart at zero with a
# new tag: Home Assistant's total_increasing (a drop is a new cycle, as Prometheus counters).
# Waiting goes up and down.
COUNTS = (
    ("delivered", "delivered", ("statuses", "Delivered"), "total_increasing"),
    ("not_delivered", "not delivered", ("statuses", "Not delivered"), "total_increasing"),
    ("waiting", "waiting", ("statuses", "Waiting"), "measurement"),
    ("stop", "STOP", ("stop",), "total_increasing"),
)

_PLAIN_TAG = re.compile(r"[a-z0-9-]+")
# Characters written as they are inside a Jinja string literal; any other is \uXXXX-escaped.
_JINJA_PLAIN = re.compile(r"[A-Za-z0-9 _.,:;/@+#%&()=-]")


def _jinja_string(text: str) -> str:
    """A Jinja string literal for ``text`` (Jinja decodes \\u escapes as Python does)."""
    out = []
    for char in text:
        if _JINJA_PLAIN.fullmatch(char):
            out.append(char)
        elif ord(char) <= 0xFFFF:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(f"\\U{ord(char):08x}")
    return "'" + "".join(out) + "'"


# What YAML does not take as it is inside a double-quoted scalar: characters outside its
# printable set, and the line breaks YAML 1.1 has beyond JSON's (they would fold).
_YAML_ESCAPE = re.compile(
    "[^\t\n\r\x20-\x7e\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]|[\u2028\u2029\ufeff]"
)


def _yaml_string(text: str) -> str:
    """A double-quoted YAML scalar (a JSON string is one, with \\u escapes YAML reads)."""
    return _YAML_ESCAPE.sub(
        lambda found: f"\\u{ord(found[0]):04x}", json.dumps(text, ensure_ascii=False)
    )


def _name(text: str) -> str:
    """A template sensor's ``name`` (itself a template) showing ``text`` as it is."""
    if "{" in text:  # {{, {% or {# would start Jinja syntax
        return _yaml_string(f"{{{{ {_jinja_string(text)} }}}}")
    return _yaml_string(text)


def unique_slug(tag: str) -> str:
    """The tag's part of the sensors' unique_id: readable, and distinct for distinct tags.

    ``promo-noel`` gives ``promo_noel``; a tag with other characters (``Promo_Noel``, which would
    otherwise meet ``promo-noel``) gets a short hash of itself appended.
    """
    slug = re.sub(r"[^a-z0-9]+", "_", tag.lower()).strip("_")
    if _PLAIN_TAG.fullmatch(tag) and slug == tag.replace("-", "_"):
        return slug
    digest = hashlib.sha256(tag.encode()).hexdigest()[:8]
    return f"{slug}_{digest}" if slug else digest


def _block(*lines: str) -> str:
    """A folded YAML block (``>-``: its lines joined by spaces) of Jinja lines, which hold
    only printable ASCII (tags are written with :func:`_jinja_string`)."""
    return ">-\n" + "\n".join(" " * 10 + line for line in lines)


def _sensor(lines: list[str], fields: list[tuple[str, str]]) -> None:
    first, *rest = fields
    lines.append(f"      - {first[0]}: {first[1]}")
    lines.extend(f"        {key}: {value}" for key, value in rest)


_TAGS = f"(state_attr('{SOURCE_ENTITY}', 'tags') or {{}})"
_ACCOUNT = f"(state_attr('{SOURCE_ENTITY}', 'account') or {{}})"


def _tag_sensors(lines: list[str], tag: str) -> None:
    the_tag = f".get({_jinja_string(tag)}, {{}})"
    slug = unique_slug(tag)
    for suffix, label, path, state_class in COUNTS:
        value = "".join(f".get('{key}', {{}})" for key in path[:-1]) + f".get('{path[-1]}')"
        _sensor(
            lines,
            [
                ("name", _name(f"SMS {tag} {label}")),
                ("unique_id", f"smsp_{slug}_{suffix}"),
                ("unit_of_measurement", "SMS"),
                ("state_class", state_class),
                ("state", _block(f"{{{{ {_TAGS}", f"{the_tag}{value} }}}}")),
                ("availability", _block(f"{{{{ {_TAGS}", f"{the_tag}{value} is number }}}}")),
            ],
        )
    last = f"{{%- set ts = {_TAGS}", f"{the_tag}.get('last_success') -%}}"
    _sensor(
        lines,
        [
            ("name", _name(f"SMS {tag} last success")),
            ("unique_id", f"smsp_{slug}_last_success"),
            ("device_class", "timestamp"),
            ("state", _block(*last, "{{ as_datetime(ts).isoformat() if ts is number }}")),
            ("availability", _block(*last, "{{ ts is number }}")),
        ],
    )


def _account_sensors(lines: list[str]) -> None:
    account = f"{{%- set a = {_ACCOUNT} -%}}"
    up = "a.get('up') is sameas true"
    credit = "a.get('credits', {}).get('sms')"
    _sensor(
        lines,
        [
            ("name", _yaml_string("SMS Partner credit")),
            ("unique_id", "smsp_account_credit_sms"),
            ("unit_of_measurement", "SMS"),
            ("state_class", "measurement"),
            ("state", _block(account, f"{{{{ {credit} }}}}")),
            ("availability", _block(account, f"{{{{ {up} and {credit} is number }}}}")),
        ],
    )
    balance = "a.get('balance')"
    _sensor(
        lines,
        [
            ("name", _yaml_string("SMS Partner balance")),
            ("unique_id", "smsp_account_balance"),
            ("unit_of_measurement", CURRENCY),
            ("device_class", "monetary"),
            # Home Assistant allows only "total" with "monetary": a balance up and down.
            ("state_class", "total"),
            ("state", _block(account, f"{{{{ {balance} }}}}")),
            (
                "availability",
                _block(
                    account,
                    f"{{{{ {up} and a.get('currency') == '{CURRENCY}'",
                    f"and {balance} is number }}}}",
                ),
            ),
        ],
    )


HEADER = """\
# Home Assistant package for smsp-exporter{origin}.
# Made by `smsp-exporter homeassistant-package`: regenerate it when the tags change.
#
# Put it in your configuration's packages folder:
#   homeassistant:
#     packages: !include_dir_named packages
# then restart Home Assistant. Tested with Home Assistant 2024.3.3 (see the README).
#
# The RESTful sensor "{source}" reads GET /api/v1/tags every {scan}s and keeps
# the answer in its attributes; the template sensors below read them. A sensor is unavailable
# when its figure is not known: its tag failed in the latest round (counts; the last success
# stays), the account is not read (account.enabled: false) or failed, or the exporter did not
# answer (all of them). In the exporter's `scrape` mode each poll runs a collection round: keep
# scan_interval at a minute or more, or use collection.min_interval or the background mode.
# The RESTful sensor's attributes (the whole answer) change at every poll; keep them out of
# the recorder with
#   recorder:
#     exclude:
#       entities: [sensor.sms_partner_exporter]
"""


def package(
    tags: Iterable[str],
    *,
    url: str = DEFAULT_URL,
    scan_interval: int = DEFAULT_SCAN_INTERVAL,
    origin: str = "",
) -> str:
    """The package's YAML text for ``tags`` (in their order) and the exporter at ``url``."""
    tags = list(tags)
    resource = f"{url.rstrip('/')}/api/v1/tags"
    header = HEADER.format(
        origin=f" ({origin})" if origin else "", source=SOURCE_NAME, scan=scan_interval
    )
    lines = header.splitlines()
    lines += [
        "rest:",
        f"  - resource: {_yaml_string(resource)}",
        f"    scan_interval: {scan_interval}",
        "    timeout: 30",
        "    sensor:",
    ]
    _sensor(
        lines,
        [
            ("name", _yaml_string(SOURCE_NAME)),
            ("unique_id", "smsp_exporter_tags"),
            ("device_class", "timestamp"),
            ("value_template", _yaml_string("{{ as_datetime(value_json.taken_at).isoformat() }}")),
            ("json_attributes", "[tags, account]"),
        ],
    )
    lines += ["template:", "  - sensor:"]
    for tag in tags:
        _tag_sensors(lines, tag)
    _account_sensors(lines)
    return "\n".join(lines) + "\n"


def demo_package(*, url: str = DEFAULT_URL, scan_interval: int = DEFAULT_SCAN_INTERVAL) -> str:
    """The package for the demo's tags: deploy/homeassistant/smsp-exporter.yaml by default."""
    from .simulator import DEMO_TAGS

    tags = [spec.name for spec in DEMO_TAGS]
    return package(tags, url=url, scan_interval=scan_interval, origin="the demo's tags")


def main(argv: Sequence[str]) -> int:
    """``smsp-exporter homeassistant-package``: print the package for the configured tags."""
    parser = argparse.ArgumentParser(
        prog="smsp-exporter homeassistant-package",
        description="Print a Home Assistant package (YAML) with sensors for the static tags of "
        "the configuration and the account, reading the exporter's /api/v1/tags.",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--config.file",
        dest="config_file",
        default="config.yaml",
        metavar="PATH",
        help="the exporter's configuration file (default: %(default)s)",
    )
    source.add_argument("--demo", action="store_true", help="the demo's tags (./dev.sh demo)")
    parser.add_argument(
        "--url",
        default=DEFAULT_URL,
        help="the exporter's base URL as Home Assistant reaches it (default: %(default)s)",
    )
    parser.add_argument(
        "--scan-interval",
        type=int,
        default=DEFAULT_SCAN_INTERVAL,
        metavar="SECONDS",
        help="how often Home Assistant polls (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    if args.scan_interval < 1:
        parser.error("--scan-interval must be at least 1")
    if not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", args.url):
        parser.error(f"--url: expected http(s)://HOST:PORT, got {args.url!r}")
    if args.demo:
        sys.stdout.write(demo_package(url=args.url, scan_interval=args.scan_interval))
        return 0
    else:
        from .config import ConfigError, load_config

        try:
            config = load_config(args.config_file)
        except ConfigError as err:
            print(f"smsp-exporter: invalid configuration: {err}", file=sys.stderr)
            return 2
        tags = list(config.tags)
        origin = f"the tags of {args.config_file}"
        for template in config.tag_templates:
            # Its tags change with the date: sensors named after one day's tag would die the
            # next day. The attributes of the source sensor still hold them.
            print(
                f"smsp-exporter: tag template {template.template!r} has no sensors in the "
                "package (its tags change every day)",
                file=sys.stderr,
            )
        if not tags:
            print(
                f"smsp-exporter: {args.config_file}: no static tag; the package has the "
                "account sensors only",
                file=sys.stderr,
            )
    sys.stdout.write(package(tags, url=args.url, scan_interval=args.scan_interval, origin=origin))
    return 0
