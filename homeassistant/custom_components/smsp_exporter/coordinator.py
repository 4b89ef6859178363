"""One DataUpdateCoordinator per exporter: polls /api/v1/tags, turns the answer into subjects
(a device each: a tag, a rolling tag template, the account) and retires the devices of
subjects the exporter stopped listing."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from homeassistant.config_entries import ConfigEntry
from homeassistant.core import HomeAssistant, callback
from homeassistant.exceptions import ConfigEntryAuthFailed
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers.update_coordinator import DataUpdateCoordinator, UpdateFailed
from homeassistant.util import dt as dt_util

from .api import ExporterClient, ExporterError, InvalidAuth
from .const import CONF_SCAN_INTERVAL, DEFAULT_SCAN_INTERVAL, DOMAIN, LOGGER, REMOVE_AFTER

ACCOUNT = "account"


@dataclass(frozen=True)
class Subject:
    """What one device shows. ``kind`` is "tag", "template" or "account"; ``figures`` is the
    tag's object of the answer (for a template: today's tag's) or the account's."""

    key: str
    kind: str
    name: str
    figures: dict[str, Any]
    tag: str | None = None
    tags: tuple[str, ...] = field(default=())  # a template's tags, today's first


@dataclass(frozen=True)
class ExporterData:
    document: dict[str, Any]
    subjects: dict[str, Subject]


def subjects_of(document: dict[str, Any]) -> dict[str, Subject]:
    """The subjects of an answer: static tags, then templates, then the account (if read).

    The exporter lists a template's tags today's first (smsp_exporter/tags.py), so the first
    tag of a template is today's."""
    out: dict[str, Subject] = {}
    by_template: dict[str, list[str]] = {}
    for tag, figures in document["tags"].items():
        template = figures["template"]
        if template is None:
            out[f"tag:{tag}"] = Subject(f"tag:{tag}", "tag", tag, figures, tag, (tag,))
        else:
            by_template.setdefault(template, []).append(tag)
    for template, tags in by_template.items():
        today = tags[0]
        key = f"template:{template}"
        out[key] = Subject(key, "template", template, document["tags"][today], today, tuple(tags))
    if document["account"] is not None:
        out[ACCOUNT] = Subject(ACCOUNT, "account", "SMS Partner account", document["account"])
    return out


class _InfoLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """The coordinator's logger: it logs the exporter becoming unreachable once and its return
    once; this makes the first of those INFO rather than ERROR (the quality scale's
    log-when-unavailable rule), unexpected exceptions staying errors (logger.exception)."""

    def error(self, msg: object, *args: object, **kwargs: Any) -> None:
        self.log(logging.INFO, msg, *args, **kwargs)


class SmspCoordinator(DataUpdateCoordinator[ExporterData]):
    """Polls one exporter."""

    def __init__(self, hass: HomeAssistant, entry: ConfigEntry, client: ExporterClient) -> None:
        super().__init__(
            hass,
            _InfoLogger(LOGGER, {}),  # type: ignore[arg-type]
            name=f"smsp-exporter at {client.url}",
            update_interval=interval_of(entry),
        )
        self.entry = entry
        self.client = client
        # Entities made so far, by platform: (subject key, figure).
        self.known: dict[str, set[tuple[str, str]]] = {}
        # Subjects the exporter stopped listing, since when; their devices go after this long.
        self.missing_since: dict[str, datetime] = {}
        self.remove_after: timedelta = REMOVE_AFTER

    async def _async_update_data(self) -> ExporterData:
        try:
            document = await self.client.tags()
        except InvalidAuth as err:
            raise ConfigEntryAuthFailed(str(err)) from err
        except ExporterError as err:
            raise UpdateFailed(str(err)) from err
        return ExporterData(document, subjects_of(document))

    def device_key(self, device: dr.DeviceEntry) -> str | None:
        """The subject key of one of this entry's devices."""
        prefix = f"{self.entry.entry_id}:"
        for domain, identifier in device.identifiers:
            if domain == DOMAIN and identifier.startswith(prefix):
                return identifier[len(prefix) :]
        return None

    @callback
    def retire_missing(self) -> None:
        """After an answer: the devices of subjects no longer listed leave the registries
        (their entities with them) once missing for ``remove_after``. Nothing happens while the
        exporter does not answer."""
        if not self.last_update_success or self.data is None:
            return
        now = dt_util.utcnow()
        registry = dr.async_get(self.hass)
        for device in dr.async_entries_for_config_entry(registry, self.entry.entry_id):
            key = self.device_key(device)
            if key is None:
                continue
            if key in self.data.subjects:
                self.missing_since.pop(key, None)
                continue
            since = self.missing_since.setdefault(key, now)
            if now - since < self.remove_after:
                continue
            LOGGER.info("Removing %s: the exporter has not listed it since %s", device.name, since)
            registry.async_update_device(device.id, remove_config_entry_id=self.entry.entry_id)
            del self.missing_since[key]
            for known in self.known.values():
                known.difference_update({k for k in known if k[0] == key})


def interval_of(entry: ConfigEntry) -> timedelta:
    return timedelta(seconds=entry.options.get(CONF_SCAN_INTERVAL, DEFAULT_SCAN_INTERVAL))
