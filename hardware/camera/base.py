"""The camera interface every backend implements, and the errors a camera raises.

Every frame is an H×W×3 uint8 array in RGB order, whatever the backend's native order.
Not responsible for: which backend runs (hardware/camera/__init__.py's `make_camera`),
bursts and their picture checks (burst.py), retries and breakers (the doorbell worker).
"""

from __future__ import annotations

import abc

import numpy as np


class CameraError(Exception):
    """The camera is unplugged, unavailable or broken. The message says what to do; the
    doorbell counts it against the camera breaker and keeps ringing without pictures."""


class BurstInterrupted(CameraError):
    """A burst failed part-way. `frames` holds what was captured before the failure, so the
    doorbell can still try to recognize the visitor from a partial burst."""

    def __init__(self, message: str, frames: list[np.ndarray]):
        super().__init__(message)
        self.frames = frames


class Camera(abc.ABC):
    """A camera that delivers RGB frames. Use it as a context manager (open/close).

    `interrupt()` may be called from another thread (the watchdog) to unblock a capture in
    progress; the blocked `capture()` then raises `CameraError` and the camera must be
    opened again."""

    width: int
    height: int

    @abc.abstractmethod
    def open(self) -> None:
        """Acquire the device. Raises CameraError when it is missing or busy."""

    @abc.abstractmethod
    def capture(self) -> np.ndarray:
        """One H×W×3 uint8 RGB frame. Raises CameraError when no frame can be had."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the device. Safe to call twice or on a camera that never opened."""

    def interrupt(self) -> None:
        """Unblock a capture in progress; by default by closing the device."""
        self.close()

    def flush(self) -> None:
        """Drop frames the backend buffered while nobody was reading, so the next
        capture() shows the door now (called at the start of every burst)."""

    def __enter__(self) -> "Camera":
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
