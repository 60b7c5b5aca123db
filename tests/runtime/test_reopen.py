"""ReopeningDevice: a device that comes and goes is reopened behind its breaker, on a fake
clock; its errors close it and are logged once per transition, never raised."""

from __future__ import annotations

import logging

import pytest

from edge.breaker import CLOSED, OPEN, BreakerBoard
from edge.clock import FakeClock
from edge.reopen import ReopeningDevice

LOGGER = "test.reopen"


class DeviceGone(Exception):
    """The stand-in device's own "unplugged" error (like CameraError)."""


class StandInDevice:
    """Records opens and closes; `open_error` / `close_error` make them raise."""

    def __init__(self):
        self.opens = self.closes = 0
        self.open_error: BaseException | None = None
        self.close_error: BaseException | None = None

    def open(self) -> None:
        self.opens += 1
        if self.open_error is not None:
            raise self.open_error

    def close(self) -> None:
        self.closes += 1
        if self.close_error is not None:
            raise self.close_error


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def device() -> StandInDevice:
    return StandInDevice()


@pytest.fixture
def make(clock, device, caplog):
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    # The doorbell's camera breaker: open after one failure, first trial after 2 s.
    breaker = BreakerBoard(clock).get("camera", failure_threshold=1, reset_timeout=2.0, max_reset_timeout=30.0)

    def make(**kwargs) -> ReopeningDevice:
        kwargs.setdefault("expected", (DeviceGone,))
        kwargs.setdefault("consequence", "rings go on without pictures")
        return ReopeningDevice(device, breaker, logging.getLogger(LOGGER), clock=clock, **kwargs)
    return make


def _messages(caplog, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == level]


def test_first_probe_opens_the_device(make, device, caplog):
    reopening = make()
    assert reopening.probe() is True
    assert (reopening.is_open, reopening.error, device.opens) == (True, None, 1)
    assert reopening.breaker.state == CLOSED
    assert not _messages(caplog, logging.INFO)  # not "back": it was never gone


def test_an_open_device_is_not_opened_again(make, device):
    reopening = make()
    reopening.probe()
    assert reopening.probe() and reopening.probe_when_due()
    assert device.opens == 1


def test_a_device_missing_at_start_is_closed_with_its_reason(make, device, caplog):
    device.open_error = DeviceGone("camera 0 is unplugged")
    reopening = make()
    assert reopening.probe() is False
    assert (reopening.is_open, reopening.error) == (False, "camera 0 is unplugged")
    assert reopening.snapshot() == {"open": False, "error": "camera 0 is unplugged"}
    assert reopening.breaker.state == OPEN and reopening.breaker.last_error == "camera 0 is unplugged"
    assert _messages(caplog, logging.WARNING) == [
        "camera unavailable: camera 0 is unplugged; rings go on without pictures"]


def test_breaker_open_skips_the_open_attempt(make, device, clock):
    reopening = make()
    reopening.probe()
    reopening.failed(DeviceGone("unplugged mid-burst"))
    clock.advance(1.9)  # the breaker's reset timeout is 2 s
    assert reopening.probe() is False
    assert device.opens == 1
    assert reopening.error == "unplugged mid-burst"


def test_the_device_comes_back_when_the_breaker_allows_a_trial(make, device, clock, caplog):
    device.open_error = DeviceGone("unplugged")
    reopening = make()
    reopening.probe()
    device.open_error = None  # plugged back in
    clock.advance(2.0)
    assert reopening.probe() is True
    assert (reopening.is_open, reopening.error, device.opens) == (True, None, 2)
    assert reopening.breaker.state == CLOSED
    assert _messages(caplog, logging.INFO) == ["camera is back"]


def test_unavailable_and_back_are_logged_once_per_transition(make, device, clock, caplog):
    device.open_error = DeviceGone("unplugged")
    reopening = make()
    for _ in range(4):  # every trial fails: one warning, not one per probe
        reopening.probe()
        clock.advance(60)
    assert device.opens == 4
    assert len(_messages(caplog, logging.WARNING)) == 1
    device.open_error = None
    reopening.probe()
    reopening.failed(DeviceGone("unplugged again"))  # open → closed is a transition again
    assert _messages(caplog, logging.INFO) == ["camera is back"]
    assert len(_messages(caplog, logging.WARNING)) == 2


def test_a_failure_while_in_use_closes_the_device_and_opens_the_breaker(make, device):
    reopening = make()
    reopening.probe()
    reopening.failed(DeviceGone("returned no frame"))
    assert (reopening.is_open, reopening.error, device.closes) == (False, "returned no frame", 1)
    assert reopening.breaker.state == OPEN


def test_a_close_that_raises_is_logged_not_raised(make, device, caplog):
    reopening = make()
    reopening.probe()
    device.close_error = RuntimeError("libcamera: device busy")
    reopening.failed(DeviceGone("frozen frames"))  # does not raise
    assert not reopening.is_open and reopening.error == "frozen frames"
    closing = [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.ERROR]
    assert [r.getMessage() for r in closing] == ["closing the failed camera failed too"]
    assert isinstance(closing[0].exc_info[1], RuntimeError)


