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

from .helpers import campaign, make_config, serve

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


def _home_assistant_templates(document: dict) -> jinja2.Environment:
    """Jinja2 with what the package's templates use from Home Assistant, the RESTful sensor's
    attributes (``tags``, ``account``) being ``document``'s. Home Assistant itself runs the
    package in test_homeassistant.py; this is the quick check."""
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)

    def state_attr(entity: str, name: str):
        assert entity == "sensor.sms_partner_exporter"
        return document[name]

    def as_datetime(value: float) -> datetime.datetime:
        return datetime.datetime.fromtimestamp(value, datetime.UTC)

    env.globals.update(state_attr=state_attr, as_datetime=as_datetime)
    return env


def test_the_home_assistant_example_reads_existing_fields(document):
    example = yaml.safe_load(HA_EXAMPLE.read_text())
    (rest,) = example["rest"]
    assert rest["resource"].endswith("/api/v1/tags")
    assert rest["sensor"][0]["json_attributes"] == ["tags", "account"]
    env = _home_assistant_templates(document)
    rendered = {}
    for sensor in example["template"][0]["sensor"]:
        for key in ("state", "availability"):
            rendered[(sensor["name"], key)] = env.from_string(sensor[key]).render()
    noel = document["tags"]["promo-noel"]
    assert rendered[("SMS promo-noel delivered", "state")] == str(noel["statuses"]["Delivered"])
    assert rendered[("SMS promo-noel delivered", "availability")] == "True"
    assert rendered[("SMS promo-noel STOP", "state")] == str(noel["stop"])
    assert rendered[("SMS promo-noel last success", "state")] == (
        datetime.datetime.fromtimestamp(noel["last_success"], datetime.UTC).isoformat()
    )
    assert rendered[("SMS Partner credit", "state")] == str(document["account"]["credits"]["sms"])
    assert rendered[("SMS Partner credit", "availability")] == "True"
    assert rendered[("SMS Partner balance", "availability")] == "True"
    # relance-panier is not in this answer: its sensors are unavailable, without an error.
    assert rendered[("SMS relance-panier delivered", "availability")] == "False"


def test_a_misspelt_field_makes_the_sensor_unavailable_not_wrong(document):
    example = yaml.safe_load(HA_EXAMPLE.read_text())
    (delivered,) = [
        s for s in example["template"][0]["sensor"] if s["name"] == "SMS promo-noel delivered"
    ]
    env = _home_assistant_templates(document)
    misspelt = delivered["availability"].replace("'Delivered'", "'Delivred'")
    assert misspelt != delivered["availability"]
    assert env.from_string(misspelt).render() == "False"
