"""The exporter's ``GET /api/v1/tags`` (schema: docs/api/tags-v1.schema.json), read and checked.

Errors are one of three exceptions, each with a message safe to log: it never holds the
password (the URL given is refused when it carries credentials)."""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from .const import API_PATH, REQUEST_TIMEOUT, SCHEMA_VERSION

TAG_KEYS = frozenset(
    (
        "up",
        "last_success",
        "error",
        "statuses",
        "stop",
        "complete",
        "oldest_waiting",
        "last_status",
        "template",
    )
)
ACCOUNT_KEYS = frozenset(("up", "credits", "balance", "currency", "last_success"))


class ExporterError(Exception):
    """The exporter could not be read."""


class CannotConnect(ExporterError):
    """No answer: wrong address, exporter down, TLS refused, timeout, HTTP error."""


class InvalidAuth(ExporterError):
    """The exporter refused the credentials (HTTP 401)."""


class NotExporter(ExporterError):
    """Something answered, but not the documented JSON of an smsp-exporter."""


def normalize_url(text: str) -> str:
    """The exporter's base URL (scheme, host, port, optional path prefix), without a trailing
    slash. ValueError when it is not an http(s) URL, or carries a user, password, query or
    fragment (credentials go in their own fields)."""
    text = text.strip()
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("not an http(s) URL")
    if parts.username is not None or parts.password is not None or parts.query or parts.fragment:
        raise ValueError("credentials, query or fragment in the URL")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ValueError("bad port") from None
    path = parts.path.rstrip("/")
    if path.endswith(API_PATH):
        path = path[: -len(API_PATH)]
    return f"{parts.scheme}://{parts.netloc}{path}"


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _optional_number(value: Any) -> bool:
    return value is None or _number(value)


def _check_tag(name: str, tag: Any) -> None:
    if not isinstance(tag, dict) or set(tag) != TAG_KEYS:
        raise NotExporter(f"tag {name!r}: not the documented fields")
    statuses = tag["statuses"]
    if not isinstance(tag["up"], bool) or not isinstance(statuses, dict):
        raise NotExporter(f"tag {name!r}: up or statuses of the wrong type")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in statuses.values()):
        raise NotExporter(f"tag {name!r}: a status count is not an integer")
    for key in ("last_success", "oldest_waiting", "last_status"):
        if not _optional_number(tag[key]):
            raise NotExporter(f"tag {name!r}: {key} is not a time")
    if tag["stop"] is not None and (not isinstance(tag["stop"], int) or tag["stop"] < 0):
        raise NotExporter(f"tag {name!r}: stop is not a count")
    for key in ("error", "template"):
        if tag[key] is not None and not isinstance(tag[key], str):
            raise NotExporter(f"tag {name!r}: {key} is not a string")


def _check_account(account: Any) -> None:
    if account is None:
        return
    if not isinstance(account, dict) or set(account) != ACCOUNT_KEYS:
        raise NotExporter("account: not the documented fields")
    credits = account["credits"]
    if not isinstance(account["up"], bool) or not isinstance(credits, dict):
        raise NotExporter("account: up or credits of the wrong type")
    if not all(_number(v) for v in credits.values()):
        raise NotExporter("account: a credit is not a number")
    if not _optional_number(account["balance"]) or not _optional_number(account["last_success"]):
        raise NotExporter("account: balance or last_success is not a number")
    if account["currency"] is not None and not isinstance(account["currency"], str):
        raise NotExporter("account: currency is not a string")


def check_document(document: Any) -> dict[str, Any]:
    """``document`` if it is a version-1 answer of /api/v1/tags; NotExporter if not."""
    if not isinstance(document, dict):
        raise NotExporter("the answer is not a JSON object")
    if document.get("schema_version") != SCHEMA_VERSION:
        raise NotExporter(f"schema_version is not {SCHEMA_VERSION}")
    if not {"taken_at", "tags", "account"} <= set(document):
        raise NotExporter("taken_at, tags or account missing")
    if not _number(document["taken_at"]) or not isinstance(document["tags"], dict):
        raise NotExporter("taken_at or tags of the wrong type")
    for name, tag in document["tags"].items():
        _check_tag(name, tag)
    _check_account(document["account"])
    return document


@dataclass(frozen=True)
class ExporterClient:
    """Reads one exporter: base URL, optional basic-auth credentials, certificates verified
    (the session is Home Assistant's, made with verify_ssl=True)."""

    session: aiohttp.ClientSession
    url: str
    username: str | None = None
    password: str | None = None

    async def tags(self) -> dict[str, Any]:
        """The checked answer of ``GET /api/v1/tags``."""
        auth = None
        if self.username:
            auth = aiohttp.BasicAuth(self.username, self.password or "")
        try:
            async with (
                asyncio.timeout(REQUEST_TIMEOUT),
                self.session.get(
                    self.url + API_PATH,
                    auth=auth,
                    headers={"Accept": "application/json"},
                    allow_redirects=False,
                ) as answer,
            ):
                if answer.status == 401:
                    raise InvalidAuth("the exporter refused the credentials (HTTP 401)")
                if answer.status in (404, 405) or 300 <= answer.status < 400:
                    raise NotExporter(f"HTTP {answer.status} for {API_PATH}")
                if answer.status != 200:
                    raise CannotConnect(f"HTTP {answer.status} from the exporter")
                try:
                    document = await answer.json(content_type=None)
                except ValueError:
                    raise NotExporter(f"{API_PATH} did not answer JSON") from None
        except TimeoutError:
            raise CannotConnect(f"no answer within {REQUEST_TIMEOUT}s") from None
        except aiohttp.ClientError as err:
            raise CannotConnect(f"{type(err).__name__}: {err}") from None
        return check_document(document)
