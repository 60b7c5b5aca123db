"""Health of every component (workers, breakers, store, config) and of the device as a
whole. Times are monotonic for windows, wall-clock only for display."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from edge.clock import SYSTEM_CLOCK, Clock

log = logging.getLogger("edge.health")

OK, DEGRADED, FAILED, HUNG = "OK", "DEGRADED", "FAILED", "HUNG"
STARTING, STOPPED = "STARTING", "STOPPED"


@dataclass
class ComponentHealth:
    name: str
    state: str
    reason: str
    since_mono: float
    since_wall: float
    critical: bool = False


class HealthRegistry:
    def __init__(self, clock: Clock = SYSTEM_CLOCK):
        self._clock = clock
        self._lock = threading.Lock()
        self._components: dict[str, ComponentHealth] = {}
        self.listeners: list = []  # called with (ComponentHealth) on every change

    def set(self, name: str, state: str, reason: str = "", critical: bool | None = None) -> None:
        with self._lock:
            current = self._components.get(name)
            crit = critical if critical is not None else (current.critical if current else False)
            if current and current.state == state and current.reason == reason and current.critical == crit:
                return
            since = (current.since_mono, current.since_wall) if current and current.state == state else (
                self._clock.monotonic(), self._clock.wall())
            comp = ComponentHealth(name, state, reason, since[0], since[1], crit)
            self._components[name] = comp
            listeners = list(self.listeners)
        for listener in listeners:
            # Listeners run on whichever thread changed the state (a worker's runner, the
            # supervisor loop): one that raises must not kill that thread.
            try:
                listener(comp)
            except Exception:
                log.exception("health listener %r failed on %s -> %s", listener, name, state)

    def remove(self, name: str) -> None:
        with self._lock:
            self._components.pop(name, None)

    def get(self, name: str) -> ComponentHealth | None:
        with self._lock:
            return self._components.get(name)

    def components(self) -> list[ComponentHealth]:
        with self._lock:
            return sorted(self._components.values(), key=lambda c: c.name)

    def overall(self) -> str:
        """FAILED when a critical component is FAILED or HUNG; DEGRADED when anything is not
        OK; else OK. A STOPPED non-critical component (disabled, or done) is not a fault."""
        comps = self.components()
        if any(c.critical and c.state in (FAILED, HUNG) for c in comps):
            return FAILED
        if any(c.state not in (OK, STOPPED) for c in comps):
            return DEGRADED
        return OK

    def summary(self) -> str:
        """One line for systemd's STATUS=."""
        overall = self.overall()
        bad = [f"{c.name} {c.state.lower()}" for c in self.components() if c.state not in (OK, STOPPED)]
        return overall + (": " + ", ".join(bad) if bad else "")

    def as_json(self) -> dict:
        now = self._clock.monotonic()
        return {
            "state": self.overall(),
            "components": {
                c.name: {"state": c.state, "reason": c.reason, "critical": c.critical,
                         "since": c.since_wall, "for_s": round(now - c.since_mono, 1)}
                for c in self.components()
            },
        }
