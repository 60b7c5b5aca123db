"""The doorbell's commands, what may change the world from outside: "open_door" (pulse the
door relay) and "enroll_last_visitor" ("this was Alice": enroll the largest face of the
last ring's picture), both `dangerous` (the MQTT link also wants [mqtt]
allow_dangerous_commands), and "set_chime" (mute the chime at night; the ring still reaches
Home Assistant). Each has this device's own switch, off by default, and each leaves an audit
record. They are called from other threads (the MQTT link, the intercom, the
CLI) through `ctx.commands`, with `(payload, via)`; `via` says who asked.

`DoorbellCommands` holds the worker, whose GPIO, face store and last ring's picture change
over a run, and owns the enrollment thread and its one-shot child (dlib stays out of this
process); the worker's close() calls `close()`.

Not responsible for: validating payloads and checking the switches (edge/commands.py does,
from the declarations here), the relay pulse's timer (hardware/gpio.py), the encoding
(enrollment.py).
"""

from __future__ import annotations

import sqlite3
import threading
from typing import TYPE_CHECKING

from edge.bus import new_event_id
from edge.commands import Command, CommandRejected
from edge.store import StoreUnavailable
from edge.worker import WorkerContext
from hardware import gpio
from services.doorbell.enrollment import EnrollmentChild
from services.doorbell.faces_store import check_name
from services.doorbell.recognition import EnrollmentError
from services.doorbell.visitor import LastVisitor

if TYPE_CHECKING:
    from services.doorbell.worker import DoorbellWorker

DOOR_OPENED, ENROLLED = "doorbell.door_opened", "faces.enrolled"
CHIME_STATE = "doorbell.chime"  # state board: "ON" rings, "OFF" muted
_CHIME_KV = "doorbell.chime_on"  # the switch's position, kept across restarts


