"""A doorbell on simulated pins, for tests, benchmarks and anyone testing their own workers
against it (shipped in the package, as gpiozero ships `gpiozero.testing`).

`SimulatedDoorbell` is edge.testing.device's `TestDevice` (the real Runtime on gpiozero's
`MockFactory`) with the doorbell: a test presses the button with `press()`, reads the chime
and relay from the mock pins and waits for bus events with `wait_event()`. Everything it
starts, `stop()` stops.

Also the scoring of the face photos (`photo_category`, `is_correct`), shared by the
accuracy test and the recognition benchmark so both count the same way.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

from edge.commands import VIA_SIP
from edge.testing.device import TestDevice, merge, test_devices
from edge.testing.waiting import wait_for
from services.doorbell.worker import DoorbellWorker

NO_FACES = {"faces": {"enabled": False}}  # a doorbell config section without recognition


def on_seconds(pin) -> list[float]:
    """How long each on-period of a MockFactory output lasted, from its recorded history
    (each entry's timestamp is the time since the previous change)."""
    return [after.timestamp for before, after in zip(pin.states, pin.states[1:]) if before.state and not after.state]


class SimulatedDoorbell(TestDevice):
    """A TestDevice with the doorbell (edge.testing.device): `config` is TOML-shaped
    overrides ({"doorbell": {"cooldown_s": 0}}); `classes`: the worker classes to run (a
    DoorbellWorker subclass, plus e.g. the MQTT link); `failed_boots`, `clock`, `env` as
    for TestDevice. `start()` returns once the doorbell is set up."""

    DEFAULTS = {"doorbell": {"pin_factory": "mock", "chime_s": 0.2},
                "camera": {"backend": "fake", "width": 640, "height": 360, "burst": 3}}

    def __init__(self, state_dir: Path, config: dict | None = None, *, classes: tuple = (DoorbellWorker,),
                 watch: tuple[str, ...] = ("doorbell.*", "faces.*"), **options):
        super().__init__(state_dir, list(classes), merge(self.DEFAULTS, config or {}), watch=watch, **options)

    def start(self) -> "SimulatedDoorbell":
        super().start()
        wait_for(lambda: self.worker.ready.is_set(), 10, message="the doorbell to be set up")
        return self

    # -- what a test drives and reads -----------------------------------------------------------
    @property
    def worker(self) -> DoorbellWorker:
        """The current doorbell worker (a new object after each restart)."""
        return super().worker(DoorbellWorker.name)

    def pin(self, key: str):
        """The mock pin of "button_pin", "chime_pin", "relay_pin" or "led_pin"."""
        return super().pin(self.config["doorbell"][key])

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
        """Wait until the worker has taken a press off the button path ("Rang recently"
        turns on as it starts the burst)."""
        wait_for(lambda: self.runtime.states.get("doorbell.rang_recently") == "ON", timeout,
                 message="the doorbell worker to take the press")

    def wait_recognizer(self, timeout: float = 60.0) -> None:
        """Wait until the recognition child has loaded its models (a ring before that is
        answered "recognition unavailable" if loading outlasts [faces] timeout_s)."""
        recognizer = self.worker.recognizer
        wait_for(lambda: recognizer.available, timeout, message="the recognition child to start")

    def command(self, name: str, payload: dict | None = None, via: str = VIA_SIP, **options) -> Any:
        """Run a command as the intercom would (in-process, past the MQTT link's gate for
        dangerous commands, so the doorbell's own switches decide)."""
        return super().command(name, payload, via=via, **options)


@contextlib.contextmanager
def doorbells(root: Path) -> Iterator[Callable[..., SimulatedDoorbell]]:
    """`make(config, **options)` starts a SimulatedDoorbell in its own state directory
    under `root` (bell0, bell1, ...); every one started is stopped on the way out (a pytest
    fixture's body)."""
    with test_devices(root, SimulatedDoorbell, prefix="bell") as make:
        yield make


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
        # The manifest lists every face, enrolled or "unknown": the enrolled ones must be
        # named, nobody else, and every face must have been found.
        enrolled = [face for face in entry["faces"] if face not in ("unknown", "none")]
        return face_count >= len(entry["faces"]) and sorted(names) == sorted(enrolled)
    return names == [identity]
