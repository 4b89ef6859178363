"""The entities' common part: device, unique id, availability, and adding the entities of
subjects as the exporter starts listing them."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from homeassistant.config_entries import ConfigEntry
from homeassistant.core import callback
from homeassistant.helpers.device_registry import DeviceEntryType, DeviceInfo
from homeassistant.helpers.entity import EntityDescription
from homeassistant.helpers.entity_platform import AddEntitiesCallback
from homeassistant.helpers.update_coordinator import CoordinatorEntity

from .const import DOMAIN
from .coordinator import SmspCoordinator, Subject

MODELS = {"tag": "Tag", "template": "Rolling tag", "account": "Account"}


@dataclass(frozen=True, kw_only=True)
class SmspEntityDescription(EntityDescription):
    """``value`` reads the figure from a subject; None means unknown (unavailable)."""

    value: Callable[[Subject], Any]


def device_info(coordinator: SmspCoordinator, subject: Subject) -> DeviceInfo:
    name = subject.name if subject.kind == "account" else f"SMS {subject.name}"
    return DeviceInfo(
        identifiers={(DOMAIN, f"{coordinator.entry.entry_id}:{subject.key}")},
        name=name,
        manufacturer="smsp-exporter",
        model=MODELS[subject.kind],
        entry_type=DeviceEntryType.SERVICE,
        configuration_url=coordinator.client.url,
    )


class SmspEntity(CoordinatorEntity[SmspCoordinator]):
    """A figure of one subject."""

    _attr_has_entity_name = True
    entity_description: SmspEntityDescription

    def __init__(
        self,
        coordinator: SmspCoordinator,
        subject: Subject,
        description: SmspEntityDescription,
    ) -> None:
        super().__init__(coordinator)
        self.entity_description = description
        self.subject_key = subject.key
        self._attr_unique_id = f"{coordinator.entry.entry_id}_{subject.key}_{description.key}"
        self._attr_device_info = device_info(coordinator, subject)

    @property
    def subject(self) -> Subject | None:
        data = self.coordinator.data
        return data.subjects.get(self.subject_key) if data is not None else None

    @property
    def figure(self) -> Any:
        subject = self.subject
        return self.entity_description.value(subject) if subject is not None else None

    @property
    def available(self) -> bool:
        return super().available and self.figure is not None

    @property
    def extra_state_attributes(self) -> dict[str, Any] | None:
        subject = self.subject
        if subject is None or subject.kind != "template":
            return None
        # A rolling tag's figures are today's tag's: which one, and the days the exporter reads.
        return {"tag": subject.tag, "tags": list(subject.tags)}


def add_entities_as_listed(
    coordinator: SmspCoordinator,
    entry: ConfigEntry,
    platform: str,
    async_add_entities: AddEntitiesCallback,
    make: Callable[[SmspCoordinator, Subject], Iterable[SmspEntity]],
) -> None:
    """Add the entities of the subjects listed now, then of each subject (or figure, such as a
    new kind of credit) at the poll that first lists it: no restart needed."""
    known = coordinator.known.setdefault(platform, set())

    @callback
    def add_new() -> None:
        if coordinator.data is None:
            return
        new = []
        for subject in coordinator.data.subjects.values():
            for entity in make(coordinator, subject):
                key = (subject.key, entity.entity_description.key)
                if key not in known:
                    known.add(key)
                    new.append(entity)
        if new:
            async_add_entities(new)

    add_new()
    entry.async_on_unload(coordinator.async_add_listener(add_new))
