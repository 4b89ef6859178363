"""/api/v1/tags (JSON for Home Assistant): its schema, and the Home Assistant example."""

from __future__ import annotations

import datetime
import json
from dataclasses import replace
from pathlib import Path

import jinja2
import jsonschema
import pytest
import requests
import yaml

from smsp_exporter.config import AccountConfig

from .conftest import campaign, make_config, serve

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = json.loads((ROOT / "docs" / "api" / "tags-v1.schema.json").read_text())
HA_EXAMPLE = ROOT / "deploy" / "homeassistant" / "smsp-exporter.yaml"


def tags_json(url: str) -> dict:
    answer = requests.get(f"{url}/api/v1/tags", timeout=20)
    assert answer.status_code == 200
    assert answer.headers["Content-Type"] == "application/json"
    return answer.json()


@pytest.fixture
def document(sim) -> dict:
    sim.add_tag(campaign("promo-noel", 30, report_delay=5.0))
    sim.add_tag(campaign("montag", 4))
    sim.set_fault("montag", "http_status", status=503)
    sim.advance(3)
    config = replace(
        make_config(sim, ["promo-noel", "montag"], retries=0), account=AccountConfig(True)
    )
    with serve(config) as url:
        return tags_json(url)


def test_the_answer_follows_its_schema_and_the_figures(document, sim):
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    jsonschema.validate(document, SCHEMA)
    noel = document["tags"]["promo-noel"]
    expected = sim.expected("promo-noel")
    assert noel["up"] is True and noel["error"] is None
    assert sum(noel["statuses"].values()) == 30
    assert {k: v for k, v in noel["statuses"].items() if v} == expected["statuses"]
    assert noel["stop"] == expected["stop"]
    assert noel["statuses"]["Waiting"] > 0 and noel["oldest_waiting"] is not None
    down = document["tags"]["montag"]
    assert down["up"] is False and down["error"] == "http_503" and down["statuses"] == {}
    assert document["account"]["credits"]["sms"] == 10_000 - sim.sent()
    assert document["account"]["currency"] == "EUR"


def test_the_schema_rejects_a_wrong_document(document):
    broken = json.loads(json.dumps(document))
    broken["tags"]["promo-noel"]["statuses"]["Delivered"] = "12"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, SCHEMA)
    del broken["tags"]["promo-noel"]["up"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, SCHEMA)


def _home_assistant_templates() -> jinja2.Environment:
    """Jinja2 as Home Assistant runs it, for what the example uses: undefined fields fail."""
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)

    def timestamp_custom(value: float, fmt: str, local: bool = True) -> str:
        return datetime.datetime.fromtimestamp(value, datetime.UTC).strftime(fmt)

    env.filters["timestamp_custom"] = timestamp_custom
    return env


def test_the_home_assistant_example_reads_existing_fields(document):
    example = yaml.safe_load(HA_EXAMPLE.read_text())
    env = _home_assistant_templates()
    (rest,) = example["rest"]
    assert rest["resource"].endswith("/api/v1/tags")
    rendered = {}
    for sensor in rest["sensor"]:
        for key in ("value_template", "availability"):
            if key in sensor:
                rendered[(sensor["name"], key)] = env.from_string(sensor[key]).render(
                    value_json=document
                )
    assert len(rest["sensor"]) >= 5
    assert rendered[("SMS promo-noel delivered", "value_template")] == str(
        document["tags"]["promo-noel"]["statuses"]["Delivered"]
    )
    assert rendered[("SMS Partner credit", "availability")] == "True"


def test_a_misspelt_field_in_a_template_is_caught(document):
    env = _home_assistant_templates()
    with pytest.raises(jinja2.UndefinedError):
        env.from_string("{{ value_json.tags['promo-noel'].statuses['Delivred'] }}").render(
            value_json=document
        )
