"""Cameras: the fake's realism and faults, the OpenCV backend on a real video file, and the
picamera2 backend's surroundings (its hardware path is a documented platform skip)."""

from __future__ import annotations

import sys
import threading
import types
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from edge.testing.requirements import PLATFORM_SKIP
from hardware.camera import (BurstInterrupted, CameraError, FakeCamera, OpenCVCamera, burst_fault,
                             Picamera2Camera, capture_burst, load_rgb, make_camera, sharpness)
from hardware.images import resize


def _on_pi() -> bool:
    model = Path("/proc/device-tree/model")
    return model.is_file() and "Raspberry Pi" in model.read_text(errors="replace")


on_pi = _on_pi()


@pytest.fixture
def camera():
    cam = FakeCamera(width=320, height=240, seed=7)
    cam.open()
    yield cam
    cam.close()


@pytest.fixture
def tall_red_photo(tmp_path) -> Path:
    path = tmp_path / "tall_red.png"
    Image.new("RGB", (100, 200), (220, 30, 30)).save(path)
    return path


def test_burst_frames_differ_but_stay_similar(camera):
    frames = capture_burst(camera, 5)
    assert all(f.shape == (240, 320, 3) and f.dtype == np.uint8 for f in frames)
    for a, b in zip(frames, frames[1:]):
        assert not np.array_equal(a, b)
        # Noise, a few pixels of shift, sometimes a slight blur: the same scene.
        assert np.abs(a.astype(int) - b.astype(int)).mean() < 12
    assert camera.captures == 5


def test_noise_stays_within_noise_px_of_the_scene_and_never_repeats_between_frames():
    """Without shift or blur a frame is the scene plus noise: within ±noise_px of it, and
    two frames in a row never carry the same noise (a repeated frame is a frozen camera)."""
    scene = np.tile(np.arange(0, 256, 2, dtype=np.uint8)[None, :, None], (40, 1, 3))  # 0..254, extremes too
    with FakeCamera(width=128, height=40, seed=5, noise_px=4, max_shift_px=0, blur_probability=0) as cam:
        cam._set_scene(scene, None)
        frames = [cam.capture() for _ in range(200)]
    for frame in frames:
        assert np.abs(frame.astype(int) - scene.astype(int)).max() <= 2 * 4  # noise, and the extremes lifted
        assert np.abs(frame.astype(int) - np.clip(scene, 4, 251).astype(int)).max() <= 4
    assert not any(np.array_equal(a, b) for a, b in zip(frames, frames[1:]))
    assert np.std(frames[0].astype(int) - frames[1].astype(int)) > 1  # noise, not a constant offset


def test_same_seed_gives_the_same_burst():
    bursts = []
    for _ in range(2):
        with FakeCamera(width=160, height=120, seed=3) as cam:
            bursts.append(capture_burst(cam, 3))
    assert all(np.array_equal(a, b) for a, b in zip(*bursts))


def test_unplug_mid_burst_raises_after_captured_frames(camera):
    camera.fail_after(3)
    with pytest.raises(BurstInterrupted, match="after 3 of 5") as caught:
        capture_burst(camera, 5)
    assert len(caught.value.frames) == 3
    assert camera.captures == 3
    assert not camera.plugged


def test_unplugged_camera_fails_until_plugged_and_reopened(camera):
    camera.unplug()
    with pytest.raises(CameraError, match="unplugged"):
        camera.capture()
    with pytest.raises(CameraError, match="plug it back in"):
        camera.open()
    camera.plug()
    camera.open()
    assert camera.capture().shape == (240, 320, 3)


def test_capture_before_open_says_to_open(tall_red_photo):
    with pytest.raises(CameraError, match="open"):
        FakeCamera(source=tall_red_photo).capture()


def test_black_fault_serves_all_zero_frames_until_cleared(camera):
    camera.inject("black")
    assert not camera.capture().any()
    camera.inject(None)
    assert camera.capture().any()


def test_frozen_fault_repeats_the_last_frame_exactly(camera):
    first = camera.capture()
    camera.inject("frozen")
    frozen = capture_burst(camera, 3)
    assert all(np.array_equal(first, frame) for frame in frozen)


def test_slow_fault_delays_each_capture_through_the_injected_sleep():
    slept: list[float] = []
    with FakeCamera(width=64, height=48, seed=1, sleep=slept.append, slow_delay_s=1.5) as cam:
        cam.inject("slow")
        capture_burst(cam, 2)
    assert slept == [1.5, 1.5]


