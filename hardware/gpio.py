"""The doorbell's GPIO through gpiozero: the button (press, release, long press), the chime
output, the door relay and an optional status LED, on the pin factory the config names
(`lgpio` on a Pi, gpiozero's own `MockFactory` in the simulator and the tests).

Responsible for: building the devices, calling back on press/release/long press from
gpiozero's own thread (so the chime never waits for anything the worker does), and the
fail-safe outputs. The door relay is off when the devices are built, off when they are
closed (worker restart), off at interpreter exit (atexit), and a relay or chime pulse is
ended by `PulseTimer`, a thread of its own: a worker that hangs or dies mid-pulse cannot
leave the door open.

Not responsible for: what a press means (cooldown, events, camera): that is the doorbell
worker's job. A process killed with SIGKILL runs no Python at all; for that case the relay
must be wired fail-safe (an active-high relay input with a pull-down, so a released GPIO
line reads off), as the install guide says.

lgpio is untested on hardware here: it is used through gpiozero's documented factory API
only; everything around it is tested on MockFactory.
"""

from __future__ import annotations

import atexit
import heapq
import logging
import threading
import time
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Callable

from gpiozero import Button, DeviceClosed, DigitalOutputDevice, GPIOZeroError
from gpiozero.pins.mock import MockFactory

log = logging.getLogger("hardware.gpio")

PIN_FACTORIES = ("mock", "lgpio", "rpigpio", "pigpio", "native")
# A pulse that would not end is retried after this long, doubling up to RETRY_MAX_S.
RETRY_FIRST_S = 0.05
RETRY_MAX_S = 1.0


def _describe(output) -> str:
    """"GPIO22" for a device on a pin, else the output's type (for log messages)."""
    info = getattr(getattr(output, "pin", None), "info", None)
    return getattr(info, "name", None) or type(output).__name__


class GpioError(Exception):
    """The GPIO cannot be used as configured; the message says what to change."""


_factories: dict[str, object] = {}
_factories_lock = threading.Lock()


def pin_factory(name: str):
    """The process's pin factory called `name`. One per process, as there is one GPIO chip:
    a restarted worker gets the same factory (and so, with `mock`, the same simulated pins
    whose history a test reads)."""
    with _factories_lock:
        if name in _factories:
            return _factories[name]
        if name == "mock":
            factory = MockFactory()
        else:
            found = {ep.name: ep for ep in entry_points(group="gpiozero_pin_factories")}
            if name not in found:
                raise GpioError(f"unknown GPIO pin factory {name!r}; set [doorbell] pin_factory to one of "
                                f"{', '.join(PIN_FACTORIES)}")
            try:
                factory = found[name].load()()
            except Exception as exc:  # ImportError, lgpio.error, OSError: all mean "not on this machine"
                raise GpioError(
                    f"cannot use the {name!r} GPIO pin factory ({type(exc).__name__}: {exc}); on a Raspberry "
                    f"Pi install it (`sudo apt install python3-lgpio` for lgpio) and run as a user in the "
                    f"gpio group; on a laptop run `edge run --sim` or set [doorbell] pin_factory = \"mock\"") from exc
        _factories[name] = factory
        return factory


