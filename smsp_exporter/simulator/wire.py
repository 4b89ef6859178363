"""The API's vocabulary on the wire: paths, field names, statuses, error texts, JSON bodies."""

from __future__ import annotations

import ipaddress
import json
from typing import Any

API_PREFIX = "/v1/"
CONTROL_PREFIX = "/_sim/"
BULK = "bulk-status-by-tag"
ME = "me"
ENDPOINTS = (BULK, ME)
LIST_KEY = "StatutResponse_List"

DELIVERED = "Delivered"
NOT_DELIVERED = "Not delivered"
WAITING = "Waiting"

ERROR_MESSAGES: dict[int, str] = {
    1: "La Clé API est requise",
    3: "L\u2019ID du message est requis",
    4: "Message introuvable",
    10: "Clé API incorrecte",
}

JSON = "application/json"
HTML = "text/html; charset=utf-8"


def dumps(obj: Any) -> bytes:
    """Compact JSON with non-ASCII escaped (``\\u00e9``), as PHP's ``json_encode`` writes it."""
    return json.dumps(obj, separators=(",", ":")).encode()


def first(params: dict[str, list[str]], name: str) -> str | None:
    values = params.get(name)
    return values[0] if values else None


def parse_page(raw: str | None) -> int:
    """Page numbers are 1-based; anything that is not a positive integer is page 1."""
    if raw is None:
        return 1
    text = raw.strip()
    if not (text.isascii() and text.isdigit()):
        return 1
    if len(text) > 18:  # past any tag's end; avoids int() of thousands of digits
        return 10**18
    return max(int(text), 1)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback
