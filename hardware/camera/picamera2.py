"""The Raspberry Pi camera (libcamera) through picamera2. Pi-only and UNTESTED ON HARDWARE:
picamera2 comes from apt (`python3-picamera2`), so it is imported lazily in open(), and
this module imports everywhere; its surroundings are tested with a stand-in module.

Not responsible for: USB cameras and streams (opencv.py).
"""

from __future__ import annotations

import logging

import numpy as np

from hardware.camera.base import Camera, CameraError

log = logging.getLogger("hardware.camera")


class Picamera2Camera(Camera):
    """The Raspberry Pi camera (libcamera) through picamera2.

    UNTESTED ON HARDWARE: written to the Picamera2 manual (Raspberry Pi Ltd, "The Picamera2
    Library", sections on configurations and capture_array, appendix A on pixel formats).
    picamera2 comes from apt (`python3-picamera2`), not PyPI, so it is imported lazily in
    open() and the device's venv is created with --system-site-packages."""

    INSTALL_HINT = ("picamera2 is not installed: on Raspberry Pi OS run "
                    "`sudo apt install python3-picamera2` and create the venv with "
                    "--system-site-packages")

    def __init__(self, width: int = 1280, height: int = 720):
        self.width, self.height = width, height
        self._camera = None

    def open(self) -> None:
        self.close()
        try:
            from picamera2 import Picamera2
        except ImportError as exc:
            raise CameraError(self.INSTALL_HINT) from exc
        try:
            camera = Picamera2()
        except Exception as exc:  # IndexError: libcamera lists no camera; RuntimeError: busy or broken
            raise CameraError(
                f"no Raspberry Pi camera found ({type(exc).__name__}: {exc}): check the ribbon cable and run "
                "`rpicam-hello --list-cameras`") from exc
        try:
            # A video configuration streams continuously, so a burst is a few frames at the
            # sensor's frame rate instead of one mode switch per still.
            config = camera.create_video_configuration(
                main={"size": (self.width, self.height), "format": "RGB888"})
            camera.configure(config)
            camera.start()
        except Exception as exc:  # any failure here leaves an acquired camera: release it
            try:
                self._release(camera)
            except Exception:  # the start's error is the one to report; this one goes to the log
                log.exception("releasing the Raspberry Pi camera after a failed start failed too")
            raise CameraError(f"cannot start the Raspberry Pi camera ({type(exc).__name__}: {exc}); "
                              "check that no other program uses it (`rpicam-hello`)") from exc
        self._camera = camera

    def capture(self) -> np.ndarray:
        camera = self._camera
        if camera is None:
            raise CameraError("Raspberry Pi camera is not open: call open() first")
        try:
            array = camera.capture_array("main")
        except RuntimeError as exc:
            raise CameraError(f"Raspberry Pi camera capture failed: {exc}") from exc
        # picamera2's "RGB888" is libcamera's naming: bytes are stored B, G, R (Picamera2
        # manual, appendix A), so reverse the channels to get RGB.
        return np.ascontiguousarray(array[..., 2::-1])

    def close(self) -> None:
        camera, self._camera = self._camera, None
        if camera is not None:
            self._release(camera)

    @staticmethod
    def _release(camera) -> None:
        """Stop and close; close() even if stop() fails, or libcamera keeps the camera
        acquired and the next open() finds it busy. stop()'s error is raised after."""
        try:
            camera.stop()
        finally:
            camera.close()