class DoorbellCommands:
    def __init__(self, worker: "DoorbellWorker"):
        self._worker = worker
        self._ctx: WorkerContext | None = None
        self._enroller: threading.Thread | None = None
        self._enroll_child: EnrollmentChild | None = None

    def register(self, ctx: WorkerContext) -> None:
        self._ctx = ctx
        worker = self._worker
        ctx.commands.register(Command("open_door", self.open_door, fields={}, optional={"event_id": str},
                                      authorized=lambda: bool(worker.cfg.allow_remote_open),
                                      refusal="set [doorbell] allow_remote_open = true", dangerous=True))
        ctx.commands.register(Command("enroll_last_visitor", self.enroll_last_visitor, fields={"name": str},
                                      authorized=lambda: bool(worker.faces_cfg.allow_remote_enroll),
                                      refusal="set [faces] allow_remote_enroll = true", dangerous=True))
        ctx.commands.register(Command("set_chime", self.set_chime, fields={"on": bool},
                                      authorized=lambda: bool(worker.cfg.allow_remote_mute),
                                      refusal="set [doorbell] allow_remote_mute = true"))

    def restore_chime(self) -> None:
        """The switch as it was left (muted stays muted over a restart); on if the store
        cannot say, since a chime that rings is the safe side."""
        store = self._ctx.store
        try:
            on = True if store is None else bool(store.kv_get(_CHIME_KV, True))
        except (StoreUnavailable, sqlite3.Error):
            on = True
        self._worker.chime_on = on
        self._ctx.states.set(CHIME_STATE, "ON" if on else "OFF")

    def set_chime(self, payload: dict, via: str) -> dict:
        """Mute or unmute the chime: audited first (no record, no change), then kept."""
        on, ctx = payload["on"], self._ctx
        event_id = new_event_id()
        self._audit_or_refuse(via, "chime_on" if on else "chime_muted", {}, event_id, "the chime stays as it was")
        try:
            if ctx.store is not None:
                ctx.store.kv_set(_CHIME_KV, on)
        except StoreUnavailable as exc:  # obeyed now; a restart brings the chime back on
            ctx.log.warning("the chime switch is not kept over a restart: %s", exc)
        self._worker.chime_on = on
        ctx.states.set(CHIME_STATE, "ON" if on else "OFF")
        ctx.log.info("chime %s (%s)", "on" if on else "muted", via, extra={"event_id": event_id})
        return {"chime": "ON" if on else "OFF"}

    def close(self) -> None:
        """End a running enrollment (its child first, so the thread returns)."""
        if self._enroll_child is not None:
            self._enroll_child.kill()
        if self._enroller is not None:
            self._enroller.join(10)

    def open_door(self, payload: dict, via: str) -> dict:
        """Pulse the door relay (authorization is checked by the command registry); `via`
        (mqtt, sip, cli) is who asked, for the audit record."""
        worker, ctx = self._worker, self._ctx
        if worker.safe_mode:
            raise CommandRejected("the door relay is held off in safe mode; fix the cause of the failed boots "
                                  "and restart the service", "unauthorized")
        doorbell = worker.gpio
        if doorbell is None or ctx.stopping.is_set():
            raise CommandRejected("the doorbell is restarting; try again in a few seconds", "failed")
        seconds = worker.cfg.relay_pulse_s
        event_id = payload.get("event_id") or new_event_id()
        # Fail closed: no record of who asked, no opening. Then the relay, then the record
        # of what really happened (a pulse that failed is recorded as such).
        self._audit_or_refuse(via, "door_open_requested", {"seconds": seconds}, event_id, "the door stays shut")
        try:
            doorbell.pulse_relay(seconds)
        except gpio.GpioError as exc:
            self._audit(via, "door_open_failed", {"seconds": seconds, "reason": str(exc)}, event_id)
            ctx.log.error("door relay failed: %s", exc, extra={"event_id": event_id})
            raise CommandRejected(f"the door was not opened: {exc}", "failed") from None
        self._audit(via, "door_opened", {"seconds": seconds}, event_id)
        ctx.bus.emit(DOOR_OPENED, {"seconds": seconds, "via": via}, event_id)
        ctx.log.info("door opened for %.1f s (%s)", seconds, via, extra={"event_id": event_id})
        return {"opened_s": seconds, "event_id": event_id}

    def _audit_or_refuse(self, actor: str, action: str, detail: dict, event_id: str, consequence: str) -> None:
        """Write the audit record of a request, or refuse it (CommandRejected) with why."""
        audit = self._ctx.audit
        try:
            if audit is None:
                raise StoreUnavailable("the audit log is unavailable (`edge status` says why)")
            audit.append(actor, action, detail, event_id)
        except StoreUnavailable as exc:
            self._ctx.log.error("%s refused: it cannot be audited (%s)", action, exc, extra={"event_id": event_id})
            raise CommandRejected(f"refused because it cannot be audited ({exc}); {consequence}", "failed") from None

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
        last = self._worker.last_visitor
        if last is None:
            raise CommandRejected("no visitor snapshot since the doorbell started; ring first", "invalid")
        if not last.faces:
            raise CommandRejected(f"the snapshot of the last ring ({last.event_id}) shows no face", "invalid")
        if self._worker.faces is None:
            raise CommandRejected("known faces cannot be saved: the store is unavailable", "failed")
        if self._enroller is not None and self._enroller.is_alive():
            raise CommandRejected("an enrollment is already running; try again in a moment", "failed")
        self._audit_or_refuse(via, "face_enroll_requested", {"name": name}, last.event_id, "nobody was enrolled")
        self._enroll_child = EnrollmentChild()
        self._enroller = threading.Thread(target=self._enroll, args=(name, last, self._enroll_child, via),
                                          name="doorbell-enroll", daemon=True)
        self._enroller.start()
        return {"enrolling": name, "event_id": last.event_id}

    def _enroll(self, name: str, last: LastVisitor, child: EnrollmentChild, via: str) -> None:
        ctx, faces = self._ctx, self._worker.faces
        ok, reason = False, ""
        try:
            encodings = child.encode(last.frame, last.faces[0].box)
            added, _ = faces.add(name, [(f"ring:{last.event_id}", encodings)], ctx.clock.wall())
            faces.label_snapshot(last.event_id, name)
            if ctx.audit is not None:
                ctx.audit.append(via, "face_enrolled", {"name": name, "source": "ring", "photos": added},
                                 last.event_id)
            ok = True
        except (EnrollmentError, RuntimeError, StoreUnavailable, ValueError) as exc:
            reason = str(exc)
            ctx.log.warning("enrollment from the last ring failed: %s", reason, extra={"event_id": last.event_id})
        ctx.bus.emit(ENROLLED, {"name": name, "ok": ok, "reason": reason or None}, last.event_id)
