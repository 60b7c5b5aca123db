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
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

from edge.clock import Clock
from edge.commands import CommandRegistry, WorkerCommands

if TYPE_CHECKING:  # imported for annotations only: no cycle at run time
    from edge.audit import AuditLog
    from edge.breaker import BreakerBoard
    from edge.doctor import Check
    from edge.runtime import Runtime
    from edge.bus import EventBus
    from edge.entities import Entity
    from edge.config import Config, Section, SectionValues
    from edge.health import HealthRegistry
    from edge.states import StateBoard
    from edge.store import Schema, Store

log = logging.getLogger("edge.worker")

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
    schemas: tuple["Schema", ...] = ()   # its tables in the store (edge.store.Schema), migrated by
                                         # the runtime and by every CLI command that opens the store
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

    @classmethod
    def doctor(cls, config: "Config") -> Iterable["Check"]:
        """`edge doctor` checks of an installed device for this worker (its hardware, its
        outside link), each with the fix; run in the CLI process, not in the runtime."""
        return ()

    def health(self) -> tuple[str, str] | None:
        """(state, reason) when the worker knows better than "running" (e.g. DEGRADED:
        camera breaker open). None means OK while running."""
        return None

    def interrupt(self) -> None:
        """Free a `run` blocked in I/O (close its socket or port). Called from another
        thread by the watchdog and at stop; must be safe to call at any time."""


class SimulatorControls:
    """What `edge run --sim` offers workers (None in `ctx.sim` otherwise): named handlers
    that `edge sim ...` reaches over the health endpoint (`POST /sim/<name>`), and the
    shared fakes a test or the simulator injects (`pin_factory`: the gpiozero MockFactory
    every GPIO worker of this run uses, so a test can drive the pins)."""

    def __init__(self, pin_factory: Any = None):
        self.handlers: dict[str, Callable[[dict], object]] = {}
        self.pin_factory = pin_factory

    def names(self) -> list[str]:
        return sorted(self.handlers)


class LastingClosed(RuntimeError):
    """The runtime stopped while the object was being created: it was closed again."""


class Lasting:
    """Objects that must outlive a worker's restarts (the MQTT link's boot subscription and
    outbox, the simulator's embedded broker): created on first use, kept by the runtime, and
    closed when the runtime stops (newest first) or when the owner discards them.

    Creating one can take long (the simulator's broker: a mosquitto child and its wait to be
    ready), so it happens outside the lock that `close_all` takes: a stop at that moment does
    not wait for it, and what is finished after the stop is closed at once."""

    def __init__(self):
        self._objects: dict[str, tuple[Any, Callable[[], object] | None]] = {}
        self._creating: dict[str, threading.Lock] = {}  # one creator per key at a time
        self._closed = False
        self._lock = threading.Lock()

    def get(self, key: str, create: Callable[[], Any], close: Callable[[Any], object] | None = None) -> Any:
        with self._lock:
            if key in self._objects:
                return self._objects[key][0]
            creating = self._creating.setdefault(key, threading.Lock())
        with creating:
            with self._lock:
                if key in self._objects:  # another thread made it meanwhile
                    return self._objects[key][0]
            obj = create()
            closer = (lambda: close(obj)) if close is not None else None
            with self._lock:
                if not self._closed:
                    self._objects[key] = (obj, closer)
                    return obj
            _close_quietly(key, closer)
            raise LastingClosed(f"{key} was created after the runtime stopped, and closed again")

    def peek(self, key: str) -> Any:
        with self._lock:
            entry = self._objects.get(key)
        return entry[0] if entry else None

    def discard(self, key: str) -> None:
        """Close and forget `key` (nothing happens when it was never created)."""
        with self._lock:
            entry = self._objects.pop(key, None)
        if entry is not None:
            _close_quietly(key, entry[1])

    def close_all(self) -> None:
        """Close everything, newest first; one that raises does not keep the rest open."""
        with self._lock:
            self._closed = True
            keys = list(self._objects)
        for key in reversed(keys):
            self.discard(key)


def _close_quietly(key: str, closer: Callable[[], object] | None) -> None:
    if closer is None:
        return
    try:
        closer()
    except Exception:  # logged with its traceback: the runtime's stop must go on
        log.exception("closing %s failed", key)


