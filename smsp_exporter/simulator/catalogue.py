"""The tags a simulator serves: each one's messages (a campaign or a fixed list), the campaign's
spec, and the dialect its answers are written in."""

from __future__ import annotations

import threading

from .campaigns import Source, TagSpec
from .dialects import DIALECTS, Dialect


class Catalogue:
    """Tag name -> source, spec and dialect; thread-safe. A tag's dialect outlives its
    messages: it stays when the tag is replaced or removed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sources: dict[str, Source] = {}
        self._specs: dict[str, TagSpec] = {}
        self._dialects: dict[str, Dialect] = {}

    def put(self, tag: str, source: Source, spec: TagSpec | None = None) -> None:
        """Serve ``source`` as ``tag`` (replacing what it listed); ``spec`` if a campaign."""
        with self._lock:
            self._sources[tag] = source
            if spec is None:
                self._specs.pop(tag, None)
            else:
                self._specs[tag] = spec

    def remove(self, tag: str) -> None:
        """KeyError for an unknown tag."""
        with self._lock:
            del self._sources[tag]
            self._specs.pop(tag, None)

    def tags(self) -> list[str]:
        with self._lock:
            return list(self._sources)

    def spec(self, tag: str) -> TagSpec | None:
        with self._lock:
            return self._specs.get(tag)

    def source(self, tag: str) -> Source | None:
        with self._lock:
            return self._sources.get(tag)

    def sources(self) -> list[Source]:
        with self._lock:
            return list(self._sources.values())

    def set_dialect(self, tag: str, dialect: str) -> None:
        if dialect not in DIALECTS:
            raise ValueError(f"dialect must be one of {', '.join(DIALECTS)}")
        with self._lock:
            if dialect == "documented":
                self._dialects.pop(tag, None)
            else:
                self._dialects[tag] = DIALECTS[dialect]

    def dialect(self, tag: str) -> Dialect | None:
        """The dialect ``tag`` is served in; None: the documented encoding."""
        with self._lock:
            return self._dialects.get(tag)

    def dialect_name(self, tag: str) -> str:
        chosen = self.dialect(tag)
        return next((name for name, d in DIALECTS.items() if d is chosen), "documented")
