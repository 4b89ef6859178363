"""Set-up from the UI: the exporter's URL (and basic-auth credentials if it asks for them),
checked against its /api/v1/tags before saving; re-authentication; the poll interval."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import voluptuous as vol
from homeassistant.config_entries import ConfigEntry, ConfigFlow, OptionsFlow
from homeassistant.const import CONF_PASSWORD, CONF_URL, CONF_USERNAME
from homeassistant.core import HomeAssistant, callback
from homeassistant.data_entry_flow import FlowResult
from homeassistant.helpers.aiohttp_client import async_get_clientsession
from homeassistant.helpers.selector import (
    TextSelector,
    TextSelectorConfig,
    TextSelectorType,
)

from .api import CannotConnect, ExporterClient, InvalidAuth, NotExporter, normalize_url
from .const import (
    CONF_SCAN_INTERVAL,
    DEFAULT_SCAN_INTERVAL,
    DOMAIN,
    LOGGER,
    MAX_SCAN_INTERVAL,
    MIN_SCAN_INTERVAL,
)

PASSWORD = TextSelector(TextSelectorConfig(type=TextSelectorType.PASSWORD))
URL = TextSelector(TextSelectorConfig(type=TextSelectorType.URL))


async def _check(hass: HomeAssistant, data: Mapping[str, Any]) -> str | None:
    """None when the exporter answers its documented JSON with these settings; else the error
    key shown (translations/en.json, config.error)."""
    client = ExporterClient(
        async_get_clientsession(hass),
        data[CONF_URL],
        data.get(CONF_USERNAME) or None,
        data.get(CONF_PASSWORD) or None,
    )
    try:
        await client.tags()
    except InvalidAuth:
        return "invalid_auth"
    except NotExporter:
        return "not_exporter"
    except CannotConnect:
        return "cannot_connect"
    except Exception:  # the form shows "unknown"; the log has the traceback
        LOGGER.exception("Unexpected error while checking the exporter at %s", data[CONF_URL])
        return "unknown"
    return None


def _credentials(user_input: Mapping[str, Any]) -> dict[str, str]:
    """The credentials given, empty fields left out (the exporter asks for none)."""
    return {key: user_input[key] for key in (CONF_USERNAME, CONF_PASSWORD) if user_input.get(key)}


class SmspConfigFlow(ConfigFlow, domain=DOMAIN):
    """One entry per exporter (its URL is the unique id)."""

    VERSION = 1

    def __init__(self) -> None:
        self._reauth_entry: ConfigEntry | None = None

    async def async_step_user(self, user_input: dict[str, Any] | None = None) -> FlowResult:
        errors: dict[str, str] = {}
        if user_input is not None:
            try:
                url = normalize_url(user_input[CONF_URL])
            except ValueError:
                errors[CONF_URL] = "invalid_url"
            else:
                await self.async_set_unique_id(url)
                self._abort_if_unique_id_configured()
                data = {CONF_URL: url, **_credentials(user_input)}
                error = await _check(self.hass, data)
                if error is None:
                    return self.async_create_entry(title=url, data=data)
                errors["base"] = error
        defaults = user_input or {}
        schema = vol.Schema(
            {
                vol.Required(CONF_URL, default=defaults.get(CONF_URL, "")): URL,
                vol.Optional(CONF_USERNAME, default=defaults.get(CONF_USERNAME, "")): str,
                vol.Optional(CONF_PASSWORD): PASSWORD,
            }
        )
        return self.async_show_form(step_id="user", data_schema=schema, errors=errors)

    async def async_step_reauth(self, entry_data: Mapping[str, Any]) -> FlowResult:
        self._reauth_entry = self.hass.config_entries.async_get_entry(self.context["entry_id"])
        return await self.async_step_reauth_confirm()

    async def async_step_reauth_confirm(
        self, user_input: dict[str, Any] | None = None
    ) -> FlowResult:
        entry = self._reauth_entry
        assert entry is not None
        errors: dict[str, str] = {}
        if user_input is not None:
            data = {CONF_URL: entry.data[CONF_URL], **_credentials(user_input)}
            error = await _check(self.hass, data)
            if error is None:
                return self.async_update_reload_and_abort(entry, data=data)
            errors["base"] = error
        schema = vol.Schema(
            {
                vol.Optional(CONF_USERNAME, default=entry.data.get(CONF_USERNAME, "")): str,
                vol.Optional(CONF_PASSWORD): PASSWORD,
            }
        )
        return self.async_show_form(
            step_id="reauth_confirm",
            data_schema=schema,
            errors=errors,
            description_placeholders={"url": entry.data[CONF_URL]},
        )

    @staticmethod
    @callback
    def async_get_options_flow(config_entry: ConfigEntry) -> OptionsFlow:
        return SmspOptionsFlow(config_entry)


class SmspOptionsFlow(OptionsFlow):
    """The poll interval."""

    def __init__(self, entry: ConfigEntry) -> None:
        self.entry = entry

    async def async_step_init(self, user_input: dict[str, Any] | None = None) -> FlowResult:
        if user_input is not None:
            return self.async_create_entry(title="", data=user_input)
        current = self.entry.options.get(CONF_SCAN_INTERVAL, DEFAULT_SCAN_INTERVAL)
        schema = vol.Schema(
            {
                vol.Required(CONF_SCAN_INTERVAL, default=current): vol.All(
                    vol.Coerce(int), vol.Range(min=MIN_SCAN_INTERVAL, max=MAX_SCAN_INTERVAL)
                )
            }
        )
        return self.async_show_form(step_id="init", data_schema=schema)
