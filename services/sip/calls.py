"""One door call: whom to call, in which order, for how long, and what the keys pressed by
whoever answered mean. Pure logic on an injected `now`: it is fed the stack's call events
and clock ticks and answers with actions (dial, hang up, open the door, finished), so every
timer is tested exactly, without a SIP stack or sleeping.

Targets are called one after the other, or all at once as a ring group (the first to
answer takes the call, the others are cancelled). A target that rings out is cancelled
(baresip then CANCELs; a 200 crossing the CANCEL is ACKed and hung up by its SIP stack);
busy, declined, 404/480/503 and any other failure move on to the next target. A call that
was answered ends after `max_talk_s`, `hangup_after_open_s` after the door opened, or
after `max_wrong_codes` wrong codes.

Not responsible for: carrying the actions out (worker.py), the SIP stack (backend.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from services.sip.backend import ANSWERED, DTMF, ENDED, RINGING, CallEvent

# Outcomes, as Home Assistant's "last call" shows them
ANSWERED_RESULT, NO_ANSWER, BUSY, DECLINED, FAILED = "answered", "no_answer", "busy", "declined", "failed"
# Call states for Home Assistant's enum sensor
IDLE, CALLING, RINGING_STATE, IN_CALL = "idle", "calling", "ringing", "in_call"
CALL_STATES = (IDLE, CALLING, RINGING_STATE, IN_CALL)
HANGUP_GRACE_S = 10.0  # a leg whose end was asked for and never reported counts as ended after this


def outcome(code: int | None) -> str:
    if code in (486, 600):
        return BUSY
    if code == 603:
        return DECLINED
    return FAILED


@dataclass(frozen=True)
class Dial:
    uri: str


@dataclass(frozen=True)
class Hangup:
    uri: str
    call_id: str | None
    why: str


@dataclass(frozen=True)
class OpenDoor:
    pass


@dataclass(frozen=True)
class Finished:
    summary: dict


@dataclass(frozen=True)
class CallSettings:
    targets: tuple[str, ...]
    ring_group: bool = False
    ring_timeout_s: float = 30.0
    max_talk_s: float = 120.0
    open_code: str = ""
    digit_timeout_s: float = 3.0
    max_wrong_codes: int = 3
    hangup_after_open_s: float = 5.0


@dataclass
class Leg:
    uri: str
    started: float
    call_id: str | None = None
    state: str = CALLING       # CALLING, RINGING_STATE, IN_CALL, "ending", "ended"
    hangup_at: float | None = None
    why_hangup: str | None = None
    result: str | None = None
    code: int | None = None
    reason: str = ""

    @property
    def live(self) -> bool:
        return self.state != "ended"


@dataclass
class DoorCall:
    event_id: str
    settings: CallSettings
    started: float
    legs: list[Leg] = field(default_factory=list)
    incoming: bool = False  # a house phone called the door (one leg, answered by the door)
    answered: Leg | None = None
    answered_at: float | None = None
    opened_at: float | None = None
    wrong_codes: int = 0
    presses: list[str] = field(default_factory=list)  # later rings reported on this call
    ended_by: str | None = None
    _queue: list[str] = field(default_factory=list)
    _digits: str = ""
    _digit_at: float = 0.0
    finished: bool = False

    # -- driving it ---------------------------------------------------------------------------
    def start(self, now: float) -> list:
        self._queue = list(self.settings.targets)
        if not self._queue:
            return self._finish(now, FAILED, None, "no targets configured")
        return self._dial_next(now)

    def _dial_next(self, now: float) -> list:
        batch = self._queue if self.settings.ring_group else self._queue[:1]
        self._queue = [] if self.settings.ring_group else self._queue[1:]
        actions = []
        for uri in batch:
            self.legs.append(Leg(uri, now))
            actions.append(Dial(uri))
        return actions

    def on_dialed(self, uri: str, call_id: str | None) -> None:
        """The stack placed the call to `uri` under `call_id` (None: it could not say): its
        events, and a hang-up, find this leg by the id from now on."""
        leg = next((l for l in self.legs if l.uri == uri and l.live and l.call_id is None), None)
        if leg is not None and call_id:
            leg.call_id = call_id

    def on_dial_failed(self, uri: str, reason: str, now: float) -> list:
        """The stack refused to dial `uri` (a bad URI, no line): that target failed."""
        leg = next((l for l in self.legs if l.uri == uri and l.live), None)
        if leg is None:
            return []
        leg.state, leg.result, leg.reason = "ended", FAILED, reason
        return self._after_leg_ended(now)

    def on_event(self, event: CallEvent, now: float) -> list:
        leg = self._leg_for(event)
        if leg is None or self.finished:
            return []
        if event.call_id and leg.call_id is None:
            leg.call_id = event.call_id
        if event.kind == RINGING and leg.state == CALLING:
            leg.state = RINGING_STATE
        elif event.kind == ANSWERED:
            return self._answered(leg, now)
        elif event.kind == DTMF and leg is self.answered:
            return self._key(event.detail, now)
        elif event.kind == ENDED:
            return self._ended(leg, event, now)
        return []

    def tick(self, now: float) -> list:
        """Timers: ring timeout, talk time, hang-up after the door opened, the digit timeout."""
        if self.finished:
            return []
        actions: list = []
        for leg in self.legs:
            if leg.state in (CALLING, RINGING_STATE) and now - leg.started >= self.settings.ring_timeout_s:
                actions += self._hangup(leg, now, "ring timeout")
            elif leg.state == "ending" and now - leg.hangup_at >= HANGUP_GRACE_S:
                leg.state, leg.reason = "ended", leg.reason or "no answer to the hang-up"
                actions += self._leg_gone(leg, now)
        leg = self.answered
        if leg is not None and leg.state == IN_CALL:
            if now - self.answered_at >= self.settings.max_talk_s:
                actions += self._hangup(leg, now, "max_talk")
            elif self.opened_at is not None and now - self.opened_at >= self.settings.hangup_after_open_s:
                actions += self._hangup(leg, now, "door_opened")
            elif self._digits and now - self._digit_at >= self.settings.digit_timeout_s:
                actions += self._wrong_code(leg, now)
        return actions

    def hang_up_all(self, now: float, why: str) -> list:
        """End every leg (the stop of the intercom, a "hang up" button), and call nobody else."""
        self._queue = []
        actions = []
        for leg in self.legs:
            if leg.state in (CALLING, RINGING_STATE, IN_CALL):
                actions += self._hangup(leg, now, why)
        return actions

    def abandon(self, now: float, reason: str) -> list:
        """The SIP stack is gone: every leg is over, whatever it was doing."""
        for leg in self.legs:
            if leg.live:
                leg.state, leg.result, leg.reason = "ended", FAILED, reason
        self.ended_by = self.ended_by or "stack_failed"
        self._queue = []
        if self.answered is not None:
            return self._finish(now, ANSWERED_RESULT, None, reason)
        return self._finish(now, FAILED, None, reason)

    # -- what the call looks like ---------------------------------------------------------------
    @property
    def state(self) -> str:
        if self.finished:
            return IDLE
        if self.answered is not None:
            return IN_CALL
        return RINGING_STATE if any(l.state == RINGING_STATE for l in self.legs) else CALLING

    # -- steps ------------------------------------------------------------------------------------
    def _leg_for(self, event: CallEvent) -> Leg | None:
        live = [l for l in self.legs if l.live]
        if event.call_id:
            known = next((l for l in live if l.call_id == event.call_id), None)
            if known is not None:
                return known
        by_peer = [l for l in live if l.call_id is None and same_uri(l.uri, event.peer)]
        if by_peer:
            return by_peer[0]
        if event.call_id:  # another call's event (a stranger calling in): not one of ours
            return None
        unknown = [l for l in live if l.call_id is None]
        return unknown[0] if len(unknown) == 1 else None

    def _answered(self, leg: Leg, now: float) -> list:
        if leg is self.answered:
            return []
        if self.answered is not None:
            return self._hangup(leg, now, "answered elsewhere")
        if leg.state == "ending":  # answered as we cancelled it: its stack hangs it up
            return []
        leg.state, leg.result = IN_CALL, ANSWERED_RESULT
        self.answered, self.answered_at = leg, now
        actions = []
        for other in self.legs:
            if other is not leg and other.state in (CALLING, RINGING_STATE):
                actions += self._hangup(other, now, "answered elsewhere")
        return actions

    def _hangup(self, leg: Leg, now: float, why: str) -> list:
        if leg.state in ("ending", "ended"):
            return []
        leg.state, leg.hangup_at, leg.why_hangup = "ending", now, why
        if leg is self.answered and self.ended_by is None:
            self.ended_by = why
        return [Hangup(leg.uri, leg.call_id, why)]

    def _ended(self, leg: Leg, event: CallEvent, now: float) -> list:
        was_answered = leg is self.answered
        leg.reason, leg.code = event.detail, event.code
        if not was_answered:
            if leg.why_hangup == "ring timeout":
                leg.result = NO_ANSWER
            elif leg.why_hangup is not None:
                leg.result = leg.result or NO_ANSWER
            else:
                leg.result = outcome(event.code)
        elif self.ended_by is None:
            self.ended_by = "answerer"
        leg.state = "ended"
        return self._leg_gone(leg, now)

    def _leg_gone(self, leg: Leg, now: float) -> list:
        if leg is self.answered:
            for other in self.legs:  # nothing else may be left ringing
                if other.state in (CALLING, RINGING_STATE):
                    self._hangup(other, now, "answered elsewhere")
            if all(not l.live for l in self.legs):
                return self._finish(now, ANSWERED_RESULT, None, leg.reason)
            return []
        return self._after_leg_ended(now)

    def _after_leg_ended(self, now: float) -> list:
        if any(l.live for l in self.legs):
            return []
        if self.answered is not None:
            return self._finish(now, ANSWERED_RESULT, None, self.answered.reason)
        if self._queue:
            return self._dial_next(now)
        results = [l.result for l in self.legs]
        last = self.legs[-1]
        result = NO_ANSWER if NO_ANSWER in results else BUSY if BUSY in results else last.result or FAILED
        code = next((l.code for l in reversed(self.legs) if l.result == result), None)
        return self._finish(now, result, code, last.reason)

    def _key(self, key: str, now: float) -> list:
        code = self.settings.open_code
        if not code or self.opened_at is not None:
            return []
        if self._digits and now - self._digit_at >= self.settings.digit_timeout_s:
            self._digits = ""
            self.wrong_codes += 1
        self._digits += key.upper() if key.isalpha() else key
        self._digit_at = now
        if self._digits == code.upper():
            self._digits = ""
            self.opened_at = now
            return [OpenDoor()]
        if not code.upper().startswith(self._digits):
            # One wrong code, and a new attempt from the keys that may begin the code: "1 2 1
            # 2 3 4" for 1234 opens (as a keypad lock does), "# # 9" for #9 too.
            keys = self._digits
            actions = self._wrong_code(self.answered, now)
            self._digits = next(keys[i:] for i in range(1, len(keys) + 1) if code.upper().startswith(keys[i:]))
            return actions
        return []

    def _wrong_code(self, leg: Leg, now: float) -> list:
        self._digits = ""
        self.wrong_codes += 1
        if self.wrong_codes >= self.settings.max_wrong_codes:
            return self._hangup(leg, now, "wrong_codes")
        return []

    def door_open_failed(self) -> None:
        """The doorbell refused to open: the code may be tried again."""
        self.opened_at = None

    def _finish(self, now: float, result: str, code: int | None, reason: str) -> list:
        self.finished = True
        answered = self.answered
        summary = {
            "direction": "incoming" if self.incoming else "outgoing",
            "result": result, "code": code, "reason": reason,
            "target": answered.uri if answered else (self.legs[-1].uri if self.legs else None),
            "targets": [{"uri": l.uri, "result": l.result, "code": l.code} for l in self.legs],
            "duration_s": round(now - self.answered_at, 1) if self.answered_at is not None else 0.0,
            "door_opened": self.opened_at is not None, "wrong_codes": self.wrong_codes,
            "ended_by": self.ended_by if answered else None, "presses": list(self.presses),
            "ring_group": self.settings.ring_group,
        }
        return [Finished(summary)]


def same_uri(a: str, b: str) -> bool:
    """The same SIP address, whatever the angle brackets, parameters and case."""
    def core(uri: str) -> str:
        return uri.split(";", 1)[0].split(">", 1)[0].lstrip("<").lower()
    return core(a) == core(b)
