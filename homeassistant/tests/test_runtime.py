"""The integration running against a real exporter and simulator over loopback HTTP: set-up
and unload, tags added and removed at run time, a rolling tag, a failing tag, the exporter
down and back, credentials refused and the re-authentication, diagnostics."""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from typing import Any

import pytest
from custom_components.smsp_exporter import async_remove_config_entry_device
from custom_components.smsp_exporter.const import DOMAIN
from custom_components.smsp_exporter.diagnostics import async_get_config_entry_diagnostics
from homeassistant.config_entries import SOURCE_REAUTH, ConfigEntryState
from homeassistant.const import CONF_PASSWORD, CONF_URL, CONF_USERNAME, STATE_UNAVAILABLE
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers import entity_registry as er
from homeassistant.util import dt as dt_util
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    async_fire_time_changed,
)
from smsp_servers import TEMPLATE, Exporter, Simulator, rolling_tags

# Quotes, a Jinja block, the separator of nothing in particular, accents, outside the BMP.
AWKWARD = 'Promo "Noël" l\'été {{ x }} | #1 🎄'
COUNTS = {"delivered": "Delivered", "not_delivered": "Not delivered", "waiting": "Waiting"}


async def set_up(hass: HomeAssistant, exporter: Exporter, **credentials: str) -> MockConfigEntry:
    entry = MockConfigEntry(
        domain=DOMAIN, data={CONF_URL: exporter.url, **credentials}, unique_id=exporter.url
    )
    entry.add_to_hass(hass)
    await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    return entry


async def poll(hass: HomeAssistant) -> None:
    """One scheduled poll of the coordinator (its timer, as Home Assistant runs it)."""
    async_fire_time_changed(hass, dt_util.utcnow() + timedelta(seconds=61))
    await hass.async_block_till_done()


def entity_id(hass: HomeAssistant, entry: MockConfigEntry, subject: str, figure: str) -> str:
    platform = "binary_sensor" if figure == "problem" else "sensor"
    unique_id = f"{entry.entry_id}_{subject}_{figure}"
    found = er.async_get(hass).async_get_entity_id(platform, DOMAIN, unique_id)
    assert found is not None, f"no entity {unique_id}"
    return found


def state(hass: HomeAssistant, entry: MockConfigEntry, subject: str, figure: str) -> Any:
    current = hass.states.get(entity_id(hass, entry, subject, figure))
    assert current is not None
    return current


async def settled(exporter: Exporter) -> dict[str, Any]:
    """The exporter's answer: the simulator's clock stands still, so what Home Assistant reads
    at its next poll is the same."""
    return await exporter.document()


def assert_shows(hass: HomeAssistant, entry, subject: str, figures: dict[str, Any]) -> None:
    for figure, status in COUNTS.items():
        assert figures["up"], figures
        assert state(hass, entry, subject, figure).state == str(figures["statuses"][status])
    assert state(hass, entry, subject, "stop").state == str(figures["stop"])
    assert state(hass, entry, subject, "problem").state == "off"


def devices(hass: HomeAssistant, entry: MockConfigEntry) -> dict[str, dr.DeviceEntry]:
    registry = dr.async_get(hass)
    found = dr.async_entries_for_config_entry(registry, entry.entry_id)
    return {device.name: device for device in found}


async def test_set_up_entities_and_unload(hass: HomeAssistant, exporter: Exporter):
    document = await settled(exporter)
    entry = await set_up(hass, exporter)
    assert entry.state is ConfigEntryState.LOADED
    await poll(hass)
    assert set(devices(hass, entry)) == {"SMS promo", "SMS rappel", "SMS Partner account"}
    for tag in ("promo", "rappel"):
        assert_shows(hass, entry, f"tag:{tag}", document["tags"][tag])
    # Names, classes and units: statistics work for the counts and the credit.
    delivered = state(hass, entry, "tag:promo", "delivered")
    assert delivered.entity_id == "sensor.sms_promo_delivered"
    assert delivered.attributes["friendly_name"] == "SMS promo Delivered"
    assert delivered.attributes["state_class"] == "total_increasing"
    assert delivered.attributes["unit_of_measurement"] == "SMS"
    assert state(hass, entry, "tag:promo", "waiting").attributes["state_class"] == "measurement"
    last = state(hass, entry, "tag:promo", "last_success")
    assert last.attributes["device_class"] == "timestamp"
    assert dt_util.parse_datetime(last.state).timestamp() == pytest.approx(
        document["tags"]["promo"]["last_success"], abs=120
    )
    account = document["account"]
    credit = state(hass, entry, "account", "credit_sms")
    assert credit.entity_id == "sensor.sms_partner_account_sms_credit"
    assert float(credit.state) == account["credits"]["sms"]
    assert credit.attributes["state_class"] == "measurement"
    balance = state(hass, entry, "account", "balance")
    assert float(balance.state) == account["balance"]
    assert balance.attributes["unit_of_measurement"] == account["currency"]
    assert balance.attributes["device_class"] == "monetary"
    assert state(hass, entry, "account", "problem").state == "off"

    assert await hass.config_entries.async_unload(entry.entry_id)
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.NOT_LOADED
    assert DOMAIN not in hass.data or entry.entry_id not in hass.data[DOMAIN]


