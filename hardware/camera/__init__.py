"""Cameras behind one small interface, in the manner of gpiozero's pin factories: the doorbell
asks a `Camera` for RGB frames and never knows which backend delivers them. One backend per
module, as gpiozero keeps one pin factory per module under `gpiozero/pins/`:

- `base.py`: the `Camera` interface, `CameraError`, `BurstInterrupted`.
- `burst.py`: `capture_burst` and `burst_fault` (black or frozen pictures).
- `fake.py`: `FakeCamera`, an image file or synthetic frames with injectable faults; what
  the simulator and the tests use.
- `opencv.py`: `OpenCVCamera`, USB webcams (V4L2 index), RTSP streams and video files;
  imported only when asked for (cv2 costs ~17 MB of memory a Pi camera never needs).
- `picamera2.py`: `Picamera2Camera`, the Raspberry Pi camera (apt package, lazy import).

This module picks the backend from config (`make_camera`, `BACKENDS`) and re-exports the
public names, so `from hardware.camera import FakeCamera` works whatever module holds it.
`load_rgb`, `fit_into_frame` and `sharpness` live in hardware/images.py (they need no
camera) and are re-exported here for the callers that know them from here.

Not responsible for: retries and breakers (the doorbell worker wraps a camera in the
camera breaker), face detection (services/doorbell/recognition.py).

Every frame is an H×W×3 uint8 array in RGB order, whatever the backend's native order.
"""

from __future__ import annotations

from hardware.camera.base import BurstInterrupted, Camera, CameraError
from hardware.camera.burst import BLACK_MAX_LEVEL, burst_fault, capture_burst
from hardware.camera.fake import FAULTS, FakeCamera
from hardware.camera.picamera2 import Picamera2Camera
from hardware.images import fit_into_frame, load_rgb, sharpness

__all__ = [
    "BACKENDS", "BLACK_MAX_LEVEL", "FAULTS", "BurstInterrupted", "Camera", "CameraError", "FakeCamera",
    "OpenCVCamera", "Picamera2Camera", "burst_fault", "capture_burst", "fit_into_frame", "load_rgb",
    "make_camera", "sharpness",
]

BACKENDS = ("fake", "opencv", "picamera2")


def __getattr__(name: str):
    """`OpenCVCamera` on first use (PEP 562), so importing this package loads no cv2."""
    if name == "OpenCVCamera":
        from hardware.camera.opencv import OpenCVCamera
        return OpenCVCamera
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def make_camera(backend: str, source: str | None, width: int, height: int) -> Camera:
    """The camera for config `camera.backend` / `camera.source`, not yet opened.

    fake: source is an image file (None for synthetic frames); opencv: a device index such
    as "0" (default), a stream URL or a video file; picamera2: source is ignored."""
    if backend == "fake":
        return FakeCamera(width=width, height=height, source=source)
    if backend == "opencv":
        from hardware.camera.opencv import OpenCVCamera
        return OpenCVCamera(source if source is not None else "0", width=width, height=height)
    if backend == "picamera2":
        return Picamera2Camera(width=width, height=height)
    raise ValueError(f"unknown camera backend {backend!r}: use one of {', '.join(BACKENDS)}")
