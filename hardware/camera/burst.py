"""Bursts: a few fresh frames in a row from any camera, and the checks that tell a burst
showing nothing (black) or nothing new (frozen) from a real picture of the door.

Not responsible for what the doorbell does about a bad burst (it opens the camera breaker
and reopens the camera; services/doorbell/worker.py).
"""

from __future__ import annotations

import numpy as np

from hardware.camera.base import BurstInterrupted, Camera, CameraError


def capture_burst(camera: Camera, n: int) -> list[np.ndarray]:
    """Capture `n` fresh frames in a row (after `camera.flush()`). On failure part-way
    raises `BurstInterrupted` carrying the frames captured so far; the cause is the
    camera's own exception, which may be any driver error (cv2.error, a libcamera
    RuntimeError), not only CameraError."""
    frames: list[np.ndarray] = []
    try:
        camera.flush()
        for _ in range(n):
            frames.append(camera.capture())
    except CameraError as exc:
        raise BurstInterrupted(f"{exc} (after {len(frames)} of {n} burst frames)", frames) from exc
    except Exception as exc:  # a driver's own error: still a failed burst, and the frames so far count
        raise BurstInterrupted(f"camera failed: {type(exc).__name__}: {exc} (after {len(frames)} of {n} "
                               f"burst frames)", frames) from exc
    return frames


# A frame whose brightest pixel (on a coarse grid) is this dark shows nothing: a dead
# sensor, a covered lens or IR lighting that is off. A real night scene with IR is far
# brighter; a dark porch without it still has street light and sensor noise above this.
BLACK_MAX_LEVEL = 10


def _is_black(frame: np.ndarray) -> bool:
    return int(frame[::4, ::4].max(initial=0)) <= BLACK_MAX_LEVEL


def burst_fault(frames: list[np.ndarray], previous: np.ndarray | None = None) -> str | None:
    """Why a burst cannot be trusted, or None: every frame black, or two consecutive frames
    byte for byte identical (including the first one and `previous`, the last frame of
    the burst before). A real sensor never delivers the same bytes twice: its noise alone
    changes some pixels in every exposure, so identical frames mean a stuck driver or
    stream serving one old frame over and over."""
    if not frames:
        return None
    if all(_is_black(frame) for frame in frames):
        return ("camera delivers black frames: check that the lens is not covered, the IR light works "
                "at night and the sensor cable is seated")
    sequence = ([previous] if previous is not None else []) + list(frames)
    for a, b in zip(sequence, sequence[1:]):
        if a.shape == b.shape and np.array_equal(a, b):
            return ("camera delivers frozen frames (the same picture byte for byte): the driver or the "
                    "stream is stuck; the camera is reopened")
    return None
