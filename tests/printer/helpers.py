"""Helpers for the printer tests: G-code files, the host's own commands filtered out of what
the fake executed, the sender alone on a port to the fake, device state waits."""

from __future__ import annotations

import queue
from pathlib import Path

from edge.testing.device import TestDevice
from edge.testing.waiting import wait_for
from hardware.printer import SerialPort, SimulatedMarlin
from services.printer import marlin
from services.printer.sender import END, JobLine, Sender, SenderEvent

# Commands the host sends on its own (sync, capabilities, temperatures): not the job's.
HOUSEKEEPING = ("M110", "M115", "M155", "M105")


def job_commands(executed: list[str], also_skip: tuple[str, ...] = ()) -> list[str]:
    return [c for c in executed if not c.startswith(HOUSEKEEPING + also_skip)]


def gcode_lines(count: int, start: int = 0) -> list[str]:
    """`count` distinct moves (each command appears once, so order and duplicates show)."""
    return [f"G1 X{i % 200}.{i % 10} Y{(i * 7) % 180}.{i % 3} E{i * 0.01:.2f}" for i in range(start, start + count)]


def write_gcode(path: Path, commands: list[str]) -> Path:
    """A slicer-like file: a header comment, blank lines and trailing comments around the commands."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        f.write("; generated for the edge printer tests\n\n")
        for i, command in enumerate(commands):
            f.write(f"{command} ; move {i}\n" if i % 5 == 0 else f"{command}\n")
            if i % 50 == 0:
                f.write(";LAYER_CHANGE\n")
    return path


class LinkUnderTest:
    """The sender alone on a port to the fake: events collected, job lines fed from a list."""

    def __init__(self, fake: SimulatedMarlin, **options):
        self.fake = fake
        self.events: "queue.SimpleQueue[SenderEvent]" = queue.SimpleQueue()
        self.seen: list[SenderEvent] = []
        self.port = SerialPort(fake.path, 250000)
        self.port.open()
        options.setdefault("baud", fake.baud or 250000)
        self.sender = Sender(self.port, self.events, **options)
        self.sender.start()

    def wait_event(self, kind: str, timeout: float = 15.0) -> SenderEvent:
        def found():
            while True:
                try:
                    self.seen.append(self.events.get_nowait())
                except queue.Empty:
                    break
            return next((e for e in self.seen if e.kind == kind), None)
        return wait_for(found, timeout, message=f"a {kind} event from the sender")

    def kinds(self) -> list[str]:
        self.wait_event_none()
        return [e.kind for e in self.seen]

    def wait_event_none(self) -> None:
        while True:
            try:
                self.seen.append(self.events.get_nowait())
            except queue.Empty:
                return

    def print(self, commands: list[str], timeout: float = 60.0) -> list[str]:
        """Feed `commands` as a job; the job's commands the fake executed, once drained."""
        mark = self.fake.executed_count()
        self.sender.set_feed(ListFeed(commands))
        self.wait_event("job_drained", timeout)
        return job_commands(self.fake.executed_since(mark))

    def close(self) -> None:
        self.sender.stop()
        self.port.close()


class ListFeed:
    def __init__(self, commands: list[str]):
        self._lines = [JobLine(i + 1, 0, marlin.strip_comment(c)) for i, c in enumerate(commands)]
        self._lines.append(END)
        self._next = 0

    def take(self):
        if self._next >= len(self._lines):
            return None
        self._next += 1
        return self._lines[self._next - 1]


def printer_config(port: str, **overrides) -> dict:
    return {"printer": {"enabled": True, "port": port, "baud": 250000, "timeout_s": 1.0,
                        "checkpoint_interval_s": 0.5, **overrides}}


def printer_state(device: TestDevice) -> str:
    return device.worker("printer").state()


def wait_state(device: TestDevice, state: str, timeout: float = 15.0) -> None:
    wait_for(lambda: printer_state(device) == state, timeout,
             message=f"printer state {state} (now {printer_state(device)})")
