"""What a worker is, and what the runtime hands it.

A worker is a class with a `name`, its config `sections`, a `run(ctx)` loop and optional
`health()` / `interrupt()` hooks. It blocks on I/O with timeouts so it can `ctx.heartbeat()`
and notice `ctx.stopping`. Workers are found through the `edge.workers` entry-point group,
so the runtime never imports `services` by name and a worker never imports another one.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Callable

from edge.clock import Clock

if TYPE_CHECKING:  # imported for annotations only: no cycle at run time
    from edge.breaker import BreakerBoard
    from edge.bus import EventBus
    from edge.entities import Entity
    from edge.config import Config, Section, SectionValues
    from edge.health import HealthRegistry
    from edge.states import StateBoard
    from edge.store import Store

PERMANENT, TRANSIENT, TEMPORARY = "permanent", "transient", "temporary"


class Worker:
    """Base class. Subclasses set the class attributes and implement `run`."""

    name: str = ""
    sections: tuple["Section", ...] = ()  # config sections this worker owns; the first is its own
    restart: str = PERMANENT       # permanent: always restarted; transient: only after a crash; temporary: never
    critical: bool = False         # a crash loop or hang exits the process so systemd restarts it
    essential: bool = False        # runs in safe mode (the button → chime path)
    start_order: int = 50          # lower starts first; the button path first, the network last
    heartbeat_timeout_s: float = 30.0
    entities: tuple["Entity", ...] = ()  # what Home Assistant shows for this worker (edge.entities)
    # Bus kinds this worker must hear from boot on, though it starts late (the MQTT link):
    # see `boot_subscription`.
    bus_patterns_from_boot: tuple[str, ...] = ()

    def __init__(self, config: "Config"):
        self.config = config

    @classmethod
    def enabled(cls, config: "Config") -> bool:
        own = cls.sections[0].name if cls.sections else None
        return bool(config[own]["enabled"]) if own and "enabled" in config[own] else True

    def run(self, ctx: "WorkerContext") -> None:
        raise NotImplementedError

    def health(self) -> tuple[str, str] | None:
        """(state, reason) when the worker knows better than "running" (e.g. DEGRADED:
        camera breaker open). None means OK while running."""
        return None

    def interrupt(self) -> None:
        """Free a `run` blocked in I/O (close its socket or port). Called from another
        thread by the watchdog and at stop; must be safe to call at any time."""


class WorkerContext:
    """Everything a worker may use; one per run attempt."""

    def __init__(self, worker: Worker, *, stopping: threading.Event, clock: Clock, bus: "EventBus",
                 store: "Store | None", breakers: "BreakerBoard", health: "HealthRegistry",
                 metrics: Any, states: "StateBoard", config: "SectionValues | None", services: dict[str, Any],
                 on_heartbeat: Callable[[], None]):
        self.worker = worker
        self.stopping = stopping
        self.clock = clock
        self.bus = bus
        self.store = store
        self.breakers = breakers
        self.health = health
        self.metrics = metrics
        self.states = states  # periodic values, in memory, latest wins
        self.config = config
        self.services = services  # shared runtime objects by name: "audit", "sim", "link", ...
        self.log = logging.getLogger(f"edge.worker.{worker.name}")
        self._on_heartbeat = on_heartbeat

    def heartbeat(self) -> None:
        self._on_heartbeat()

    def sleep(self, seconds: float) -> bool:
        """Wait `seconds`, heartbeating meanwhile; True when the worker should stop."""
        step = max(0.05, self.worker.heartbeat_timeout_s / 3)
        end = self.clock.monotonic() + seconds
        while not self.stopping.is_set():
            self.heartbeat()
            left = end - self.clock.monotonic()
            if left <= 0:
                break
            self.stopping.wait(min(step, left))
        self.heartbeat()
        return self.stopping.is_set()


BOOT_QUEUE_SIZE = 10_000


def boot_subscription(worker: type[Worker], services: dict[str, Any], bus: "EventBus"):
    """The bus queue of a worker with `bus_patterns_from_boot`, kept in
    `services["<name>.subscription"]` so it outlives the worker's restarts: opened by the
    runtime before any worker starts, or here on first use."""
    key = f"{worker.name}.subscription"
    sub = services.get(key)
    if sub is None:
        sub = services[key] = bus.subscribe(worker.name, *worker.bus_patterns_from_boot, maxsize=BOOT_QUEUE_SIZE)
    return sub


@dataclass(frozen=True)
class WorkerEntry:
    name: str
    cls: type[Worker]


def discover_workers(group: str = "edge.workers") -> list[WorkerEntry]:
    """Worker classes registered by installed distributions (pyproject entry points)."""
    found = []
    for ep in entry_points(group=group):
        cls = ep.load()
        found.append(WorkerEntry(cls.name or ep.name, cls))
    return sorted(found, key=lambda e: (e.cls.start_order, e.name))
