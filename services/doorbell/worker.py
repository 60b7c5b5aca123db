"""The doorbell worker: button → chime → ring, then camera burst → recognition → visitor.

The button path runs entirely in gpiozero's callback thread and touches nothing slow: a
cooldown check, the chime pulse (hardware/gpio.py's own timer ends it), the `doorbell.ring`
event on the bus (a never-drop kind, so HA and the intercom hear at once, whatever the
camera does) and a hand-over slot for this worker's thread. A press that arrives while
a burst is being recognized replaces the waiting one (coalescing: the newest press wins,
and its visitor event lists the rings it stands for).

This worker's own thread answers presses: a burst from the camera (through the "camera"
breaker; a missing camera is reopened when it comes back), recognition in the child
process (services/doorbell/recognizer_child.py; killed and restarted when it hangs or
dies), a JPEG snapshot (snapshots.py, retention by count and age) and the
`doorbell.visitor` event carrying the ring's event_id. Every failure on that side turns
into a visitor result ("camera unavailable", "recognition unavailable", or "error" with the
reason for the unexpected), never into a missed ring: each step of answering a ring and of
the housekeeping between rings runs through `_step`, which logs what it raises with the
traceback and reports it in health() (DEGRADED) instead of letting it end run(), which
would close the GPIO. A black or frozen burst is a camera fault like an unplugged camera.

Also here: known faces reloaded when their version row moves (CLI enrollments in another
process take effect without a restart), the authorized-only door relay ("open_door"),
remote enrollment from the last ring's snapshot ("enroll_last_visitor"), and the
simulator's controls (`edge sim press`, `edge sim camera ...`, `edge sim status`).

Not here: MQTT (edge/mqtt publishes the events, states and entities declared below), the
recognition itself, camera drivers, GPIO devices.

Privacy: no encodings and no images in logs; logs say how many faces and which result,
not who.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from edge.bus import new_event_id
from edge.commands import Command, CommandRejected
from edge.config import Key, Section
from edge.entities import Entity, connectivity
from edge.health import DEGRADED
from edge.jsonlog import current_event_id
from edge.store import StoreUnavailable
from edge.worker import Worker, WorkerContext
from hardware import gpio
from hardware.camera import (BACKENDS, FAULTS as CAMERA_FAULTS, BurstInterrupted, CameraError, FakeCamera,
                             burst_fault, capture_burst, make_camera)
from services.doorbell.doctor import checks
from services.doorbell.enrollment import EnrollmentChild
from services.doorbell.faces_store import FACES_SCHEMA, FaceStore, check_name
from services.doorbell.recognition import KNOWN, UNCERTAIN, UNKNOWN, EnrollmentError, VisitorResult, choose_frame
from services.doorbell.recognizer_child import (FAILED as RECOGNIZER_FAILED, UNAVAILABLE as RECOGNIZER_UNAVAILABLE,
                                                RecognitionError, RecognizerProcess, RecognizerUnavailable)
from services.doorbell.snapshots import SnapshotFolder, encode_jpeg, snapshot_folder

RING, LONG_PRESS, VISITOR, SNAPSHOT, DOOR_OPENED, ENROLLED = (
    "doorbell.ring", "doorbell.long_press", "doorbell.visitor", "doorbell.snapshot", "doorbell.door_opened",
    "faces.enrolled")

# Results of a ring's visitor event, and the "Last visitor" sensor's text for each.
FACES, NO_FACE, CAMERA_UNAVAILABLE, CAMERA_OFF = "faces", "no_face", "camera_unavailable", "camera_off"
RECOGNITION_UNAVAILABLE, RECOGNITION_OFF, SAFE_MODE = "recognition_unavailable", "recognition_off", "safe_mode"
ERROR = "error"  # an unexpected failure while answering the ring (the reason says which step)
LABELS = {NO_FACE: "no face", CAMERA_UNAVAILABLE: "camera unavailable", CAMERA_OFF: "no camera",
          RECOGNITION_UNAVAILABLE: "recognition unavailable", RECOGNITION_OFF: "recognition off",
          SAFE_MODE: "safe mode", ERROR: "error"}
UNKNOWN_LABEL, UNCERTAIN_LABEL = "unknown person", "uncertain"

LOOP_WAIT_S = 0.25            # longest idle wait: heartbeats, face-version polls, camera probes
RECOGNIZER_RETRY_S = 300.0    # a missing face library is looked for again this often
PRUNE_EVERY_S = 3600.0
MAX_SIM_HOLD_S = 60.0


def _check_doorbell(config, problems, warnings) -> None:
    cfg = config["doorbell"]
    pins = {"button_pin": cfg.button_pin, "chime_pin": cfg.chime_pin, "relay_pin": cfg.relay_pin}
    if cfg.led_pin >= 0:
        pins["led_pin"] = cfg.led_pin
    seen: dict[int, str] = {}
    for key, pin in pins.items():
        if pin in seen:
            problems.append(f"[doorbell] {key}: GPIO{pin} is already the {seen[pin]}; every part needs its own "
                            f"pin, for example: {key} = {max(pins.values()) + 1}")
        seen.setdefault(pin, key)
    if cfg.button_pull == "off" and cfg.button_active == "auto":
        problems.append("[doorbell] button_active: with button_pull = \"off\" say which level a pressed button "
                        "puts on the pin; for example: button_active = \"low\"")
    if cfg.button_pull != "off" and cfg.button_active != "auto":
        warnings.append(f"[doorbell] button_active = {cfg.button_active!r} is ignored with button_pull = "
                        f"{cfg.button_pull!r} (the pull decides it)")


DOORBELL_SECTION = Section("doorbell", (
    Key("enabled", bool, True, "run the doorbell"),
    Key("pin_factory", str, "lgpio", "gpiozero pin factory: lgpio on a Pi, mock for the simulator and tests",
        choices=gpio.PIN_FACTORIES, profiles={"sim": "mock"}),
    Key("button_pin", int, 17, "BCM number of the doorbell button", min=0, max=27),
    Key("button_pull", str, "up", "up: button to ground; down: button to 3V3; off: external resistor",
        choices=("up", "down", "off")),
    Key("button_active", str, "auto", "level of a pressed button when button_pull = \"off\"",
        choices=("auto", "low", "high")),
    Key("bounce_s", float, 0.05, "contact bounce filter (0: none)", min=0, max=1),
    Key("long_press_s", float, 2.0, "holding the button this long is a separate long_press event", min=0.2, max=30),
    Key("cooldown_s", float, 3.0, "a press this soon after a ring is counted but does not ring again", min=0,
        max=600),
    Key("chime_pin", int, 27, "BCM number of the chime output", min=0, max=27),
    Key("chime_s", float, 0.5, "how long the chime output is on per ring", min=0.05, max=10),
    Key("chime_active_high", bool, True, "false for chime drivers that switch on a low level"),
    Key("relay_pin", int, 22, "BCM number of the door relay output", min=0, max=27),
    Key("relay_active_high", bool, True, "false for relay boards that switch on a low level"),
    Key("relay_pulse_s", float, 3.0, "how long the door opens per authorized request", min=0.1, max=30),
    Key("led_pin", int, -1, "BCM number of the status LED (-1: none)", min=-1, max=27, profiles={"sim": 23}),
    Key("allow_remote_open", bool, False, "let Home Assistant or the intercom open the door (audited)"),
    Key("person_clear_s", float, 60.0, "\"Person at door\" turns off this long after the last ring", min=1),
), "the doorbell: button, chime, door relay, status LED", checks=(_check_doorbell,))

CAMERA_SECTION = Section("camera", (
    Key("backend", str, "picamera2", "picamera2 (Pi camera), opencv (USB or RTSP), fake (simulator) or none",
        choices=(*BACKENDS, "none"), profiles={"sim": "fake"}),
    Key("source", str, "", "opencv: device index or stream URL; fake: a photo to show (empty: an empty porch)",
        example="rtsp://192.168.1.20:554/stream1"),
    Key("width", int, 1280, "frame width", min=160, max=4096),
    Key("height", int, 720, "frame height", min=120, max=3072),
    Key("burst", int, 5, "frames per ring; the sharpest with the largest face is kept", min=1, max=10),
), "the doorbell camera")

FACES_SECTION = Section("faces", (
    Key("enabled", bool, True, "recognize visitors' faces (in a child process)"),
    Key("tolerance", float, 0.6, "largest face distance that still counts as a match (dlib: 0.6)", min=0.2,
        max=0.9),
    Key("min_face_px", int, 60, "smallest face height looked for, in pixels", min=20, max=1000),
    Key("timeout_s", float, 10.0, "a recognition taking longer is abandoned and the child restarted", min=1,
        max=25),
    Key("snapshot_dir", str, "", "where visitor snapshots are kept (default: <state dir>/snapshots)"),
    Key("snapshot_keep", int, 50, "most snapshots kept on disk", min=0),
    Key("snapshot_max_age_days", float, 7.0, "snapshots older than this are deleted", min=0.01),
    Key("allow_remote_enroll", bool, False, "allow \"this was Alice\" enrollment from Home Assistant"),
), "known faces and visitor snapshots")


@dataclass
class Press:
    event_id: str
    ts_wall: float
    ts_mono: float
    coalesced: list[str] = field(default_factory=list)  # earlier rings this one stands for


@dataclass(frozen=True)
class LastVisitor:
    event_id: str
    frame: np.ndarray
    faces: tuple  # FaceResult, largest first


def _iso(ts_wall: float) -> str:
    return datetime.fromtimestamp(ts_wall, timezone.utc).isoformat(timespec="seconds")


def _face_label(face) -> str:
    if face.status == KNOWN and face.name:
        return face.name
    return UNCERTAIN_LABEL if face.status == UNCERTAIN else UNKNOWN_LABEL


class WorkerInterrupted(Exception):
    """Raised out of `run` after `interrupt()` (a hang or a restart request), so the
    supervisor restarts the worker and the GPIO is rebuilt with the relay off."""


class DoorbellWorker(Worker):
    name = "doorbell"
    sections = (DOORBELL_SECTION, CAMERA_SECTION, FACES_SECTION)
    schemas = (FACES_SCHEMA,)
    critical = True
    essential = True
    start_order = 10
    # Answering a ring blocks for a burst and a recognition (bounded by [faces] timeout_s).
    heartbeat_timeout_s = 40.0
    entities = (
        # One event entity per bus kind: an entity is fed by exactly one event topic.
        Entity("event", "doorbell", "Doorbell", event=RING, device_class="doorbell",
               options={"event_types": ["ring"]}),
        Entity("event", "long_press", "Long press", event=LONG_PRESS, device_class="doorbell",
               options={"event_types": ["long_press"]}),
        Entity("sensor", "last_visitor", "Last visitor", state="doorbell.last_visitor",
               value_template="{{ value_json.visitor }}", attributes="doorbell.last_visitor",
               icon="mdi:account-question"),
        Entity("binary_sensor", "person_at_door", "Person at door", state="doorbell.person",
               device_class="occupancy"),
        Entity("image", "visitor_snapshot", "Visitor snapshot", event=SNAPSHOT,
               options={"content_type": "image/jpeg"}),
        Entity("sensor", "rings", "Rings", state="doorbell.rings", state_class="total_increasing",
               icon="mdi:bell-ring"),
        Entity("sensor", "recognitions", "Recognitions", state="doorbell.recognitions",
               state_class="total_increasing", icon="mdi:face-recognition"),
        Entity("sensor", "recognition_time", "Recognition time", state="doorbell.recognition_ms",
               device_class="duration", unit="ms", state_class="measurement", entity_category="diagnostic"),
        connectivity("camera", "Connection", device="camera"),  # on while the camera breaker is closed
        # Announced only where the door can be opened remotely at all.
        Entity("button", "open_door", "Open door", command="open_door", icon="mdi:door-open",
               requires=("doorbell.allow_remote_open", "mqtt.allow_dangerous_commands")),
    )

    @classmethod
    def doctor(cls, config):
        return checks(config)

    def __init__(self, config):
        super().__init__(config)
        self.cfg = config["doorbell"]
        self.camera_cfg = config["camera"]
        self.faces_cfg = config["faces"]
        self.gpio: gpio.DoorbellGpio | None = None
        self.camera = None
        self.recognizer: RecognizerProcess | None = None
        self.faces: FaceStore | None = None
        self.snapshots: SnapshotFolder | None = None
        self.safe_mode = False
        self._ctx: WorkerContext | None = None
        self._cond = threading.Condition()
        self._pending: Press | None = None
        self._last_ring_mono: float | None = None
        self._press_event_id: str | None = None  # the ring of the press in progress (for long press)
        self._interrupted = False
        self._camera_open = False
        self._camera_error: str | None = None
        self._camera_probe_at = 0.0
        self._faces_version: int | None = None
        self._person_until: float | None = None
        self._faults: dict[str, str] = {}  # step of a ring or of housekeeping → why it last failed
        self._last_burst_frame: np.ndarray | None = None  # to tell a frozen camera across bursts
        self._picture_fault = False  # the camera was given up for black or frozen frames
        self._prune_at = 0.0
        self._recognizer_started_at = 0.0
        self._starter: threading.Thread | None = None
        self._enroller: threading.Thread | None = None
        self._enroll_child: EnrollmentChild | None = None
        self._last_visitor: LastVisitor | None = None
        self._led_mode: str | None = None
        self.ready = threading.Event()  # set once the button, camera and recognizer are set up
        self.presses = self.rings = self.ignored = self.recognitions = 0

    # -- the button path (gpiozero's thread) ------------------------------------------------
    def _on_press(self) -> None:
        ctx = self._ctx
        try:
            now = ctx.clock.monotonic()
            with self._cond:
                self.presses += 1
                if self._last_ring_mono is not None and now - self._last_ring_mono < self.cfg.cooldown_s:
                    self.ignored += 1
                    self._press_event_id = None
                    return
                self._last_ring_mono = now
                self.rings += 1
            self.gpio.ring_chime(self.cfg.chime_s)
            event = ctx.bus.emit(RING, {"event_type": "ring"})
            with self._cond:
                self._press_event_id = event.event_id
                waiting = self._pending
                coalesced = waiting.coalesced + [waiting.event_id] if waiting else []
                self._pending = Press(event.event_id, event.ts_wall, event.ts_mono, coalesced)
                self._cond.notify()
        except Exception:  # an exception here would end in gpiozero's thread, unseen
            ctx.log.exception("the button handler failed")

    def _on_long_press(self) -> None:
        ctx = self._ctx
        try:
            with self._cond:
                event_id = self._press_event_id or new_event_id()
            ctx.bus.emit(LONG_PRESS, {"event_type": "long_press", "held_s": self.cfg.long_press_s}, event_id)
        except Exception:
            ctx.log.exception("the long-press handler failed")

    # -- run ---------------------------------------------------------------------------------
    def run(self, ctx: WorkerContext) -> None:
        self._ctx = ctx
        self.safe_mode = ctx.safe_mode
        ctx.bus.mark_never_drop(RING)
        try:
            # First, so the simulator banner printed at start-up lists them; each handler
            # copes with a doorbell still being set up.
            self._register_sim(ctx)
            self._register_commands(ctx)
            # Nobody is at the door as far as this run knows: a restart lost the previous
            # run's timer, which would otherwise leave "Person at door" on for good.
            ctx.states.set("doorbell.person", "OFF")
            self._open_gpio(ctx)
            if not self.safe_mode:
                self._open_stores(ctx)
                self._open_camera()
                self._open_recognizer()
            self._publish_states()
            self.ready.set()
            ctx.log.info("doorbell ready: button GPIO%d, chime GPIO%d, relay GPIO%d (%s)%s", self.cfg.button_pin,
                         self.cfg.chime_pin, self.cfg.relay_pin, self.cfg.pin_factory,
                         " - SAFE MODE: button and chime only, relay held off" if self.safe_mode else "")
            while not ctx.stopping.is_set():
                if self._interrupted:
                    raise WorkerInterrupted("interrupted (hang or restart request); restarting the doorbell")
                ctx.heartbeat()
                press = self._next_press(LOOP_WAIT_S)
                if press is not None:
                    self._answer(press)
                self._maintain()
        finally:
            self._close(ctx)

    def _open_gpio(self, ctx: WorkerContext) -> None:
        cfg = self.cfg
        factory = (ctx.sim.pin_factory if ctx.sim is not None else None) or gpio.pin_factory(cfg.pin_factory)
        pins = gpio.DoorbellPins(button=cfg.button_pin, chime=cfg.chime_pin, relay=cfg.relay_pin,
                                 led=cfg.led_pin if cfg.led_pin >= 0 else None, button_pull=cfg.button_pull,
                                 button_active=cfg.button_active, bounce_s=cfg.bounce_s,
                                 long_press_s=cfg.long_press_s, relay_active_high=cfg.relay_active_high,
                                 chime_active_high=cfg.chime_active_high)
        self.gpio = gpio.DoorbellGpio(pins, factory, on_press=self._on_press, on_long_press=self._on_long_press)

    def _open_stores(self, ctx: WorkerContext) -> None:
        if ctx.store is not None:
            self.faces = FaceStore(ctx.store)
        self.snapshots = self.make_snapshot_folder(ctx.state_dir)

    def make_snapshot_folder(self, state_dir: Path | None) -> SnapshotFolder | None:
        """Where visitor snapshots are kept (a subclass may hand a test double)."""
        return snapshot_folder(self.faces_cfg, state_dir, wall=self._ctx.clock.wall)

    def _open_camera(self) -> None:
        cam = self.camera_cfg
        if cam.backend == "none":
            return
        self.camera = make_camera(cam.backend, cam.source or None, cam.width, cam.height)
        self._camera_breaker = self._ctx.breakers.get("camera", failure_threshold=1, reset_timeout=2.0,
                                                      max_reset_timeout=30.0)
        self._probe_camera()

    def make_recognizer(self, options: dict) -> RecognizerProcess:
        """The recognition child's handle (a subclass may point it at another library)."""
        return RecognizerProcess(options=options, start_timeout_s=60.0)

    def _open_recognizer(self) -> None:
        if not self.faces_cfg.enabled:
            return
        self.recognizer = self.make_recognizer({"tolerance": self.faces_cfg.tolerance,
                                                "min_face_px": self.faces_cfg.min_face_px})
        self._reload_faces()
        self._start_recognizer()

    def _start_recognizer(self) -> None:
        # start() waits for the child to load its models (a second or two, more on a Pi):
        # on a thread of its own so this worker keeps heartbeating and answering rings.
        self._recognizer_started_at = self._ctx.clock.monotonic()
        self._starter = threading.Thread(target=self.recognizer.start, name="doorbell-recognizer-start",
                                         daemon=True)
        self._starter.start()

    def _close(self, ctx: WorkerContext) -> None:
        if self.gpio is not None:
            self.gpio.close()  # relay off first
        if self.camera is not None:
            self.camera.close()
        if self._enroll_child is not None:
            self._enroll_child.kill()
        if self._enroller is not None:
            self._enroller.join(10)
        if self.recognizer is not None:
            self.recognizer.stop()
            if self._starter is not None:
                self._starter.join(1.0)
                while self._starter.is_alive():  # a start that began after stop(): end its child
                    self.recognizer.kill()
                    self._starter.join(0.2)
                self.recognizer.stop()

    def interrupt(self) -> None:
        """Free a run blocked on the camera or the recognizer; run() then raises and the
        supervisor restarts the doorbell (with the relay off)."""
        with self._cond:
            self._interrupted = True
            self._cond.notify()
        if self.camera is not None:
            self.camera.interrupt()
        if self.recognizer is not None:
            self.recognizer.kill()

    def health(self) -> tuple[str, str] | None:
        problems = []
        if self.camera is not None and not self._camera_open:
            problems.append(f"camera unavailable ({self._camera_error or 'not open'})")
        recognizer = self.recognizer
        if recognizer is not None and recognizer.state in (RECOGNIZER_UNAVAILABLE, RECOGNIZER_FAILED):
            problems.append(f"face recognition unavailable ({recognizer.reason})")
        problems += [f"{step} failed ({reason})" for step, reason in list(self._faults.items())]
        if problems:
            return DEGRADED, "; ".join(problems) + "; the bell still rings and announces"
        return None

    # -- containing failures -------------------------------------------------------------------
    def _step(self, step: str, action, *args, failed: dict[str, str] | None = None, default: Any = None) -> Any:
        """Run one step of answering a ring or of housekeeping. Whatever it raises (a
        PermissionError from the disk, a driver's own error, sqlite3.DatabaseError) is
        logged with its traceback, reported by health() until the step works again, added
        to `failed` and turned into `default`: no step can end run(), which would close
        the GPIO and leave the button and chime dead until the supervisor restarts us."""
        try:
            value = action(*args)
        except Exception as exc:  # contained: logged with the traceback, reported in health()
            reason = f"{type(exc).__name__}: {exc}"
            if self._faults.get(step) != reason:  # once per kind of failure, not every loop
                self._ctx.log.exception("doorbell step %r failed (%s); the bell rings on", step, reason)
            self._faults[step] = reason
            if failed is not None:
                failed[step] = reason
            return default
        if self._faults.pop(step, None) is not None:
            self._ctx.log.info("doorbell step %r works again", step)
        return value

    # -- answering a ring (this worker's thread) -----------------------------------------------
    def _next_press(self, timeout: float) -> Press | None:
        with self._cond:
            if self._pending is None and not self._interrupted:
                self._cond.wait(timeout)
            press, self._pending = self._pending, None
            return press

    def _answer(self, press: Press) -> None:
        """Answer one ring. Each step runs through `_step`, so a failure costs that step
        only: the visitor event goes out whatever happens ("error" and the reason when
        the camera or recognition step itself broke)."""
        ctx = self._ctx
        token = current_event_id.set(press.event_id)
        failed: dict[str, str] = {}

        def step(name: str, action, *args, default: Any = None) -> Any:
            return self._step(name, action, *args, failed=failed, default=default)

        try:
            self._person_until = ctx.clock.monotonic() + self.cfg.person_clear_s
            step("person state", ctx.states.set, "doorbell.person", "ON")
            step("state publishing", self._publish_states)
            step("ring record", self._record, press.event_id, RING, {"coalesced": press.coalesced}, press.ts_wall)
            step("faces reload", self._reload_faces)
            frames, camera_problem = step("camera", self._burst, default=([], None))
            ctx.heartbeat()
            result, recognition_problem, recognition_ms = step("recognition", self._recognize, frames,
                                                               default=(None, None, None))
            ctx.heartbeat()
            error = next((f"{name} failed: {reason}" for name, reason in failed.items()
                          if name in ("camera", "recognition")), None)
            visitor = step("visitor", self._visitor, press, frames, result, camera_problem, recognition_problem,
                           recognition_ms, error)
            if visitor is None:
                visitor = self._error_visitor(press, len(frames), f"visitor failed: {failed['visitor']}")
            jpeg = step("snapshot", self._keep_snapshot, press, frames, result, visitor) if frames else None
            visitor["latency_ms"] = round((ctx.clock.monotonic() - press.ts_mono) * 1000, 1)
            step("visitor event", ctx.bus.emit, VISITOR, visitor, press.event_id)
            if jpeg is not None:
                step("snapshot event", ctx.bus.emit, SNAPSHOT,
                     {"jpeg": jpeg, "content_type": "image/jpeg", "file": visitor["snapshot"]}, press.event_id)
            step("visitor record", self._record, press.event_id, VISITOR, visitor, None)
            step("visitor state", self._visitor_states, press, visitor, recognition_ms)
            ctx.log.info("visitor: %s, %d face(s), %d known, in %.0f ms", visitor["result"], len(visitor["faces"]),
                         sum(1 for f in visitor["faces"] if f["status"] == KNOWN), visitor["latency_ms"])
        finally:
            current_event_id.reset(token)

    def _keep_snapshot(self, press: Press, frames, result, visitor: dict) -> bytes:
        """The JPEG of the chosen frame; saved on disk (visitor["snapshot"]) and kept in
        memory for "this was Alice"."""
        index = result.frame_index if result is not None and result.frame_index is not None else \
            choose_frame(frames, [()] * len(frames))  # no faces: the sharpest frame
        jpeg = encode_jpeg(frames[index])
        visitor["snapshot"] = self._save_snapshot(press, jpeg, visitor)
        self._last_visitor = LastVisitor(press.event_id, frames[index],
                                         tuple(result.faces) if result is not None else ())
        return jpeg

    def _visitor_states(self, press: Press, visitor: dict, recognition_ms: float | None) -> None:
        states = self._ctx.states
        states.set("doorbell.last_visitor", {
            "visitor": visitor["visitor"], "confidence": visitor["confidence"], "time": _iso(press.ts_wall),
            "event_id": press.event_id, "result": visitor["result"], "faces": visitor["faces"]})
        if recognition_ms is not None:
            self.recognitions += 1
            states.set("doorbell.recognition_ms", recognition_ms)
        self._publish_states()

    def _burst(self) -> tuple[list[np.ndarray], str | None]:
        if self.camera is None:
            return [], None
        if not self._probe_camera():
            return [], self._camera_error
        try:
            frames = capture_burst(self.camera, self.camera_cfg.burst)
        except BurstInterrupted as exc:
            if not isinstance(exc.__cause__, CameraError):  # the driver's own error: keep its traceback
                self._ctx.log.error("the camera failed mid-burst: %s", exc, exc_info=exc.__cause__)
            self._camera_failed(exc)
            return exc.frames, str(exc)
        fault = burst_fault(frames, self._last_burst_frame)
        if fault is not None:
            # Black or frozen pictures are no pictures: no recognition, no snapshot; the
            # breaker opens and the camera is reopened (and checked) like an unplugged one.
            self._picture_fault = True
            self._camera_failed(CameraError(fault))
            return [], fault
        self._last_burst_frame = frames[-1]
        self._camera_breaker.record_success()
        return frames, None

    def _probe_camera(self) -> bool:
        """Open the camera if its breaker lets us try now; True when it is open. After
        black or frozen frames, a reopened camera must show two good frames first."""
        if self._camera_open:
            return True
        if not self._camera_breaker.allow():
            self._camera_error = self._camera_breaker.last_error
            return False
        try:
            self.camera.open()
            if self._picture_fault:
                fault = burst_fault(capture_burst(self.camera, 2))
                if fault is not None:
                    raise CameraError(fault)
        except CameraError as exc:
            self._camera_failed(exc)
            return False
        except Exception as exc:  # a driver's own error (cv2.error, libcamera): the camera is not usable
            self._ctx.log.error("the camera failed to open: %s: %s", type(exc).__name__, exc, exc_info=exc)
            self._camera_failed(CameraError(f"{type(exc).__name__}: {exc}"))
            return False
        self._picture_fault = False
        self._last_burst_frame = None
        self._camera_breaker.record_success()
        if self._camera_error:
            self._ctx.log.info("camera is back")
        self._camera_open, self._camera_error = True, None
        return True

    def _camera_failed(self, exc: Exception) -> None:
        if self._camera_open or self._camera_error is None:
            self._ctx.log.warning("camera unavailable: %s; rings go on without pictures", exc)
        self._camera_breaker.record_failure(exc)
        self._camera_open, self._camera_error = False, str(exc)
        try:
            self.camera.close()
        except Exception:  # releasing a broken device can fail too; the next open() starts afresh
            self._ctx.log.exception("closing the failed camera failed too")

    def _recognize(self, frames) -> tuple[VisitorResult | None, str | None, float | None]:
        if not frames or self.recognizer is None:
            return None, None, None
        started = time.perf_counter()
        try:
            result = self.recognizer.recognize(frames, timeout_s=self.faces_cfg.timeout_s)
        except (RecognizerUnavailable, RecognitionError) as exc:
            self._ctx.log.warning("no recognition for this ring: %s", exc)
            return None, str(exc), None
        return result, None, round((time.perf_counter() - started) * 1000, 1)

    def _visitor(self, press: Press, frames, result, camera_problem, recognition_problem, recognition_ms,
                 error: str | None = None) -> dict:
        faces = [] if result is None else [
            {"name": f.name if f.status == KNOWN else None, "status": f.status, "confidence": f.confidence,
             "box": list(f.box)} for f in result.faces]
        if error is not None:
            outcome = ERROR
        elif self.safe_mode:
            outcome = SAFE_MODE
        elif self.camera is None:
            outcome = CAMERA_OFF
        elif not frames:
            outcome = CAMERA_UNAVAILABLE
        elif self.recognizer is None:
            outcome = RECOGNITION_OFF
        elif result is None:
            outcome = RECOGNITION_UNAVAILABLE
        else:
            outcome = FACES if faces else NO_FACE
        largest = result.faces[0] if result is not None and result.faces else None
        return {
            "result": outcome,
            "visitor": _face_label(largest) if largest is not None else LABELS[outcome],
            "confidence": largest.confidence if largest is not None else None,
            "faces": faces,
            "frames": len(frames),
            "reason": error or recognition_problem or camera_problem,
            "recognition_ms": recognition_ms,
            "coalesced": press.coalesced,
            "time": _iso(press.ts_wall),
            "snapshot": None,
        }

    @staticmethod
    def _error_visitor(press: Press, frames: int, reason: str) -> dict:
        """The visitor event when even building the normal one failed."""
        return {"result": ERROR, "visitor": LABELS[ERROR], "confidence": None, "faces": [], "frames": frames,
                "reason": reason, "recognition_ms": None, "coalesced": press.coalesced,
                "time": _iso(press.ts_wall), "snapshot": None}

    def _save_snapshot(self, press: Press, jpeg: bytes, visitor: dict) -> str | None:
        if self.snapshots is None or self.faces_cfg.snapshot_keep == 0:
            return None
        try:
            path = self.snapshots.save(press.event_id, jpeg, press.ts_wall)
        except OSError as exc:
            reason = f"cannot save visitor snapshots in {self.snapshots.directory} ({exc.strerror or exc})"
            if self._faults.get("snapshot saving") != reason:
                self._ctx.log.error("%s; free space or fix the permissions there", reason)
            self._faults["snapshot saving"] = reason
            return None
        if self._faults.pop("snapshot saving", None) is not None:
            self._ctx.log.info("visitor snapshots are saved again")
        if self.faces is not None:
            names = [f["name"] for f in visitor["faces"] if f["name"]]
            try:
                self.faces.record_snapshot(press.event_id, path.name, names, press.ts_wall)
            except StoreUnavailable as exc:
                self._ctx.log.warning("snapshot not indexed (%s)", exc)
        self._prune_snapshots()
        return path.name

    def _record(self, event_id: str, kind: str, data: dict, ts_wall: float | None) -> None:
        store = self._ctx.store
        if store is None:
            return
        try:
            store.record_event(event_id, kind, data, ts_wall)
        except StoreUnavailable as exc:  # a full disk never stops the doorbell
            self._ctx.log.warning("%s not recorded: %s", kind, exc)

    # -- housekeeping between rings --------------------------------------------------------------
    def _maintain(self) -> None:
        """Between rings; each step through `_step`, so none can end run()."""
        now = self._ctx.clock.monotonic()
        self._step("faces reload", self._reload_faces)
        if self.camera is not None and not self._camera_open and now >= self._camera_probe_at:
            self._camera_probe_at = now + 1.0
            self._step("camera", self._probe_camera)
        if self._person_until is not None and now >= self._person_until:
            self._person_until = None
            self._step("person state", self._ctx.states.set, "doorbell.person", "OFF")
        if now >= self._prune_at:
            self._step("snapshot pruning", self._prune_snapshots)
        self._step("recognizer restart", self._retry_recognizer, now)
        self._step("state publishing", self._publish_states)

    def _retry_recognizer(self, now: float) -> None:
        recognizer = self.recognizer
        if (recognizer is not None and recognizer.state == RECOGNIZER_UNAVAILABLE
                and not self._starter.is_alive() and now - self._recognizer_started_at >= RECOGNIZER_RETRY_S):
            self._start_recognizer()

    def _reload_faces(self) -> None:
        if self.faces is None or self.recognizer is None:
            return
        try:
            version = self.faces.version()
            if version == self._faces_version:
                return
            known = self.faces.known()
        except sqlite3.Error as exc:  # a broken store means no names, not no doorbell
            self._ctx.log.warning("cannot read the known faces: %s", exc)
            return
        if not self.recognizer.set_known(known):
            return  # the recognizer is busy (a start or a request): tried again next loop
        if self._faces_version is not None:
            self._ctx.log.info("known faces changed: %d people", len(known))
        self._faces_version = version
        self._forget_removed(known)

    def _forget_removed(self, known: dict) -> None:
        """After `edge faces remove NAME`: the retained "Last visitor" no longer names that
        person (relabelled "unknown person"), and the last ring's picture of them is
        dropped from memory (it could be enrolled again by "this was ...")."""
        last = self._last_visitor
        if last is not None and any(f.name and f.name not in known for f in last.faces):
            self._last_visitor = None
        state = self._ctx.states.get("doorbell.last_visitor")
        if not state or not any(f.get("name") and f["name"] not in known for f in state.get("faces", ())):
            return
        faces = [dict(f, name=None, status=UNKNOWN) if f.get("name") and f["name"] not in known else f
                 for f in state["faces"]]
        largest = faces[0]
        relabelled = largest is not state["faces"][0]
        self._ctx.states.set("doorbell.last_visitor", {
            **state, "faces": faces,
            "visitor": UNKNOWN_LABEL if relabelled else state.get("visitor"),
            "confidence": None if relabelled else state.get("confidence")})

    def _prune_snapshots(self) -> None:
        self._prune_at = self._ctx.clock.monotonic() + PRUNE_EVERY_S
        if self.snapshots is None:
            return
        removed = self.snapshots.prune()
        if removed and self.faces is not None:
            try:
                self.faces.forget_snapshots(removed)
            except StoreUnavailable as exc:  # index rows of deleted files are harmless
                self._ctx.log.warning("index rows of %d pruned snapshot(s) not removed: %s", len(removed), exc)

    def _publish_states(self) -> None:
        states = self._ctx.states
        with self._cond:
            rings, presses, ignored = self.rings, self.presses, self.ignored
        states.set("doorbell.rings", rings)
        states.set("doorbell.presses", presses)
        states.set("doorbell.presses_ignored", ignored)
        states.set("doorbell.recognitions", self.recognitions)
        led = "on" if self.health() is None and not self.safe_mode else "blink"
        if self.gpio is not None and led != self._led_mode:
            self._led_mode = led
            self.gpio.set_led(led)

    # -- commands (called from other threads: the MQTT link, the intercom) -----------------------
    def _register_commands(self, ctx: WorkerContext) -> None:
        commands = ctx.commands
        # Both are `dangerous` (the MQTT link also wants [mqtt] allow_dangerous_commands) and
        # each has this device's own switch, off by default.
        commands.register(Command("open_door", self.open_door, fields={}, optional={"event_id": str},
                                  authorized=lambda: bool(self.cfg.allow_remote_open),
                                  refusal="set [doorbell] allow_remote_open = true", dangerous=True))
        commands.register(Command("enroll_last_visitor", self.enroll_last_visitor, fields={"name": str},
                                  authorized=lambda: bool(self.faces_cfg.allow_remote_enroll),
                                  refusal="set [faces] allow_remote_enroll = true", dangerous=True))

    def open_door(self, payload: dict, via: str) -> dict:
        """Pulse the door relay (authorization is checked by the command registry); `via`
        (mqtt, sip, cli) is who asked, for the audit record."""
        if self.safe_mode:
            raise CommandRejected("the door relay is held off in safe mode; fix the cause of the failed boots "
                                  "and restart the service", "unauthorized")
        doorbell = self.gpio
        if doorbell is None or self._ctx.stopping.is_set():
            raise CommandRejected("the doorbell is restarting; try again in a few seconds", "failed")
        seconds = self.cfg.relay_pulse_s
        event_id = payload.get("event_id") or new_event_id()
        # The relay first, then the audit record of what really happened: a record written
        # before a pulse that then failed would say the door was opened when it was not.
        try:
            doorbell.pulse_relay(seconds)
        except gpio.GpioError as exc:
            self._audit(via, "door_open_failed", {"seconds": seconds, "reason": str(exc)}, event_id)
            self._ctx.log.error("door relay failed: %s", exc, extra={"event_id": event_id})
            raise CommandRejected(f"the door was not opened: {exc}", "failed") from None
        self._audit(via, "door_opened", {"seconds": seconds}, event_id)
        self._ctx.bus.emit(DOOR_OPENED, {"seconds": seconds, "via": via}, event_id)
        self._ctx.log.info("door opened for %.1f s (%s)", seconds, via, extra={"event_id": event_id})
        return {"opened_s": seconds, "event_id": event_id}

    def _audit(self, actor: str, action: str, detail: dict, event_id: str) -> None:
        audit = self._ctx.audit
        if audit is None:
            return
        try:
            audit.append(actor, action, detail, event_id)
        except StoreUnavailable as exc:
            self._ctx.log.error("%s could not be audited (%s)", action, exc, extra={"event_id": event_id})

    def enroll_last_visitor(self, payload: dict, via: str) -> dict:
        """"This was Alice": enroll the largest face of the last ring's snapshot. The
        encoding runs in a one-shot child (dlib stays out of this process); the outcome is
        a `faces.enrolled` event with the ring's event_id, and an audit record."""
        try:
            name = check_name(payload["name"])
        except ValueError as exc:
            raise CommandRejected(str(exc), "invalid") from None
        last = self._last_visitor
        if last is None:
            raise CommandRejected("no visitor snapshot since the doorbell started; ring first", "invalid")
        if not last.faces:
            raise CommandRejected(f"the snapshot of the last ring ({last.event_id}) shows no face", "invalid")
        if self.faces is None:
            raise CommandRejected("known faces cannot be saved: the store is unavailable", "failed")
        if self._enroller is not None and self._enroller.is_alive():
            raise CommandRejected("an enrollment is already running; try again in a moment", "failed")
        self._enroll_child = EnrollmentChild()
        self._enroller = threading.Thread(target=self._enroll, args=(name, last, self._enroll_child, via),
                                          name="doorbell-enroll", daemon=True)
        self._enroller.start()
        return {"enrolling": name, "event_id": last.event_id}

    def _enroll(self, name: str, last: LastVisitor, child: EnrollmentChild, via: str) -> None:
        ctx = self._ctx
        ok, reason = False, ""
        try:
            encoding = child.encode(last.frame, last.faces[0].box)
            added, _ = self.faces.add(name, [(f"ring:{last.event_id}", encoding)], ctx.clock.wall())
            self.faces.label_snapshot(last.event_id, name)
            if ctx.audit is not None:
                ctx.audit.append(via, "face_enrolled", {"name": name, "source": "ring", "encodings": added},
                             last.event_id)
            ok = True
        except (EnrollmentError, RuntimeError, StoreUnavailable, ValueError) as exc:
            reason = str(exc)
            ctx.log.warning("enrollment from the last ring failed: %s", reason, extra={"event_id": last.event_id})
        ctx.bus.emit(ENROLLED, {"name": name, "ok": ok, "reason": reason or None}, last.event_id)

    # -- simulator ---------------------------------------------------------------------------------
    def _register_sim(self, ctx: WorkerContext) -> None:
        if ctx.sim is None:
            return
        ctx.register_sim("press", self._sim_press)
        ctx.register_sim("camera", self._sim_camera)
        ctx.register_sim("status", self._sim_status)
        ctx.announce(f"doorbell: button GPIO{self.cfg.button_pin} → chime GPIO{self.cfg.chime_pin}; "
                     f"`edge sim press`, `edge sim camera show PHOTO`, `edge sim camera fault black`")

    def _sim_press(self, args: dict) -> dict:
        hold = float(args.get("hold") or 0.1)
        if not 0 < hold <= MAX_SIM_HOLD_S:
            raise ValueError(f"hold must be more than 0 and at most {MAX_SIM_HOLD_S:g} seconds, got {hold:g}")
        if not self.ready.is_set():
            raise ValueError("the doorbell is still starting; try again in a second")
        with self._cond:
            before = self.rings
        try:
            self.gpio.simulate_press(hold)  # the press happens now; the timer lets go
        except gpio.GpioError as exc:
            raise ValueError(str(exc)) from None
        with self._cond:
            rang, event_id = self.rings > before, self._press_event_id
        return {"rang": rang, "event_id": event_id if rang else None, "hold_s": hold,
                "note": None if rang else f"within the {self.cfg.cooldown_s:g} s cooldown of the last ring"}

    def _sim_camera(self, args: dict) -> dict:
        if not self.ready.is_set():
            raise ValueError("the doorbell is still starting; try again in a second")
        camera = self.camera
        if not isinstance(camera, FakeCamera):
            raise ValueError(f"the camera is not simulated ([camera] backend = {self.camera_cfg.backend!r}); "
                             f"run `edge run --sim` or set backend = \"fake\"")
        action = args.get("action")
        try:
            if action == "show":
                if not args.get("path"):
                    raise ValueError("show needs a photo: edge sim camera show PHOTO")
                camera.show(args["path"])
            elif action == "empty":
                camera.show_synthetic()
            elif action == "unplug":
                camera.unplug()
            elif action == "plug":
                camera.plug()
            elif action == "fault":
                fault = args.get("fault")
                if fault not in (*CAMERA_FAULTS, "none"):
                    raise ValueError(f"unknown camera fault {fault!r}; use one of {', '.join(CAMERA_FAULTS)} "
                                     f"or none")
                camera.inject(None if fault == "none" else fault)
            else:
                raise ValueError(f"unknown camera action {action!r}; use show PHOTO, empty, unplug, plug or "
                                 f"fault black|frozen|slow|none")
        except CameraError as exc:
            raise ValueError(str(exc)) from None
        return {"camera": action, "plugged": camera.plugged, "fault": camera.fault,
                "showing": str(camera.source) if camera.source else "an empty porch"}

    def _sim_status(self, args: dict) -> dict:
        gpio_state = {}
        if self.gpio is not None:
            gpio_state = {"chime": bool(self.gpio.chime.value), "relay": bool(self.gpio.relay.value),
                          "led": bool(self.gpio.led.value) if self.gpio.led is not None else None}
        camera = self.camera
        recognizer = self.recognizer
        states = self._ctx.states
        return {
            "gpio": gpio_state,
            "camera": None if camera is None else {
                "open": self._camera_open, "error": self._camera_error,
                "plugged": getattr(camera, "plugged", None), "fault": getattr(camera, "fault", None),
                "showing": str(camera.source) if getattr(camera, "source", None) else None},
            "recognition": None if recognizer is None else {"available": recognizer.available,
                                                            "reason": recognizer.reason, "pid": recognizer.pid},
            "rings": self.rings, "presses": self.presses, "ignored": self.ignored,
            "last_visitor": states.get("doorbell.last_visitor"),
        }
