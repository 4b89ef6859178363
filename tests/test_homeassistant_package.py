"""``smsp-exporter homeassistant-package``: the generated Home Assistant package, its command
line, and the shipped example (deploy/homeassistant/smsp-exporter.yaml) being its output for
the demo. Home Assistant itself runs the package in test_homeassistant.py."""

from __future__ import annotations

import datetime
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from smsp_exporter import homeassistant
from smsp_exporter.cli import main
from smsp_exporter.simulator import DEMO_TAGS

from .helpers import API_KEY

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "deploy" / "homeassistant" / "smsp-exporter.yaml"
DEMO = [spec.name for spec in DEMO_TAGS]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "smsp_exporter", "homeassistant-package", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


def test_the_shipped_package_is_the_generators_output_for_the_demo():
    done = run("--demo")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert SHIPPED.read_text() == done.stdout, (
        "regenerate it: smsp-exporter homeassistant-package --demo > " + str(SHIPPED)
    )


def test_the_shipped_package_covers_the_demo_against_the_demos_address():
    package = yaml.safe_load(SHIPPED.read_text())
    (rest,) = package["rest"]
    assert rest["resource"] == "http://127.0.0.1:9847/api/v1/tags"  # ./dev.sh demo
    assert rest["sensor"][0]["json_attributes"] == ["tags", "account"]
    (templates,) = package["template"]
    names = {sensor["name"] for sensor in templates["sensor"]}
    for tag in DEMO:
        assert f"SMS {tag} delivered" in names and f"SMS {tag} last success" in names
    assert {"SMS Partner credit", "SMS Partner balance"} <= names
    assert len(templates["sensor"]) == 5 * len(DEMO) + 2
    unique_ids = [s["unique_id"] for s in rest["sensor"] + templates["sensor"]]
    assert len(set(unique_ids)) == len(unique_ids)
    for sensor in templates["sensor"]:
        assert "availability" in sensor and "state" in sensor, sensor["name"]


def write_config(tmp_path: Path, tags: str, extra: str = "") -> Path:
    (tmp_path / "key.txt").write_text(API_KEY + "\n")
    config = tmp_path / "config.yaml"
    config.write_text(f"api:\n  url: http://127.0.0.1:1\n  key_file: key.txt\n{extra}tags:\n{tags}")
    return config


def test_the_configured_static_tags_get_sensors_templates_a_warning(tmp_path):
    config = write_config(
        tmp_path,
        '  - montag\n  - "Promo Noël"\n  - template: "relance-{date:%Y%m%d}"\n    days: 3\n',
    )
    url = "http://exporter.lan:9847/"
    done = run("--config.file", str(config), "--url", url, "--scan-interval", "120")
    assert done.returncode == 0, done.stderr
    assert "relance-{date:%Y%m%d}" in done.stderr and "no sensors" in done.stderr
    assert API_KEY not in done.stdout + done.stderr
    package = yaml.safe_load(done.stdout)
    (rest,) = package["rest"]
    assert rest["resource"] == "http://exporter.lan:9847/api/v1/tags"
    assert rest["scan_interval"] == 120
    names = [sensor["name"] for sensor in package["template"][0]["sensor"]]
    assert names[:5] == [
        "SMS montag delivered",
        "SMS montag not delivered",
        "SMS montag waiting",
        "SMS montag STOP",
        "SMS montag last success",
    ]
    assert "SMS Promo Noël delivered" in names
    assert not any("relance" in name for name in names)
    assert done.stdout == homeassistant.package(
        ["montag", "Promo Noël"],
        url="http://exporter.lan:9847/",
        scan_interval=120,
        origin=f"the tags of {config}",
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scan-interval", "0"], "--scan-interval"),
        (["--url", "exporter:9847"], "--url"),
        (["--url", "http://a b"], "--url"),
        (["--demo", "--config.file", "x.yaml"], "not allowed"),
    ],
)
def test_bad_flags_exit_2_with_one_line(args, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["homeassistant-package", *args])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert message in err


def test_a_broken_configuration_is_one_line_exit_2(tmp_path, capsys):
    config = write_config(tmp_path, "  - montag\n", extra="collection:\n  mode: sometimes\n")
    assert main(["homeassistant-package", "--config.file", str(config)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and "collection.mode" in err and str(config) in err
    assert "Traceback" not in err


def test_a_missing_configuration_is_one_line_exit_2(tmp_path, capsys):
    assert main(["homeassistant-package", "--config.file", str(tmp_path / "none.yaml")]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "none.yaml" in err


AWKWARD_TAGS = [
    "promo-noel",
    "Promo_Noel",  # slugifies like promo-noel: the unique ids must still differ
    'a "quoted" tag',
    "l'été",
    "{{ states('sun.sun') }}",
    "{% raw %}x{% endraw %}",
    "{# comment #}",
    "back\\slash",
    "tab\tand\nnewline",
    "🎄",
    "%",
    "yaml breaks \x85 \u2028 \u2029, controls \x00 \x7f \x9f \ufeff",
]


def test_awkward_tags_give_valid_yaml_distinct_ids_and_literal_names():
    text = homeassistant.package(AWKWARD_TAGS)
    package = yaml.safe_load(text)
    sensors = package["template"][0]["sensor"]
    unique_ids = [sensor["unique_id"] for sensor in sensors]
    assert len(set(unique_ids)) == len(unique_ids)
    assert all(uid.isascii() and " " not in uid for uid in unique_ids)
    for tag, first in zip(AWKWARD_TAGS, sensors[::5], strict=False):
        name = first["name"]
        assert tag in name or "{" in tag
        # A name with "{" is a Jinja expression (the name is a template in Home Assistant).
        assert name == f"SMS {tag} delivered" or name.startswith("{{ '")
        if "{" in tag:
            assert name.startswith("{{ '")


@pytest.mark.parametrize("tag", AWKWARD_TAGS)
def test_the_jinja_string_of_a_tag_reads_back_as_the_tag(tag):
    import jinja2

    literal = homeassistant._jinja_string(tag)
    assert jinja2.Environment().from_string("{{ " + literal + " }}").render() == tag


def test_each_awkward_tags_sensors_read_that_tag_and_no_other():
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    tags = {
        tag: {
            "up": True,
            "last_success": 1764000000.0 + index,
            "statuses": {"Delivered": index, "Not delivered": 100 + index, "Waiting": 200},
            "stop": 300 + index,
        }
        for index, tag in enumerate(AWKWARD_TAGS)
    }
    env = ImmutableSandboxedEnvironment()  # as Home Assistant renders templates
    env.globals["state_attr"] = lambda entity, name: {"tags": tags, "account": None}[name]
    env.globals["as_datetime"] = lambda ts: datetime.datetime.fromtimestamp(ts, datetime.UTC)
    sensors = yaml.safe_load(homeassistant.package(AWKWARD_TAGS))["template"][0]["sensor"]
    for index, tag in enumerate(AWKWARD_TAGS):
        delivered, not_delivered, _waiting, stop, last = sensors[5 * index : 5 * index + 5]
        assert env.from_string(delivered["state"]).render() == str(index), tag
        assert env.from_string(not_delivered["state"]).render() == str(100 + index), tag
        assert env.from_string(stop["availability"]).render() == "True", tag
        assert env.from_string(stop["state"]).render() == str(300 + index), tag
        assert env.from_string(last["state"]).render() == (
            datetime.datetime.fromtimestamp(1764000000.0 + index, datetime.UTC).isoformat()
        )
    credit, balance = sensors[-2:]
    for sensor in (credit, balance):
        assert env.from_string(sensor["availability"]).render() == "False"