class WorkerContext:
    """Everything a worker may use from the runtime; one per run attempt. Every attribute is
    named and typed here (no lookups by string):

    - `stopping`, `heartbeat()`, `sleep()`: the run's lifecycle (`stopping` is set when this
      run should end: the runtime stops, or a restart was asked for; `shutdown` only when the
      runtime stops the worker for good); `clock`: the runtime's clock
    - `bus`, `states` (periodic values, in memory, latest wins), `store` (None without a
      disk), `breakers`, `health`, `metrics`, `log`, `config` (the worker's own section)
    - `state_dir`, `safe_mode`, `node` (the [node] section: id and name)
    - `commands`: register this worker's commands; `call()` another worker's in-process
    - `audit`: the hash-chained audit log (None when it cannot be written)
    - `sim`: simulator controls (None unless `edge run --sim`); `register_sim()` adds one
    - `lasting`: objects that outlive this worker's restarts; `announce()`: a line for the
      person at the terminal (the simulator's banner)
    - `runtime`: the Runtime itself, for the runtime's own MQTT link (node report, restart
      buttons); workers under services/ have no business there.

    Commands and simulator handlers registered through this context are removed by the
    runtime when the run ends (`close()`), so a restarting worker leaves no stale handler
    bound to its dead self."""

    def __init__(self, worker: Worker, *, stopping: threading.Event, clock: Clock, bus: "EventBus",
                 store: "Store | Callable[[], Store | None] | None", breakers: "BreakerBoard", health: "HealthRegistry",
                 metrics: Any, states: "StateBoard", config: "SectionValues | None",
                 on_heartbeat: Callable[[], None], shutdown: threading.Event | None = None,
                 state_dir: Path | None = None, safe_mode: bool = False,
                 node: "SectionValues | None" = None, commands: "CommandRegistry | None" = None,
                 audit: "AuditLog | Callable[[], AuditLog | None] | None" = None,
                 sim: SimulatorControls | None = None,
                 lasting: Lasting | None = None, announce: Callable[[str], None] | None = None,
                 runtime: "Runtime | None" = None):
        self.worker = worker
        self.stopping = stopping
        self.shutdown = shutdown if shutdown is not None else stopping
        self.clock = clock
        self.bus = bus
        self._store = store
        self.breakers = breakers
        self.health = health
        self.metrics = metrics
        self.states = states
        self.config = config
        self.state_dir = state_dir
        self.safe_mode = safe_mode
        self.node = node
        self._audit = audit
        self.sim = sim
        self.lasting = lasting if lasting is not None else Lasting()
        self.runtime = runtime
        self.commands = WorkerCommands(commands if commands is not None else CommandRegistry(), worker.name)
        self.log = logging.getLogger(f"edge.worker.{worker.name}")
        self._announce = announce
        self._on_heartbeat = on_heartbeat
        self._sim_registered: dict[str, Callable[[dict], object]] = {}

    @property
    def store(self) -> "Store | None":
        """The store as it is now: None while the disk refuses it (the runtime retries, and
        this turns into the store once it opens, without a restart)."""
        return self._store() if callable(self._store) else self._store

    @property
    def audit(self) -> "AuditLog | None":
        return self._audit() if callable(self._audit) else self._audit

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

    def announce(self, line: str) -> None:
        if self._announce is not None:
            self._announce(line)

    def register_sim(self, name: str, handler: Callable[[dict], object]) -> None:
        """Offer `edge sim NAME` (a no-op outside the simulator); removed when this run ends."""
        if self.sim is not None:
            self.sim.handlers[name] = handler
            self._sim_registered[name] = handler

    def close(self) -> None:
        """Called by the runtime when the run ends, however it ends: removes what this run
        registered (a newer registration under the same name is left alone)."""
        self.commands.unregister_all()
        if self.sim is not None:
            for name, handler in self._sim_registered.items():
                if self.sim.handlers.get(name) is handler:
                    del self.sim.handlers[name]
        self._sim_registered.clear()


BOOT_QUEUE_SIZE = 10_000


def boot_subscription(worker: type[Worker], lasting: Lasting, bus: "EventBus"):
    """The bus queue of a worker with `bus_patterns_from_boot`, kept in `lasting` so it
    outlives the worker's restarts: opened by the runtime before any worker starts, or here
    on first use; closed when the runtime stops."""
    return lasting.get(f"{worker.name}.subscription",
                       lambda: bus.subscribe(worker.name, *worker.bus_patterns_from_boot, maxsize=BOOT_QUEUE_SIZE),
                       close=lambda sub: sub.close())


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
