"""USB webcams, RTSP/HTTP streams and video files through OpenCV's cv2.VideoCapture.

Not responsible for: the Raspberry Pi camera (picamera2.py), retries (the doorbell worker).
"""

from __future__ import annotations

import threading
from typing import Callable

import cv2
import numpy as np

from hardware.camera.base import Camera, CameraError


class OpenCVCamera(Camera):
    """A USB webcam (V4L2 index such as "0"), an RTSP/HTTP stream or a video file, through
    cv2.VideoCapture. Frames are converted from OpenCV's BGR to RGB; width/height are
    requested from devices, streams deliver their own size.

    Stale frames: the device stays open between rings, and VideoCapture does not drop
    frames nobody reads. V4L2 keeps streaming into its queue of driver buffers (OpenCV's
    cap_v4l uses 4 by default), FFmpeg keeps the packets of an RTSP stream, so the first
    read() after a quiet minute returns what the camera saw then, not the visitor now
    (opencv/opencv#13145: "the camera API, trying not to drop any frames, buffers several
    frames. This results in a pipeline of 'stale' images"). Hence CAP_PROP_BUFFERSIZE = 1
    (honoured by V4L2 since opencv/opencv#11047, ignored by some backends), and before each
    burst `flush()` grab()s and discards FLUSH_FRAMES frames: grab() only dequeues, without
    decoding, so the buffered frames go in microseconds and the last grab waits for a new
    exposure. Video files are not flushed: their frames are not stale, only next."""

    # One more than OpenCV's default V4L2 buffer count, for a backend that ignores BUFFERSIZE.
    FLUSH_FRAMES = 5

    def __init__(self, source: str | int, width: int = 1280, height: int = 720,
                 timeout_s: float = 5.0, video_capture: Callable[..., object] = cv2.VideoCapture):
        self.source = int(source) if isinstance(source, str) and source.isdigit() else source
        self.width, self.height = width, height
        self.timeout_s = timeout_s
        self._video_capture = video_capture  # cv2.VideoCapture, or a stand-in for tests
        self._cap = None
        self._interrupted = threading.Event()

    @property
    def live(self) -> bool:
        """A device or a network stream (whose buffered frames go stale), not a file."""
        return isinstance(self.source, int) or "://" in str(self.source)

    def open(self) -> None:
        self.close()
        timeout_ms = int(self.timeout_s * 1000)
        # Open/read timeouts bound a stalled RTSP stream (honoured by the FFmpeg and some
        # other backends; V4L2 reads return when the device disappears).
        cap = self._video_capture(self.source, cv2.CAP_ANY, [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout_ms,
            cv2.CAP_PROP_READ_TIMEOUT_MSEC, timeout_ms,
        ])
        if not cap.isOpened():
            cap.release()
            raise CameraError(
                f"cannot open camera {self.source!r}: check that it is plugged in "
                "(`ls /dev/video*`), that the stream URL is reachable, or set camera.source")
        if isinstance(self.source, int):
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
        if self.live:
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # returns False where unsupported; flush() covers that
        self._interrupted.clear()
        self._cap = cap

    def flush(self) -> None:
        cap = self._cap
        if cap is None or not self.live:
            return
        for _ in range(self.FLUSH_FRAMES):
            if not cap.grab() or self._interrupted.is_set():
                break  # the read that follows reports why

    def capture(self) -> np.ndarray:
        cap = self._cap
        if cap is None:
            raise CameraError(f"camera {self.source!r} is not open: call open() first")
        ok, frame = cap.read()
        if self._interrupted.is_set():
            self.close()
            raise CameraError(f"capture from {self.source!r} interrupted; open the camera again")
        if not ok or frame is None:
            raise CameraError(
                f"camera {self.source!r} returned no frame: unplugged, stream ended or network "
                "down; check the cable or the stream, the doorbell retries on its own")
        if frame.ndim == 2:
            return cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
        return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)

    def close(self) -> None:
        cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()

    def interrupt(self) -> None:
        # cv2.VideoCapture is not thread-safe: releasing it while another thread is inside
        # read() frees buffers that read() is still using. So only flag the interruption;
        # the read timeout bounds the wait, then capture() releases the device itself.
        self._interrupted.set()