def test_interrupt_ends_a_slow_capture_at_once():
    in_sleep = threading.Event()
    holder: dict[str, FakeCamera] = {}

    def sleep(seconds: float) -> None:
        in_sleep.set()
        holder["camera"].wait(seconds)

    cam = holder["camera"] = FakeCamera(width=64, height=48, sleep=sleep, slow_delay_s=60)
    cam.open()
    cam.inject("slow")
    errors: list[Exception] = []

    def capture() -> None:
        try:
            cam.capture()
        except CameraError as exc:
            errors.append(exc)

    worker = threading.Thread(target=capture)
    worker.start()
    assert in_sleep.wait(5)
    cam.interrupt()
    worker.join(5)
    assert not worker.is_alive()
    assert errors and "interrupted" in str(errors[0])
    assert cam.interrupts == 1


def test_unknown_fault_is_rejected(camera):
    with pytest.raises(ValueError, match="black, frozen, slow"):
        camera.inject("smoke")


def test_capture_times_come_from_the_injected_clock():
    ticks = iter([10.0, 10.5])
    with FakeCamera(width=32, height=24, clock=lambda: next(ticks)) as cam:
        capture_burst(cam, 2)
    assert cam.capture_times == [10.0, 10.5]


def test_context_manager_opens_and_closes():
    with FakeCamera(width=32, height=24) as cam:
        assert cam.is_open
    assert not cam.is_open and cam.opens == 1 and cam.closes == 1


def test_photo_is_fitted_inside_the_frame_on_a_dark_background(tall_red_photo):
    with FakeCamera(width=320, height=240, source=tall_red_photo, noise_px=0, max_shift_px=0,
                    blur_probability=0) as cam:
        frame = cam.capture()
    # 100×200 scaled to 120×240, centred: red in the middle, dark bars left and right.
    assert tuple(frame[120, 160]) == (220, 30, 30)
    assert frame[:, :95].max() < 40 and frame[:, 225:].max() < 40


def test_show_switches_between_photo_and_synthetic_scene(camera, tall_red_photo):
    camera.show(tall_red_photo)
    assert camera.source == tall_red_photo
    camera.show_synthetic()
    assert camera.source is None and camera.capture().shape == (240, 320, 3)


def test_missing_photo_raises_camera_error_naming_the_path(tmp_path):
    missing = tmp_path / "nobody.jpg"
    with pytest.raises(CameraError, match="nobody.jpg"):
        FakeCamera(source=missing)


def test_load_rgb_composites_transparency_onto_the_background(tmp_path):
    path = tmp_path / "half_transparent.png"
    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[..., :3] = 255
    rgba[:, 5:, 3] = 255  # left half transparent white, right half opaque white
    Image.fromarray(rgba, "RGBA").save(path)
    rgb = load_rgb(path, background=(0, 0, 0))
    assert rgb.shape == (10, 10, 3)
    assert rgb[:, :5].max() == 0 and rgb[:, 5:].min() == 255


def test_sharpness_is_lower_for_a_blurred_frame(camera):
    frame = camera.capture()
    assert sharpness(cv2.GaussianBlur(frame, (9, 9), 0)) < sharpness(frame)


def test_sharpness_equals_opencvs_laplacian_variance(camera):
    """The numpy Laplacian stands in for cv2.Laplacian (ksize 1, mirrored borders)."""
    frame = camera.capture()
    gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    assert sharpness(frame) == pytest.approx(float(cv2.Laplacian(gray, cv2.CV_64F).var()), rel=1e-6, abs=0.5)


def test_resize_shrinks_by_area_averaging_like_opencv():
    rng = np.random.default_rng(7)
    image = rng.integers(0, 256, size=(120, 160, 3), dtype=np.uint8)
    ours = resize(image, 40, 30).astype(int)
    theirs = cv2.resize(image, (40, 30), interpolation=cv2.INTER_AREA).astype(int)
    assert ours.shape == theirs.shape == (30, 40, 3)
    assert np.abs(ours - theirs).max() <= 1


def test_opencv_camera_on_a_missing_index_raises_camera_error():
    with pytest.raises(CameraError, match="plugged in"):
        OpenCVCamera("99", 640, 480).open()


def test_opencv_camera_reads_a_video_file_as_rgb_then_reports_its_end(tmp_path):
    path = tmp_path / "porch.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (160, 120))
    assert writer.isOpened()
    for _ in range(3):
        writer.write(np.full((120, 160, 3), (255, 0, 0), np.uint8))  # pure blue, in BGR
    writer.release()
    with OpenCVCamera(str(path), 160, 120) as cam:
        frames = capture_burst(cam, 3)
        with pytest.raises(CameraError, match="no frame"):
            cam.capture()
    red, green, blue = frames[0][60, 80].astype(int)
    assert frames[0].shape == (120, 160, 3)
    assert blue > 200 and red < 40 and green < 40


