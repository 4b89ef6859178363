"""The set-up form, the options and every error path, against a real exporter and simulator
(and, for the wrong answers, a small HTTP server) over loopback HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from unittest.mock import patch

import pytest
from aiohttp import web
from custom_components.smsp_exporter.const import CONF_SCAN_INTERVAL, DOMAIN
from homeassistant.config_entries import SOURCE_USER
from homeassistant.const import CONF_PASSWORD, CONF_URL, CONF_USERNAME
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType, InvalidData
from pytest_homeassistant_custom_component.common import MockConfigEntry
from smsp_servers import Exporter, Simulator, free_port


async def _start(hass: HomeAssistant) -> str:
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    assert result["type"] == FlowResultType.FORM
    assert result["step_id"] == "user"
    assert result["errors"] == {}
    return result["flow_id"]


async def test_a_url_that_answers_creates_the_entry(hass: HomeAssistant, exporter: Exporter):
    flow = await _start(hass)
    result = await hass.config_entries.flow.async_configure(
        flow, {CONF_URL: f" {exporter.url}/api/v1/tags/ "}
    )
    await hass.async_block_till_done()
    assert result["type"] == FlowResultType.CREATE_ENTRY
    assert result["title"] == exporter.url
    assert result["data"] == {CONF_URL: exporter.url}  # no empty credentials stored
    assert result["result"].unique_id == exporter.url

    # The same exporter again: refused before any request.
    flow = await _start(hass)
    result = await hass.config_entries.flow.async_configure(flow, {CONF_URL: exporter.url})
    assert result["type"] == FlowResultType.ABORT
    assert result["reason"] == "already_configured"


@pytest.mark.parametrize(
    "url",
    ["exporter.lan:9847", "ftp://127.0.0.1/", "http://ha:secret@127.0.0.1:9847", "http://:80"],
)
async def test_not_an_http_url(hass: HomeAssistant, url: str):
    flow = await _start(hass)
    result = await hass.config_entries.flow.async_configure(flow, {CONF_URL: url})
    assert result["type"] == FlowResultType.FORM
    assert result["errors"] == {CONF_URL: "invalid_url"}


async def test_nothing_listening_then_fixed(hass: HomeAssistant, exporter: Exporter):
    flow = await _start(hass)
    nowhere = f"http://127.0.0.1:{free_port()}"
    result = await hass.config_entries.flow.async_configure(flow, {CONF_URL: nowhere})
    assert result["type"] == FlowResultType.FORM
    assert result["errors"] == {"base": "cannot_connect"}
    # The user corrects the address in the same form.
    result = await hass.config_entries.flow.async_configure(flow, {CONF_URL: exporter.url})
    await hass.async_block_till_done()
    assert result["type"] == FlowResultType.CREATE_ENTRY


async def test_the_certificate_is_verified(hass: HomeAssistant, tls_exporter: Exporter):
    """An exporter whose certificate Home Assistant does not trust is not reached (and plain
    HTTP to its TLS port neither)."""
    assert tls_exporter.url.startswith("https://")
    flow = await _start(hass)
    result = await hass.config_entries.flow.async_configure(flow, {CONF_URL: tls_exporter.url})
    assert result["errors"] == {"base": "cannot_connect"}
    plain = tls_exporter.url.replace("https://", "http://")
    result = await hass.config_entries.flow.async_configure(flow, {CONF_URL: plain})
    assert result["errors"] == {"base": "cannot_connect"}


async def test_the_simulator_is_not_an_exporter(hass: HomeAssistant, sim: Simulator):
    flow = await _start(hass)
    result = await hass.config_entries.flow.async_configure(flow, {CONF_URL: sim.url})
    assert result["errors"] == {"base": "not_exporter"}


@pytest.fixture
async def odd_server() -> AsyncIterator[tuple[str, dict[str, web.Response]]]:
    """An HTTP server answering /api/v1/tags with what the test puts in ``answers["now"]``."""
    answers: dict[str, web.Response] = {}

    async def tags(request: web.Request) -> web.Response:
        return answers["now"]

    app = web.Application()
    app.router.add_get("/api/v1/tags", tags)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}", answers
    finally:
        await runner.cleanup()


GOOD_TAG = {
    "up": True,
    "last_success": 1.0,
    "error": None,
    "statuses": {"Delivered": 1},
    "stop": 0,
    "complete": True,
    "oldest_waiting": None,
    "last_status": 1.0,
    "template": None,
}


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (lambda: web.Response(text="<html>hello</html>"), "not_exporter"),
        (lambda: web.json_response([1, 2]), "not_exporter"),
        (lambda: web.json_response({"schema_version": 2}), "not_exporter"),
        (
            lambda: web.json_response(
                {"schema_version": 1, "taken_at": 1.0, "tags": {"x": {"up": True}}, "account": None}
            ),
            "not_exporter",
        ),
        (
            lambda: web.json_response(
                {
                    "schema_version": 1,
                    "taken_at": 1.0,
                    "tags": {"x": {**GOOD_TAG, "statuses": {"Delivered": "1"}}},
                    "account": None,
                }
            ),
            "not_exporter",
        ),
        (lambda: web.Response(status=503), "cannot_connect"),
        (lambda: web.Response(status=401), "invalid_auth"),
    ],
    ids=["html", "list", "schema-2", "tag-fields", "count-type", "503", "401"],
)
async def test_wrong_answers(hass: HomeAssistant, odd_server, answer, error):
    url, answers = odd_server
    answers["now"] = answer()
    flow = await _start(hass)
    result = await hass.config_entries.flow.async_configure(flow, {CONF_URL: url})
    assert result["errors"] == {"base": error}
    # The documented answer is accepted.
    answers["now"] = web.json_response(
        {"schema_version": 1, "taken_at": 1.0, "tags": {"x": GOOD_TAG}, "account": None}
    )
    with patch("custom_components.smsp_exporter.async_setup_entry", return_value=True):
        result = await hass.config_entries.flow.async_configure(flow, {CONF_URL: url})
    assert result["type"] == FlowResultType.CREATE_ENTRY


async def test_credentials(hass: HomeAssistant, auth_exporter: Exporter):
    flow = await _start(hass)
    result = await hass.config_entries.flow.async_configure(flow, {CONF_URL: auth_exporter.url})
    assert result["errors"] == {"base": "invalid_auth"}  # none given
    result = await hass.config_entries.flow.async_configure(
        flow, {CONF_URL: auth_exporter.url, CONF_USERNAME: "ha", CONF_PASSWORD: "wrong-secret"}
    )
    assert result["errors"] == {"base": "invalid_auth"}
    result = await hass.config_entries.flow.async_configure(
        flow, {CONF_URL: auth_exporter.url, CONF_USERNAME: "ha", CONF_PASSWORD: "first-secret"}
    )
    await hass.async_block_till_done()
    assert result["type"] == FlowResultType.CREATE_ENTRY
    assert result["data"] == {
        CONF_URL: auth_exporter.url,
        CONF_USERNAME: "ha",
        CONF_PASSWORD: "first-secret",
    }


@pytest.mark.allow_errors
async def test_an_unexpected_error(hass: HomeAssistant, exporter: Exporter):
    flow = await _start(hass)
    with patch(
        "custom_components.smsp_exporter.api.ExporterClient.tags", side_effect=RuntimeError("x")
    ):
        result = await hass.config_entries.flow.async_configure(flow, {CONF_URL: exporter.url})
    assert result["errors"] == {"base": "unknown"}


async def test_options_set_the_poll_interval(hass: HomeAssistant, exporter: Exporter):
    entry = MockConfigEntry(domain=DOMAIN, data={CONF_URL: exporter.url}, unique_id=exporter.url)
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    coordinator = hass.data[DOMAIN][entry.entry_id]
    assert coordinator.update_interval.total_seconds() == 60

    result = await hass.config_entries.options.async_init(entry.entry_id)
    assert result["type"] == FlowResultType.FORM
    with pytest.raises(InvalidData, match="scan_interval"):
        await hass.config_entries.options.async_configure(
            result["flow_id"], {CONF_SCAN_INTERVAL: 5}
        )
    result = await hass.config_entries.options.async_configure(
        result["flow_id"], {CONF_SCAN_INTERVAL: 120}
    )
    await hass.async_block_till_done()
    assert result["type"] == FlowResultType.CREATE_ENTRY
    assert entry.options == {CONF_SCAN_INTERVAL: 120}
    assert hass.data[DOMAIN][entry.entry_id] is coordinator  # no reload needed
    assert coordinator.update_interval.total_seconds() == 120
