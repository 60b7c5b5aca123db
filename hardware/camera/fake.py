"""The fake camera of the simulator and the tests: a photo or a synthetic porch scene with
realistic frame-to-frame variation, and faults a test or a person at the simulator can
inject (unplug, fail mid-burst, black, frozen, slow). A first-class backend, like
gpiozero's MockFactory: application code runs on it unchanged.

Not responsible for: decoding photos (hardware/images.py), real devices (opencv.py,
picamera2.py).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw

from hardware.camera.base import Camera, CameraError
from hardware.images import fit_into_frame, load_rgb

FAULTS = ("black", "frozen", "slow")
BLUR_LENGTH_PX = 4  # the motion blur: a box blur this many pixels long, along x
NOISE_OFFSETS = 64  # the noise field is this many pixels wider and taller than a frame


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
        self._noise_offset: tuple[int, int] | None = None
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
        self._set_scene(fit_into_frame(image, self.width, self.height), Path(path))

    def show_synthetic(self) -> None:
        """Serve a synthetic porch scene (gradient, a door frame, no face)."""
        ys = np.linspace(0.0, 1.0, self.height, dtype=np.float32)[:, None]
        xs = np.linspace(0.0, 1.0, self.width, dtype=np.float32)[None, :]
        scene = np.empty((self.height, self.width, 3), np.float32)
        scene[..., 0] = 40 + 90 * xs + 20 * ys
        scene[..., 1] = 45 + 60 * ys + 30 * xs
        scene[..., 2] = 60 + 50 * (1 - ys)
        # Edges give sharpness() and the shift something to measure.
        w, h = self.width, self.height
        picture = Image.fromarray(scene.astype(np.uint8))
        draw = ImageDraw.Draw(picture)
        draw.rectangle((w // 3, h // 8, 2 * w // 3, h), outline=(90, 60, 40), width=max(2, w // 64))
        knob = max(2, w // 200)
        x, y = w // 3 + w // 16, h // 2
        draw.ellipse((x - knob, y - knob, x + knob, y + knob), fill=(200, 180, 60))
        self._set_scene(np.asarray(picture), None)

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
                raise CameraError("fake camera is unplugged: plug it back in (`edge sim camera plug`)")
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

    def _set_scene(self, scene: np.ndarray, source: Path | None) -> None:
        """Serve `scene` from now on, with everything a frame needs made once here: the
        scene with its borders extended by the largest shift (edge pixels repeated, what a
        camera shaken by a few pixels shows), a motion-blurred copy, and a field of sensor
        noise larger than a frame. A frame is then a shifted slice of one of the two plus a
        slice of the noise at a random offset: one uint8 addition, about 0.3 ms at
        1280×720. Drawing fresh noise per frame cost 6 ms of CPU and shifting and blurring
        per frame held the GIL up to 4 ms (measured): time the runtime's button path
        waited in the simulator, which a real camera's ISP does not cost it.

        The scene is lifted into [0, 255 - 2 × noise_px] (at most noise_px off at its
        extremes) so that the addition cannot overflow."""
        pad, noise = self.max_shift_px, self.noise_px
        padded = np.pad(scene, ((pad, pad), (pad, pad), (0, 0)), mode="edge") if pad else scene
        blurred = horizontal_smear(padded, BLUR_LENGTH_PX) if self.blur_probability > 0 else padded
        lifted = [(np.clip(image, noise, 255 - noise) - noise).astype(np.uint8) for image in (padded, blurred)]
        field = self._rng.integers(0, 2 * noise + 1, size=(self.height + NOISE_OFFSETS, self.width + NOISE_OFFSETS, 3),
                                   dtype=np.uint8)
        with self._lock:
            self.source = source
            self._sources = (lifted[0], lifted[1], field)
            self._last_frame = None

    def _check_can_capture(self) -> None:
        if self._frames_left == 0:
            self._plugged = False
            self._frames_left = None
        if not self._plugged:
            self._is_open = False
            raise CameraError("fake camera is unplugged: plug it back in (`edge sim camera plug`)")
        if not self._is_open:
            raise CameraError("camera is not open: call open() first")

    def _next_frame(self, fault: str | None) -> np.ndarray:
        if fault == "black":
            return np.zeros((self.height, self.width, 3), np.uint8)
        if fault == "frozen" and self._last_frame is not None:
            return self._last_frame.copy()
        frame = self._vary()
        self._last_frame = frame
        return frame.copy()

    def _vary(self) -> np.ndarray:
        """One realistic exposure of the scene: small shift, maybe motion blur (a visitor
        moving while the shutter is open), sensor noise (never the same noise twice in a
        row: a repeated frame is what the "frozen" fault and the burst check look for)."""
        rng = self._rng
        dx, dy = (int(d) for d in rng.integers(-self.max_shift_px, self.max_shift_px + 1, size=2))
        padded, blurred, field = self._sources
        source = blurred if rng.random() < self.blur_probability else padded
        pad = self.max_shift_px
        frame = source[pad - dy:pad - dy + self.height, pad - dx:pad - dx + self.width]
        ox, oy = (int(o) for o in rng.integers(0, NOISE_OFFSETS + 1, size=2))
        if (ox, oy) == self._noise_offset:
            ox = (ox + 1) % (NOISE_OFFSETS + 1)
        self._noise_offset = (ox, oy)
        return frame + field[oy:oy + self.height, ox:ox + self.width]


def horizontal_smear(frame: np.ndarray, length: int) -> np.ndarray:
    """Each pixel averaged with its `length` horizontal neighbours (a box blur along x, as
    motion during the exposure smears it), borders mirrored."""
    left = length // 2
    padded = np.pad(frame.astype(np.int32), ((0, 0), (left, length - 1 - left), (0, 0)), mode="reflect")
    sums = np.cumsum(np.pad(padded, ((0, 0), (1, 0), (0, 0))), axis=1)
    return ((sums[:, length:] - sums[:, :-length]) // length).astype(np.uint8)
