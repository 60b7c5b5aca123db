# About 515 lines, one file on purpose: the line's state, the running door call and the
# requests from commands change each other at every event from baresip, on this one thread;
# the parts without that shared state are beside it (calls.py, baresip.py, control.py).
"""The intercom worker: keeps the door's SIP line registered, calls the house phones when the
doorbell rings, opens the door when whoever answered keys the code, and answers calls to
the door from the allowed callers only.

The ring arrives as the doorbell's `doorbell.ring` bus event (its `event_id` follows the call
into every log line, event and audit record); the door opens through the doorbell's own
`open_door` command (`via="sip"`), so the relay pulse, its limits and the audit record are
the doorbell's. This worker is neither critical nor essential: whatever the PBX or baresip
does, the bell rings on.

The line: baresip registers and re-registers before the expiry the registrar granted. Wrong
credentials are reported once as a configuration problem and never retried (PBXs ban
addresses that hammer them) until the config changes; an unreachable registrar makes the
line DEGRADED and baresip is restarted with a growing wait (fresh sockets: baresip is known
to keep retrying on a dead one) until the registrar answers again. A baresip that exits or
stops answering is restarted, and a call it was carrying is reported as failed.

Beside it: sections.py (config), calls.py (one door call), baresip.py (the child),
control.py (its control link). Not here: the relay (the doorbell's), MQTT.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from pathlib import Path

import psutil

from edge.bus import new_event_id
from edge.child import Backoff
from edge.commands import VIA_SIP, Command, CommandRejected
from edge.entities import Entity
from edge.health import DEGRADED
from edge.jsonlog import current_event_id
from edge.worker import Worker, WorkerContext
from services.sip.backend import (AUTH_FAILED, INCOMING, REGISTERED, REGISTERING, UNREACHABLE,
                                  UNREGISTERED, BackendError, BackendGone, CallEvent, LineEvent)
from services.sip.baresip import BaresipBackend, target_uri
from services.sip.calls import (CALL_STATES, IDLE, CallSettings, Dial, DoorCall, Finished, Hangup, OpenDoor,
                                same_uri)
from services.sip.audio import missing_devices
from services.sip.doctor import checks
from services.sip.sections import SIP_SECTION

RING = "doorbell.ring"                     # the doorbell's event (services/doorbell/worker.py)
OPEN_DOOR = "open_door"                    # the doorbell's command (services/doorbell/commands.py)
CALL_EVENT, DOOR_OPENED, PRESS_DURING_CALL = "sip.call", "sip.door_opened", "sip.press_during_call"
LOOP_WAIT_S = 0.05
NETWORK_CHECK_S = 5.0  # how often the local addresses are compared (a DHCP renewal, a Wi-Fi roam)
STOP_TIMEOUT_S = 4.0  # inside the supervisor's default stop_timeout_s (5 s) for all workers


class SipWorker(Worker):
    name = "sip"
    sections = (SIP_SECTION,)
    start_order = 60
    heartbeat_timeout_s = 30.0
    entities = (
        Entity("binary_sensor", "sip_registered", "Registration", state="sip.registered",
               device_class="connectivity", attributes="sip.line", device="sip_line"),
        Entity("sensor", "sip_call_state", "Call state", state="sip.call_state", device_class="enum",
               options={"options": list(CALL_STATES)}, device="sip_line", icon="mdi:phone"),
        Entity("sensor", "sip_last_call", "Last call", state="sip.last_call", value_template="{{ value_json.result }}",
               attributes="sip.last_call", device="sip_line", icon="mdi:phone-log"),
        Entity("sensor", "sip_last_call_duration", "Last call duration", state="sip.last_call_duration_s",
               device_class="duration", unit="s", device="sip_line"),
        Entity("event", "door_opened_by_phone", "Door opened by phone", event=DOOR_OPENED,
               options={"event_types": ["door_opened"]}, device="sip_line"),
        Entity("button", "sip_call", "Call now", command="sip_call", device="sip_line", icon="mdi:phone-outgoing"),
        Entity("button", "sip_hangup", "Hang up", command="sip_hangup", device="sip_line", icon="mdi:phone-hangup"),
    )

    @classmethod
    def doctor(cls, config):
        return checks(config)

    def __init__(self, config):
        super().__init__(config)
        self.cfg = config["sip"]
        self.audio_problems: list[str] = []
        self.backend: BaresipBackend | None = None
        self.call: DoorCall | None = None
        self.line_state, self.line_reason = REGISTERING, "not registered yet"
        self.last_call: dict | None = None
        self.restarts = 0                # baresip starts after the first
        self.ready = threading.Event()   # set once baresip runs and the link is up
        self._ctx: WorkerContext | None = None
        self._requests: list[tuple[str, dict]] = []  # from commands (other threads), done by run()
        self._lock = threading.Lock()
        self._registration_failures = 0
        self._restart_at: float | None = None
        self._credentials_refused = False  # by the registrar: not tried again until the config changes
        self._interrupted = False
        self._last_ok_at: float | None = None     # the registrar's last 200 to a REGISTER
        self._ok_interval: float | None = None    # the expiry the registrar granted
        self._announce = False                    # the call being set up is a door call: announce it
        self._announce_until: float | None = None  # when the announcement ends and the microphone is back
        self._addresses: frozenset[str] | None = None
        self._network_checked_at = 0.0
        self._start_failures, self._start_retry_at = 0, 0.0

    # -- run -----------------------------------------------------------------------------------
    def run(self, ctx: WorkerContext) -> None:
        self._ctx = ctx
        rings = ctx.bus.subscribe("sip", RING, maxsize=64)
        forwarding = threading.Event()
        forwarder = threading.Thread(target=self._forward_rings, args=(rings, forwarding), name="sip-rings",
                                     daemon=True)
        ctx.commands.register(Command("sip_call", self._cmd_call, fields={}, optional={"target": str}))
        ctx.commands.register(Command("sip_hangup", self._cmd_hangup, fields={}))
        ctx.register_sim("sip", self._sim_status)
        self.backend = self.make_backend(ctx)
        self.audio_problems = missing_devices(self.cfg)
        for problem in self.audio_problems:  # calls still go out: the line and the door code work without sound
            ctx.log.error("%s", problem)
        self._publish()
        forwarder.start()
        try:
            while not ctx.stopping.is_set():
                ctx.heartbeat()
                if self._interrupted:
                    raise RuntimeError("interrupted (hang or restart request); restarting the intercom")
                self._keep_running(ctx)
                self._handle_backend(ctx)
                self._check_refresh(ctx.clock.monotonic())
                self._check_network(ctx.clock.monotonic())
                self._handle_requests()
                if self.call is not None:
                    with self._call_context():
                        self._apply(self.call.tick(ctx.clock.monotonic()))
                self._end_announcement(ctx.clock.monotonic())
                self._publish()
        finally:
            forwarding.set()
            forwarder.join(2.0)
            rings.close()
            self._stop_backend()

    def _forward_rings(self, rings, done: threading.Event) -> None:
        """Hand each ring to run() at once: run() waits on baresip's events, and a ring must
        not wait for that wait to end (press → INVITE is the intercom's latency)."""
        while not done.is_set():
            ring = rings.get(timeout=0.25)
            if ring is not None:
                with self._lock:
                    self._requests.append(("ring", {"event_id": ring.event_id}))
                if self.backend is not None:
                    self.backend.wake()

    def make_backend(self, ctx: WorkerContext) -> BaresipBackend:
        runtime_dir = Path(ctx.state_dir or ".") / "sip"
        backoff = Backoff(first_s=self.cfg.retry_min_s, max_s=self.cfg.retry_max_s)
        return BaresipBackend(self.cfg, self.cfg.secret("password"), runtime_dir, ctx.log, backoff=backoff)

    def interrupt(self) -> None:
        self._interrupted = True
        if self.backend is not None:
            self.backend.kill("the intercom was interrupted")

    def health(self):
        if not self.cfg.enabled:
            return None
        if self.audio_problems:
            return DEGRADED, "; ".join(self.audio_problems)
        if self.line_state == AUTH_FAILED:
            return DEGRADED, (f"SIP registration refused ({self.line_reason}): check [sip] username and "
                              f"password_file; the line stays down until the config changes")
        if self.line_state != REGISTERED:
            return DEGRADED, f"SIP line not registered ({self.line_reason}); the bell still rings"
        return None

    # -- the child and the line -------------------------------------------------------------------
    def _keep_running(self, ctx: WorkerContext) -> None:
        backend, now = self.backend, ctx.clock.monotonic()
        if self._restart_at is not None and now >= self._restart_at and self.call is None:
            self._restart_at = None
            ctx.log.info("restarting baresip to register again (attempt %d)", self._registration_failures + 1)
            backend.stop(STOP_TIMEOUT_S, unregister=False)
        if backend.running:
            return
        if self.call is not None:  # it ended between two looks at its events
            self._on_gone(backend.child.health().reason or "baresip exited")
        if not backend.child.may_start() or now < self._start_retry_at:
            return
        first = backend.child.health().starts == 0
        # Refused credentials stay refused across baresip's restarts (a crash, a network
        # change): its account then never registers, as PBXs ban addresses that keep trying.
        backend.register = not self._credentials_refused
        try:
            backend.start()
        except BackendError as exc:
            # Not installed, a port taken, a bad account: said once per distinct reason, and
            # tried again with a growing wait (the child's own backoff counts only exits).
            self._start_failures += 1
            self._start_retry_at = now + min(self.cfg.retry_max_s,
                                             self.cfg.retry_min_s * 2 ** (self._start_failures - 1))
            if str(exc) != self.line_reason:
                ctx.log.error("%s; trying again in %.0f s", exc, self._start_retry_at - now)
            self._set_line(UNREACHABLE, str(exc))
            return
        self._start_failures, self._start_retry_at = 0, 0.0
        if not first:
            self.restarts += 1
        self.line_state = AUTH_FAILED if self._credentials_refused else REGISTERING
        self.ready.set()

    def _handle_backend(self, ctx: WorkerContext) -> None:
        backend = self.backend
        if backend.link is None:
            self._stop_watch()
            return
        for _ in range(50):
            event = backend.next_event(LOOP_WAIT_S)
            if event is None:
                return
            if isinstance(event, BackendGone):
                self._on_gone(event.reason)
                return
            if isinstance(event, LineEvent):
                self._on_line(event)
            elif isinstance(event, CallEvent):
                self._on_call_event(event)

    def _stop_watch(self) -> None:
        self._ctx.stopping.wait(LOOP_WAIT_S)

    @contextlib.contextmanager
    def _call_context(self):
        """Log lines while a call is handled carry its event_id (the ring's)."""
        token = current_event_id.set(self.call.event_id) if self.call is not None else None
        try:
            yield
        finally:
            if token is not None:
                current_event_id.reset(token)

    def _on_gone(self, reason: str) -> None:
        ctx = self._ctx
        ctx.log.error("baresip stopped answering (%s); restarting it", reason)
        self.backend.kill(reason)
        self.backend.child.wait(2.0)
        if not self._credentials_refused:  # else the line stays down for that reason
            self._set_line(UNREACHABLE, f"baresip restarting ({reason})")
        if self.call is not None:
            with self._call_context():
                self._apply(self.call.abandon(ctx.clock.monotonic(), f"baresip ended mid-call ({reason})"))

    def _set_line(self, state: str, reason: str) -> None:
        self.line_state, self.line_reason = state, reason

    def _on_line(self, event: LineEvent) -> None:
        ctx, breaker = self._ctx, self._ctx.breakers.get("sip_registrar", failure_threshold=1)
        if event.state == REGISTERED:
            now = ctx.clock.monotonic()
            if self.line_state != REGISTERED:
                ctx.log.info("SIP line registered as %s (%s)", self.cfg.username, event.reason)
            self._ok_interval = event.expires_s or self._ok_interval
            self._last_ok_at = now
            self._set_line(REGISTERED, event.reason)
            self._registration_failures = 0
            self._restart_at = None  # baresip's own retry got through: no restart needed
            breaker.record_success()
        elif event.state == AUTH_FAILED:
            self._set_line(AUTH_FAILED, event.reason)
            breaker.record_failure(event.reason)
            if not self._credentials_refused:
                self._credentials_refused = True
                ctx.log.error("the registrar refused the SIP credentials (%s): check [sip] username and "
                              "password_file; not retrying until the config changes (PBXs ban addresses that "
                              "keep trying)", event.reason)
            try:
                self.backend.stop_registering()
            except BackendError as exc:
                ctx.log.warning("could not stop baresip registering: %s", exc)
        elif event.state == UNREACHABLE and self.line_state != AUTH_FAILED:
            self._registration_failures += 1
            self._set_line(UNREACHABLE, event.reason)
            breaker.record_failure(event.reason)
            if self._restart_at is None:
                wait = min(self.cfg.retry_max_s, self.cfg.retry_min_s * 2 ** (self._registration_failures - 1))
                self._restart_at = ctx.clock.monotonic() + wait
                ctx.log.warning("SIP registration failed (%s); registering again in %.1f s", event.reason, wait)
        elif event.state == UNREGISTERED and self.line_state == REGISTERED:
            self._set_line(UNREGISTERED, "un-registered")

    def _check_refresh(self, now: float) -> None:
        """A registrar that vanished does not answer the next REGISTER, and over UDP the SIP
        stack takes 32 s (timer F) to give up: a registration older than what the registrar
        granted (baresip refreshes it before) marks the line unreachable now, and baresip is
        restarted to register afresh."""
        if self.line_state != REGISTERED or self._last_ok_at is None:
            return
        granted = self._ok_interval or self.cfg.register_expires_s
        if now - self._last_ok_at > granted + 1.0:
            self._last_ok_at = None
            self._on_line(LineEvent(UNREACHABLE, f"the registration ran out ({granted:g} s) without the "
                                                 f"registrar confirming it again"))

    def local_addresses(self) -> frozenset[str]:
        """This machine's addresses, loopback aside (psutil)."""
        return frozenset(f"{name}:{a.address}" for name, addrs in psutil.net_if_addrs().items()
                         for a in addrs if a.family in (socket.AF_INET, socket.AF_INET6)
                         and not a.address.startswith(("127.", "::1")))

    def _check_network(self, now: float) -> None:
        """baresip keeps its sockets and its Contact from the address it started with, and
        keeps re-registering through a dead socket after the address changed: a changed
        address set restarts it (after the call, if one is going on)."""
        if now - self._network_checked_at < NETWORK_CHECK_S:
            return
        self._network_checked_at = now
        addresses = self.local_addresses()
        if self._addresses is not None and addresses != self._addresses and self._restart_at is None:
            self._ctx.log.warning("the network changed (%s); restarting baresip to register from the new address",
                                  ", ".join(sorted(addresses ^ self._addresses)))
            self._restart_at = now
        self._addresses = addresses

    # -- calls ----------------------------------------------------------------------------------
    def _settings(self, targets: list[str] | None = None) -> CallSettings:
        cfg = self.cfg
        return CallSettings(tuple(target_uri(t, cfg) for t in (targets or cfg.targets)), cfg.ring_group,
                            cfg.ring_timeout_s, cfg.max_talk_s, cfg.open_code, cfg.digit_timeout_s,
                            cfg.max_wrong_codes, cfg.hangup_after_open_s)

    def _on_ring(self, event_id: str, targets: list[str] | None = None) -> None:
        ctx = self._ctx
        token = current_event_id.set(event_id)
        try:
            if self.call is not None:
                self.call.presses.append(event_id)
                ctx.log.info("the doorbell rang again during the call %s; no second call", self.call.event_id)
                ctx.bus.emit(PRESS_DURING_CALL, {"call_event_id": self.call.event_id}, self.call.event_id)
                return
            if not self.backend.running:
                self._record_result(event_id, {"result": "failed", "reason": f"no SIP line ({self.line_reason})",
                                               "targets": [], "duration_s": 0.0, "door_opened": False})
                return
            self.call = DoorCall(event_id, self._settings(targets), ctx.clock.monotonic())
            self._announce = True
            ctx.log.info("calling %s%s", ", ".join(self.call.settings.targets) or "nobody",
                         " (ring group)" if self.call.settings.ring_group else "")
            self._apply(self.call.start(ctx.clock.monotonic()))
        finally:
            current_event_id.reset(token)

    def _on_call_event(self, event: CallEvent) -> None:
        if event.kind == INCOMING:
            self._incoming(event)
            return
        call = self.call
        if call is None:
            return
        with self._call_context():
            self._apply(call.on_event(event, self._ctx.clock.monotonic()))
            if self._announce and call.answered is not None:
                self._start_announcement()

    def _start_announcement(self) -> None:
        """"Someone is at the front door" to whoever answered, then the microphone."""
        self._announce = False
        announcement = self.backend.announcement
        if announcement is None:
            return
        source, seconds = announcement
        if self._safely(self.backend.switch_source, source):
            self._announce_until = self._ctx.clock.monotonic() + seconds
            self._ctx.log.info("playing the announcement (%.1f s)", seconds)

    def _end_announcement(self, now: float) -> None:
        if self._announce_until is not None and (now >= self._announce_until or self.call is None):
            self._announce_until = None
            self._safely(self.backend.switch_source, self.backend.source)

    def _incoming(self, event: CallEvent) -> None:
        ctx = self._ctx
        allowed = any(same_uri(event.peer, target_uri(c, self.cfg)) for c in self.cfg.allowed_callers)
        if not allowed or self.call is not None:
            why = "not an allowed caller" if not allowed else "the door is in a call"
            ctx.log.warning("call to the door from %s rejected (%s)", event.peer, why)
            # The caller gets "486 Rejected", not the 403 the issue asks for: baresip 1.0's
            # `hangup` takes no status code (call_hangup with 0 becomes 486), and nothing else
            # in it answers 403 or 603 (tried: the contacts file's `<sip:*@*>;access=block`
            # answers 180 Ringing, then "486 Busy Here"; call_max_calls answers "486 Max
            # Calls"). `hangup 403 Forbidden` needs a baresip release with its PR #3238 (merged Dec 2024).
            self._safely(self.backend.hangup, event.peer, event.call_id)
            ctx.bus.emit(CALL_EVENT, {"direction": "incoming", "peer": event.peer, "result": "rejected",
                                      "reason": why})
            return
        event_id = new_event_id()
        ctx.log.info("answering a call to the door from %s", event.peer, extra={"event_id": event_id})
        self.call = DoorCall(event_id, self._settings([event.peer]), ctx.clock.monotonic(), incoming=True)
        self._announce = False  # the caller hears the door, not "someone is at the door"
        self.call.start(ctx.clock.monotonic())  # the caller's leg; nothing to dial
        self.call.legs[0].call_id = event.call_id
        if not self._safely(self.backend.accept, event.peer, event.call_id):  # its CALL_ESTABLISHED answers it
            self._apply(self.call.abandon(ctx.clock.monotonic(), "baresip did not accept the call"))

    def _apply(self, actions: list) -> None:
        ctx, call = self._ctx, self.call
        for action in actions:
            if isinstance(action, Dial):
                try:
                    call.on_dialed(action.uri, self.backend.dial(action.uri))
                except BackendError as exc:
                    ctx.log.warning("baresip: %s", exc)
                    self._apply(call.on_dial_failed(action.uri, "baresip refused to dial", ctx.clock.monotonic()))
            elif isinstance(action, Hangup):
                ctx.log.info("hanging up %s (%s)", action.uri, action.why.replace("_", " "))
                self._safely(self.backend.hangup, action.uri, action.call_id)
            elif isinstance(action, OpenDoor):
                self._open_door(call)
            elif isinstance(action, Finished):
                self.call, self._announce = None, False
                self._record_result(call.event_id, action.summary)

    def _open_door(self, call: DoorCall) -> None:
        ctx = self._ctx
        try:
            ctx.commands.call(OPEN_DOOR, {"event_id": call.event_id}, via=VIA_SIP, allow_dangerous=True)
        except CommandRejected as exc:
            ctx.log.warning("the door code was right but the door did not open: %s", exc)
            call.door_open_failed()
            return
        ctx.log.info("door opened by %s with the code", call.answered.uri)
        ctx.bus.emit(DOOR_OPENED, {"event_type": "door_opened", "by": call.answered.uri}, call.event_id)

    def _record_result(self, event_id: str, summary: dict) -> None:
        ctx = self._ctx
        summary = {"direction": "outgoing", **summary}
        self.last_call = {**summary, "event_id": event_id, "time": ctx.clock.wall()}
        ctx.log.info("call ended: %s%s, %.1f s%s", summary["result"],
                     f" ({summary.get('code')})" if summary.get("code") else "", summary.get("duration_s") or 0,
                     ", door opened" if summary.get("door_opened") else "", extra={"event_id": event_id})
        ctx.bus.emit(CALL_EVENT, summary, event_id)
        store = ctx.store
        if store is not None:
            store.keep_event(event_id, CALL_EVENT, summary, ctx.clock.wall())

    def _safely(self, action, *args) -> bool:
        try:
            action(*args)
            return True
        except BackendError as exc:
            self._ctx.log.warning("baresip: %s", exc)
            return False

    # -- commands (other threads) and states ------------------------------------------------------
    def _cmd_call(self, payload: dict, via: str) -> dict:
        if not self.ready.is_set():
            raise CommandRejected("the intercom is still starting; try again in a few seconds", "failed")
        event_id = new_event_id()
        with self._lock:
            self._requests.append(("call", {"event_id": event_id, "target": payload.get("target")}))
        self.backend.wake()
        return {"calling": payload.get("target") or list(self.cfg.targets), "event_id": event_id}

    def _cmd_hangup(self, payload: dict, via: str) -> dict:
        with self._lock:
            self._requests.append(("hangup", {}))
        self.backend.wake()
        return {"hanging_up": self.call is not None}

    def _handle_requests(self) -> None:
        with self._lock:
            requests, self._requests = self._requests, []
        for kind, args in requests:
            if kind == "ring":
                self._on_ring(args["event_id"])
            elif kind == "call":
                self._on_ring(args["event_id"], [args["target"]] if args["target"] else None)
            elif kind == "hangup" and self.call is not None:
                with self._call_context():
                    self._apply(self.call.hang_up_all(self._ctx.clock.monotonic(), "hangup_button"))

    def _sim_status(self, args: dict) -> dict:
        return self.status()

    def status(self) -> dict:
        backend = self.backend
        return {"line": self.line_state, "reason": self.line_reason,
                "call_state": self.call.state if self.call is not None else IDLE,
                "last_call": self.last_call, "baresip_pid": backend.pid() if backend else None,
                "restarts": self.restarts}

    def _publish(self) -> None:
        states = self._ctx.states
        states.set("sip.registered", "ON" if self.line_state == REGISTERED else "OFF")
        states.set("sip.line", {"state": self.line_state, "reason": self.line_reason})
        states.set("sip.call_state", self.call.state if self.call is not None else IDLE)
        if self.last_call is not None:
            states.set("sip.last_call", self.last_call)
            states.set("sip.last_call_duration_s", self.last_call.get("duration_s") or 0)

    def _stop_backend(self) -> None:
        """Clean stop: every call ends with BYE (or CANCEL), the line un-registers, baresip exits."""
        backend = self.backend
        if backend is None:
            return
        if self.call is not None:
            self._ctx.log.info("stopping: hanging up the call", extra={"event_id": self.call.event_id})
        backend.stop(STOP_TIMEOUT_S, unregister=self.line_state == REGISTERED)
        if self.call is not None:
            call, self.call = self.call, None
            summary = call.abandon(self._ctx.clock.monotonic(), "the intercom stopped")
            for action in summary:
                if isinstance(action, Finished):
                    self._record_result(call.event_id, {**action.summary, "ended_by": "stop"})