def test_opencv_interrupt_makes_the_next_read_fail_and_release(tmp_path):
    path = tmp_path / "short.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 24))
    writer.write(np.zeros((24, 32, 3), np.uint8))
    writer.release()
    cam = OpenCVCamera(str(path), 32, 24)
    cam.open()
    cam.interrupt()
    with pytest.raises(CameraError, match="interrupted"):
        cam.capture()
    with pytest.raises(CameraError, match="not open"):
        cam.capture()


def test_picamera2_missing_raises_camera_error_with_apt_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "picamera2", None)  # makes `import picamera2` fail
    with pytest.raises(CameraError, match=r"sudo apt install python3-picamera2.*--system-site-packages"):
        Picamera2Camera(640, 480).open()


def test_picamera2_frames_are_converted_from_bgr_to_rgb(monkeypatch):
    """The surroundings of the Pi path, against a stand-in that behaves as the Picamera2
    manual documents: "RGB888" arrays are stored B, G, R."""
    calls: list[str] = []

    class StandInPicamera2:
        def create_video_configuration(self, main):
            calls.append(f"configure {main['size']} {main['format']}")
            return {"main": main}

        def configure(self, config):
            self.size = config["main"]["size"]

        def start(self):
            calls.append("start")

        def capture_array(self, name):
            width, height = self.size
            return np.broadcast_to(np.uint8([10, 20, 30]), (height, width, 3)).copy()

        def stop(self):
            calls.append("stop")

        def close(self):
            calls.append("close")

    monkeypatch.setitem(sys.modules, "picamera2", types.SimpleNamespace(Picamera2=StandInPicamera2))
    with Picamera2Camera(64, 48) as cam:
        frame = cam.capture()
    assert frame.shape == (48, 64, 3) and tuple(frame[0, 0]) == (30, 20, 10)
    assert calls == ["configure (64, 48) RGB888", "start", "stop", "close"]


@pytest.mark.skipif(not on_pi, reason=f"needs a Raspberry Pi camera {PLATFORM_SKIP}")
def test_picamera2_captures_an_rgb_frame_on_a_pi():
    with Picamera2Camera(640, 480) as cam:
        frame = cam.capture()
    assert frame.shape == (480, 640, 3) and frame.dtype == np.uint8


def test_make_camera_builds_each_backend_and_rejects_unknown(tall_red_photo):
    assert isinstance(make_camera("fake", str(tall_red_photo), 320, 240), FakeCamera)
    assert isinstance(make_camera("fake", None, 320, 240), FakeCamera)
    opencv = make_camera("opencv", None, 640, 480)
    assert isinstance(opencv, OpenCVCamera) and opencv.source == 0
    assert isinstance(make_camera("picamera2", None, 640, 480), Picamera2Camera)
    with pytest.raises(ValueError, match="fake, opencv, picamera2"):
        make_camera("webcam", None, 640, 480)


class RecordingVideoCapture:
    """A stand-in for cv2.VideoCapture that records what it is asked and serves numbered
    frames (the frame's value is its sequence number, as a live sensor moves on)."""

    def __init__(self, source, api, params):
        self.source = source
        self.calls: list[str] = []
        self.props: dict[int, float] = {}
        self.sequence = 0

    def isOpened(self) -> bool:
        return True

    def set(self, prop, value) -> bool:
        self.props[prop] = value
        return True

    def grab(self) -> bool:
        self.calls.append("grab")
        self.sequence += 1
        return True

    def read(self):
        self.calls.append("read")
        self.sequence += 1
        return True, np.full((4, 4, 3), self.sequence, np.uint8)

    def release(self) -> None:
        self.calls.append("release")


@pytest.fixture
def video_captures():
    """A cv2.VideoCapture stand-in factory; `.made` lists what it built."""
    made: list[RecordingVideoCapture] = []

    def make(source, api, params) -> RecordingVideoCapture:
        made.append(RecordingVideoCapture(source, api, params))
        return made[-1]

    make.made = made
    return make


