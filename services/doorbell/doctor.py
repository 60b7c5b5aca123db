"""`edge doctor`'s checks of the doorbell's hardware on an installed device: the GPIO pin
factory can be opened, the camera opens and gives a frame, the face library imports. Run in
the CLI process; while the device runs, the camera may be held by it (then say so).

Not responsible for: the doorbell itself (worker.py).
"""

from __future__ import annotations

import importlib.util

from edge.doctor import FAIL, OK, SKIP, WARN, Check, guarded
from hardware import gpio
from hardware.camera import CameraError, make_camera


def _gpio(cfg) -> Check:
    if cfg.pin_factory == "mock":
        return Check("doorbell", "gpio", SKIP, "simulated pins ([doorbell] pin_factory = \"mock\")")
    try:
        gpio.pin_factory(cfg.pin_factory)
    except gpio.GpioError as exc:
        return Check("doorbell", "gpio", FAIL, str(exc), "see the message; on a Pi: sudo apt install python3-lgpio")
    return Check("doorbell", "gpio", OK, f"{cfg.pin_factory} pin factory opens (button GPIO{cfg.button_pin}, "
                 f"chime GPIO{cfg.chime_pin}, relay GPIO{cfg.relay_pin})")


def _camera(cam) -> Check:
    if cam.backend == "none":
        return Check("doorbell", "camera", SKIP, "no camera configured ([camera] backend = \"none\")")
    camera = make_camera(cam.backend, cam.source or None, cam.width, cam.height)
    try:
        camera.open()
        frame = camera.capture()
    except CameraError as exc:
        return Check("doorbell", "camera", FAIL, f"{cam.backend} camera: {exc}",
                     "check the cable or [camera] source; if `edge run` is running it may hold the camera "
                     "(stop it, or trust its /health)")
    finally:
        camera.close()
    return Check("doorbell", "camera", OK, f"{cam.backend} camera gives {frame.shape[1]}x{frame.shape[0]} frames")


def _face_library(faces) -> Check:
    if not faces.enabled:
        return Check("doorbell", "face recognition", SKIP, "off ([faces] enabled = false)")
    missing = [m for m in ("face_recognition_models", "dlib") if importlib.util.find_spec(m) is None]
    if missing:
        return Check("doorbell", "face recognition", WARN, f"{' and '.join(missing)} not installed: rings are "
                     f"announced without names", "pip install 'setuptools<81' dlib-bin face_recognition_models "
                     "(see README)")
    return Check("doorbell", "face recognition", OK, "dlib and face_recognition_models are installed")


def checks(config) -> list[Check]:
    return [guarded("doorbell", "gpio", lambda: _gpio(config["doorbell"])),
            guarded("doorbell", "camera", lambda: _camera(config["camera"])),
            guarded("doorbell", "face recognition", lambda: _face_library(config["faces"]))]