async def test_tags_added_and_removed_at_run_time(
    hass: HomeAssistant, sim: Simulator, exporter: Exporter
):
    entry = await set_up(hass, exporter)
    coordinator = hass.data[DOMAIN][entry.entry_id]
    await sim.control("tag", name="nouveau", messages=12, send_spread=1, report_delay=1)
    await sim.control("tag", name=AWKWARD, messages=7, send_spread=1, report_delay=1)

    # Tags added to the exporter's configuration (reloaded): their devices and entities appear
    # at the next poll, without a restart.
    await exporter.set_tags(["promo", "rappel", "nouveau", AWKWARD])
    document = await settled(exporter)
    await poll(hass)
    assert {"SMS nouveau", f"SMS {AWKWARD}"} <= set(devices(hass, entry))
    assert_shows(hass, entry, "tag:nouveau", document["tags"]["nouveau"])
    assert_shows(hass, entry, f"tag:{AWKWARD}", document["tags"][AWKWARD])

    # A tag removed: unavailable at once, its device kept for a while (it may come back).
    await exporter.set_tags(["promo", "nouveau", AWKWARD])
    await poll(hass)
    rappel = entity_id(hass, entry, "tag:rappel", "delivered")
    assert hass.states.get(rappel).state == STATE_UNAVAILABLE
    assert state(hass, entry, "tag:rappel", "problem").state == STATE_UNAVAILABLE
    assert state(hass, entry, "tag:promo", "delivered").state != STATE_UNAVAILABLE
    assert "SMS rappel" in devices(hass, entry)
    assert "tag:rappel" in coordinator.missing_since

    # After the grace period (24 h; shortened here), device and entities leave the registries.
    coordinator.remove_after = timedelta(0)
    await poll(hass)
    assert "SMS rappel" not in devices(hass, entry)
    registry = er.async_get(hass)
    assert registry.async_get(rappel) is None
    left = er.async_entries_for_config_entry(registry, entry.entry_id)
    assert not [e for e in left if "rappel" in e.unique_id]
    assert hass.states.get(rappel) is None

    assert_shows(hass, entry, f"tag:{AWKWARD}", document["tags"][AWKWARD])

    # It comes back: the same entity ids again, available.
    await exporter.set_tags(["promo", "rappel", "nouveau", AWKWARD])
    document = await settled(exporter)
    await poll(hass)
    assert entity_id(hass, entry, "tag:rappel", "delivered") == rappel
    assert_shows(hass, entry, "tag:rappel", document["tags"]["rappel"])


async def test_a_rolling_tag_is_one_device_showing_today(hass: HomeAssistant, exporter: Exporter):
    await exporter.set_tags(["promo", {"template": TEMPLATE, "days": 3}])
    document = await settled(exporter)
    dated = rolling_tags(3)
    assert [document["tags"][t]["template"] for t in dated] == [TEMPLATE] * 3
    entry = await set_up(hass, exporter)
    await poll(hass)
    found = devices(hass, entry)
    assert set(found) == {"SMS promo", f"SMS {TEMPLATE}", "SMS Partner account"}
    assert found[f"SMS {TEMPLATE}"].model == "Rolling tag"
    subject = f"template:{TEMPLATE}"
    assert_shows(hass, entry, subject, document["tags"][dated[0]])
    delivered = state(hass, entry, subject, "delivered")
    assert delivered.attributes["tag"] == dated[0]
    assert delivered.attributes["tags"] == dated
    assert delivered.attributes["state_class"] == "total_increasing"  # a new day: a new cycle


async def test_a_failing_tag_is_unavailable_then_back(
    hass: HomeAssistant, sim: Simulator, exporter: Exporter
):
    entry = await set_up(hass, exporter)
    try:
        await sim.control("fault", tag="promo", kind="http_status", status=503)
        await poll(hass)
        for figure in (*COUNTS, "stop"):
            assert state(hass, entry, "tag:promo", figure).state == STATE_UNAVAILABLE
        problem = state(hass, entry, "tag:promo", "problem")
        assert problem.state == "on"
        assert problem.attributes["error"]
        # Its last success stays (since when it fails); the other tag is unaffected.
        assert state(hass, entry, "tag:promo", "last_success").state != STATE_UNAVAILABLE
        assert state(hass, entry, "tag:rappel", "delivered").state != STATE_UNAVAILABLE
    finally:
        await sim.control("clear-faults")
    document = await settled(exporter)
    await poll(hass)
    assert_shows(hass, entry, "tag:promo", document["tags"]["promo"])


