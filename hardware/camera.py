"""Cameras behind one small interface, in the manner of gpiozero's pin factories: the doorbell
asks a `Camera` for RGB frames and never knows which backend delivers them.

Backends:
- `FakeCamera`: serves an image file (or synthetic frames) with realistic burst-to-burst
  variation and injectable faults; what the simulator and the tests use.
- `OpenCVCamera`: USB webcams (V4L2 index), RTSP streams and video files via cv2.VideoCapture.
- `Picamera2Camera`: the Raspberry Pi camera through picamera2 (apt package, lazy import).

Plus the helpers the doorbell needs around a camera: `make_camera` (chosen by config),
`capture_burst`, `sharpness` and `load_rgb`.

Not responsible for: retries and breakers (the doorbell worker wraps a camera in the
camera breaker), face detection (services/doorbell/recognition.py).

Every frame is an H×W×3 uint8 array in RGB order, whatever the backend's native order.
"""

from __future__ import annotations

import abc
import logging
import threading
import time
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
from PIL import Image, ImageOps

log = logging.getLogger("hardware.camera")

# A dark, slightly blue-grey background, like the unlit porch around a visitor.
_BACKGROUND_RGB = (18, 20, 26)

FAULTS = ("black", "frozen", "slow")


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


def load_rgb(path: str | Path, background: tuple[int, int, int] = (0, 0, 0)) -> np.ndarray:
    """Decode an image file into an H×W×3 uint8 RGB array.

    EXIF orientation is applied (phone photos are often stored sideways with a rotation tag)
    and transparency is composited onto `background`: `convert("RGB")` alone would keep
    whatever colour hides under transparent pixels."""
    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image)
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            rgba = image.convert("RGBA")
            canvas = Image.new("RGBA", rgba.size, (*background, 255))
            image = Image.alpha_composite(canvas, rgba)
        return np.asarray(image.convert("RGB"))


def fit_into_frame(image: np.ndarray, width: int, height: int,
                   background: tuple[int, int, int] = _BACKGROUND_RGB) -> np.ndarray:
    """Scale `image` to fit inside width×height keeping its aspect ratio, centred on a dark
    background: what a doorbell sees of a person standing in front of it."""
    h, w = image.shape[:2]
    scale = min(width / w, height / h)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (new_w, new_h), interpolation=interpolation)
    frame = np.empty((height, width, 3), np.uint8)
    frame[:] = background
    top, left = (height - new_h) // 2, (width - new_w) // 2
    frame[top:top + new_h, left:left + new_w] = resized
    return frame


def sharpness(frame: np.ndarray) -> float:
    """Variance of the Laplacian of the grayscale frame: higher is sharper. The classic
    focus measure (Pech-Pacheco et al., "Diatom autofocusing in brightfield microscopy",
    ICPR 2000); cheap enough to rank every frame of a burst."""
    gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) if frame.ndim == 3 else frame
    return float(cv2.Laplacian(gray, cv2.CV_64F).var())


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