class PulseTimer:
    """Turns outputs off at their deadline, on a dedicated thread.

    `pulse(output, seconds)` switches the output on now and off after `seconds` of
    monotonic time; a second pulse of the same output extends it. The thread belongs to
    the hardware layer, so the pulse ends on time whatever happens to the thread that
    started it. `stop()` switches every pending output off before it returns."""

    def __init__(self, name: str = "gpio-pulse-timer", clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._cond = threading.Condition()
        self._deadlines: dict[int, tuple[float, DigitalOutputDevice]] = {}
        self._heap: list[tuple[float, int]] = []
        self._failures: dict[int, int] = {}  # output → consecutive failed attempts to switch it off
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def pulse(self, output: DigitalOutputDevice, seconds: float) -> float:
        """Switch `output` on until `seconds` from now (or later, if already pulsing
        longer); returns the monotonic deadline. GpioError when the output cannot be
        switched on (the timer is stopped, or the chip refused)."""
        if seconds <= 0:
            raise ValueError(f"a pulse needs a positive duration, got {seconds}")
        with self._cond:
            if self._stopped:
                raise GpioError("the GPIO is closed; the doorbell is restarting")
            deadline = self._clock() + seconds
            key = id(output)
            current = self._deadlines.get(key)
            if current is not None and current[0] >= deadline:
                return current[0]
            try:
                output.on()
            except Exception as exc:  # lgpio.error, OSError, GPIOZeroError: nothing was switched on
                raise GpioError(f"cannot switch {_describe(output)} on ({type(exc).__name__}: {exc}); "
                                f"check the wiring and that no other program uses the pin") from exc
            deadline = self._clock() + seconds  # from the moment it is on: never a pulse shorter than asked
            self._deadlines[key] = (deadline, output)
            heapq.heappush(self._heap, (deadline, key))
            self._cond.notify()
            return deadline

    def _run(self) -> None:
        with self._cond:
            while not self._stopped:
                now = self._clock()
                while self._heap and self._heap[0][0] <= now:
                    _, key = heapq.heappop(self._heap)
                    entry = self._deadlines.get(key)
                    if entry is not None and entry[0] <= now:
                        del self._deadlines[key]
                        if not self._switch_off(entry[1]):
                            self._retry_later(key, entry[1], now)
                wait = self._heap[0][0] - now if self._heap else None
                self._cond.wait(wait)

    def _retry_later(self, key: int, output, now: float) -> None:
        """An output that would not switch off stays scheduled: tried again soon, then less
        often (up to once a second), until it does. The door must not stay open because
        one write to the GPIO chip failed."""
        failures = self._failures[key] = self._failures.get(key, 0) + 1
        deadline = now + min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** (failures - 1))
        self._deadlines[key] = (deadline, output)
        heapq.heappush(self._heap, (deadline, key))

    def _switch_off(self, output) -> bool:
        """Switch `output` off; False when it failed and must be tried again."""
        key = id(output)
        try:
            output.off()
        except DeviceClosed as exc:  # closed meanwhile: closing switched it off already
            log.debug("pulse end on a closed output: %s", exc)
        except Exception:  # lgpio.error, OSError, GPIOZeroError: the chip refused the write
            failures = self._failures.get(key, 0)
            if failures % 20 == 0:  # the first failure, then about every 20 s: not a log flood
                log.exception("cannot switch %s off at the end of its pulse (attempt %d); trying again",
                              _describe(output), failures + 1)
            return False
        if self._failures.pop(key, 0):
            log.info("%s switched off after failed attempts", _describe(output))
        return True

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            for _, output in self._deadlines.values():
                self._switch_off(output)  # logged if it fails; DoorbellGpio.close() tries again
            self._deadlines.clear()
            self._heap.clear()
            self._cond.notify()
        if self._thread is not threading.current_thread():
            self._thread.join(5)


@dataclass(frozen=True)
class DoorbellPins:
    """Where the doorbell's parts are wired (BCM numbers) and how."""

    button: int = 17
    chime: int = 27
    relay: int = 22
    led: int | None = None
    button_pull: str = "up"           # up (button to ground), down (button to 3V3), off (external resistor)
    button_active: str = "auto"       # auto: follows the pull; low or high with pull = off
    bounce_s: float | None = 0.05
    long_press_s: float = 2.0
    relay_active_high: bool = True
    chime_active_high: bool = True


def _button_args(pins: DoorbellPins) -> dict:
    if pins.button_pull == "off":
        if pins.button_active not in ("low", "high"):
            raise GpioError("[doorbell] button_pull = \"off\" needs button_active = \"low\" or \"high\" "
                            "(which level the pressed button puts on the pin)")
        return {"pull_up": None, "active_state": pins.button_active == "high"}
    return {"pull_up": pins.button_pull == "up"}


class _Finger:
    """Presses a MockFactory button while "on", like an output the pulse timer drives."""

    def __init__(self, pin, active_low: bool):
        self.pin = pin
        self.active_low = active_low

    def on(self) -> None:
        (self.pin.drive_low if self.active_low else self.pin.drive_high)()

    def off(self) -> None:
        (self.pin.drive_high if self.active_low else self.pin.drive_low)()