async def test_the_exporter_down_and_back(
    hass: HomeAssistant, exporter: Exporter, caplog: pytest.LogCaptureFixture
):
    entry = await set_up(hass, exporter)
    delivered = entity_id(hass, entry, "tag:promo", "delivered")
    credit = entity_id(hass, entry, "account", "credit_sms")
    ours = "custom_components.smsp_exporter"
    await exporter.async_stop()
    await poll(hass)
    await poll(hass)
    assert hass.states.get(delivered).state == STATE_UNAVAILABLE
    assert hass.states.get(credit).state == STATE_UNAVAILABLE
    # Logged once (INFO), not at every poll; nothing removed while the exporter is away.
    down = [r for r in caplog.records if r.name.startswith(ours) and "Error" in r.getMessage()]
    assert len(down) == 1 and down[0].levelno == logging.INFO, down
    assert len(devices(hass, entry)) == 3

    await exporter.async_start()
    await poll(hass)
    assert hass.states.get(delivered).state != STATE_UNAVAILABLE
    assert hass.states.get(credit).state != STATE_UNAVAILABLE
    assert [r for r in caplog.records if r.name.startswith(ours) and "recovered" in r.message]


async def test_the_exporter_down_at_start(hass: HomeAssistant, exporter: Exporter):
    await exporter.async_stop()
    entry = await set_up(hass, exporter)
    assert entry.state is ConfigEntryState.SETUP_RETRY
    await exporter.async_start()
    async_fire_time_changed(hass, dt_util.utcnow() + timedelta(minutes=2))  # HA's retry
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.LOADED


def reauth_flows(hass: HomeAssistant) -> list[dict[str, Any]]:
    return [
        flow
        for flow in hass.config_entries.flow.async_progress()
        if flow["handler"] == DOMAIN and flow["context"]["source"] == SOURCE_REAUTH
    ]


async def test_credentials_refused_then_reauthentication(
    hass: HomeAssistant, auth_exporter: Exporter
):
    entry = await set_up(hass, auth_exporter, username="ha", password="first-secret")
    assert entry.state is ConfigEntryState.LOADED
    delivered = entity_id(hass, entry, "tag:promo", "delivered")
    assert hass.states.get(delivered).state != STATE_UNAVAILABLE

    # The exporter's password changes: the next poll is refused, a re-authentication starts.
    await auth_exporter.async_stop()
    auth_exporter.password = "second-secret"
    await auth_exporter.async_start()
    await poll(hass)
    assert hass.states.get(delivered).state == STATE_UNAVAILABLE
    [flow] = reauth_flows(hass)
    result = await hass.config_entries.flow.async_configure(
        flow["flow_id"], {CONF_USERNAME: "ha", CONF_PASSWORD: "wrong-secret"}
    )
    assert result["type"] == FlowResultType.FORM
    assert result["errors"] == {"base": "invalid_auth"}
    result = await hass.config_entries.flow.async_configure(
        flow["flow_id"], {CONF_USERNAME: "ha", CONF_PASSWORD: "second-secret"}
    )
    await hass.async_block_till_done()
    assert result["type"] == FlowResultType.ABORT
    assert result["reason"] == "reauth_successful"
    assert entry.data[CONF_PASSWORD] == "second-secret"
    assert entry.state is ConfigEntryState.LOADED
    assert hass.states.get(delivered).state != STATE_UNAVAILABLE
    assert reauth_flows(hass) == []


async def test_credentials_refused_at_start(hass: HomeAssistant, auth_exporter: Exporter):
    entry = await set_up(hass, auth_exporter, username="ha", password="wrong-secret")
    assert entry.state is ConfigEntryState.SETUP_ERROR
    [flow] = reauth_flows(hass)
    result = await hass.config_entries.flow.async_configure(
        flow["flow_id"], {CONF_USERNAME: "ha", CONF_PASSWORD: "first-secret"}
    )
    await hass.async_block_till_done()
    assert result["reason"] == "reauth_successful"
    assert entry.state is ConfigEntryState.LOADED


async def test_diagnostics_redact_the_credentials(hass: HomeAssistant, auth_exporter: Exporter):
    entry = await set_up(hass, auth_exporter, username="ha", password="first-secret")
    diagnostics = await async_get_config_entry_diagnostics(hass, entry)
    text = json.dumps(diagnostics)
    assert "first-secret" not in text
    assert diagnostics["entry"]["data"] == {
        CONF_URL: auth_exporter.url,
        CONF_USERNAME: "**REDACTED**",
        CONF_PASSWORD: "**REDACTED**",
    }
    assert set(diagnostics["answer"]["tags"]) == {"promo", "rappel"}
    assert diagnostics["last_update_success"] is True


async def test_a_device_may_be_deleted_once_its_tag_is_gone(
    hass: HomeAssistant, exporter: Exporter
):
    entry = await set_up(hass, exporter)
    found = devices(hass, entry)
    assert not await async_remove_config_entry_device(hass, entry, found["SMS rappel"])
    await exporter.set_tags(["promo"])
    await poll(hass)
    assert await async_remove_config_entry_device(hass, entry, found["SMS rappel"])
    assert not await async_remove_config_entry_device(hass, entry, found["SMS promo"])
