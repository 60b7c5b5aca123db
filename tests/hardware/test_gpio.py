"""The doorbell's GPIO on gpiozero's MockFactory: callbacks on the press, long press, and
the fail-safe relay (off when built, off when closed, off at interpreter exit, pulses ended
by the timer thread whoever started them)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time

import pytest
from gpiozero import DigitalOutputDevice
from gpiozero.pins.mock import MockFactory

from edge.testing.waiting import scaled, wait_for
from hardware.gpio import DoorbellGpio, DoorbellPins, GpioError, PulseTimer, pin_factory
from services.doorbell.testing import on_seconds

PINS = DoorbellPins(button=17, chime=27, relay=22, led=23, long_press_s=0.3)


@pytest.fixture
def factory():
    return MockFactory()


@pytest.fixture
def doorbell(factory):
    calls = {"press": [], "long": [], "release": []}
    gpio = DoorbellGpio(PINS, factory, on_press=lambda: calls["press"].append(threading.current_thread()),
                        on_long_press=lambda: calls["long"].append(time.monotonic()),
                        on_release=lambda: calls["release"].append(time.monotonic()))
    gpio.calls = calls
    yield gpio
    gpio.close()


def test_relay_left_on_by_a_previous_run_is_switched_off_when_the_gpio_is_built(factory):
    relay = factory.pin(22)
    relay.function = "output"
    relay.state = True
    with DoorbellGpio(PINS, factory, on_press=lambda: None):
        assert relay.state is False


def test_press_calls_back_before_the_driving_call_returns(doorbell, factory):
    factory.pin(17).drive_low()
    # MockFactory calls back in the driving thread, as lgpio does in its own: nothing queued
    assert doorbell.calls["press"] == [threading.current_thread()]
    factory.pin(17).drive_high()
    assert len(doorbell.calls["release"]) == 1


def test_long_press_fires_once_held_and_not_for_a_short_press(doorbell, factory):
    button = factory.pin(17)
    button.drive_low()
    button.drive_high()
    pressed = time.monotonic()
    button.drive_low()
    held = wait_for(lambda: doorbell.calls["long"], timeout=5, message="the long press")
    button.drive_high()
    assert len(held) == 1  # the short press before did not count
    assert held[0] - pressed >= PINS.long_press_s - 0.01


def test_chime_pulse_ends_by_itself(doorbell, factory):
    doorbell.ring_chime(0.2)
    chime = factory.pin(27)
    assert chime.state is True
    wait_for(lambda: chime.state is False, timeout=5, message="the chime to stop")
    # never early; late only by scheduling (up to a second on a loaded Pi 3 or under emulation)
    assert 0.2 <= on_seconds(chime)[0] < 1.2


def test_relay_pulse_ends_on_time_while_the_thread_that_started_it_is_stuck(doorbell, factory):
    relay = factory.pin(22)
    release = threading.Event()

    def open_and_get_stuck():
        doorbell.pulse_relay(0.3)
        release.wait(30)  # like a worker stuck in a driver call

    starter = threading.Thread(target=open_and_get_stuck)
    starter.start()
    try:
        wait_for(lambda: relay.state is True, timeout=5, message="the relay to open")
        wait_for(lambda: relay.state is False, timeout=5, message="the relay to close")
        assert starter.is_alive()  # the starter never got to do anything about it
        [opened] = on_seconds(relay)
        assert 0.3 <= opened < 1.3  # late only by scheduling
    finally:
        release.set()
        starter.join()


def test_a_second_pulse_extends_the_first(doorbell, factory):
    doorbell.pulse_relay(0.2)
    doorbell.pulse_relay(0.5)
    relay = factory.pin(22)
    wait_for(lambda: relay.state is False, timeout=5, message="the relay to close")
    [opened] = on_seconds(relay)
    assert 0.5 <= opened < 1.5  # late only by scheduling


def test_closing_mid_pulse_switches_the_relay_off_at_once(factory):
    gpio = DoorbellGpio(PINS, factory, on_press=lambda: None)
    gpio.pulse_relay(30)
    assert factory.pin(22).state is True
    gpio.close()
    assert factory.pin(22).state is False
    gpio.close()  # twice is fine


def test_relay_goes_off_at_interpreter_exit_mid_pulse():
    # The dump is registered first, so atexit (last in, first out) runs it after the
    # doorbell's own exit hook: it shows what the pin looks like once that hook has run.
    script = textwrap.dedent("""
        import atexit, sys
        from gpiozero.pins.mock import MockFactory
        from hardware.gpio import DoorbellGpio, DoorbellPins
        factory = MockFactory()
        relay = factory.pin(22)
        atexit.register(lambda: print("relay at exit:", [s.state for s in relay.states]))
        gpio = DoorbellGpio(DoorbellPins(), factory, on_press=lambda: None)
        gpio.pulse_relay(60)
        print("relay during the pulse:", relay.state, flush=True)
        sys.exit(0)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=scaled(60))
    assert out.returncode == 0, out.stderr
    assert "relay during the pulse: True" in out.stdout
    assert "relay at exit: [False, True, False]" in out.stdout


def test_button_without_pull_needs_an_active_level(factory):
    with pytest.raises(GpioError, match="button_active"):
        DoorbellGpio(DoorbellPins(button_pull="off"), factory, on_press=lambda: None)
    DoorbellGpio(DoorbellPins(), factory, on_press=lambda: None).close()  # no pin was left taken