class FakeCamera(Camera):
    """A camera for the simulator and the tests.

    Serves a photo fitted into width×height on a dark background (`show(path)`), or
    synthetic frames without a face (`show_synthetic()`). Consecutive frames differ the way
    a real burst does: sensor noise, a shift of a few pixels, now and then a slight motion
    blur; all drawn from a seeded RNG so tests are reproducible.

    Faults: `unplug()` / `plug()`, `fail_after(n)` (unplug after n more frames, to break a
    burst in the middle) and `inject(fault)` with fault in FAULTS or None:
    "black" serves all-zero frames, "frozen" repeats the last frame byte for byte, "slow"
    delays each capture by `slow_delay_s` through the injectable `sleep`.

    Records what it was asked: `captures` (frames served), `capture_times` (from `clock`),
    `opens`, `closes`, `interrupts`.
    """

    def __init__(self, width: int = 1280, height: int = 720, source: str | Path | None = None,
                 seed: int | None = None, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], object] | None = None, slow_delay_s: float = 2.0,
                 noise_px: int = 4, blur_probability: float = 0.2, max_shift_px: int = 3):
        self.width, self.height = width, height
        self.slow_delay_s = slow_delay_s
        self.noise_px = noise_px
        self.blur_probability = blur_probability
        self.max_shift_px = max_shift_px
        self._rng = np.random.default_rng(seed)
        self._clock = clock
        self._lock = threading.Lock()
        # Set by interrupt() and close(): wakes a "slow" capture at once, as closing a real
        # device makes a blocked read return.
        self._interrupted = threading.Event()
        self._sleep = sleep if sleep is not None else self.wait
        self._is_open = False
        self._plugged = True
        self._fault: str | None = None
        self._frames_left: int | None = None
        self._last_frame: np.ndarray | None = None
        self.source: Path | None = None
        self.captures = 0
        self.capture_times: list[float] = []
        self.opens = 0
        self.closes = 0
        self.interrupts = 0
        if source is None:
            self.show_synthetic()
        else:
            self.show(source)

    # -- what the simulator and tests drive -------------------------------------------------

    def show(self, path: str | Path) -> None:
        """Serve this photo from now on, fitted into the frame like a visitor at the door."""
        try:
            image = load_rgb(path)
        except OSError as exc:
            raise CameraError(f"fake camera cannot load {path}: {exc}; "
                              "check the camera source path in the config") from exc
        with self._lock:
            self.source = Path(path)
            self._scene = fit_into_frame(image, self.width, self.height)
            self._last_frame = None

    def show_synthetic(self) -> None:
        """Serve a synthetic porch scene (gradient, a door frame, no face)."""
        ys = np.linspace(0.0, 1.0, self.height, dtype=np.float32)[:, None]
        xs = np.linspace(0.0, 1.0, self.width, dtype=np.float32)[None, :]
        scene = np.empty((self.height, self.width, 3), np.float32)
        scene[..., 0] = 40 + 90 * xs + 20 * ys
        scene[..., 1] = 45 + 60 * ys + 30 * xs
        scene[..., 2] = 60 + 50 * (1 - ys)
        scene = scene.astype(np.uint8)
        # Edges give sharpness() and the shift something to measure.
        w, h = self.width, self.height
        cv2.rectangle(scene, (w // 3, h // 8), (2 * w // 3, h), (90, 60, 40), thickness=max(2, w // 64))
        cv2.circle(scene, (w // 3 + w // 16, h // 2), max(2, w // 200), (200, 180, 60), -1)
        with self._lock:
            self.source = None
            self._scene = scene
            self._last_frame = None

    def unplug(self) -> None:
        """The cable is pulled: capture() raises CameraError (and the camera closes); open()
        raises until plug()."""
        with self._lock:
            self._plugged = False
            self._frames_left = None
        self._interrupted.set()

    def plug(self) -> None:
        """The cable is back. As after a real USB re-plug, the camera must be opened again."""
        with self._lock:
            self._plugged = True
            self._frames_left = None

    def fail_after(self, n: int) -> None:
        """Serve `n` more frames, then behave as unplugged (for breaking a burst midway)."""
        if n < 0:
            raise ValueError(f"fail_after needs n >= 0, got {n}")
        with self._lock:
            self._frames_left = n

    def inject(self, fault: str | None) -> None:
        """Set the active fault ("black", "frozen", "slow") or clear it with None."""
        if fault is not None and fault not in FAULTS:
            raise ValueError(f"unknown camera fault {fault!r}: use one of {', '.join(FAULTS)} or None")
        with self._lock:
            self._fault = fault

    def wait(self, seconds: float) -> None:
        """A sleep that interrupt(), close() and unplug() cut short, as closing a real device
        makes a blocked read return: the default delay of the "slow" fault."""
        self._interrupted.wait(seconds)

    @property
    def plugged(self) -> bool:
        return self._plugged

    @property
    def fault(self) -> str | None:
        """The injected fault ("black", "frozen", "slow") or None."""
        return self._fault

    @property
    def is_open(self) -> bool:
        return self._is_open

    # -- Camera ---------------------------------------------------------------------------

    def open(self) -> None:
        with self._lock:
            if not self._plugged:
                raise CameraError("fake camera is unplugged: plug it back in (simulator: plug camera)")
            self._is_open = True
            self.opens += 1
        self._interrupted.clear()

    def close(self) -> None:
        with self._lock:
            if self._is_open:
                self.closes += 1
            self._is_open = False
        self._interrupted.set()

    def interrupt(self) -> None:
        with self._lock:
            self.interrupts += 1
        self.close()

    def capture(self) -> np.ndarray:
        with self._lock:
            self._check_can_capture()
            fault = self._fault
        if fault == "slow":
            # Outside the lock so interrupt() and close() can get in.
            self._sleep(self.slow_delay_s)
        with self._lock:
            if not self._is_open:
                raise CameraError("capture interrupted: the camera was closed; open it again")
            self._check_can_capture()
            if self._frames_left is not None:
                self._frames_left -= 1
            frame = self._next_frame(fault)
            self.captures += 1
            self.capture_times.append(self._clock())
            return frame

    # -- internals ------------------------------------------------------------------------

    def _check_can_capture(self) -> None:
        if self._frames_left == 0:
            self._plugged = False
            self._frames_left = None
        if not self._plugged:
            self._is_open = False
            raise CameraError("fake camera is unplugged: plug it back in (simulator: plug camera)")
        if not self._is_open:
            raise CameraError("camera is not open: call open() first")

    def _next_frame(self, fault: str | None) -> np.ndarray:
        if fault == "black":
            return np.zeros((self.height, self.width, 3), np.uint8)
        if fault == "frozen" and self._last_frame is not None:
            return self._last_frame.copy()
        frame = self._vary(self._scene)
        self._last_frame = frame
        return frame.copy()

    def _vary(self, scene: np.ndarray) -> np.ndarray:
        """One realistic exposure of `scene`: small shift, maybe motion blur, sensor noise."""
        rng = self._rng
        dx, dy = rng.integers(-self.max_shift_px, self.max_shift_px + 1, size=2)
        shift = np.float32([[1, 0, dx], [0, 1, dy]])
        frame = cv2.warpAffine(scene, shift, (self.width, self.height), borderMode=cv2.BORDER_REPLICATE)
        if rng.random() < self.blur_probability:
            # A short horizontal smear: a visitor moving while the shutter is open.
            frame = cv2.blur(frame, (int(rng.integers(3, 6)), 1))
        # Uniform integer noise: statistically close enough to sensor noise for a fake, and
        # about five times cheaper than Gaussian draws at 1280x720 (measured).
        noise = rng.integers(-self.noise_px, self.noise_px + 1, size=frame.shape, dtype=np.int16)
        return cv2.add(frame, noise, dtype=cv2.CV_8U)


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


BACKENDS = ("fake", "opencv", "picamera2")


def make_camera(backend: str, source: str | None, width: int, height: int) -> Camera:
    """The camera for config `camera.backend` / `camera.source`, not yet opened.

    fake: source is an image file (None for synthetic frames); opencv: a device index such
    as "0" (default), a stream URL or a video file; picamera2: source is ignored."""
    if backend == "fake":
        return FakeCamera(width=width, height=height, source=source)
    if backend == "opencv":
        return OpenCVCamera(source if source is not None else "0", width=width, height=height)
    if backend == "picamera2":
        return Picamera2Camera(width=width, height=height)
    raise ValueError(f"unknown camera backend {backend!r}: use one of {', '.join(BACKENDS)}")