class DoorbellGpio:
    """The doorbell's devices on one pin factory.

    Callbacks run on gpiozero's thread (with MockFactory: in the thread that drives the
    pin); they must not block. `on_press` runs first thing on the pressed edge,
    `on_long_press` once the button has been held `long_press_s`."""

    def __init__(self, pins: DoorbellPins, factory, *, on_press: Callable[[], None],
                 on_release: Callable[[], None] | None = None,
                 on_long_press: Callable[[], None] | None = None):
        self.pins = pins
        self.factory = factory
        self._closed = False
        self._lock = threading.Lock()
        self.relay: DigitalOutputDevice | None = None
        self.chime: DigitalOutputDevice | None = None
        self.led: DigitalOutputDevice | None = None
        self.button: Button | None = None
        self.timer: PulseTimer | None = None
        self._finger: _Finger | None = None
        button_args = _button_args(pins)  # a config mistake is reported before any pin is taken
        try:
            # The relay first: the door must be locked before anything else can happen.
            self.relay = DigitalOutputDevice(pins.relay, active_high=pins.relay_active_high,
                                             initial_value=False, pin_factory=factory)
            self.chime = DigitalOutputDevice(pins.chime, active_high=pins.chime_active_high,
                                             initial_value=False, pin_factory=factory)
            if pins.led is not None:
                self.led = DigitalOutputDevice(pins.led, initial_value=False, pin_factory=factory)
            self.timer = PulseTimer()
            # The button last, so no press can arrive before the chime exists.
            self.button = Button(pins.button, bounce_time=pins.bounce_s or None, hold_time=pins.long_press_s,
                                 pin_factory=factory, **button_args)
        except Exception as exc:
            self.close()  # whatever the driver raised: the pins already taken are released
            if not isinstance(exc, GPIOZeroError):
                raise
            raise GpioError(f"cannot set up the doorbell GPIO (button {pins.button}, chime {pins.chime}, "
                            f"relay {pins.relay}, led {pins.led}): {type(exc).__name__}: {exc}; check the pin "
                            f"numbers in [doorbell] and that no other program uses them") from exc
        self.button.when_pressed = lambda: on_press()
        if on_release is not None:
            self.button.when_released = lambda: on_release()
        if on_long_press is not None:
            self.button.when_held = lambda: on_long_press()
        # Interpreter exit (SIGTERM handled, sys.exit, end of main): the relay goes off even
        # if nobody closed us. gpiozero's own atexit hook only closes devices of the default
        # pin factory, not of one passed explicitly.
        atexit.register(self._at_exit)

    # -- outputs ---------------------------------------------------------------------------
    def ring_chime(self, seconds: float) -> None:
        self.timer.pulse(self.chime, seconds)

    def pulse_relay(self, seconds: float) -> float:
        """Open the door for `seconds`; returns the monotonic time it locks again."""
        return self.timer.pulse(self.relay, seconds)

    def simulate_press(self, seconds: float) -> None:
        """Press a MockFactory button now and let go after `seconds` (the simulator's
        `edge sim press --hold`): a pulse on the input, ended by the same timer."""
        pin = self.button.pin
        if not hasattr(pin, "drive_low"):
            raise GpioError("the button is a real GPIO pin; only a simulated one (pin_factory = \"mock\") "
                            "can be pressed from software")
        if self._finger is None:
            args = _button_args(self.pins)  # the one rule for which level is "pressed"
            self._finger = _Finger(pin, active_low=args["pull_up"] is True or args.get("active_state") is False)
        self.timer.pulse(self._finger, seconds)

    def set_led(self, mode: str) -> None:
        """"on" (ready), "blink" (degraded) or "off"."""
        if self.led is None or self._closed:
            return
        if mode == "on":
            self.led.on()
        elif mode == "blink":
            self.led.blink(on_time=0.2, off_time=0.8, background=True)
        else:
            self.led.off()

    # -- lifecycle -------------------------------------------------------------------------
    def close(self) -> None:
        """Relay off, then release every pin. Safe to call twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        atexit.unregister(self._at_exit)
        # Every step is tried even if one fails (the chip refused a write): the relay off
        # first, and every pin released so a restarted worker can take them again.
        self._quietly("switch the relay off", self.relay.off if self.relay is not None else None)
        self._quietly("stop the pulse timer", self.timer.stop if self.timer is not None else None)
        for device in (self.button, self.led, self.chime, self.relay):
            if device is not None:
                if isinstance(device, DigitalOutputDevice):
                    self._quietly(f"switch {_describe(device)} off", device.off)
                self._quietly("release a doorbell pin", device.close)

    @staticmethod
    def _quietly(what: str, action: Callable[[], object] | None) -> None:
        if action is None:
            return
        try:
            action()
        except DeviceClosed:
            pass  # already released: nothing left to do
        except Exception:  # lgpio.error, OSError: log it and go on closing the rest
            log.exception("closing the doorbell GPIO: cannot %s", what)

    def _at_exit(self) -> None:
        self.close()  # logs what it could not do, never raises

    def __enter__(self) -> "DoorbellGpio":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
