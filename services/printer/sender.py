# About 635 lines, one file on purpose: one state machine in one thread. The window, the
# history kept for resends, ok counting and timeouts decide together what may go on the wire
# next; OctoPrint's resend bugs come from exactly these rules being spread over a large
# module's far corners. Framing and reply parsing, which need no state, are in marlin.py.
"""The sending side of the Marlin link, in its own thread: sync, line numbering, the window
of lines in flight, the history kept for resends, timeouts, and the firmware's reports
(temperatures, position, capabilities, host actions, fatal errors).

One thread owns the port while it is open and never waits on anything but the port: job
lines come from a read-ahead buffer filled by another thread (jobs.py `ReadAhead`), other
commands from a deque, and everything it has to say goes into a `queue.SimpleQueue` that the
worker drains (events) or into plain attributes read with `snapshot()` (progress,
temperatures). So MQTT publishing, the store and file reading cannot stall it.

Protocol rules (after OctoPrint's comm.py, which learnt them from many firmwares):
- Sync with `N0 M110 N0`, retried until `ok`; a `start` banner at any time means the
  firmware reset: sync again and tell the owner (a print is lost).
- One line in flight by default. A window of several only when it is safe: the firmware
  says ADVANCED_OK (`ok N.. P.. B..` names the acknowledged line and the free command
  slots), or the owner asked for a fixed window; either way the unacknowledged bytes stay
  within the firmware's receive buffer (`rx_buffer`, Marlin's default 128), because Marlin
  drops what does not fit.
- `Resend: n` / `rs n`: Marlin flushed its receive buffer, so lines from n on are sent again
  (from the history), but only once the wire is quiet: every line still on its way draws
  another request for n (ignored: OctoPrint's "still originates from lines we sent before we
  got the first resend request") and each of those errors flushes the buffer again, which
  would swallow a replay sent too early. A replayed line the firmware already has is refused
  by its number (never run twice), and the request that draws names the next unsent line,
  which is not an error: so a line that arrived twice costs one refused replay, no chain. Marlin follows a request with
  `ok`; some firmwares do not: the first request learns which (the `ok` comes straight after
  it or not at all), so no `ok` is miscounted. More than MAX_RESENDS requests in a row for
  one line end the job. Requests while several lines were in flight shrink the bytes sent at
  once (the receive buffer may be smaller than configured), which then creep back.
- `echo:busy:`, `wait`, temperature reports and any other line reset the timeout but are
  never taken as the reply to a command. On a timeout the `ok`s are assumed lost (as
  OctoPrint does) and an M105 provokes a fresh one; after `unresponsive_after` timeouts in a
  row the printer is reported unresponsive.
- Fatal lines (kill(), thermal runaway, MAXTEMP...) stop feeding and report the message.
- Emergency stop: M112 written at once, ahead of the lines not yet on the wire (they are
  discarded), outside the window and the numbering (the
  firmware's EMERGENCY_PARSER acts on it as it arrives; without it, after the few lines
  already in its queue).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from edge.clock import SYSTEM_CLOCK, Clock
from hardware.printer.port import PortGone, SerialPort
from services.printer import marlin
from services.printer.marlin import Firmware, LineTooLong, Reply

MAX_RESENDS = 10           # requests in a row for one line before the link counts as broken
HISTORY_LINES = 1024       # lines kept for resends (OctoPrint keeps 50; memory is cheap here)
SYNC_RETRY_S = 1.0
RESEND_GRACE_S = 0.2       # how long the first resend request waits to learn whether `ok` follows
# What a USB serial adapter and a busy host add to a reply's way back (an FTDI chip's latency
# timer alone is 16 ms by default): part of the quiet period after a resend request.
DRAIN_LATENCY_S = 0.03
MIN_BUDGET = 32            # bytes: below this the window is one line anyway
POLL_S = 2.0               # M105 polling without autoreport; the autoreport interval otherwise

# event kinds put on the owner's queue
SYNCED, GONE, FATAL, RESET, ACTION, UNRESPONSIVE, RESPONSIVE, JOB_DRAINED, LINK_FAILED = (
    "synced", "gone", "fatal", "reset", "action", "unresponsive", "responsive", "job_drained", "link_failed")
# sender states
SYNCING, READY, HALTED, STOPPED = "syncing", "ready", "halted", "stopped"


class SenderEvent(NamedTuple):
    kind: str
    data: dict


class JobLine(NamedTuple):
    """One command of a job file: its line number in the file (1-based), the byte offset
    just after it, and the command with comments stripped."""
    file_line: int
    end_offset: int
    command: str


END = JobLine(-1, -1, "")  # what a feed returns once the file is exhausted


class Feed(Protocol):
    def take(self) -> JobLine | None:
        """The next job line, END when there are no more, None when none is ready yet."""


# Replies that show the firmware working through the lines sent (see _handle).
_PROGRESS = (marlin.OK, marlin.RESEND, marlin.BUSY, marlin.START, marlin.FATAL)


@dataclass
class Ticket:
    """A command from outside the job (a person, the pause script, polling): done once the
    firmware acknowledged it; `replies` are the lines that came while it was in flight."""
    command: str
    internal: bool = False
    done: threading.Event = field(default_factory=threading.Event)
    replies: list[str] = field(default_factory=list)
    error: str | None = None

    def wait(self, timeout: float) -> bool:
        return self.done.wait(timeout)


@dataclass
class _Sent:
    number: int
    nbytes: int
    item: Any  # Ticket, JobLine or None (the sync line)


class Sender:
    def __init__(self, port: SerialPort, events: "queue.SimpleQueue[SenderEvent]", *, window: str | int = "auto",
                 rx_buffer: int = 128, baud: int = 115200, timeout_s: float = 10.0, unresponsive_after: int = 3,
                 max_line: int = marlin.MAX_LINE_BYTES, clock: Clock = SYSTEM_CLOCK,
                 log: logging.Logger | None = None):
        self.port = port
        self.events = events
        self.window = window
        self.rx_buffer = rx_buffer
        self.baud = baud
        self.timeout_s = timeout_s
        self.unresponsive_after = unresponsive_after
        self.max_line = max_line
        self.clock = clock
        self.log = log or logging.getLogger("edge.worker.printer.sender")
        self.firmware = Firmware()
        self.state = SYNCING
        self.unresponsive = False
        self.temps: dict[str, tuple[float, float | None]] = {}
        self.position: dict[str, float] = {}
        # counters (read by snapshot() from other threads: plain ints, written here only)
        self.lines_sent = self.lines_replayed = self.resends = self.stale_resends_ignored = 0
        self.timeouts = self.stray_oks = 0
        self.job_acked: JobLine | None = None
        self.job_lines_acked = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._priority: deque[Ticket] = deque()  # this thread's own; other threads use the inbox
        self._inbox: "queue.SimpleQueue[Ticket]" = queue.SimpleQueue()
        self._estop = False
        self._feed: Feed | None = None
        self._feed_paused = False
        self._feed_ended = False
        self._next_job_line: JobLine | None = None
        self._in_flight: deque[_Sent] = deque()
        self._history: dict[int, tuple[bytes, Any]] = {}
        self._replay: deque[int] = deque()
        self._next_number = 1
        self._last_rx = self._last_sync = self._last_poll = 0.0
        self._last_progress = 0.0  # the last reply that showed the firmware working through our lines
        self._window_opened = 0.0  # when a line went out with nothing else in flight
        self._consecutive_timeouts = 0
        self._after_resend = False      # the line before was a resend request: an `ok` now belongs to it
        self._ok_follows_resend: bool | None = None  # learnt at the first resend request
        self._learning_until: float | None = None
        self._resend_number: int | None = None
        self._resend_count = 0
        self._budget = rx_buffer  # bytes allowed in flight now (shrinks when the firmware drops bytes)
        self._drain_until: float | None = None  # after a resend request: replay once the wire is quiet
        self._drain_number = 0
        self._drain_quiet_s = 0.0
        self._max_buffer_free = 0
        self._synced_once = False
        self._m115: Ticket | None = None

    # -- the owner's side (any thread) --------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="printer-sender", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def submit(self, command: str, internal: bool = False) -> Ticket:
        """Queue a command (validated: ValueError with the reason) ahead of job lines."""
        ticket = Ticket(marlin.check_command(command, self.max_line), internal)
        if self.state == HALTED:
            ticket.error = "the firmware has halted; reset the printer (power or reset button) first"
            ticket.done.set()
            return ticket
        self._inbox.put(ticket)
        return ticket

    def set_feed(self, feed: Feed | None) -> None:
        # The feed last: the sender thread must not see the new feed with the old one's state.
        self._feed = None
        self._next_job_line, self._feed_ended, self._feed_paused = None, False, False
        if feed is not None:
            self.job_acked, self.job_lines_acked = None, 0
        self._feed = feed

    def pause_feed(self, paused: bool) -> None:
        self._feed_paused = paused

    def emergency_stop(self) -> None:
        """M112 now, from the caller's thread: not behind the window, not numbered."""
        self._feed = None
        self._estop = True  # the sender thread drops the queued commands
        # The newline first: a line that the flush cut in half would otherwise swallow the
        # M112 (Marlin's emergency parser ignores the rest of a line it did not recognise).
        self.port.write_first(b"\nM112\n")

    def window_limits(self) -> tuple[int, int]:
        """(lines, bytes) allowed in flight now."""
        if self.window == "auto":
            lines = self._max_buffer_free + 1 if self.firmware.has("ADVANCED_OK") and self._max_buffer_free else 1
        else:
            lines = int(self.window)
        return max(1, lines), self._budget

    def snapshot(self) -> dict:
        acked = self.job_acked
        lines, nbytes = self.window_limits()
        return {"state": self.state, "unresponsive": self.unresponsive, "firmware": self.firmware.as_dict(),
                "temps": dict(self.temps), "position": dict(self.position),
                "window": {"lines": lines, "bytes": nbytes},
                "counters": {"lines_sent": self.lines_sent, "lines_replayed": self.lines_replayed,
                             "resends": self.resends,
                             "stale_resends_ignored": self.stale_resends_ignored, "timeouts": self.timeouts,
                             "stray_oks": self.stray_oks},
                "job_line": acked.file_line if acked else 0, "job_offset": acked.end_offset if acked else 0,
                "job_lines_acked": self.job_lines_acked}

    # -- the thread ----------------------------------------------------------------------------
    def _emit(self, kind: str, **data) -> None:
        self.events.put(SenderEvent(kind, data))

    def _run(self) -> None:
        try:
            self._last_rx = self.clock.monotonic()
            while not self._stop.is_set():
                self._pump()
                for raw in self.port.read_lines():
                    self._handle(marlin.parse_reply(raw))
                self._check_time()
        except PortGone as exc:
            if not self._stop.is_set():
                self._emit(GONE, reason=str(exc))
        except Exception as exc:  # a bug here must not leave a job "printing" with no sender
            self.log.exception("the printer link's thread failed")
            self._emit(GONE, reason=f"the printer link failed ({type(exc).__name__}: {exc}); opening it again")
        finally:
            self.state = STOPPED
            self._take_inbox()
            for ticket in [*self._priority, *(s.item for s in self._in_flight if isinstance(s.item, Ticket))]:
                ticket.error = ticket.error or "the printer link closed before the command was acknowledged"
                ticket.done.set()

    def _write(self, number: int, command: str, item: Any) -> None:
        data = marlin.frame(number, command, self.max_line)
        self.port.write(data)
        self._put_in_flight(_Sent(number, len(data), item))
        self.lines_sent += 1

    def _put_in_flight(self, sent: _Sent) -> None:
        if not self._in_flight:  # the wait for an answer starts now, not at the last reply
            self._window_opened = self.clock.monotonic()
        self._in_flight.append(sent)

    def _room(self, nbytes: int) -> bool:
        if not self._in_flight:
            return True
        lines, limit = self.window_limits()
        return len(self._in_flight) < lines and sum(s.nbytes for s in self._in_flight) + nbytes <= limit

    def _take_inbox(self) -> None:
        while True:
            try:
                self._priority.append(self._inbox.get_nowait())
            except queue.Empty:
                break
        if self._estop:
            self._estop = False
            for ticket in self._priority:
                ticket.error = "dropped by the emergency stop"
                ticket.done.set()
            self._priority.clear()

    def _pump(self) -> None:
        """Send what the window allows: replays first, then commands, then job lines."""
        self._take_inbox()
        if self.state == SYNCING:
            now = self.clock.monotonic()
            if now - self._last_sync >= SYNC_RETRY_S:
                self._last_sync = now
                self._in_flight.clear()
                self._write(0, "M110 N0", None)
            return
        if self.state != READY or self._learning_until is not None or self._drain_until is not None:
            return
        while True:
            if self._replay:
                number = self._replay[0]
                data, item = self._history[number]
                if not self._room(len(data)):
                    return
                self._replay.popleft()
                self.port.write(data)
                self._put_in_flight(_Sent(number, len(data), item))
                self.lines_sent += 1
                self.lines_replayed += 1
                continue
            if self._priority:
                ticket = self._priority[0]
                if not self._room(len(ticket.command) + 16):
                    return
                self._priority.popleft()
                self._send_new(ticket.command, ticket)
                continue
            feed = self._feed
            if feed is None or self._feed_paused or self._feed_ended:
                return
            line = self._next_job_line or feed.take()
            if line is None:
                return
            if line is END:
                self._feed_ended = True
                self._check_drained()
                return
            # The framed length is the command's plus "N<number> " and "*<checksum>".
            if not self._room(len(line.command) + len(str(self._next_number)) + 7):
                self._next_job_line = line  # sent once the window has room for it
                return
            self._next_job_line = None
            self._send_new(line.command, line)

    def _send_new(self, command: str, item: Any) -> None:
        number = self._next_number
        try:
            data = marlin.frame(number, command, self.max_line)
        except LineTooLong as exc:
            if isinstance(item, Ticket):
                item.error = str(exc)
                item.done.set()
            return
        self._next_number += 1
        self._history[number] = (data, item)
        self._history.pop(number - HISTORY_LINES, None)
        self.port.write(data)
        self._put_in_flight(_Sent(number, len(data), item))
        self.lines_sent += 1
        renumbered = marlin.line_number_set_by(command)
        if renumbered is not None:
            # An M110 from a job file or a person resets the firmware's counter: count from
            # there (as OctoPrint does), or the next line would draw "Resend: n + 1" and the
            # job would replay from that old number, again and again. Nothing before it can
            # be asked for again.
            self._next_number = renumbered + 1
            self._history.clear()

    # -- replies ---------------------------------------------------------------------------------
    def _handle(self, reply: Reply) -> None:
        self._last_rx = self.clock.monotonic()
        if reply.kind in _PROGRESS or (reply.kind == marlin.TEMPERATURE and " W:" in reply.raw):
            # Only these say the firmware is working through what was sent (M109's reports
            # carry "W:"): temperature autoreports come every 2 s whatever happens, so with
            # them counted a lost ok would never time out (OctoPrint keeps the same apart).
            self._last_progress = self._last_rx
        if self._drain_until is not None:
            self._drain_until = max(self._drain_until, self._last_rx + self._drain_quiet_s)
        kind = reply.kind
        after_resend, self._after_resend = self._after_resend, False
        if self._learning_until is not None and kind != marlin.RESEND:
            # The first resend request's next line says whether this firmware sends `ok` after one.
            self._learning_until = None
            self._ok_follows_resend = kind == marlin.OK and reply.line is None
            self.log.info("this firmware %s 'ok' after a resend request",
                          "sends" if self._ok_follows_resend else "does not send")
            if self._ok_follows_resend:
                return
        if kind == marlin.OK:
            if reply.temps:
                self.temps = {**self.temps, **reply.temps}  # replaced, never changed: read from other threads
            if after_resend and reply.line is None and (self._ok_follows_resend
                                                        or self.firmware.has("ADVANCED_OK")):
                return  # the ok that belongs to the resend request, not to a command
            self._on_ok(reply)
        elif kind == marlin.RESEND:
            self._on_resend(reply.line)
        elif kind == marlin.TEMPERATURE:
            self.temps = {**self.temps, **reply.temps}  # replaced, never changed: read from other threads
        elif kind in (marlin.FIRMWARE, marlin.CAPABILITY):
            self.firmware.add(reply)
            self._attach(reply.raw)
        elif kind == marlin.POSITION:
            self.position = reply.position
            self._attach(reply.raw)
        elif kind == marlin.ACTION:
            self.log.info("host action from the printer: %s %s", reply.name, reply.value)
            self._emit(ACTION, name=reply.name, value=reply.value)
        elif kind == marlin.FATAL:
            self._fatal(reply.message)
        elif kind == marlin.START:
            self._on_start()
        elif kind == marlin.ERROR:
            if reply.name != "communication":
                self.log.warning("printer error: %s", reply.message)
            self._attach(reply.raw)
        elif kind in (marlin.ECHO, marlin.OTHER):
            self._attach(reply.raw)
        # BUSY and WAIT only reset the timeout (above)

    def _attach(self, raw: str) -> None:
        if self._in_flight and isinstance(self._in_flight[0].item, Ticket):
            self._in_flight[0].item.replies.append(raw)
        elif self._m115 is not None and not self._m115.done.is_set():
            self._m115.replies.append(raw)

    def _on_ok(self, reply: Reply) -> None:
        if self._consecutive_timeouts:
            self._consecutive_timeouts = 0
            if self.unresponsive:
                self.unresponsive = False
                self._emit(RESPONSIVE)
        if self.state == SYNCING:
            self._synced()
            return
        if reply.buffer_free is not None:
            self._max_buffer_free = max(self._max_buffer_free, reply.buffer_free)
        if reply.line is not None:  # ADVANCED_OK names the line: everything up to it is through
            while self._in_flight and self._in_flight[0].number <= reply.line:
                self._acked(self._in_flight.popleft())
        elif self._in_flight:
            self._acked(self._in_flight.popleft())
        else:
            self.stray_oks += 1

    def _acked(self, sent: _Sent) -> None:
        if self._budget < self.rx_buffer:
            self._budget += 1
        if sent.number == self._resend_number:
            self._resend_number, self._resend_count = None, 0
        item = sent.item
        if isinstance(item, JobLine):
            self.job_acked = item
            self.job_lines_acked += 1
            self._check_drained()
        elif isinstance(item, Ticket):
            item.done.set()
            if item is self._m115:
                self._after_m115()

    def _check_drained(self) -> None:
        if (self._feed_ended and not self._replay and self._drain_until is None
                and not any(isinstance(s.item, JobLine) for s in self._in_flight)):
            self._feed_ended = False
            self._feed = None
            self._emit(JOB_DRAINED, line=self.job_acked.file_line if self.job_acked else 0)

    def _synced(self) -> None:
        """The firmware took `M110 N0`: numbering starts at 1; ask what it is."""
        self.state = READY
        self._in_flight.clear()
        self._history.clear()
        self._replay.clear()
        self._drain_until = None
        self._next_number = 1
        self._max_buffer_free = 0
        self.firmware = Firmware()
        self._m115 = Ticket("M115", internal=True)
        self._priority.appendleft(self._m115)

    def _after_m115(self) -> None:
        if self.firmware.has("AUTOREPORT_TEMP"):
            self._priority.append(Ticket(f"M155 S{POLL_S:g}", internal=True))
        if self.firmware.has("AUTOREPORT_POS"):  # the position for checkpoints, without polling M114
            self._priority.append(Ticket(f"M154 S{POLL_S:g}", internal=True))
        self._priority.append(Ticket("M105", internal=True))
        first = not self._synced_once
        self._synced_once = True
        self.log.info("printer synced: %s%s", self.firmware.name,
                      f", capabilities {', '.join(self.firmware.as_dict()['capabilities'])}"
                      if self.firmware.capabilities else "")
        self._emit(SYNCED, firmware=self.firmware.as_dict(), first=first)

    def _on_start(self) -> None:
        was = self.state
        self.state = SYNCING
        self._last_sync = 0.0  # sync again at once
        self._fail_in_flight("the printer's firmware restarted before acknowledging it")
        self._replay.clear()
        self._feed = None
        if was != SYNCING:
            self.log.warning("the printer's firmware restarted (it said 'start'); syncing again")
            self._emit(RESET)

    def _fatal(self, message: str) -> None:
        if self.state == HALTED:
            return
        self.state = HALTED
        self._feed = None
        self._replay.clear()
        self._fail_in_flight(f"the firmware halted: {message}")
        for ticket in self._priority:
            ticket.error = f"the firmware halted: {message}"
            ticket.done.set()
        self._priority.clear()
        self.log.error("the printer's firmware halted: %s", message)
        self._emit(FATAL, message=message)

    def _on_resend(self, number: int | None) -> None:
        self._after_resend = True
        if number is None or self.state != READY:
            return
        if (self._ok_follows_resend is None and not self.firmware.has("ADVANCED_OK")
                and self._learning_until is None):
            self._learning_until = self.clock.monotonic() + RESEND_GRACE_S
        # The firmware's last good line is number - 1: everything before it is through.
        while self._in_flight and self._in_flight[0].number < number:
            self._acked(self._in_flight.popleft())
        if self._drain_until is not None:
            # Waiting for the wire to go quiet: a request now comes from a line that was
            # already on its way (OctoPrint: "still originates from lines we sent before we got
            # the first resend request").
            self._drain_number = number
            self.stale_resends_ignored += 1
            return
        if number == self._next_number and not self._replay:
            return  # the next unsent line: the firmware saw the last one twice; not an error
        if number not in self._history:
            self._link_failed(f"the printer asked for line {number} again, which is no longer kept "
                              f"(history: {len(self._history)} lines)")
            return
        if number == self._resend_number:
            self._resend_count += 1
            if self._resend_count > MAX_RESENDS:
                self._link_failed(f"the printer asked for line {number} {self._resend_count} times in a row; "
                                  f"the serial link is unreliable: check the cable, its shielding and [printer] baud")
                return
        else:
            self._resend_number, self._resend_count = number, 1
        self.resends += 1
        # Marlin flushes its receive buffer with every error, so lines still on the wire would
        # each draw another request and, worse, flush a replay sent too early: wait until the
        # wire is quiet (the bytes in flight at wire speed, twice over), then go back to the
        # requested line.
        in_transit = sum(s.nbytes for s in self._in_flight)
        if len(self._in_flight) > 1:
            # Requests while several lines were in flight may mean the receive buffer is smaller
            # than configured (bytes dropped): send less at once, and creep back up as lines go
            # through (additive increase, multiplicative decrease, as TCP does).
            self._budget = max(MIN_BUDGET, int(self._budget * 0.7))
        self._replay.clear()
        self._drain_number = number
        self._drain_quiet_s = in_transit * 10 / self.baud * 2 + DRAIN_LATENCY_S
        self._drain_until = self.clock.monotonic() + self._drain_quiet_s

    def _end_drain(self) -> None:
        # From the requested line, even when an ok meanwhile seemed to cover it: a plain ok
        # cannot say which line it answers (an unknown-command fragment left by a flush gets
        # one too). A line the firmware already has is refused by its number, never run twice,
        # and the request that refusal draws names the next unsent line, which ends it.
        self._drain_until = None
        self._in_flight.clear()
        self._replay = deque(range(self._drain_number, self._next_number))

    def _link_failed(self, reason: str) -> None:
        """The line numbers no longer agree with the firmware's: fail what was in flight and
        sync again (`M110 N0`, as at the start), or every later command would draw the same
        unanswerable request while the link looked ready."""
        self.log.error("%s; syncing with the printer again", reason)
        self._feed = None
        self._replay.clear()
        self._fail_in_flight(reason)
        self._drain_until = None
        self._resend_number, self._resend_count = None, 0
        self.state, self._last_sync = SYNCING, 0.0
        self._emit(LINK_FAILED, reason=reason)

    def _fail_in_flight(self, why: str) -> None:
        """Commands in flight will never be acknowledged: their senders hear why now, not
        after their whole timeout (an M109 waits up to 600 s)."""
        for sent in self._in_flight:
            if isinstance(sent.item, Ticket):
                sent.item.error = sent.item.error or why
                sent.item.done.set()
        self._in_flight.clear()

    # -- time ----------------------------------------------------------------------------------------
    def _check_time(self) -> None:
        now = self.clock.monotonic()
        if self._learning_until is not None and now >= self._learning_until:
            self._learning_until = None
            self._ok_follows_resend = False
            self.log.info("this firmware does not send 'ok' after a resend request")
        if self._drain_until is not None and now >= self._drain_until:
            self._end_drain()
        if self.state != READY:
            return
        if not self.firmware.has("AUTOREPORT_TEMP") and now - self._last_poll >= POLL_S and self._synced_once:
            self._last_poll = now
            if not any(t.command == "M105" for t in self._priority):
                self._priority.append(Ticket("M105", internal=True))
        if not self._in_flight and not self._priority and now - self._last_rx >= max(self.timeout_s, 3 * POLL_S):
            # Idle and nothing heard (no autoreport, no polls answered): ask, as a poll would.
            self._last_rx = now
            self._priority.append(Ticket("M105", internal=True))
            return
        if not self._in_flight or now - max(self._last_progress, self._window_opened) < self.timeout_s:
            return
        # Nothing heard for timeout_s: the oks were lost (OctoPrint: "communication timeout
        # while printing, trying to trigger response from printer").
        self._last_rx = self._last_progress = now
        self.timeouts += 1
        self._consecutive_timeouts += 1
        self.log.warning("no answer from the printer for %.0f s (%d in a row); asking with M105",
                         self.timeout_s, self._consecutive_timeouts)
        if self._resend_number is not None and self._ok_follows_resend:
            self._ok_follows_resend = None  # perhaps a miscounted ok after a resend: learn again
        # Taken as done (the firmware ran them; if not, its resend request replays them from
        # the history): a job's last line whose ok was lost then still ends the job.
        lost, self._in_flight = list(self._in_flight), deque()
        for sent in lost:
            self._acked(sent)
        self._priority.appendleft(Ticket("M105", internal=True))
        if self._consecutive_timeouts >= self.unresponsive_after and not self.unresponsive:
            self.unresponsive = True
            self._emit(UNRESPONSIVE, seconds=self.timeout_s * self._consecutive_timeouts)
