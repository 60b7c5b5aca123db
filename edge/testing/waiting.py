"""Wait on conditions with a timeout: tests never sleep and hope.

Every timeout a test states is for this kind of machine; `EDGE_TEST_SLOWDOWN` (a factor,
default 1) stretches them all where the same code runs many times slower, as CI's aarch64
stage does under qemu emulation. It stretches only how long a test waits, never what it
asserts about the device's own timing (those run on injected clocks).
"""

from __future__ import annotations

import os
import time
from typing import Callable, TypeVar

T = TypeVar("T")

SLOWDOWN = float(os.environ.get("EDGE_TEST_SLOWDOWN") or 1.0)


def scaled(seconds: float) -> float:
    """A test's timeout stretched by EDGE_TEST_SLOWDOWN."""
    return seconds * SLOWDOWN


def wait_for(condition: Callable[[], T], timeout: float = 10.0, interval: float = 0.01,
             message: str | Callable[[], str] = "condition") -> T:
    """Poll `condition` until it returns something truthy; return that, or raise after
    `timeout`. `message` may be a callable, to describe the state at the time of failure."""
    timeout = scaled(timeout)
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message() if callable(message) else message}")
        time.sleep(interval)
