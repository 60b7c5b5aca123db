"""Fixtures for the printer tests (helpers in helpers.py): a simulated Marlin printer on a
pty behind a by-id style link, the sender alone against it, and the printer worker in a real
runtime (edge.testing.device.TestDevice, sim=True as `edge run --sim`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.testing.device import TestDevice
from edge.testing.waiting import wait_for
from hardware.printer import SimulatedMarlin
from printer.helpers import LinkUnderTest, printer_config


@pytest.fixture
def make_fake(tmp_path):
    """`make_fake(**options)`: a started SimulatedMarlin at tmp/by-id/usb-Marlin-N (seeded)."""
    started: list[SimulatedMarlin] = []

    def make(**options) -> SimulatedMarlin:
        options.setdefault("seed", 7)
        options.setdefault("reset_on_open", False)  # a board with native USB; the reset has its own test
        fake = SimulatedMarlin(tmp_path / "by-id" / f"usb-Marlin-{len(started)}", **options)
        started.append(fake)
        return fake.start()

    yield make
    for fake in started:
        fake.close()


@pytest.fixture
def make_link():
    made: list[LinkUnderTest] = []

    def make(fake: SimulatedMarlin, **options) -> LinkUnderTest:
        options.setdefault("timeout_s", 2.0)
        link = LinkUnderTest(fake, **options)
        made.append(link)
        link.wait_event("synced")
        return link

    yield make
    for link in made:
        link.close()


@pytest.fixture
def make_device(tmp_path):
    """`make_device(port or "", **printer overrides)`: the printer worker in a running runtime;
    every device is stopped after the test."""
    from services.printer.worker import PrinterWorker

    devices: list[TestDevice] = []

    def make(port: str, state_dir: Path | None = None, **overrides) -> TestDevice:
        device = TestDevice(state_dir or tmp_path / f"device{len(devices)}", [PrinterWorker],
                            printer_config(port, **overrides), watch=("printer.*",))
        devices.append(device)
        device.start()
        wait_for(lambda: getattr(device.worker("printer"), "ready", None) and device.worker("printer").ready.is_set(),
                 15, message="the printer worker to start")
        return device

    yield make
    for device in reversed(devices):
        device.stop()
