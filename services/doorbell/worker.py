# About 600 lines, one file on purpose: the button path (gpiozero's thread) and the ring loop
# (this worker's thread) share one lock and one hand-over slot, and the steps of answering a
# ring read the state the button path sets; config, visitor results, commands and simulator
# controls are modules beside it. The next split, when wanted: snapshot keeping (save,
# index, prune) into a class of its own.
"""The doorbell worker: button → chime → ring, then camera burst → recognition → visitor.

The button path runs entirely in gpiozero's callback thread and touches nothing slow: a
cooldown check, the chime pulse (hardware/gpio.py's own timer ends it), the `doorbell.ring`
event on the bus (a never-drop kind, so HA and the intercom hear at once, whatever the
camera does) and a hand-over slot for this worker's thread. A press that arrives while a
burst is being recognized replaces the waiting one (the newest press wins, and its visitor
event lists the rings it stands for).

This worker's thread answers presses: a burst from the camera (behind its breaker through
edge/reopen.py; a black or frozen burst is a camera fault like an unplugged camera),
recognition in the child process (recognizer_child.py), a JPEG snapshot (snapshots.py) and
the `doorbell.visitor` event with the ring's event_id (visitor.py). Between rings it reloads
known faces when their version moves (CLI enrollments need no restart), probes a missing
camera, prunes snapshots and publishes states. Every step of both runs through a StepGuard
(edge/containment.py): a failure is logged, shown in health() and costs that step only, never
run(), whose end would close the GPIO; a ring always gets its visitor event.

Beside it: sections.py (config), commands.py ("open_door", "enroll_last_visitor"), sim.py
(`edge sim ...`). Not here: MQTT (edge/mqtt publishes what is declared below), recognition
itself, camera and GPIO drivers. Privacy: no encodings or images in logs; counts, not names.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from edge.bus import new_event_id
from edge.containment import StepGuard
from edge.entities import Entity, connectivity
from edge.health import DEGRADED
from edge.jsonlog import current_event_id
from edge.reopen import ReopeningDevice
from edge.store import StoreUnavailable
from edge.worker import Worker, WorkerContext
from hardware import gpio
from hardware.camera import BurstInterrupted, CameraError, burst_fault, capture_burst, make_camera
from services.doorbell.commands import CHIME_STATE, DOOR_OPENED, ENROLLED, DoorbellCommands  # noqa: F401
from services.doorbell.doctor import checks
from services.doorbell.faces_store import FACES_SCHEMA, FaceStore
from services.doorbell.matching import KNOWN
from services.doorbell.recognition import VisitorResult, choose_frame
from services.doorbell.recognizer_child import (FAILED as RECOGNIZER_FAILED, UNAVAILABLE as RECOGNIZER_UNAVAILABLE,
                                                RecognitionError, RecognizerProcess, RecognizerUnavailable)
from services.doorbell.sections import CAMERA_SECTION, DOORBELL_SECTION, FACES_SECTION
from services.doorbell.sim import DoorbellSimControls
from services.doorbell.snapshots import SnapshotFolder, encode_jpeg, snapshot_folder
from services.doorbell.visitor import (VISITOR_EVENT_TYPES, LastVisitor, Press, error_visitor, last_visitor_state,
                                       visitor_event, without_removed)

# The doorbell's event kinds; DOOR_OPENED and ENROLLED come from its commands (imported above,
# so every kind can be imported from here).
RING, LONG_PRESS, VISITOR, SNAPSHOT = "doorbell.ring", "doorbell.long_press", "doorbell.visitor", "doorbell.snapshot"

LOOP_WAIT_S = 0.25            # longest idle wait: heartbeats, face-version polls, camera probes
RECOGNIZER_RETRY_S = 300.0    # a missing face library is looked for again this often
PRUNE_EVERY_S = 3600.0
RING_BEYOND_RECOGNITION_S = 30.0  # the longest a ring takes besides the recognition (burst, snapshot, events)


class ButtonCounts(NamedTuple):
    rings: int
    presses: int
    ignored: int  # presses within the cooldown of a ring
    ring_event_id: str | None  # the ring of the press in progress (None when it was ignored)


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
    # Answering a ring blocks for a burst and a recognition: the rest of a ring may take
    # RING_BEYOND_RECOGNITION_S, the recognition [faces] timeout_s (10 s by default, up to 120
    # on a slow board), so each instance sets its own from its config.
    heartbeat_timeout_s = 40.0
    entities = (
        # One event entity per bus kind: an entity is fed by exactly one event topic.
        Entity("event", "doorbell", "Doorbell", event=RING, device_class="doorbell",
               options={"event_types": ["ring"]}),
        # "button", not "doorbell": a second doorbell device class would show a second doorbell.
        Entity("event", "long_press", "Long press", event=LONG_PRESS, device_class="button",
               options={"event_types": ["long_press"]}),
        # Fed by every visitor event (event_type known / unknown / no_face / ...; names,
        # confidence and event_id in its attributes): "Last visitor" only changes when the
        # name does, so the same person twice would not trigger an automation.
        Entity("event", "visitor", "Visitor", event=VISITOR, options={"event_types": list(VISITOR_EVENT_TYPES)}),
        Entity("sensor", "last_visitor", "Last visitor", state="doorbell.last_visitor",
               value_template="{{ value_json.visitor }}", attributes="doorbell.last_visitor",
               icon="mdi:account-question"),
        # Named for what it is: the camera takes a burst only at a ring, so nothing here can
        # say a person is still there (no occupancy device class, which would claim it).
        Entity("binary_sensor", "rang_recently", "Rang recently", state="doorbell.rang_recently",
               icon="mdi:bell-ring-outline"),
        # Mute at night: announced (and obeyed) only with [doorbell] allow_remote_mute, since a
        # muted chime can hide a ring from the people inside; every change is audited.
        Entity("switch", "chime", "Chime", state=CHIME_STATE, command="set_chime", icon="mdi:bell-cog",
               entity_category="config", requires=("doorbell.allow_remote_mute",),
               options={"payload_on": '{"on": true}', "payload_off": '{"on": false}', "state_on": "ON",
                        "state_off": "OFF"}),
        Entity("image", "visitor_snapshot", "Visitor snapshot", event=SNAPSHOT, device="camera",
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
        self.heartbeat_timeout_s = RING_BEYOND_RECOGNITION_S + self.faces_cfg.timeout_s
        self.gpio: gpio.DoorbellGpio | None = None
        self.camera = None
        self.camera_reopening: ReopeningDevice | None = None  # the camera behind its breaker
        self._camera_seen_at = 0.0  # monotonic time of the camera's last good frame or open
        self.recognizer: RecognizerProcess | None = None
        self.faces: FaceStore | None = None
        self.snapshots: SnapshotFolder | None = None
        self.safe_mode = False
        self.chime_on = True  # False: muted by the "Chime" switch (commands.py); the ring still goes out
        self.last_visitor: LastVisitor | None = None  # the last ring's picture, for "this was Alice"
        self._ctx: WorkerContext | None = None
        self._guard: StepGuard | None = None  # the steps of a ring and of housekeeping that fail now
        self._commands = DoorbellCommands(self)
        self._sim = DoorbellSimControls(self)
        self._cond = threading.Condition()
        self._pending: Press | None = None
        self._last_ring_mono: float | None = None
        self._press_event_id: str | None = None
        self._long_pressed_id: str | None = None  # the press whose long press was announced  # the ring of the press in progress (for long press)
        self._interrupted = False
        self._faces_version: int | None = None
        self._rang_until: float | None = None
        self._last_burst_frame: np.ndarray | None = None  # to tell a frozen camera across bursts
        self._prune_at = 0.0
        self._recognizer_started_at = 0.0
        self._starter: threading.Thread | None = None
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
            data = {"event_type": "ring"}
            if self.chime_on or self.safe_mode:  # safe mode is "button and chime"
                try:
                    self.gpio.ring_chime(self.cfg.chime_s)
                except gpio.GpioError as exc:  # a silent chime must not silence the ring as well
                    ctx.log.error("the chime did not sound: %s", exc)
                    data["chime"] = "failed"
            else:
                data["chime"] = "muted"
            event = ctx.bus.emit(RING, data)
            with self._cond:
                self._press_event_id = event.event_id
                waiting = self._pending
                coalesced = waiting.coalesced + [waiting.event_id] if waiting else []
                self._pending = Press(event.event_id, event.ts_wall, event.ts_mono, coalesced)
                self._cond.notify()
            # On disk before the press is answered (a kill -9 right after must not lose the
            # ring), yet after the chime and the event, so neither waits for the disk. A store
            # that cannot take it now (locked, full) keeps it in memory.
            self._record(event.event_id, RING, {"coalesced": coalesced}, event.ts_wall)
        except Exception:  # an exception here would end in gpiozero's thread, unseen
            ctx.log.exception("the button handler failed")

    def _on_long_press(self) -> None:
        ctx = self._ctx
        try:
            with self._cond:
                event_id = self._press_event_id or new_event_id()
                # One long press per press: gpiozero's hold thread can fire twice for two quick
                # presses (it wakes for the first while the second is already held).
                if event_id == self._long_pressed_id:
                    return
                self._long_pressed_id = event_id
            ctx.bus.emit(LONG_PRESS, {"event_type": "long_press", "held_s": self.cfg.long_press_s}, event_id)
        except Exception:
            ctx.log.exception("the long-press handler failed")

    def counts(self) -> ButtonCounts:
        """The button's counters, read together (any thread)."""
        with self._cond:
            return ButtonCounts(self.rings, self.presses, self.ignored, self._press_event_id)

    # -- run ---------------------------------------------------------------------------------
    def run(self, ctx: WorkerContext) -> None:
        self._ctx = ctx
        self._guard = StepGuard(ctx.log, owner="doorbell", consequence="the bell rings on")
        self.safe_mode = ctx.safe_mode
        ctx.bus.mark_never_drop(RING)
        try:
            # First, so the simulator banner printed at start-up lists them; each handler
            # copes with a doorbell still being set up.
            self._sim.register(ctx)
            self._commands.register(ctx)
            # Nobody is at the door as far as this run knows: a restart lost the previous
            # run's timer, which would otherwise leave "Rang recently" on for good.
            ctx.states.set("doorbell.rang_recently", "OFF")
            self._commands.restore_chime()
            self._open_gpio(ctx)
            if not self.safe_mode:
                # Not raised from here: that would restart the doorbell, button and all. The
                # loop opens the stores again while they are missing (_maintain).
                self._guard.run("known faces", self._open_stores, ctx)
                self._open_camera(ctx)
                self._open_recognizer()
            self._guard.run("state publishing", self._publish_states)
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
            self._close()

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
            # A scan of every event: a damaged page (an SD card) must cost the counts, not
            # the button (raised here, it would restart the doorbell again and again).
            self._guard.run("counting earlier rings", self._count_earlier_rings, ctx.store)
        self.snapshots = self.make_snapshot_folder(ctx.state_dir)

    def _count_earlier_rings(self, store) -> None:
        """Rings and recognitions count across restarts (Home Assistant's total_increasing
        sensors): the ones recorded before this run are in the store's events."""
        rings, recognitions = store.read(
            "SELECT COALESCE(SUM(kind = ?), 0), COALESCE(SUM(kind = ? AND json_extract(data, '$.recognition_ms') "
            "IS NOT NULL), 0) FROM events", (RING, VISITOR))[0]
        with self._cond:
            self.rings += rings
            self.recognitions += recognitions

    def make_snapshot_folder(self, state_dir: Path | None) -> SnapshotFolder | None:
        """Where visitor snapshots are kept (a subclass may hand a test double)."""
        return snapshot_folder(self.faces_cfg, state_dir, wall=self._ctx.clock.wall)

    def _open_camera(self, ctx: WorkerContext) -> None:
        cam = self.camera_cfg
        if cam.backend == "none":
            return
        camera = make_camera(cam.backend, cam.source or None, cam.width, cam.height)
        # A reopen attempt is cheap and a replugged camera should be used within seconds: the
        # breaker's wait stays short however long the camera was gone.
        breaker = ctx.breakers.get("camera", failure_threshold=1, reset_timeout=2.0, max_reset_timeout=5.0)
        self.camera_reopening = ReopeningDevice(camera, breaker, ctx.log, name="camera", expected=(CameraError,),
                                                verify=self._two_good_frames, probe_interval=1.0, clock=ctx.clock,
                                                consequence="rings go on without pictures")
        self.camera = camera
        self.camera_reopening.probe()
        self._camera_seen_at = ctx.clock.monotonic()

    def _two_good_frames(self) -> None:
        """After black or frozen frames, a reopened camera must show two good frames first."""
        fault = burst_fault(capture_burst(self.camera, 2))
        if fault is not None:
            raise CameraError(fault)

    def make_recognizer(self, options: dict) -> RecognizerProcess:
        """The recognition child's handle (a subclass may point it at another library)."""
        return RecognizerProcess(options=options, start_timeout_s=60.0, log=self._ctx.log.getChild("recognizer"),
                                 clock=self._ctx.clock)

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

    def _close(self) -> None:
        if self.gpio is not None:
            self.gpio.close()  # relay off first
        if self.camera_reopening is not None:
            self.camera_reopening.close()
        self._commands.close()
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
        camera = self.camera_reopening
        if camera is not None and not camera.is_open:
            problems.append(f"camera unavailable ({camera.error or 'not open'})")
        recognizer = self.recognizer
        if recognizer is not None and recognizer.state in (RECOGNIZER_UNAVAILABLE, RECOGNIZER_FAILED):
            child = recognizer.child_health()
            last = f"; recognizer process started {child.starts} time(s), last {child.last_exit}" \
                if child.last_exit else ""
            problems.append(f"face recognition unavailable ({recognizer.reason}{last})")
        if self._guard is not None:
            problems += self._guard.problems()
        if problems:
            return DEGRADED, "; ".join(problems) + "; the bell still rings and announces"
        return None

    # -- answering a ring (this worker's thread) -----------------------------------------------
    def _next_press(self, timeout: float) -> Press | None:
        with self._cond:
            if self._pending is None and not self._interrupted:
                self._cond.wait(timeout)
            press, self._pending = self._pending, None
            return press

    def _answer(self, press: Press) -> None:
        """Answer one ring. Each step runs through the StepGuard, so a failure costs that
        step only: the visitor event goes out whatever happens ("error" and the reason when
        the camera or recognition step itself broke)."""
        ctx = self._ctx
        token = current_event_id.set(press.event_id)
        failed: dict[str, str] = {}

        def step(name: str, action, *args, default: Any = None) -> Any:
            return self._guard.run(name, action, *args, failed=failed, default=default)

        try:
            self._rang_until = ctx.clock.monotonic() + self.cfg.rang_recently_s
            step("rang recently", ctx.states.set, "doorbell.rang_recently", "ON")
            step("state publishing", self._publish_states)
            step("faces reload", self._reload_faces)
            frames, camera_problem = step("camera", self._burst, default=([], None))
            ctx.heartbeat()
            result, recognition_problem, recognition_ms = step("recognition", self._recognize, frames,
                                                               default=(None, None, None))
            ctx.heartbeat()
            error = next((f"{name} failed: {reason}" for name, reason in failed.items()
                          if name in ("camera", "recognition")), None)
            visitor = step("visitor", lambda: visitor_event(
                press, frames, result, camera_problem=camera_problem, recognition_problem=recognition_problem,
                recognition_ms=recognition_ms, error=error, safe_mode=self.safe_mode, camera_off=self.camera is None,
                recognition_off=self.recognizer is None))
            if visitor is None:
                visitor = error_visitor(press, len(frames), f"visitor failed: {failed['visitor']}")
            jpeg = step("snapshot", self._keep_snapshot, press, frames, result, visitor) if frames else None
            visitor["latency_ms"] = round((ctx.clock.monotonic() - press.ts_mono) * 1000, 1)
            # The states first: an automation that the event triggers and that reads "Last
            # visitor" must find this visitor there, not the previous one.
            step("visitor state", self._visitor_states, press, visitor, recognition_ms)
            # Its own step, as between rings: a fault here (the LED's pin) clears once it works.
            step("state publishing", self._publish_states)
            step("visitor event", ctx.bus.emit, VISITOR, visitor, press.event_id)
            if jpeg is not None:
                step("snapshot event", ctx.bus.emit, SNAPSHOT,
                     {"jpeg": jpeg, "content_type": "image/jpeg", "file": visitor["snapshot"]}, press.event_id)
            step("visitor record", self._record, press.event_id, VISITOR, visitor, None)
            ctx.log.info("visitor: %s, %d face(s), %d known, in %.0f ms", visitor["result"], len(visitor["faces"]),
                         sum(1 for f in visitor["faces"] if f["status"] == KNOWN), visitor["latency_ms"])
        finally:
            current_event_id.reset(token)

    def _burst(self) -> tuple[list[np.ndarray], str | None]:
        camera = self.camera_reopening
        if camera is None:
            return [], None
        if not camera.probe():
            return [], camera.error
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
            self._camera_failed(CameraError(fault), verify_on_reopen=True)
            return [], fault
        self._last_burst_frame = frames[-1]
        self._camera_seen_at = self._ctx.clock.monotonic()
        camera.record_success()
        return frames, None

    def _idle_check(self, now: float) -> None:
        """One frame from an idle camera: an unplug shows up now, not at the next ring."""
        self._camera_seen_at = now
        try:
            self.camera.capture()
        except Exception as exc:  # CameraError or a driver's own: either way the camera is gone (logged there)
            self._camera_failed(exc if isinstance(exc, CameraError) else CameraError(f"{type(exc).__name__}: {exc}"))

    def _camera_failed(self, exc: CameraError, verify_on_reopen: bool = False) -> None:
        # The camera is closed now: its next frames come from a reopened camera, which a
        # frame from before cannot show to be frozen.
        self._last_burst_frame = None
        self.camera_reopening.failed(exc, verify_on_reopen=verify_on_reopen)

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

    def _keep_snapshot(self, press: Press, frames, result, visitor: dict) -> bytes:
        """The JPEG of the chosen frame; saved on disk (visitor["snapshot"]) and kept in
        memory for "this was Alice"."""
        index = result.frame_index if result is not None and result.frame_index is not None else \
            choose_frame(frames, [()] * len(frames))  # no faces: the sharpest frame
        jpeg = encode_jpeg(frames[index])
        visitor["snapshot"] = self._save_snapshot(press, jpeg, visitor)
        self.last_visitor = LastVisitor(press.event_id, frames[index],
                                        tuple(result.faces) if result is not None else ())
        return jpeg

    def _save_snapshot(self, press: Press, jpeg: bytes, visitor: dict) -> str | None:
        if self.snapshots is None or self.faces_cfg.snapshot_keep == 0:
            return None
        try:
            path = self.snapshots.save(press.event_id, jpeg, press.ts_wall)
        except OSError as exc:
            self._guard.report("snapshot saving", f"cannot save visitor snapshots in {self.snapshots.directory} "
                               f"({exc.strerror or exc})", advice="free space or fix the permissions there")
            return None
        self._guard.clear("snapshot saving", "visitor snapshots are saved again")
        if self.faces is not None:
            names = [f["name"] for f in visitor["faces"] if f["name"]]
            try:
                self.faces.record_snapshot(press.event_id, path.name, names, press.ts_wall)
            except StoreUnavailable as exc:
                self._ctx.log.warning("snapshot not indexed (%s)", exc)
        self._prune_snapshots()
        return path.name

    def _visitor_states(self, press: Press, visitor: dict, recognition_ms: float | None) -> None:
        states = self._ctx.states
        states.set("doorbell.last_visitor", last_visitor_state(press, visitor))
        if recognition_ms is not None:
            self.recognitions += 1
            states.set("doorbell.recognition_ms", recognition_ms)

    def _record(self, event_id: str, kind: str, data: dict, ts_wall: float | None) -> None:
        store = self._ctx.store
        if store is not None:  # a locked or full disk never stops the doorbell: the record waits in memory
            store.keep_event(event_id, kind, data, ts_wall)

    # -- housekeeping between rings --------------------------------------------------------------
    def _maintain(self) -> None:
        """Between rings; each step through the StepGuard, so none can end run()."""
        now = self._ctx.clock.monotonic()
        step = self._guard.run
        if self.faces is None and not self.safe_mode and self._ctx.store is not None:  # it opened late
            step("known faces", self._open_stores, self._ctx)
        step("faces reload", self._reload_faces)
        if self.camera_reopening is not None and not self.camera_reopening.is_open:
            if step("camera", self.camera_reopening.probe_when_due):  # at most once a second
                self._camera_seen_at = now
        elif (self.camera_reopening is not None and self.camera_cfg.idle_check_s
              and now - self._camera_seen_at >= self.camera_cfg.idle_check_s):
            step("camera check", self._idle_check, now)
        if self._rang_until is not None and now >= self._rang_until:
            self._rang_until = None
            step("rang recently", self._ctx.states.set, "doorbell.rang_recently", "OFF")
        if now >= self._prune_at:
            step("snapshot pruning", self._prune_snapshots)
        step("recognizer restart", self._retry_recognizer, now)
        step("state publishing", self._publish_states)

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
        last = self.last_visitor
        if last is not None and any(f.name and f.name not in known for f in last.faces):
            self.last_visitor = None
        relabelled = without_removed(self._ctx.states.get("doorbell.last_visitor"), known)
        if relabelled is not None:
            self._ctx.states.set("doorbell.last_visitor", relabelled)

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
        counts = self.counts()
        states.set("doorbell.rings", counts.rings)
        states.set("doorbell.presses", counts.presses)
        states.set("doorbell.presses_ignored", counts.ignored)
        states.set("doorbell.recognitions", self.recognitions)
        led = "on" if self.health() is None and not self.safe_mode else "blink"
        if self.gpio is not None and led != self._led_mode:
            self.gpio.set_led(led)
            self._led_mode = led  # after the write: one that failed is tried again
