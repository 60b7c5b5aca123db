"""The doorbell's simulator controls, offered only under `edge run --sim`: `edge sim press`
(press the MockFactory button), `edge sim camera ...` (what the fake camera shows, unplug,
plug, inject a fault) and `edge sim status` (outputs, camera, recognition, counts).

Each handler takes the CLI's arguments as a dict and returns a JSON-able dict; a ValueError
is the message the person at the terminal sees. Handlers run on the runtime's HTTP thread
and cope with a doorbell that is still starting.

Not responsible for: the `edge sim` command line (cli.py), the fakes themselves
(hardware/gpio.py, hardware/camera/fake.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge.worker import WorkerContext
from hardware import gpio
from hardware.camera import FAULTS as CAMERA_FAULTS, CameraError, FakeCamera

if TYPE_CHECKING:
    from services.doorbell.worker import DoorbellWorker

MAX_SIM_HOLD_S = 60.0


class DoorbellSimControls:
    def __init__(self, worker: "DoorbellWorker"):
        self._worker = worker
        self._ctx: WorkerContext | None = None

    def register(self, ctx: WorkerContext) -> None:
        if ctx.sim is None:
            return
        self._ctx = ctx
        ctx.register_sim("press", self.press)
        ctx.register_sim("camera", self.camera)
        ctx.register_sim("status", self.status)
        cfg = self._worker.cfg
        ctx.announce(f"doorbell: button GPIO{cfg.button_pin} → chime GPIO{cfg.chime_pin}; "
                     f"`edge sim press`, `edge sim camera show PHOTO`, `edge sim camera fault black`")

    def _ready(self) -> "DoorbellWorker":
        if not self._worker.ready.is_set():
            raise ValueError("the doorbell is still starting; try again in a second")
        return self._worker

    def press(self, args: dict) -> dict:
        hold = float(args.get("hold") or 0.1)
        if not 0 < hold <= MAX_SIM_HOLD_S:
            raise ValueError(f"hold must be more than 0 and at most {MAX_SIM_HOLD_S:g} seconds, got {hold:g}")
        worker = self._ready()
        before = worker.counts().rings
        try:
            worker.gpio.simulate_press(hold)  # the press happens now; the timer lets go
        except gpio.GpioError as exc:
            raise ValueError(str(exc)) from None
        after = worker.counts()
        rang = after.rings > before
        return {"rang": rang, "event_id": after.ring_event_id if rang else None, "hold_s": hold,
                "note": None if rang else f"within the {worker.cfg.cooldown_s:g} s cooldown of the last ring"}

    def camera(self, args: dict) -> dict:
        worker = self._ready()
        camera = worker.camera
        if not isinstance(camera, FakeCamera):
            raise ValueError(f"the camera is not simulated ([camera] backend = {worker.camera_cfg.backend!r}); "
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

    def status(self, args: dict) -> dict:
        worker = self._worker
        doorbell = worker.gpio
        gpio_state = {}
        if doorbell is not None:
            gpio_state = {"button": bool(doorbell.button.is_pressed), "chime": bool(doorbell.chime.value),
                          "relay": bool(doorbell.relay.value),
                          "led": bool(doorbell.led.value) if doorbell.led is not None else None}
        camera, reopening = worker.camera, worker.camera_reopening
        recognizer = worker.recognizer
        counts = worker.counts()
        return {
            "gpio": gpio_state,
            "camera": None if camera is None or reopening is None else {
                **reopening.snapshot(),  # open, error
                "plugged": getattr(camera, "plugged", None), "fault": getattr(camera, "fault", None),
                "showing": str(camera.source) if getattr(camera, "source", None) else None},
            "recognition": None if recognizer is None else {"available": recognizer.available,
                                                            "reason": recognizer.reason, "pid": recognizer.pid,
                                                            "child": recognizer.child_health().as_dict()},
            "rings": counts.rings, "presses": counts.presses, "ignored": counts.ignored,
            "last_visitor": self._ctx.states.get("doorbell.last_visitor"),
        }
