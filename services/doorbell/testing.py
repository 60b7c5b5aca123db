"""A doorbell on simulated pins, for tests, benchmarks and anyone testing their own workers
against it (shipped in the package, as gpiozero ships `gpiozero.testing`).

`SimulatedDoorbell` runs the real `edge.runtime.Runtime` (store, bus, supervisor, health,
commands) with the doorbell worker on gpiozero's `MockFactory`: a test presses the button
with `press()`, reads the chime and relay from the mock pins and waits for bus events with
`wait_event()`. Everything it starts, `stop()` stops.

Also the scoring of the face photos (`photo_category`, `is_correct`), shared by the
accuracy test and the recognition benchmark so both count the same way.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

from gpiozero.pins.mock import MockFactory

from edge import config as configmod
from edge.bus import Event
from edge.clock import SYSTEM_CLOCK, Clock
from edge.commands import VIA_SIP
from edge.assembly import all_sections
from edge.runtime import Runtime
from edge.notify import SystemdNotifier
from edge.testing.waiting import wait_for
from services.doorbell.worker import DoorbellWorker

NO_FACES = {"faces": {"enabled": False}}  # a doorbell config section without recognition


def on_seconds(pin) -> list[float]:
    """How long each on-period of a MockFactory output lasted, from its recorded history
    (each entry's timestamp is the time since the previous change)."""
    return [after.timestamp for before, after in zip(pin.states, pin.states[1:]) if before.state and not after.state]


def _merge(base: dict, extra: dict) -> dict:
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for section, values in extra.items():
        out.setdefault(section, {}).update(values)
    return out


class SimulatedDoorbell:
    """`config`: TOML-shaped overrides ({"doorbell": {"cooldown_s": 0}}); `classes`: the
    worker classes to run (a DoorbellWorker subclass, plus e.g. the MQTT link);
    `failed_boots`: start as after that many quick failed boots (3 or more: safe mode);
    `clock`: the runtime's clock (a FakeClock makes cooldowns and breakers step on command)."""

    DEFAULTS = {"health": {"port": 0}, "doorbell": {"pin_factory": "mock", "chime_s": 0.2},
                "camera": {"backend": "fake", "width": 640, "height": 360, "burst": 3}}

    def __init__(self, state_dir: Path, config: dict | None = None, *, classes: tuple = (DoorbellWorker,),
                 env: dict | None = None, failed_boots: int = 0, clock: Clock = SYSTEM_CLOCK,
                 watch: tuple[str, ...] = ("doorbell.*", "faces.*")):
        self.state_dir = Path(state_dir)
        self.classes = list(classes)
        data = _merge(self.DEFAULTS, config or {})
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
    def start(self) -> "SimulatedDoorbell":
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if self.failed_boots:
            (self.state_dir / "boot-count").write_text(str(self.failed_boots))
        self.runtime = Runtime(self.config, self.classes, self.state_dir, sim=True, environ={},
                               clock=self.clock, notifier=SystemdNotifier(address=""), pin_factory=self.factory)
        self._sub = self.runtime.bus.subscribe("simulated-doorbell", *self._watch, maxsize=100_000)
        self.runtime.start()
        self._loop = threading.Thread(target=self.runtime.loop, name="simulated-doorbell-loop", daemon=True)
        self._loop.start()
        wait_for(lambda: self.worker.ready.is_set(), 10, message="the doorbell to be set up")
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

    def __enter__(self) -> "SimulatedDoorbell":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- what a test drives and reads -----------------------------------------------------------
    @property
    def worker(self) -> DoorbellWorker:
        """The current doorbell worker (a new object after each restart)."""
        return self.runtime.supervisor.runner(DoorbellWorker.name).worker

    def pin(self, key: str):
        """The mock pin of "button_pin", "chime_pin", "relay_pin" or "led_pin"."""
        return self.factory.pin(self.config["doorbell"][key])

    @property
    def button(self):
        return self.pin("button_pin")

    @property
    def chime(self):
        return self.pin("chime_pin")

    @property
    def relay(self):
        return self.pin("relay_pin")

    def press(self, hold: float = 0.0) -> None:
        """Press the (pull-up, active-low) button and let it go after `hold` seconds."""
        self.button.drive_low()
        if hold:
            threading.Event().wait(hold)
        self.button.drive_high()

    def slow_camera(self, seconds_per_frame: float):
        """Make every frame of the fake camera take this long (a burst then keeps the
        worker busy); returns the camera."""
        camera = self.worker.camera
        camera.slow_delay_s = seconds_per_frame
        camera.inject("slow")
        return camera

    def wait_answering(self, timeout: float = 5.0) -> None:
        """Wait until the worker has taken a press off the button path ("Person at door"
        turns on as it starts the burst)."""
        wait_for(lambda: self.runtime.states.get("doorbell.person") == "ON", timeout,
                 message="the doorbell worker to take the press")

    def wait_recognizer(self, timeout: float = 60.0) -> None:
        """Wait until the recognition child has loaded its models (a ring before that is
        answered "recognition unavailable" if loading outlasts [faces] timeout_s)."""
        recognizer = self.worker.recognizer
        wait_for(lambda: recognizer.available, timeout, message="the recognition child to start")

    def events(self, kind: str | None = None) -> list[Event]:
        self._drain()
        return [e for e in self.seen if kind is None or e.kind == kind]

    def wait_event(self, kind: str, where: Callable[[Event], bool] = lambda e: True,
                   timeout: float = 10.0) -> Event:
        """The first event of `kind` (seen so far or arriving within `timeout`) for which
        `where` holds."""
        return wait_for(lambda: next((e for e in self.events(kind) if where(e)), None), timeout,
                        message=f"a {kind} event")

    def sim(self, command: str, **args) -> Any:
        """Call a simulator control as `edge sim COMMAND` does (without the HTTP hop)."""
        return self.runtime.sim_controls.handlers[command](args)

    def command(self, name: str, payload: dict | None = None, via: str = VIA_SIP) -> Any:
        """Run a command as an in-process caller (the intercom) would: past the MQTT link's
        gate for dangerous commands, so the doorbell's own switches decide."""
        return self.runtime.commands.call(name, payload, via=via, allow_dangerous=True)

    def _drain(self) -> None:
        while True:
            event = self._sub.get(timeout=0)
            if event is None:
                return
            self.seen.append(event)


@contextlib.contextmanager
def doorbells(root: Path) -> Iterator[Callable[..., SimulatedDoorbell]]:
    """`make(config, **options)` starts a SimulatedDoorbell in its own state directory
    under `root`; every one started is stopped on the way out (a pytest fixture's body)."""
    started: list[SimulatedDoorbell] = []

    def make(config: dict | None = None, **options) -> SimulatedDoorbell:
        bell = SimulatedDoorbell(Path(root) / f"bell{len(started)}", config, **options)
        started.append(bell)
        return bell.start()

    try:
        yield make
    finally:
        for bell in reversed(started):
            bell.stop()


# -- scoring the face photos (EDGE_TEST_DATA/faces/manifest.json) ---------------------------------

PHOTO_CATEGORIES = ("real", "ir_night", "small_in_frame", "unknown", "none", "multiple")


def photo_category(entry: dict) -> str:
    """The category a manifest entry is reported in: its degradation (ir_night,
    small_in_frame), else unknown / none / multiple, else "real"."""
    if entry.get("degradation"):
        return entry["degradation"]
    if entry["identity"] in ("unknown", "none", "multiple"):
        return entry["identity"]
    return "real"


def is_correct(entry: dict, face_count: int, names: list[str]) -> bool:
    """Whether a pipeline that found `face_count` faces and named `names` (the faces it
    named as enrolled people, largest first) got the photo of `entry` right."""
    identity = entry["identity"]
    if identity == "none":
        return face_count == 0
    if identity == "unknown":
        return face_count > 0 and not names
    if identity == "multiple":
        return sorted(names) == sorted(entry["faces"])
    return names == [identity]
