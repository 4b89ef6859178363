"""``/api/v1/tags``: the latest figures as JSON, for Home Assistant's RESTful sensor and the like.

The schema is ``docs/api/tags-v1.schema.json``; an example answer::

    {"schema_version": 1, "taken_at": 1764000000.5,
     "tags": {"montag": {"up": true, "last_success": 1764000000.5, "error": null,
                         "statuses": {"Delivered": 12, "Not delivered": 1, "Waiting": 3},
                         "stop": 2, "complete": true, "oldest_waiting": 1763999000,
                         "last_status": 1764000000, "template": null}},
     "account": {"up": true, "credits": {"sms": 9984, "sms_eco": 20000, "hlr": 0},
                 "balance": 499.28, "currency": "EUR", "last_success": 1764000000.5}}

It answers from the same snapshot source as ``/metrics``: in ``scrape`` mode a request runs (or
shares) a round, exactly like a scrape, so poll it no more often than Prometheus would, or use
``collection.min_interval`` or the ``background`` mode. ``account`` is ``null`` unless
``account.enabled``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from http import HTTPStatus
from typing import Any
from wsgiref.types import StartResponse, WSGIEnvironment

from .account import AccountState
from .collection.rounds import Snapshot, Source, TagState
from .collector import DOCUMENTED_STATUSES
from .web import answer_text

SCHEMA_VERSION = 1


def _tag(state: TagState) -> dict[str, Any]:
    counts = state.counts
    statuses: dict[str, int] = {}
    if counts is not None:
        statuses = {name: counts.statuses.get(name, 0) for name in DOCUMENTED_STATUSES}
        statuses.update(sorted(counts.statuses.items()))
    return {
        "up": state.up,
        "last_success": state.last_success,
        "error": state.error,
        "statuses": statuses,
        "stop": counts.stop if counts is not None else None,
        "complete": counts.complete if counts is not None else None,
        "oldest_waiting": counts.oldest_waiting if counts is not None else None,
        "last_status": counts.newest if counts is not None else None,
        "template": state.template,
    }


def _account(state: AccountState | None) -> dict[str, Any] | None:
    if state is None:
        return None
    credit = state.credit
    return {
        "up": state.up,
        "credits": dict(credit.credits) if credit is not None else {},
        "balance": credit.balance if credit is not None else None,
        "currency": credit.currency if credit is not None and credit.currency else None,
        "last_success": state.last_success,
    }


def document(snapshot: Snapshot) -> dict[str, Any]:
    """The JSON document describing a snapshot."""
    return {
        "schema_version": SCHEMA_VERSION,
        "taken_at": snapshot.taken_at,
        "tags": {state.tag: _tag(state) for state in snapshot.tags},
        "account": _account(snapshot.account),
    }


class TagsApi:
    """The WSGI application behind ``/api/v1/tags``."""

    def __init__(self, source: Source) -> None:
        self.source = source

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if str(environ.get("REQUEST_METHOD", "GET")).upper() not in ("GET", "HEAD"):
            return answer_text(
                start_response,
                HTTPStatus.METHOD_NOT_ALLOWED,
                "method not allowed\n",
                ("Allow", "GET, HEAD"),
            )
        body = json.dumps(document(self.source.snapshot(None)), separators=(",", ":"))
        start_response(
            "200 OK",
            [("Content-Type", "application/json"), ("Cache-Control", "no-store")],
        )
        return [body.encode()]
