# About 590 lines, one file on purpose: the connection's life (offline, connecting, synced)
# and the job's (printing, paused, interrupted) change each other at every event from the
# sender, on this one thread; the command handlers below only validate and hand over to it.
# The parts without that shared state are beside it: jobs.py, commands.py, control.py, sim.py.
"""The 3D printer worker: one Marlin printer on a serial port, its print jobs, and what Home
Assistant sees of it.

This thread owns the connection's life and the jobs; the protocol runs in the sender's own
thread (sender.py) and job files are read on a read-ahead thread (jobs.py), so nothing done
here (publishing states, writing checkpoints to the store) can stall the printer link.

- Connection: the port (hardware/printer/port.py) behind the `printer` breaker through
  edge/reopen.py. A vanished port is the `offline` state and a DEGRADED health line, never a
  crash: the port is probed again every half second, and a printer that comes back is synced
  afresh. A job that was printing when the port vanished, the firmware reset or the runtime
  stopped becomes `interrupted` at the last line the firmware acknowledged; it is resumed
  only when someone asks (`printer_resume`), never by itself. After a reconnect, heaters the
  firmware still has on are set to 0.
- Jobs: print, pause (stop feeding, then [printer] pause_script), resume (resume_script, or
  for an interrupted job: heat to the checkpoint's targets and continue after its line),
  cancel (stop feeding, then cancel_script: heaters, fan, motors off). Host actions from the
  firmware (`//action:pause`, `resume`, `cancel`) do the same.
- Home Assistant: a `printer` child device with its state, progress, temperatures, file,
  times, last error, buttons and job events (declared below).

Beside it: sections.py (config), commands.py, control.py (the CLI's socket), sim.py.
"""

from __future__ import annotations

import queue
import threading
from pathlib import Path

from edge.commands import CommandRejected
from edge.containment import StepGuard
from edge.entities import Entity, connectivity
from edge.health import DEGRADED
from edge.reopen import ReopeningDevice
from edge.store import StoreUnavailable
from edge.worker import Worker, WorkerContext
from hardware.printer import PortGone, SerialPort, SimulatedMarlin
from services.printer import commands, marlin, sender as link
from services.printer.control import SOCKET_NAME, ControlSocket
from services.printer.doctor import checks
from services.printer.jobs import (ACTIVE, CANCELLED, FAILED, FINISHED, INTERRUPTED, JOBS_SCHEMA, OPEN, PAUSED,
                                   PRINTING, JobRecord, JobRejected, JobStore, ReadAhead, job_path, scan)
from services.printer.sections import PRINTER_SECTION
from services.printer.sim import PrinterSimControls, start_simulated

OFFLINE, CONNECTING, IDLE, ERROR = "offline", "connecting", "idle", "error"
STATES = (OFFLINE, CONNECTING, IDLE, PRINTING, PAUSED, INTERRUPTED, ERROR)
JOB_FINISHED, JOB_FAILED = "printer.job_finished", "printer.job_failed"
LOOP_WAIT_S = 0.1
PUBLISH_EVERY_S = 1.0
SYNC_PATIENCE_S = 5.0  # a board's bootloader takes a few seconds; longer is a wrong baud rate or a dead board


def _temp(key: str, name: str) -> Entity:
    return Entity("sensor", key, name, state="printer.temps", value_template=f"{{{{ value_json.{key} }}}}",
                  device_class="temperature", unit="°C", state_class="measurement", device="printer")


