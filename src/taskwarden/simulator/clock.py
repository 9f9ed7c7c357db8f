"""The simulation's clock, shared by every platform simulator."""

from __future__ import annotations

import threading
import time


class SimClock:
    """Simulation time: seconds since the clock was made, run ``speed`` times faster than the
    wall clock, and movable forward by :meth:`advance` (tests that must not sleep)."""

    def __init__(self, speed: float = 1.0) -> None:
        self._lock = threading.Lock()
        self._epoch = time.time()
        self._mark = time.monotonic()
        self._base = 0.0
        self.speed = speed

    def now(self) -> float:
        return self._base + (time.monotonic() - self._mark) * self.speed

    def epoch(self, sim_time: float) -> float:
        """The wall-clock time a simulation time is shown as in timestamps."""
        return self._epoch + sim_time

    def set_speed(self, speed: float) -> None:
        if speed <= 0:
            raise ValueError("speed must be > 0")
        with self._lock:
            self._base, self._mark = self.now(), time.monotonic()
            self.speed = speed

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        with self._lock:
            self._base += seconds
