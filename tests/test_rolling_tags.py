"""Rolling tags: templates expanded to the last N days' tags, each round."""

from __future__ import annotations

import datetime
import zoneinfo

import pytest

from smsp_exporter.config import ConfigError, config_from_dict
from smsp_exporter.tags import expand_tags, parse_template

from .helpers import API_KEY, campaign, samples, scrape, serve, value

PARIS = zoneinfo.ZoneInfo("Europe/Paris")


def test_expansion_follows_the_time_zone_and_is_bounded_by_days():
    template = parse_template("relance-{date:%Y%m%d}", 3, "Europe/Paris")
    # 23:30 UTC on 24 Nov is already 25 Nov in Paris.
    now = datetime.datetime(2025, 11, 24, 23, 30, tzinfo=datetime.UTC).timestamp()
    assert template.expand(now) == ("relance-20251125", "relance-20251124", "relance-20251123")
    utc = parse_template("relance-{date:%Y%m%d}", 2, None)
    assert utc.expand(now) == ("relance-20251124", "relance-20251123")


def test_a_tag_produced_twice_is_collected_once():
    monthly = parse_template("mois-{date:%Y%m}", 40, "UTC")
    now = datetime.datetime(2025, 11, 24, tzinfo=datetime.UTC).timestamp()
    assert monthly.expand(now) == ("mois-202511", "mois-202510")
    tags = expand_tags(("mois-202511", "fixe"), (monthly,), now)
    assert tags == {"mois-202511": None, "fixe": None, "mois-202510": "mois-{date:%Y%m}"}


@pytest.mark.parametrize(
    ("entry", "key", "problem"),
    [
        ({"template": "x-{day:%d}"}, "tags[0].template", "unknown placeholder {day}"),
        ({"template": "x-{date}"}, "tags[0].template", "needs a strftime format"),
        ({"template": "x-{date:%H}"}, "tags[0].template", "%H is not a date directive"),
        ({"template": "x-{date:%Q}"}, "tags[0].template", "%Q is not a date directive"),
        ({"template": "fixe"}, "tags[0].template", "needs a {date:FORMAT} placeholder"),
        ({"template": "x-{date:%d"}, "tags[0].template", "literal braces"),
        ({"template": "x-{date:%d}", "days": 0}, "tags[0].days", "between 1 and 366"),
        ({"template": "x-{date:%d}", "days": 367}, "tags[0].days", "between 1 and 366"),
        ({"template": "x-{date:%d}", "days": "7"}, "tags[0].days", "between 1 and 366"),
        ({"template": "x-{date:%d}", "timezone": "Mars/Olympus"}, "tags[0].timezone", "unknown"),
        ({"template": "x-{date:%d}", "zone": "UTC"}, "tags[0].zone", "unknown key"),
        ({"days": 3}, "tags[0].template", "missing"),
    ],
)
def test_bad_templates_are_config_errors(entry, key, problem):
    with pytest.raises(ConfigError) as info:
        config_from_dict({"api": {"key": API_KEY}, "tags": [entry]}, source="t.yaml", env={})
    assert info.value.key == key
    assert problem in info.value.problem
    assert "\n" not in str(info.value)


def test_a_template_breaking_the_tag_rules_warns():
    config = config_from_dict(
        {"api": {"key": API_KEY}, "tags": [{"template": "Relance-{date:%Y%m%d}"}]}, env={}
    )
    assert any("tags[0].template" in w and "uppercase" in w for w in config.warnings)


def test_expanded_tags_are_collected_with_a_template_label(sim):
    today = datetime.datetime.now(PARIS).date()
    day = datetime.timedelta(days=1)
    names = [f"relance-{(today - n * day):%Y%m%d}" for n in range(4)]
    for name in names:
        sim.add_tag(campaign(name, 5, delivered=1.0, not_delivered=0.0, report_delay=0.001))
    sim.add_tag(campaign("fixe", 3))
    sim.advance(60)
    template = "relance-{date:%Y%m%d}"
    config = config_from_dict(
        {
            "api": {"url": sim.url, "key": API_KEY, "max_requests_per_second": 0},
            "tags": ["fixe", {"template": template, "days": 3, "timezone": "Europe/Paris"}],
        },
        env={},
    )
    with serve(config) as url:
        found = samples(scrape(url))
    for name in names[:3]:
        assert value(found, "sms_up", tag=name, template=template) == 1
        assert (
            value(found, "sms_status_total", tag=name, status="Delivered", template=template) == 5
        )
    assert not any(dict(labels).get("tag") == names[3] for _, labels in found)  # out of window
    assert value(found, "sms_up", tag="fixe") == 1  # a static tag: no template label
    assert sim.stats()["by_tag"].get(names[3], 0) == 0