def test_a_driver_error_of_an_unexpected_type_is_a_device_error_logged_with_its_traceback(make, device, caplog):
    device.open_error = ValueError("cv2.error: can't open camera by index")
    reopening = make()
    assert reopening.probe() is False  # not raised
    assert reopening.error == "ValueError: cv2.error: can't open camera by index"
    assert reopening.breaker.last_error == reopening.error
    errors = [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.ERROR]
    assert len(errors) == 1 and isinstance(errors[0].exc_info[1], ValueError)


def test_an_expected_error_is_logged_without_a_traceback(make, device, caplog):
    device.open_error = DeviceGone("unplugged")
    make().probe()
    assert all(r.exc_info is None for r in caplog.records if r.name == LOGGER)


def test_keyboard_interrupt_during_open_is_not_swallowed(make, device):
    device.open_error = KeyboardInterrupt()
    with pytest.raises(KeyboardInterrupt):
        make().probe()


def test_verification_runs_only_on_a_reopen_after_a_fault_that_asks_for_it(make, device, clock):
    checks = []
    reopening = make(verify=lambda: checks.append(device.opens))
    reopening.probe()
    reopening.failed(DeviceGone("unplugged"))
    clock.advance(2.0)
    reopening.probe()
    assert checks == []  # a plain failure: reopened without a check

    reopening.failed(DeviceGone("black frames"), verify_on_reopen=True)
    clock.advance(2.0)
    assert reopening.probe() is True
    assert checks == [3]
    reopening.failed(DeviceGone("unplugged"))
    clock.advance(60)
    reopening.probe()
    assert checks == [3]  # a passed check is not asked for again


def test_a_failed_verification_closes_the_device_and_is_asked_for_again(make, device, clock):
    pictures = iter(["black frames", "black frames", None])

    def two_good_frames() -> None:
        fault = next(pictures)
        if fault is not None:
            raise DeviceGone(fault)

    reopening = make(verify=two_good_frames)
    reopening.probe()
    reopening.failed(DeviceGone("black frames"), verify_on_reopen=True)
    for _ in range(2):
        clock.advance(60)
        assert reopening.probe() is False
        assert reopening.error == "black frames" and reopening.breaker.state == OPEN
    assert device.closes == 3  # each failed check released the device it had opened
    clock.advance(60)
    assert reopening.probe() is True


def test_probe_waits_for_its_interval_on_the_fake_clock(clock, device):
    device.open_error = DeviceGone("unplugged")
    # A breaker that stays closed lets every trial through: only the probe interval counts.
    breaker = BreakerBoard(clock).get("camera", failure_threshold=1000)
    reopening = ReopeningDevice(device, breaker, logging.getLogger(LOGGER), expected=(DeviceGone,),
                                probe_interval=1.0, clock=clock)
    assert reopening.probe_when_due() is False
    assert device.opens == 1
    clock.advance(0.999)
    assert reopening.probe_when_due() is False
    assert device.opens == 1  # not yet due: the device was not touched
    clock.advance(0.001)
    reopening.probe_when_due()
    assert device.opens == 2


def test_a_ring_probes_at_once_whatever_the_interval(make, device, clock):
    device.open_error = DeviceGone("unplugged")
    reopening = make(probe_interval=10.0)
    reopening.probe_when_due()
    device.open_error = None
    clock.advance(2.0)  # the breaker allows a trial; the interval has not passed
    assert reopening.probe_when_due() is False
    assert reopening.probe() is True


def test_shutdown_close_releases_the_device_without_counting_a_failure(make, device):
    reopening = make()
    reopening.probe()
    reopening.close()
    assert not reopening.is_open and device.closes == 1
    assert reopening.breaker.state == CLOSED and reopening.breaker.last_error is None


def test_record_success_after_use_resets_the_breakers_count(clock, device):
    breaker = BreakerBoard(clock).get("printer", failure_threshold=2, reset_timeout=1.0)
    reopening = ReopeningDevice(device, breaker, logging.getLogger(LOGGER), clock=clock)
    reopening.probe()
    breaker.record_failure("checksum storm")
    reopening.record_success()
    breaker.record_failure("checksum storm")
    assert breaker.state == CLOSED  # one failure after a success, not two in a row


def test_name_defaults_to_the_breakers_and_oserror_is_expected_by_default(clock, device, caplog):
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    breaker = BreakerBoard(clock).get("printer serial port", failure_threshold=1)
    device.open_error = FileNotFoundError(2, "No such file or directory")
    reopening = ReopeningDevice(device, breaker, logging.getLogger(LOGGER), clock=clock)
    reopening.probe()
    assert _messages(caplog, logging.WARNING) == [
        "printer serial port unavailable: [Errno 2] No such file or directory; retrying when its breaker allows"]
    assert not _messages(caplog, logging.ERROR)
