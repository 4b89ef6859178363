"""Binary sensors: a problem sensor per tag (for a rolling tag: today's tag) and for the
account, on while the exporter's latest reading of it failed (the reason in ``error``)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from homeassistant.components.binary_sensor import (
    BinarySensorDeviceClass,
    BinarySensorEntity,
    BinarySensorEntityDescription,
)
from homeassistant.config_entries import ConfigEntry
from homeassistant.const import EntityCategory, Platform
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddEntitiesCallback

from .const import DOMAIN
from .coordinator import SmspCoordinator, Subject
from .entity import SmspEntity, SmspEntityDescription, add_entities_as_listed

PARALLEL_UPDATES = 0  # the coordinator polls


@dataclass(frozen=True, kw_only=True)
class SmspBinarySensorDescription(BinarySensorEntityDescription, SmspEntityDescription):
    """A binary sensor's description with the function reading its figure."""


PROBLEM = SmspBinarySensorDescription(
    key="problem",
    name="Problem",
    device_class=BinarySensorDeviceClass.PROBLEM,
    entity_category=EntityCategory.DIAGNOSTIC,
    value=lambda subject: not subject.figures["up"],
)


class ProblemSensor(SmspEntity, BinarySensorEntity):
    entity_description: SmspBinarySensorDescription

    @property
    def is_on(self) -> bool | None:
        return self.figure

    @property
    def extra_state_attributes(self) -> dict[str, Any] | None:
        attributes = dict(super().extra_state_attributes or {})
        subject = self.subject
        if subject is not None and subject.kind != "account":
            attributes["error"] = subject.figures["error"]
        return attributes or None


def _problems(coordinator: SmspCoordinator, subject: Subject) -> Iterator[ProblemSensor]:
    yield ProblemSensor(coordinator, subject, PROBLEM)


async def async_setup_entry(
    hass: HomeAssistant, entry: ConfigEntry, async_add_entities: AddEntitiesCallback
) -> None:
    coordinator: SmspCoordinator = hass.data[DOMAIN][entry.entry_id]
    add_entities_as_listed(
        coordinator, entry, Platform.BINARY_SENSOR, async_add_entities, _problems
    )
