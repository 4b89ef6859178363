"""Simulated time: seconds since the simulated t=0, running, driven by a callable, or frozen."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Clock:
    """By default real monotonic time times ``speed`` since :meth:`restart`; ``fn`` (a callable
    returning seconds) replaces it; :meth:`freeze` and :meth:`advance` make it manual."""

    def __init__(self, speed: float = 1.0, fn: Callable[[], float] | None = None) -> None:
        if speed <= 0:
            raise ValueError("speed must be > 0")
        self._lock = threading.Lock()
        self._fn = fn
        self._speed = float(speed)
        self._base = 0.0
        self._mono0 = time.monotonic()
        self._frozen_at: float | None = None

    def _now_locked(self) -> float:
        if self._frozen_at is not None:
            return self._frozen_at
        if self._fn is not None:
            return self._fn() + self._base
        return self._base + (time.monotonic() - self._mono0) * self._speed

    def now(self) -> float:
        with self._lock:
            return self._now_locked()

    def restart(self) -> None:
        """A running real-time clock starts again from t=0 (when the server starts)."""
        with self._lock:
            if self._frozen_at is None and self._fn is None:
                self._mono0 = time.monotonic()

    @property
    def frozen(self) -> bool:
        return self._frozen_at is not None

    @property
    def speed(self) -> float:
        return self._speed

    @speed.setter
    def speed(self, value: float) -> None:
        if value <= 0:
            raise ValueError("speed must be > 0")
        with self._lock:
            self._base, self._mono0 = self._now_locked(), time.monotonic()
            self._speed = float(value)

    def freeze(self, at: float | None = None) -> None:
        with self._lock:
            self._frozen_at = self._now_locked() if at is None else float(at)

    def unfreeze(self) -> None:
        with self._lock:
            if self._frozen_at is None:
                return
            at, self._frozen_at = self._frozen_at, None
            if self._fn is not None:
                self._base = at - self._fn()
            else:
                self._base, self._mono0 = at, time.monotonic()

    def advance(self, seconds: float) -> float:
        if not seconds >= 0:
            raise ValueError("time only moves forward")
        with self._lock:
            if self._frozen_at is not None:
                self._frozen_at += seconds
            else:
                self._base += seconds
            return self._now_locked()