@pytest.mark.parametrize("source", ["0", "rtsp://192.168.1.20:554/stream1"])
def test_opencv_live_source_keeps_one_buffer_and_drops_buffered_frames_before_each_burst(source, video_captures):
    with OpenCVCamera(source, 64, 48, video_capture=video_captures) as cam:
        capture_burst(cam, 3)
        capture_burst(cam, 2)
    [cap] = video_captures.made
    assert cap.props[cv2.CAP_PROP_BUFFERSIZE] == 1
    flush = ["grab"] * OpenCVCamera.FLUSH_FRAMES
    assert cap.calls == flush + ["read"] * 3 + flush + ["read"] * 2 + ["release"]


def test_opencv_video_file_is_not_flushed(tmp_path, video_captures):
    with OpenCVCamera(str(tmp_path / "porch.avi"), 64, 48, video_capture=video_captures) as cam:
        capture_burst(cam, 3)
    [cap] = video_captures.made
    assert cap.calls == ["read"] * 3 + ["release"]  # a file's next frame is not stale
    assert cv2.CAP_PROP_BUFFERSIZE not in cap.props


def test_a_driver_error_mid_burst_is_a_burst_interrupted_with_the_frames_so_far(camera):
    real_capture = camera.capture
    served = []

    def capture_then_fail():
        if served:
            raise cv2.error("OpenCV(4.10.0) cvtColor: (-215:Assertion failed) !_src.empty()")
        served.append(1)
        return real_capture()

    camera.capture = capture_then_fail
    with pytest.raises(BurstInterrupted, match=r"camera failed: error: .*after 1 of 3") as interrupted:
        capture_burst(camera, 3)
    assert len(interrupted.value.frames) == 1
    assert isinstance(interrupted.value.__cause__, cv2.error)


def test_burst_fault_tells_black_and_frozen_bursts_from_a_real_one(camera):
    assert burst_fault(capture_burst(camera, 3)) is None
    dark_but_real = capture_burst(camera, 1)[0] // 8  # a dim porch: dark, yet sensor noise is there
    assert burst_fault([dark_but_real, dark_but_real + 1]) is None
    camera.inject("black")
    assert "black frames" in burst_fault(capture_burst(camera, 3))
    camera.inject(None)
    last = capture_burst(camera, 1)[-1]
    camera.inject("frozen")
    frozen = capture_burst(camera, 3)
    assert "frozen frames" in burst_fault(frozen)
    assert "frozen frames" in burst_fault(frozen[:1], previous=last)  # a burst of one, across bursts


class StandInPicamera2:
    """Behaves as the Picamera2 manual documents; `fail` names the call that raises."""

    def __init__(self, calls: list[str], fail: str | None = None):
        self.calls, self.fail = calls, fail

    def _call(self, name: str) -> None:
        self.calls.append(name)
        if name == self.fail:
            raise RuntimeError(f"libcamera: {name} failed")

    def create_video_configuration(self, main):
        return {"main": main}

    def configure(self, config):
        self._call("configure")

    def start(self):
        self._call("start")

    def stop(self):
        self._call("stop")

    def close(self):
        self._call("close")


def _install_picamera2(monkeypatch, calls, fail=None):
    module = types.SimpleNamespace(Picamera2=lambda: StandInPicamera2(calls, fail))
    monkeypatch.setitem(sys.modules, "picamera2", module)


def test_picamera2_close_releases_the_camera_even_when_stop_fails(monkeypatch):
    calls: list[str] = []
    _install_picamera2(monkeypatch, calls, fail="stop")
    cam = Picamera2Camera(64, 48)
    cam.open()
    with pytest.raises(RuntimeError, match="stop failed"):
        cam.close()
    assert calls == ["configure", "start", "stop", "close"]
    cam.close()  # nothing left to release
    assert calls.count("close") == 1


@pytest.mark.parametrize("fail", ["configure", "start"])
def test_picamera2_that_fails_to_start_is_released_and_reported_as_camera_error(monkeypatch, fail):
    calls: list[str] = []
    _install_picamera2(monkeypatch, calls, fail=fail)
    with pytest.raises(CameraError, match=f"cannot start the Raspberry Pi camera.*{fail} failed"):
        Picamera2Camera(64, 48).open()
    assert calls[-2:] == ["stop", "close"]


def test_picamera2_constructor_error_of_any_kind_is_a_camera_error(monkeypatch):
    def no_camera():
        raise ValueError("camera index out of range")

    monkeypatch.setitem(sys.modules, "picamera2", types.SimpleNamespace(Picamera2=no_camera))
    with pytest.raises(CameraError, match="no Raspberry Pi camera found.*ValueError"):
        Picamera2Camera(64, 48).open()
