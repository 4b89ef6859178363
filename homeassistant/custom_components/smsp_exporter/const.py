"""Constants of the smsp-exporter integration."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Final

DOMAIN: Final = "smsp_exporter"
LOGGER = logging.getLogger(__package__)

CONF_SCAN_INTERVAL: Final = "scan_interval"
DEFAULT_SCAN_INTERVAL: Final = 60  # seconds: the exporter's /api/v1/tags may run a round
MIN_SCAN_INTERVAL: Final = 10
MAX_SCAN_INTERVAL: Final = 3600

API_PATH: Final = "/api/v1/tags"
SCHEMA_VERSION: Final = 1
REQUEST_TIMEOUT: Final = 30  # seconds: in scrape mode the answer waits for a whole round

# A tag (or template, or the account) the exporter no longer lists: its entities are unavailable
# at once, and its device and entities leave the registries after this long.
REMOVE_AFTER: Final = timedelta(hours=24)

# The figures of a tag, by the status names of /api/v1/tags.
DELIVERED: Final = "Delivered"
NOT_DELIVERED: Final = "Not delivered"
WAITING: Final = "Waiting"