def test_a_failed_build_releases_the_pins_it_took(factory):
    with pytest.raises(GpioError):
        DoorbellGpio(DoorbellPins(button=22), factory, on_press=lambda: None)  # the relay's pin
    DoorbellGpio(DoorbellPins(), factory, on_press=lambda: None).close()


def test_a_driver_error_of_any_type_while_building_releases_the_pins_it_took(factory, monkeypatch):
    """lgpio raises its own error type ("GPIO busy"), not gpiozero's: the relay, chime and
    LED already taken must still be released, or the next attempt fails with "pin in use"."""
    take_pin = factory.pin

    def busy_button(spec, *args, **kwargs):
        if spec == PINS.button:
            raise OSError(16, "Device or resource busy")
        return take_pin(spec, *args, **kwargs)
    monkeypatch.setattr(factory, "pin", busy_button)
    with pytest.raises(OSError, match="busy") as failed:
        DoorbellGpio(PINS, factory, on_press=lambda: None)
    monkeypatch.setattr(factory, "pin", take_pin)
    # Checked while the error is still held (its traceback keeps the half-built object alive,
    # as a supervisor logging the crash can). The button's pin stays with gpiozero's own
    # half-built Button until that is collected: gpiozero reserves a pin before opening it.
    assert failed.value.errno == 16
    for pin in (PINS.relay, PINS.chime, PINS.led):
        DigitalOutputDevice(pin, pin_factory=factory).close()


def test_button_pulled_down_presses_on_a_high_level(factory):
    presses = []
    with DoorbellGpio(DoorbellPins(button_pull="down"), factory, on_press=lambda: presses.append(1)):
        factory.pin(17).drive_high()
        assert presses == [1]
        factory.pin(17).drive_low()  # let go: closing a held button waits out gpiozero's hold timer


def test_a_pin_used_twice_is_reported_with_what_to_check(factory):
    with pytest.raises(GpioError, match=r"check the pin numbers in \[doorbell\]"):
        DoorbellGpio(DoorbellPins(chime=22, relay=22), factory, on_press=lambda: None)


def test_unknown_pin_factory_says_which_ones_exist():
    with pytest.raises(GpioError, match=r"unknown GPIO pin factory 'gpiochip'.*mock, lgpio"):
        pin_factory("gpiochip")


def test_mock_factory_is_shared_within_the_process():
    # A restarted worker must find the same (simulated) pins, as it would on a real board.
    assert pin_factory("mock") is pin_factory("mock")


def test_simulated_press_is_released_by_the_timer(doorbell, factory):
    doorbell.simulate_press(0.6)  # longer than long_press_s
    assert len(doorbell.calls["press"]) == 1  # pressed at once, in this thread
    wait_for(lambda: doorbell.calls["release"], timeout=5, message="the release")
    assert len(doorbell.calls["long"]) == 1
    assert [s.state for s in factory.pin(17).states][-3:] == [True, False, True]  # pull-up: pressed is low


class FlakyOutput:
    """An output whose off() fails the first `failures` times, as an lgpio write can."""

    def __init__(self, failures: int = 1):
        self.failures = failures
        self.state = False
        self.off_calls = 0

    def on(self) -> None:
        self.state = True

    def off(self) -> None:
        self.off_calls += 1
        if self.off_calls <= self.failures:
            raise OSError(5, "Input/output error")  # what lgpio.error wraps: a failed ioctl
        self.state = False


def test_pulse_end_that_fails_once_is_retried_and_the_timer_keeps_working(caplog):
    timer = PulseTimer()
    try:
        flaky = FlakyOutput(failures=1)
        timer.pulse(flaky, 0.05)
        wait_for(lambda: flaky.state is False, timeout=5, message="the retried switch-off")
        assert flaky.off_calls == 2
        assert "cannot switch FlakyOutput off" in caplog.text
        steady = FlakyOutput(failures=0)  # the timer thread survived: later pulses still end
        timer.pulse(steady, 0.05)
        wait_for(lambda: steady.state is False, timeout=5, message="the next pulse to end")
    finally:
        timer.stop()


def test_output_that_cannot_be_switched_on_raises_gpio_error_and_is_not_scheduled():
    class Refuses(FlakyOutput):
        def on(self) -> None:
            raise OSError(16, "Device or resource busy")

    timer = PulseTimer()
    try:
        with pytest.raises(GpioError, match="cannot switch Refuses on"):
            timer.pulse(Refuses(), 1.0)
    finally:
        timer.stop()


def test_closing_goes_on_when_switching_the_relay_off_fails(factory, caplog):
    gpio = DoorbellGpio(PINS, factory, on_press=lambda: None)
    relay = gpio.relay
    real_off = relay.off
    calls = []

    def off_failing_once():
        calls.append(1)
        if len(calls) == 1:
            raise OSError(5, "Input/output error")
        real_off()

    relay.off = off_failing_once
    gpio.pulse_relay(30)
    gpio.close()
    assert factory.pin(22).state is False  # switched off by the second attempt in close()
    assert "cannot switch the relay off" in caplog.text
    DoorbellGpio(PINS, factory, on_press=lambda: None).close()  # every pin was released