class PrinterWorker(Worker):
    name = "printer"
    sections = (PRINTER_SECTION,)
    schemas = (JOBS_SCHEMA,)
    start_order = 60
    heartbeat_timeout_s = 30.0
    entities = (
        Entity("sensor", "printer_state", "State", state="printer.state", device_class="enum",
               options={"options": list(STATES)}, icon="mdi:printer-3d", device="printer"),
        Entity("sensor", "printer_progress", "Progress", state="printer.job", value_template="{{ value_json.progress }}",
               unit="%", state_class="measurement", icon="mdi:progress-clock", attributes="printer.job",
               device="printer"),
        _temp("nozzle", "Nozzle temperature"), _temp("nozzle_target", "Nozzle target"),
        _temp("bed", "Bed temperature"), _temp("bed_target", "Bed target"),
        Entity("sensor", "printer_file", "Current file", state="printer.job", value_template="{{ value_json.file }}",
               icon="mdi:file-document", device="printer"),
        Entity("sensor", "printer_elapsed", "Print time", state="printer.job",
               value_template="{{ value_json.elapsed_s }}", device_class="duration", unit="s", device="printer"),
        Entity("sensor", "printer_remaining", "Print time left", state="printer.job",
               value_template="{{ value_json.remaining_s }}", device_class="duration", unit="s", device="printer"),
        Entity("sensor", "printer_last_error", "Last error", state="printer.last_error", icon="mdi:alert",
               entity_category="diagnostic", device="printer"),
        Entity("button", "printer_pause", "Pause", command=commands.PAUSE, icon="mdi:pause", device="printer"),
        Entity("button", "printer_resume", "Resume", command=commands.RESUME, icon="mdi:play", device="printer"),
        Entity("button", "printer_cancel", "Cancel", command=commands.CANCEL, icon="mdi:stop", device="printer"),
        Entity("button", "printer_emergency_stop", "Emergency stop", command=commands.EMERGENCY_STOP,
               icon="mdi:alert-octagon", device="printer"),
        Entity("event", "printer_job_finished", "Job finished", event=JOB_FINISHED, device="printer",
               options={"event_types": ["finished", "cancelled"]}),
        Entity("event", "printer_job_failed", "Job failed", event=JOB_FAILED, device="printer",
               options={"event_types": ["failed", "interrupted"]}),
        connectivity("printer", "Connection", device="printer"),
    )

    @classmethod
    def doctor(cls, config):
        return checks(config)

    def __init__(self, config):
        super().__init__(config)
        self.cfg = config["printer"]
        self.simulated: SimulatedMarlin | None = None
        self.port: SerialPort | None = None
        self.reopening: ReopeningDevice | None = None
        self.sender: link.Sender | None = None
        self.jobs: JobStore | None = None
        self.job: JobRecord | None = None
        self.jobs_dir: Path | None = None
        self.last_error = ""
        self._stopped_by: str | None = None  # who sent M112: the firmware's kill() that follows is theirs
        self.ready = threading.Event()
        self._ctx: WorkerContext | None = None
        self._guard: StepGuard | None = None
        self._events: "queue.SimpleQueue[link.SenderEvent]" = queue.SimpleQueue()
        self._lock = threading.RLock()  # the job and the sender, between commands and this thread
        self._read_ahead: ReadAhead | None = None
        self._synced = False
        self._synced_before = False
        self._heater_check: link.Ticket | None = None
        self._connecting_since = 0.0
        self._job_base = (0, 0)          # lines done and print time before the current stretch
        self._printing_since: float | None = None
        self._checkpoint_at = 0.0
        self._publish_at = 0.0
        self._control: ControlSocket | None = None
        self._sim = PrinterSimControls(self)

    # -- run --------------------------------------------------------------------------------------
    def run(self, ctx: WorkerContext) -> None:
        self._ctx = ctx
        self._guard = StepGuard(ctx.log, owner="printer", consequence="the printer link goes on")
        try:
            url = self.cfg.port
            if not url and ctx.sim is not None:
                self.simulated = start_simulated(ctx)
                url = self.simulated.path
            self._sim.register(ctx)
            commands.register(ctx, self)
            self.jobs_dir = Path(self.cfg.jobs_dir) if self.cfg.jobs_dir else (ctx.state_dir or Path(".")) / \
                "printer-jobs"
            self._guard.run("job folder", lambda: self.jobs_dir.mkdir(parents=True, exist_ok=True))
            self._open_jobs()
            if ctx.state_dir is not None:
                self._control = ControlSocket(ctx.state_dir / SOCKET_NAME, ctx.commands.call, commands.NAMES).start()
            self.port = SerialPort(url, self.cfg.baud)
            breaker = ctx.breakers.get("printer", failure_threshold=1, reset_timeout=0.5, max_reset_timeout=5.0)
            self.reopening = ReopeningDevice(self.port, breaker, ctx.log, name="printer", expected=(PortGone,),
                                             probe_interval=0.5, clock=ctx.clock,
                                             consequence="reopened when it comes back; a print in progress is "
                                                         "interrupted")
            self.ready.set()
            ctx.log.info("printer on %s at %d baud", url, self.cfg.baud)
            while not ctx.stopping.is_set():
                ctx.heartbeat()
                self._connect_when_due()
                self._handle_events(LOOP_WAIT_S)
                self._maintain()
        finally:
            self._close()

    def _open_jobs(self) -> None:
        store = self._ctx.store
        if store is None:
            self._guard.report("job store", "the store is unavailable: jobs cannot be checkpointed",
                               advice="see `edge status`; printing is refused until it opens")
            return
        self.jobs = JobStore(store)
        job = self.jobs.open_job()
        if job is not None and job.state in ACTIVE:
            # Cut off by a restart of the runtime: the last checkpoint says where.
            job.state, job.reason = INTERRUPTED, f"the runtime stopped while the job was {job.state}"
            self._save(job)
            self._ctx.log.warning("job %s (%s) was interrupted at line %d by a restart; resume it with "
                                  "`edge printer resume` or cancel it", job.id, job.file, job.line)
            self._ctx.bus.emit(JOB_FAILED, {"event_type": INTERRUPTED, **job.as_dict()})
        self.job = job
        if job is not None:  # a resume goes on counting from the checkpoint
            self._job_base = (job.lines_done, job.print_s)

    def _connect_when_due(self) -> None:
        if self.sender is not None or not self.reopening.probe_when_due():
            return
        self._events = queue.SimpleQueue()
        window = self.cfg.window.strip().lower()
        self.sender = link.Sender(self.port, self._events, window=window if window == "auto" else int(window),
                                  rx_buffer=self.cfg.rx_buffer, baud=self.cfg.baud, timeout_s=self.cfg.timeout_s,
                                  clock=self._ctx.clock, log=self._ctx.log.getChild("link"))
        self._synced = False
        self._connecting_since = self._ctx.clock.monotonic()
        self.sender.start()

    def _close(self) -> None:
        with self._lock:
            if self.job is not None and self.job.state in ACTIVE:
                self._interrupt("the runtime stopped")
            self._stop_reading()
        if self._control is not None:
            self._control.close()
        if self.sender is not None:
            self.sender.stop()
        if self.reopening is not None:
            self.reopening.close()

    def interrupt(self) -> None:
        """Free a hung run: closing the port ends the sender's read (the worker restarts)."""
        if self.port is not None:
            self.port.close()

    def health(self) -> tuple[str, str] | None:
        problems = []
        if self.reopening is not None and not self.reopening.is_open:
            problems.append(f"printer disconnected ({self.reopening.error or 'not open yet'})")
        elif (self.sender is not None and not self._synced
              and self._ctx.clock.monotonic() - self._connecting_since > max(SYNC_PATIENCE_S,
                                                                              3 * self.cfg.timeout_s)):
            problems.append(f"the printer on {self.port.url} does not answer `M110` (is it on? is [printer] baud = "
                            f"{self.cfg.baud} the firmware's BAUDRATE?)")
        elif self.sender is not None and self.sender.state == link.HALTED:
            problems.append(f"printer halted: {self.last_error}")
        elif self.sender is not None and self.sender.unresponsive:
            problems.append(f"printer unresponsive: {self.last_error}")
        if self._guard is not None:
            problems += self._guard.problems()
        return (DEGRADED, "; ".join(problems)) if problems else None

    # -- events from the sender ------------------------------------------------------------------
    def _handle_events(self, timeout: float) -> None:
        try:
            event = self._events.get(timeout=timeout)
        except queue.Empty:
            return
        while True:
            with self._lock:
                self._guard.run(f"printer event {event.kind}", self._on_event, event)
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                return

    def _on_event(self, event: link.SenderEvent) -> None:
        kind, data, log = event.kind, event.data, self._ctx.log
        if kind == link.SYNCED:
            self._synced = True
            if self._synced_before or (self.job is not None and self.job.state == INTERRUPTED):
                self._heater_check = self.sender.submit("M105", internal=True)
            self._synced_before = True
            self.reopening.record_success()
        elif kind == link.GONE:
            self._lost_port(data["reason"])
        elif kind == link.RESET:
            self._synced = False
            if self.job is not None and self.job.state in ACTIVE:
                self._interrupt("the printer's firmware restarted (power, watchdog or reset)")
        elif kind == link.FATAL:
            self.last_error = data["message"]
            if self.job is not None and self.job.state in ACTIVE:
                # The firmware may answer M112 before emergency_stop() fails the job itself.
                stopped_by = self._stopped_by
                self._end(FAILED, f"emergency stop ({stopped_by})" if stopped_by
                          else f"the firmware halted: {data['message']}")
        elif kind == link.LINK_FAILED:
            self.last_error = data["reason"]
            if self.job is not None and self.job.state in ACTIVE:
                self._end(FAILED, data["reason"])
        elif kind == link.UNRESPONSIVE:
            self.last_error = f"the printer has not answered for {data['seconds']:.0f} s"
            log.error("%s", self.last_error)
        elif kind == link.RESPONSIVE:
            log.info("the printer answers again")
        elif kind == link.JOB_DRAINED:
            if self.job is not None and self.job.state in ACTIVE:
                if self._read_ahead is not None and self._read_ahead.error:
                    self._end(FAILED, self._read_ahead.error)
                else:
                    self._end(FINISHED, None)
        elif kind == link.ACTION:
            self._host_action(data["name"])

    def _host_action(self, name: str) -> None:
        handler = {"pause": self.pause, "paused": self.pause, "resume": self.resume, "resumed": self.resume,
                   "cancel": self.cancel}.get(name)
        if handler is None:
            return
        try:
            handler({}, "printer")
        except CommandRejected as exc:
            self._ctx.log.info("host action %s ignored: %s", name, exc)

    def _lost_port(self, reason: str) -> None:
        self.reopening.failed(PortGone(reason))
        self.sender.stop()
        self._synced = False
        if self.job is not None and self.job.state in ACTIVE:
            self._interrupt(f"the printer's port vanished ({reason})")
        self.sender = None

    # -- the job's life (under self._lock) ---------------------------------------------------------
    def _track(self) -> None:
        """Copy the sender's progress into the job (acknowledged line, offset, times)."""
        job, sender = self.job, self.sender
        if job is None or sender is None:
            return
        acked = sender.job_acked
        if job.state in ACTIVE and acked is not None:
            job.line, job.byte_offset = acked.file_line, acked.end_offset
            job.lines_done = self._job_base[0] + sender.job_lines_acked
            job.temps = {k: list(v) for k, v in sender.temps.items()}
            job.position = dict(sender.position) or job.position
        if self._printing_since is not None:
            now = self._ctx.clock.monotonic()
            job.print_s = self._job_base[1] + now - self._printing_since

    def _save(self, job: JobRecord) -> None:
        if self.jobs is None:
            return
        try:
            self.jobs.save(job, self._ctx.clock.wall())
        except StoreUnavailable as exc:
            self._guard.report("job checkpoint", f"job {job.id} could not be saved ({exc})")
        else:
            self._guard.clear("job checkpoint")

    def _stop_reading(self) -> None:
        if self.sender is not None:
            self.sender.set_feed(None)
        if self._read_ahead is not None:
            self._read_ahead.close()
            self._read_ahead = None

    def _stretch_ended(self) -> None:
        self._track()
        self._job_base = (self.job.lines_done, self.job.print_s)
        self._printing_since = None

    def _interrupt(self, reason: str) -> None:
        job = self.job
        self._stretch_ended()
        self._stop_reading()
        job.state, job.reason = INTERRUPTED, reason
        self._save(job)
        self.last_error = f"job interrupted at line {job.line}: {reason}"
        self._ctx.log.warning("job %s (%s) interrupted at line %d: %s; resume it with `edge printer resume`",
                              job.id, job.file, job.line, reason)
        self._ctx.bus.emit(JOB_FAILED, {"event_type": INTERRUPTED, **job.as_dict()})

    def _end(self, state: str, reason: str | None) -> None:
        job = self.job
        self._stretch_ended()
        self._stop_reading()
        job.state, job.reason, job.ended_wall = state, reason, self._ctx.clock.wall()
        self._save(job)
        event = JOB_FINISHED if state in (FINISHED, CANCELLED) else JOB_FAILED
        self._ctx.bus.emit(event, {"event_type": state, **job.as_dict()})
        self._ctx.log.log(30 if state == FAILED else 20, "job %s (%s) %s at line %d of %d%s", job.id, job.file,
                          state, job.line, job.total_lines, f": {reason}" if reason else "")
        if state == FAILED:
            self.last_error = f"job {job.file} failed: {reason}"

    def _start_stream(self, path: Path, offset: int, line: int) -> None:
        self._stopped_by = None
        self._read_ahead = ReadAhead(path, offset, line)
        self.sender.set_feed(self._read_ahead)
        self._printing_since = self._ctx.clock.monotonic()
        self._checkpoint_at = self._printing_since + self.cfg.checkpoint_interval_s

    def _run_script(self, script: str) -> None:
        for line in script.splitlines():
            command = marlin.strip_comment(line)
            if command:
                self.sender.submit(command, internal=True)

    def _require_link(self) -> link.Sender:
        sender = self.sender
        if sender is None or not self._synced:
            state = self.state()
            raise CommandRejected(f"the printer is {state}"
                                  + (f" ({self.reopening.error})" if self.reopening and self.reopening.error else "")
                                  + "; try again once it is connected", "failed")
        if sender.state == link.HALTED:
            raise CommandRejected(f"the printer's firmware has halted ({self.last_error}); reset the printer "
                                  f"(power or reset button) first", "failed")
        return sender

    # -- commands (any thread) ---------------------------------------------------------------------
    def print_file(self, payload: dict, via: str) -> dict:
        with self._lock:
            if self.jobs is None:
                raise CommandRejected("jobs need the store for their checkpoints, and it is unavailable; see "
                                      "`edge status`", "failed")
            if self.job is not None and self.job.state in OPEN:
                raise CommandRejected(f"job {self.job.file} is {self.job.state}; resume or cancel it first",
                                      "invalid")
            try:
                path = job_path(self.jobs_dir, payload["file"])
                scanned = scan(path)
            except JobRejected as exc:
                raise CommandRejected(str(exc), "invalid") from None
            self._require_link()
            try:
                self.job = self.jobs.create(path.name, scanned.size, scanned.total_lines, self._ctx.clock.wall())
            except StoreUnavailable as exc:
                raise CommandRejected(f"the job could not be recorded ({exc})", "failed") from None
            self._job_base = (0, 0.0)
            self._start_stream(path, 0, 0)
            self.last_error = ""
            self._ctx.log.info("printing %s (%d commands, %d bytes), asked by %s", path.name, scanned.total_lines,
                               scanned.size, via)
            return self.job.as_dict()

    def pause(self, payload: dict, via: str) -> dict:
        with self._lock:
            job = self.job
            if job is None or job.state != PRINTING:
                raise CommandRejected(f"nothing is printing (state {self.state()})", "invalid")
            self.sender.pause_feed(True)
            self._run_script(self.cfg.pause_script)
            self._stretch_ended()
            job.state = PAUSED
            self._save(job)
            self._ctx.log.info("job %s paused at line %d (%s)", job.file, job.line, via)
            return job.as_dict()

    def resume(self, payload: dict, via: str) -> dict:
        with self._lock:
            job = self.job
            if job is None or job.state not in (PAUSED, INTERRUPTED):
                raise CommandRejected(f"no paused or interrupted job to resume (state {self.state()})", "invalid")
            sender = self._require_link()
            if job.state == PAUSED:
                self._run_script(self.cfg.resume_script)
                sender.pause_feed(False)
                self._printing_since = self._ctx.clock.monotonic()
            else:
                try:
                    path = job_path(self.jobs_dir, job.file)
                except JobRejected as exc:
                    raise CommandRejected(f"cannot resume: {exc}", "invalid") from None
                self._reheat(job)
                self._start_stream(path, job.byte_offset, job.line)
            job.state, job.reason = PRINTING, None
            self.last_error = ""
            self._save(job)
            self._ctx.log.info("job %s resumed after line %d (%s)", job.file, job.line, via)
            return job.as_dict()

    def _reheat(self, job: JobRecord) -> None:
        """Before an interrupted job continues: the checkpoint's targets, waited for."""
        temps = job.temps or {}
        bed, nozzle = (temps.get("B") or [0, 0])[1] or 0, (temps.get("T") or [0, 0])[1] or 0
        if bed > 0:
            self._run_script(f"M140 S{bed:g}\nM190 S{bed:g}")
        if nozzle > 0:
            self._run_script(f"M104 S{nozzle:g}\nM109 S{nozzle:g}")
        position = job.position or {}
        if "E" in position:
            self.sender.submit(f"G92 E{position['E']:g}", internal=True)

    def cancel(self, payload: dict, via: str) -> dict:
        with self._lock:
            job = self.job
            if job is None or job.state not in OPEN:
                raise CommandRejected(f"no job to cancel (state {self.state()})", "invalid")
            active = job.state in ACTIVE
            self._end(CANCELLED, f"cancelled ({via})")
            if active and self.sender is not None:
                self.sender.pause_feed(False)
                self._run_script(self.cfg.cancel_script)
            return job.as_dict()

    def emergency_stop(self, payload: dict, via: str) -> dict:
        """M112 at once (no lock: nothing may delay it), then the job is failed."""
        sender = self.sender
        if sender is None:
            raise CommandRejected("the printer is offline: nothing to stop over this link; switch it off", "failed")
        self._stopped_by = via  # before M112: its kill() answer may be handled first
        try:
            sender.emergency_stop()
        except PortGone as exc:
            raise CommandRejected(f"M112 could not be written ({exc}); switch the printer off", "failed") from None
        self._ctx.log.error("EMERGENCY STOP (M112) sent, asked by %s", via)
        with self._lock:
            self.last_error = f"emergency stop ({via})"
            if self.job is not None and self.job.state in ACTIVE:
                self._end(FAILED, f"emergency stop ({via})")
        return {"sent": "M112", "emergency_parser": sender.firmware.has("EMERGENCY_PARSER")}

    def send_gcode(self, payload: dict, via: str) -> dict:
        timeout = min(max(payload.get("timeout_s", 10.0), 0.1), 600.0)
        with self._lock:
            sender = self._require_link()
            if self.job is not None and self.job.state == PRINTING:
                raise CommandRejected("a job is printing; pause it first (a command now would land mid-print)",
                                      "invalid")
            try:
                ticket = sender.submit(payload["gcode"])
            except ValueError as exc:
                raise CommandRejected(f"cannot send {payload['gcode'][:40]!r}: {exc}", "invalid") from None
        if not ticket.wait(timeout):
            raise CommandRejected(f"{ticket.command} was not acknowledged within {timeout:g} s", "failed")
        if ticket.error:
            raise CommandRejected(ticket.error, "failed")
        return {"command": ticket.command, "replies": ticket.replies}

    def status(self, payload: dict | None = None, via: str = "") -> dict:
        with self._lock:
            self._track()
            sender = self.sender
            return {"state": self.state(), "port": self.port.url if self.port else None,
                    "simulated": self.simulated is not None, "last_error": self.last_error or None,
                    "job": self._job_state(), "link": sender.snapshot() if sender else None}

    # -- states ----------------------------------------------------------------------------------------
    def state(self) -> str:
        sender = self.sender
        if sender is None:
            return OFFLINE
        if not self._synced:
            return CONNECTING
        if sender.state == link.HALTED or sender.unresponsive:
            return ERROR
        if self.job is not None and self.job.state in OPEN:
            return self.job.state
        return IDLE

    def _job_state(self) -> dict:
        job = self.job
        if job is None:
            return {"file": "none", "progress": 0, "elapsed_s": 0, "remaining_s": 0, "state": "none"}
        progress = job.byte_offset / job.size if job.size else 1.0
        if job.state == FINISHED:
            progress = 1.0
        remaining = job.print_s * (1 - progress) / progress if 0 < progress < 1 and job.state in OPEN else 0
        return {**job.as_dict(), "progress": round(progress * 100, 1), "elapsed_s": round(job.print_s),
                "remaining_s": round(remaining)}

    def _temps(self) -> dict:
        temps = self.sender.temps if self.sender is not None else {}
        nozzle, bed = temps.get("T", (None, None)), temps.get("B", (None, None))
        return {"nozzle": nozzle[0], "nozzle_target": nozzle[1], "bed": bed[0], "bed_target": bed[1]}

    def _maintain(self) -> None:
        now = self._ctx.clock.monotonic()
        with self._lock:
            self._guard.run("heater check", self._check_heaters)
            job = self.job
            if job is not None and job.state == PRINTING and now >= self._checkpoint_at:
                self._checkpoint_at = now + self.cfg.checkpoint_interval_s
                self._track()
                self._save(job)
        if now >= self._publish_at:
            self._publish_at = now + PUBLISH_EVERY_S
            self._guard.run("state publishing", self.publish_states)

    def publish_states(self) -> None:
        states = self._ctx.states
        with self._lock:
            self._track()
            states.set("printer.state", self.state())
            states.set("printer.job", self._job_state())
            states.set("printer.temps", self._temps())
            states.set("printer.last_error", self.last_error or "none")
            states.set("peripheral.printer", self._peripheral())

    def _peripheral(self) -> dict:
        """This printer for inventory (NetBox): the `peripheral.<id>` contract on the state board."""
        firmware = self.sender.firmware if self.sender is not None else None
        fields = firmware.fields if firmware is not None else {}
        return {"kind": "printer", "name": "3D printer", "model": fields.get("MACHINE_TYPE"),
                "serial": fields.get("UUID"), "port": self.port.url if self.port else None,
                "firmware": firmware.name if fields else None,
                "state": "connected" if self._synced else "disconnected"}

    def _check_heaters(self) -> None:
        """After a reconnect: heaters the firmware still has on, with no job printing, go to 0."""
        ticket = self._heater_check
        if ticket is None or not ticket.done.is_set():
            return
        self._heater_check = None
        if self.sender is None or (self.job is not None and self.job.state in ACTIVE):
            return
        on = {name: target for name, (_, target) in self.sender.temps.items() if target}
        if not on:
            return
        for name in on:
            if name.startswith("B"):
                self.sender.submit("M140 S0", internal=True)
            else:
                tool = name[1:]
                self.sender.submit(f"M104 {'T' + tool + ' ' if tool else ''}S0", internal=True)
        self.last_error = (f"heaters were on after the printer reconnected ({', '.join(f'{k} {v:g} °C' for k, v in on.items())}); "
                           f"set to 0")
        self._ctx.log.warning("%s", self.last_error)
