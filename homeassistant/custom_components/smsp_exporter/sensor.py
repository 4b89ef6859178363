"""Sensors: per tag (for a rolling tag: today's tag) the messages by status, the STOP replies
and the last success; the account's credits, balance and last success."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from homeassistant.components.sensor import (
    SensorDeviceClass,
    SensorEntity,
    SensorEntityDescription,
    SensorStateClass,
)
from homeassistant.config_entries import ConfigEntry
from homeassistant.const import EntityCategory, Platform
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddEntitiesCallback
from homeassistant.util import dt as dt_util

from .const import DELIVERED, DOMAIN, NOT_DELIVERED, WAITING
from .coordinator import SmspCoordinator, Subject
from .entity import SmspEntity, SmspEntityDescription, add_entities_as_listed

PARALLEL_UPDATES = 0  # the coordinator polls
UNIT = "SMS"


@dataclass(frozen=True, kw_only=True)
class SmspSensorDescription(SensorEntityDescription, SmspEntityDescription):
    """A sensor's description with the function reading its figure."""


def _count(status: str) -> Callable[[Subject], int | None]:
    def value(subject: Subject) -> int | None:
        count = subject.figures["statuses"].get(status)
        return count if subject.figures["up"] and isinstance(count, int) else None

    return value


def _stop(subject: Subject) -> int | None:
    stop = subject.figures["stop"]
    return stop if subject.figures["up"] and isinstance(stop, int) else None


def _time(subject: Subject) -> datetime | None:
    when = subject.figures["last_success"]
    return dt_util.utc_from_timestamp(when) if when is not None else None


TAG_SENSORS = (
    SmspSensorDescription(
        key="delivered",
        name="Delivered",
        icon="mdi:message-check",
        native_unit_of_measurement=UNIT,
        state_class=SensorStateClass.TOTAL_INCREASING,
        value=_count(DELIVERED),
    ),
    SmspSensorDescription(
        key="not_delivered",
        name="Not delivered",
        icon="mdi:message-alert",
        native_unit_of_measurement=UNIT,
        state_class=SensorStateClass.TOTAL_INCREASING,
        value=_count(NOT_DELIVERED),
    ),
    SmspSensorDescription(
        key="waiting",
        name="Waiting",
        icon="mdi:message-processing",
        native_unit_of_measurement=UNIT,
        state_class=SensorStateClass.MEASUREMENT,
        value=_count(WAITING),
    ),
    SmspSensorDescription(
        key="stop",
        name="STOP",
        icon="mdi:message-minus",
        native_unit_of_measurement=UNIT,
        state_class=SensorStateClass.TOTAL_INCREASING,
        value=_stop,
    ),
    SmspSensorDescription(
        key="last_success",
        name="Last success",
        device_class=SensorDeviceClass.TIMESTAMP,
        entity_category=EntityCategory.DIAGNOSTIC,
        value=_time,
    ),
)

CREDIT_NAMES = {"sms": "SMS credit", "sms_eco": "SMS eco credit", "hlr": "HLR credit"}


def _credit(kind: str) -> SmspSensorDescription:
    def value(subject: Subject) -> float | None:
        return subject.figures["credits"].get(kind) if subject.figures["up"] else None

    return SmspSensorDescription(
        key=f"credit_{kind}",
        name=CREDIT_NAMES.get(kind, f"{kind} credit"),
        icon="mdi:cash-multiple",
        native_unit_of_measurement=UNIT if kind.startswith("sms") else None,
        state_class=SensorStateClass.MEASUREMENT,
        value=value,
    )


def _balance(subject: Subject) -> float | None:
    figures = subject.figures
    known = figures["up"] and figures["currency"] is not None
    return figures["balance"] if known else None


BALANCE = SmspSensorDescription(
    key="balance",
    name="Balance",
    device_class=SensorDeviceClass.MONETARY,
    state_class=SensorStateClass.TOTAL,
    value=_balance,
)
ACCOUNT_LAST_SUCCESS = SmspSensorDescription(
    key="last_success",
    name="Last success",
    device_class=SensorDeviceClass.TIMESTAMP,
    entity_category=EntityCategory.DIAGNOSTIC,
    value=_time,
)


class SmspSensor(SmspEntity, SensorEntity):
    entity_description: SmspSensorDescription

    @property
    def native_value(self) -> Any:
        return self.figure


class BalanceSensor(SmspSensor):
    """The balance, in the account's currency (as the exporter reads it)."""

    @property
    def native_unit_of_measurement(self) -> str | None:
        subject = self.subject
        return subject.figures["currency"] if subject is not None else None


def _sensors(coordinator: SmspCoordinator, subject: Subject) -> Iterator[SmspSensor]:
    if subject.kind != "account":
        for description in TAG_SENSORS:
            yield SmspSensor(coordinator, subject, description)
        return
    for kind in subject.figures["credits"]:
        yield SmspSensor(coordinator, subject, _credit(kind))
    yield BalanceSensor(coordinator, subject, BALANCE)
    yield SmspSensor(coordinator, subject, ACCOUNT_LAST_SUCCESS)


async def async_setup_entry(
    hass: HomeAssistant, entry: ConfigEntry, async_add_entities: AddEntitiesCallback
) -> None:
    coordinator: SmspCoordinator = hass.data[DOMAIN][entry.entry_id]
    add_entities_as_listed(coordinator, entry, Platform.SENSOR, async_add_entities, _sensors)
