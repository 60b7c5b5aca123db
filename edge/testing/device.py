"""A whole device in the test's own process, for tests of workers and of the runtime (shipped
in the package, like the leak check, so people testing their own workers can use it).

`TestDevice` runs the real `edge.runtime.Runtime` (store, bus, supervisor, health, commands,
simulator controls) with the worker classes a test chooses, gpiozero's `MockFactory` as the
pins, optionally a real broker (`broker_port=`, e.g. the `mosquitto` fixture's port: the
MQTT link then connects to it) and optionally a `FakeClock`. A test drives it through the
simulator controls (`sim()`), commands (`command()`) and mock pins (`pin()`), and waits
for bus events by kind or by `event_id` (`wait_event()`). Everything it starts, `stop()`
stops, so the leak check stays quiet.

Not responsible for: any one worker's fakes (the doorbell's are in services/doorbell/testing.py,
built on this).
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

from gpiozero.pins.mock import MockFactory

from edge import config as configmod
from edge.assembly import all_sections
from edge.bus import Event
from edge.clock import SYSTEM_CLOCK, Clock
from edge.commands import VIA_CLI
from edge.notify import SystemdNotifier
from edge.runtime import Runtime
from edge.testing.waiting import wait_for
from edge.worker import Worker

# Health on a free port (the MQTT link runs only when the test lists it in `classes`).
BASE_CONFIG = {"health": {"port": 0}}
# With a broker: reconnect and Home Assistant's birth quickly, so tests need not wait.
BROKER_CONFIG = {"reconnect_min_s": 0.1, "reconnect_max_s": 0.5, "birth_delay_min_s": 0.5,
                 "birth_delay_max_s": 0.8}


def merge(base: dict, extra: dict) -> dict:
    """TOML-shaped config data: `extra`'s sections update `base`'s, key by key."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for section, values in extra.items():
        out.setdefault(section, {}).update(values)
    return out


class TestDevice:
    """`classes`: the worker classes to run; `config`: TOML-shaped data ({"doorbell": {...}});
    `env`: EDGE_... overrides; `broker_port`: run the MQTT link against this broker;
    `failed_boots`: start as after that many quick failed boots (3 or more: safe mode);
    `clock`: the runtime's clock; `watch`: bus kinds recorded for `events()`."""

    __test__ = False  # not a pytest test class, whatever its name

    def __init__(self, state_dir: Path, classes: list[type[Worker]] | tuple = (), config: dict | None = None, *,
                 env: dict | None = None, broker_port: int | None = None, failed_boots: int = 0,
                 clock: Clock = SYSTEM_CLOCK, watch: tuple[str, ...] = ("*",)):
        self.state_dir = Path(state_dir)
        self.classes = list(classes)
        data = merge(BASE_CONFIG, config or {})
        if broker_port is not None:
            data = merge(data, {"mqtt": {"enabled": True, "host": "127.0.0.1", "port": broker_port,
                                         **BROKER_CONFIG}})
        self.config = configmod.build(all_sections(self.classes), data, env or {}, "sim", source="test")
        self.factory = MockFactory()
        self.failed_boots = failed_boots
        self.clock = clock
        self.runtime: Runtime | None = None
        self.seen: list[Event] = []
        self._watch = watch
        self._sub = None
        self._loop: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> "TestDevice":
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if self.failed_boots:
            (self.state_dir / "boot-count").write_text(str(self.failed_boots))
        self.runtime = Runtime(self.config, self.classes, self.state_dir, sim=True, environ={},
                               clock=self.clock, notifier=SystemdNotifier(address=""), pin_factory=self.factory)
        self._sub = self.runtime.bus.subscribe("test-device", *self._watch, maxsize=100_000)
        self.runtime.start()
        self._loop = threading.Thread(target=self.runtime.loop, name="test-device-loop", daemon=True)
        self._loop.start()
        return self

    def stop(self) -> None:
        if self.runtime is None:
            return
        self.runtime.request_stop()
        if self._loop is not None:
            self._loop.join(10)
        self.runtime.stop()
        self._sub.close()
        self.runtime = None

    def __enter__(self) -> "TestDevice":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Every critical worker started and running (what /ready answers)."""
        wait_for(self.runtime.ready, timeout, message="the device to be ready")

    # -- what a test drives and reads -----------------------------------------------------------
    def worker(self, name: str) -> Worker:
        """The current worker object called `name` (a new object after each restart)."""
        return self.runtime.supervisor.runner(name).worker

    def pin(self, number: int):
        """The mock pin with this BCM number (drive_low()/drive_high(), .states)."""
        return self.factory.pin(number)

    def events(self, kind: str | None = None) -> list[Event]:
        self._drain()
        return [e for e in self.seen if kind is None or e.kind == kind]

    def wait_event(self, kind: str, where: Callable[[Event], bool] = lambda e: True, *,
                   event_id: str | None = None, timeout: float = 10.0) -> Event:
        """The first event of `kind` (seen so far or arriving within `timeout`) for which
        `where` holds and, when given, carrying `event_id` (an event caused by that press)."""
        def match(e: Event) -> bool:
            return (event_id is None or e.event_id == event_id) and where(e)
        return wait_for(lambda: next((e for e in self.events(kind) if match(e)), None), timeout,
                        message=f"a {kind} event" + (f" for {event_id}" if event_id else ""))

    def sim(self, command: str, **args) -> Any:
        """Call a simulator control as `edge sim COMMAND` does (without the HTTP hop)."""
        return self.runtime.sim_controls.handlers[command](args)

    def command(self, name: str, payload: dict | None = None, via: str = VIA_CLI,
                allow_dangerous: bool = True) -> Any:
        """Run a command as an in-process caller would (past the MQTT link's gate for
        dangerous commands unless told otherwise, so the owning worker's switches decide)."""
        return self.runtime.commands.call(name, payload, via=via, allow_dangerous=allow_dangerous)

    def _drain(self) -> None:
        while True:
            event = self._sub.get(timeout=0)
            if event is None:
                return
            self.seen.append(event)


@contextlib.contextmanager
def test_devices(root: Path, factory: Callable[..., TestDevice] = TestDevice,
                 prefix: str = "device") -> Iterator[Callable[..., Any]]:
    """`make(...)` starts a device (`factory`'s arguments after the state directory) in its
    own state directory under `root` (`<prefix>0`, `<prefix>1`, ...); every one started is
    stopped on the way out (the body of a pytest fixture)."""
    started: list[TestDevice] = []

    def make(*args, **kwargs):
        device = factory(Path(root) / f"{prefix}{len(started)}", *args, **kwargs)
        started.append(device)
        return device.start()

    try:
        yield make
    finally:
        for device in reversed(started):
            device.stop()


test_devices.__test__ = False
