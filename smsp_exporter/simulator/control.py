"""The control endpoints ``/_sim/…``: drive a simulator in another process over HTTP.

Loopback clients only. ``GET``: ``stats``, ``expected?tag=``, ``faults``. ``POST`` with a JSON
object: ``tag`` (a :class:`.TagSpec`'s fields), ``messages`` (``{"tag", "messages": [{"phone",
"status", "stop", "date"}]}``), ``remove-tag`` (``{"name"}``), ``dialect`` (``{"tag",
"dialect"}``), ``fault`` (``{"tag", "kind", ...}``), ``clear-faults``, ``freeze`` (``{"at"}``),
``unfreeze``, ``advance`` (``{"seconds"}``, frozen clock only), ``reset-stats``. Each is the
:class:`.Simulator` method of that name.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, fields
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from .campaigns import Message, TagSpec
from .server import Exchange
from .wire import CONTROL_PREFIX, dumps, first, is_loopback

if TYPE_CHECKING:
    from .core import Simulator

Answer = tuple[int, dict[str, Any]]


def _ok() -> Answer:
    return 200, {"ok": True}


class Control:
    """The ``/_sim/`` route of one :class:`.Simulator`, through its public methods only."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        query_actions: dict[str, Callable[[dict[str, list[str]]], Answer]] = {
            "stats": self._stats,
            "expected": self._expected,
            "faults": lambda query: (200, {"faults": sim.faults()}),
        }
        body_actions: dict[str, Callable[[dict[str, Any]], Answer]] = {
            "tag": self._tag,
            "messages": self._messages,
            "remove-tag": self._remove_tag,
            "fault": self._fault,
            "clear-faults": self._clear_faults,
            "freeze": self._freeze,
            "unfreeze": self._unfreeze,
            "advance": self._advance,
            "reset-stats": self._reset_stats,
            "dialect": self._dialect,
        }
        self.get_actions, self.post_actions = query_actions, body_actions

    def handle(self, h: Exchange, method: str, path: str, query: str, payload: bytes) -> None:
        """The server's route for ``/_sim/``."""
        if not is_loopback(h.client_host):
            h.send(403, dumps({"ok": False, "error": "control endpoints are loopback only"}))
            return
        action = path[len(CONTROL_PREFIX) :]
        if action not in self.get_actions and action not in self.post_actions:
            h.send(404, dumps({"ok": False, "error": f"no control action {action!r}"}))
            return
        if method != ("GET" if action in self.get_actions else "POST"):
            h.send(405, dumps({"ok": False, "error": "wrong method"}))
            return
        try:
            doc = json.loads(payload) if payload.strip() else {}
            if not isinstance(doc, dict):
                raise ValueError("the body must be a JSON object")
            if action in self.get_actions:
                status, answer = self.get_actions[action](parse_qs(query))
            else:
                status, answer = self.post_actions[action](doc)
        except (ValueError, TypeError, KeyError) as exc:
            status, answer = 400, {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        h.send(status, dumps(answer))

    def _stats(self, query: dict[str, list[str]]) -> Answer:
        stats = self.sim.stats()
        stats["by_page"] = [[tag, page, n] for (tag, page), n in stats["by_page"].items()]
        stats["now"] = self.sim.now()
        return 200, stats

    def _expected(self, query: dict[str, list[str]]) -> Answer:
        tag = first(query, "tag")
        if tag is None or tag not in self.sim.tags():
            return 404, {"ok": False, "error": "unknown tag"}
        return 200, self.sim.expected(tag)

    def _tag(self, doc: dict[str, Any]) -> Answer:
        unknown = set(doc) - {f.name for f in fields(TagSpec)}
        if unknown:
            raise ValueError(f"unknown TagSpec fields: {', '.join(sorted(unknown))}")
        spec = TagSpec(**doc)
        self.sim.add_tag(spec)
        return 200, {"ok": True, "tag": asdict(spec)}

    def _messages(self, doc: dict[str, Any]) -> Answer:
        messages = [
            Message(str(m["phone"]), str(m["status"]), bool(m["stop"]), int(m["date"]))
            for m in doc["messages"]
        ]
        self.sim.set_messages(str(doc["tag"]), messages)
        return 200, {"ok": True, "messages": len(messages)}

    def _remove_tag(self, doc: dict[str, Any]) -> Answer:
        if doc.get("name") not in self.sim.tags():
            return 404, {"ok": False, "error": "unknown tag"}
        self.sim.remove_tag(doc["name"])
        return _ok()

    def _dialect(self, doc: dict[str, Any]) -> Answer:
        self.sim.set_dialect(str(doc["tag"]), str(doc["dialect"]))
        return _ok()

    def _fault(self, doc: dict[str, Any]) -> Answer:
        params = dict(doc)
        tag = params.pop("tag", None)
        kind = params.pop("kind")
        return 200, {"ok": True, "id": self.sim.set_fault(tag, kind, **params)}

    def _advance(self, doc: dict[str, Any]) -> Answer:
        if not self.sim.frozen:
            return 409, {"ok": False, "error": "the clock is not frozen"}
        return 200, {"ok": True, "now": self.sim.advance(float(doc["seconds"]))}

    def _freeze(self, doc: dict[str, Any]) -> Answer:
        self.sim.freeze(doc.get("at"))
        return 200, {"ok": True, "now": self.sim.now()}

    def _unfreeze(self, doc: dict[str, Any]) -> Answer:
        self.sim.unfreeze()
        return 200, {"ok": True, "now": self.sim.now()}

    def _clear_faults(self, doc: dict[str, Any]) -> Answer:
        self.sim.clear_faults()
        return _ok()

    def _reset_stats(self, doc: dict[str, Any]) -> Answer:
        self.sim.reset_stats()
        return _ok()
