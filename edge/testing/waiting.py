"""Wait on conditions with a timeout: tests never sleep and hope."""

from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")


def wait_for(condition: Callable[[], T], timeout: float = 10.0, interval: float = 0.01,
             message: str | Callable[[], str] = "condition") -> T:
    """Poll `condition` until it returns something truthy; return that, or raise after
    `timeout`. `message` may be a callable, to describe the state at the time of failure."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message() if callable(message) else message}")
        time.sleep(interval)
