"""Time sources. Durations, TTLs and health windows use `monotonic()`; `wall()` is for
display and records only, because a Pi has no real-time clock and its wall clock jumps
when NTP syncs. Logic that waits takes a clock so tests drive it without sleeping."""

from __future__ import annotations

import threading
import time


class Clock:
    """The real clock."""

    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()


class FakeClock(Clock):
    """A clock that moves only when told to; `wall` can jump independently (NTP sync)."""

    def __init__(self, start: float = 1000.0, wall: float = 1_700_000_000.0):
        self._mono = start
        self._wall = wall
        self._lock = threading.Lock()

    def monotonic(self) -> float:
        with self._lock:
            return self._mono

    def wall(self) -> float:
        with self._lock:
            return self._wall

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._mono += seconds
            self._wall += seconds

    def jump_wall(self, seconds: float) -> None:
        """Move only the wall clock, as an NTP step does on a Pi that booted in 1970."""
        with self._lock:
            self._wall += seconds


SYSTEM_CLOCK = Clock()
