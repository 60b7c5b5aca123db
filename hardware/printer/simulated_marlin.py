# About 585 lines, one file on purpose: one simulated firmware. The line parser, the command
# interpreter and the fault switches all act on one state under one lock (the line number
# expected next, the receive buffer, heaters, the planner), as Marlin's own serial loop does;
# split, each part would need the others' internals to inject a fault at the right moment.
"""A simulated Marlin 2.x printer on a pseudo-terminal: what `edge run --sim` drives and what
the tests print to. A host opens `path` like a USB serial port (optionally a symlink, the
shape of /dev/serial/by-id/...), and the fake answers as Marlin does.

Modelled on Marlin's serial handling (GCodeQueue::get_serial_commands and MarlinSerial):
- a receive ring of `rx_buffer` bytes that also holds the queued commands; bytes arriving
  while it is full are dropped, as MarlinSerial drops them (the host then sees checksum or
  line-number errors);
- line numbers and XOR checksums checked in Marlin's order; an error answers
  `Error:... Last Line: n`, `Resend: n+1` and (unless told otherwise) `ok`, and flushes the
  ring, so every line sent after the bad one is refused too until the host rewinds;
- `ok`, or `ok N.. P.. B..` with ADVANCED_OK; M105, M109/M190 (temperature lines while
  heating), M114, M115 with `Cap:` lines, M155 autoreport, M110, M112 (at once when the
  EMERGENCY_PARSER capability is on, from the receive side), G0/G1/G92/G28 positions;
- `start` and boot noise after a reset, including the reset a board does when the host
  opens the port (`reset_on_open`, seen through the pty's packet mode: the open flushes the
  port's input, which the master reads as TIOCPKT_FLUSHREAD);
- a wire-speed throttle (`baud`): both directions move at most baud/10 bytes a second.

It records what it executed (`executed`, in order) and takes faults from tests and from
`edge sim printer ...`: resend requests (by line, at random), checksum errors, no `ok` after
a resend, busy periods, silence, a smaller receive buffer (overrun), reset, thermal
runaway, unplug/replug (`unplug_at_line` for a deterministic point).

Not responsible for: motion or thermal realism beyond what a host can observe.
"""

from __future__ import annotations

import fcntl
import operator
import os
import pty
import random
import re
import select
import struct
import termios
import threading
import time
import tty
from functools import reduce
from pathlib import Path

TIOCPKT_FLUSHREAD = 0x01
FIRMWARE_NAME = "Marlin 2.1.2.1 (simulated)"
KEEPALIVE_S = 2.0  # Marlin's DEFAULT_KEEPALIVE_INTERVAL
AMBIENT_C = 21.0
PLANNER_FREE = 15
# A line that lost bytes to a full ring is refused as a checksum mismatch. MarlinSerial counts
# dropped bytes; here the mark also keeps the XOR checksum's 1-in-256 blind spot (two halves
# of different lines that happen to match) out of the tests, which would otherwise be flaky.
DROPPED = b"\x00"
_NUMBER = re.compile(r"^N(\d+)\s*")
_PARAM = re.compile(r"([A-Z])(-?\d*\.?\d+)")



class EmergencyParser:
    """Marlin's EMERGENCY_PARSER (feature/e_parser.h), for M112 only: it reads the bytes as
    they arrive, before the command queue, and acts at the end of a line that is only
    `[N<number>] M112`. A line cut in half by a flush makes it ignore everything up to the
    next newline, so an M112 glued to that half is missed: the host must send a newline
    first."""

    def __init__(self):
        self.state = "reset"

    def feed(self, byte: int) -> bool:
        """True at the end of an M112 line."""
        c, state = chr(byte), self.state
        eol = c in "\r\n"
        if state == "m112":
            self.state = "reset" if eol else state
            return eol
        if eol:
            self.state = "reset"
        elif state == "reset":
            self.state = {" ": "reset", "N": "n", "M": "m"}.get(c, "ignore")
        elif state == "n":
            self.state = "n" if c.isdigit() or c in " -" else "m" if c == "M" else "ignore"
        elif state == "m":
            self.state = "m" if c == " " else "m1" if c == "1" else "ignore"
        elif state == "m1":
            self.state = "m11" if c == "1" else "ignore"
        elif state == "m11":
            self.state = "m112" if c == "2" else "ignore"
        return False


class SimulatedMarlin:
    def __init__(self, link_path: str | Path | None = None, *, baud: int | None = None, advanced_ok: bool = False,
                 autoreport: bool = True, emergency_parser: bool = True, rx_buffer: int = 128, bufsize: int = 4,
                 reset_on_open: bool = True, boot_s: float = 0.0, heat_rate: float = 60.0,
                 keepalive_s: float = KEEPALIVE_S, move_s: float = 0.0, seed: int | None = None):
        self.link_path = Path(link_path) if link_path else None
        self.baud = baud
        self.advanced_ok = advanced_ok
        self.autoreport = autoreport
        self.emergency_parser = emergency_parser
        self.rx_buffer = rx_buffer
        self.bufsize = bufsize
        self.reset_on_open = reset_on_open
        self.boot_s = boot_s
        self.heat_rate = heat_rate
        self.keepalive_s = keepalive_s
        self.move_s = move_s
        self._random = random.Random(seed)
        self._lock = threading.RLock()         # the firmware's state
        self._ring_cond = threading.Condition()  # the receive ring
        self._write_lock = threading.Lock()
        self._ring = bytearray()
        self._master: int | None = None
        self._slave: int | None = None
        self._tty_name = ""
        self._running = False
        self._threads: list[threading.Thread] = []
        self._rx_clock = self._tx_clock = 0.0
        self._reboot_requested = False
        # what a test reads
        self.executed: list[str] = []
        self.received_lines = 0
        self.dropped_bytes = 0
        self.received_bytes = 0  # every byte that reached the board from the host
        self.resends_requested = 0
        self.boots = 0
        self.halted: str | None = None
        self.plugged = False
        self.last_m112_at: float | None = None
        # firmware state
        self.last_n = 0
        self.temps = {"T": [AMBIENT_C, 0.0], "B": [AMBIENT_C, 0.0]}
        self.position = {"X": 0.0, "Y": 0.0, "Z": 0.0, "E": 0.0}
        self.relative = False
        self.autoreport_s = 0.0
        self._last_report = 0.0
        self._last_heat = time.monotonic()
        # faults
        self.resend_lines: set[int] = set()
        self.duplicate_lines: set[int] = set()
        self.resend_probability = 0.0
        self.checksum_error_probability = 0.0
        self.ok_after_resend = True
        self.lose_ok_after: set[str] = set()  # commands whose ok is lost on the wire (once each)
        self._busy_next_s = 0.0
        self._silent_until = 0.0
        self._unplug_at: int | None = None

    # -- lifecycle ----------------------------------------------------------------------------
    @property
    def path(self) -> str:
        """What a host opens: the link when one was asked for, else the pty's own name."""
        return str(self.link_path) if self.link_path else self._tty_name

    def start(self) -> "SimulatedMarlin":
        self._running = True
        self._plug()
        self._boot(power_cycle=True)
        for target, name in ((self._wire, "sim-marlin-wire"), (self._firmware, "sim-marlin-firmware")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def close(self) -> None:
        self._running = False
        with self._ring_cond:
            self._ring_cond.notify_all()
        for thread in self._threads:
            thread.join(5)
        self._threads.clear()
        self._unplug_now()

    def __enter__(self) -> "SimulatedMarlin":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def _plug(self) -> None:
        master, slave = pty.openpty()
        tty.setraw(slave)  # no echo, no line discipline: bytes pass as on a UART
        fcntl.ioctl(master, termios.TIOCPKT, struct.pack("i", 1))
        self._tty_name = os.ttyname(slave)
        if self.link_path:
            self.link_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.link_path.with_name(self.link_path.name + ".new")
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(self._tty_name)
            tmp.replace(self.link_path)
        with self._lock:
            self._master, self._slave = master, slave
            self.plugged = True

    def _unplug_now(self) -> None:
        with self._lock:
            master, slave, self._master, self._slave = self._master, self._slave, None, None
            self.plugged = False
        if self.link_path:
            self.link_path.unlink(missing_ok=True)
        for fd in (master, slave):
            if fd is not None:
                os.close(fd)
        with self._ring_cond:
            self._ring.clear()

    # -- faults and controls ----------------------------------------------------------------------
    def unplug(self) -> None:
        """The USB cable pulled: the host's port fails, the path disappears. The board keeps
        its state (a printer on its own power supply keeps heating)."""
        with self._lock:
            self._unplug_now()

    def replug(self, reset: bool = False) -> None:
        """The cable back in (same path); `reset`: the board restarts as well."""
        with self._lock:
            if not self.plugged:
                self._plug()
            if reset:
                self._boot(power_cycle=True)

    def unplug_at_line(self, number: int | None) -> None:
        """Pull the cable when numbered line `number` arrives, before it runs."""
        self._unplug_at = number

    def host_action(self, action: str) -> None:
        """Send `//action:<action>` (pause, resume, cancel...), as Marlin's HOST_ACTION_COMMANDS does."""
        with self._lock:
            self._say(f"//action:{action}")

    def say(self, line: str) -> None:
        """Send one line of the firmware's own, unasked (a garbled or unexpected reply)."""
        with self._lock:
            self._say(line)

    def reset(self) -> None:
        """A firmware reset (watchdog, brown-out): heaters off, line numbers from 0, banner."""
        self._boot(power_cycle=True)

    def thermal_runaway(self) -> None:
        self._halt("Error:Thermal Runaway, system stopped! Heater_ID: 0")

    def busy(self, seconds: float) -> None:
        """The next command takes `seconds`, with `echo:busy: processing` keepalives."""
        self._busy_next_s = seconds

    def silence(self, seconds: float) -> None:
        """Say nothing for `seconds` (replies written meanwhile are lost)."""
        self._silent_until = time.monotonic() + seconds

    def set_baud(self, baud: int | None) -> None:
        self.baud = baud

    def clear_faults(self) -> None:
        self.resend_lines.clear()
        self.duplicate_lines.clear()
        self.resend_probability = self.checksum_error_probability = 0.0
        self.ok_after_resend = True
        self.lose_ok_after.clear()
        self._busy_next_s = 0.0
        self._silent_until = 0.0
        self._unplug_at = None

    def executed_count(self) -> int:
        with self._lock:
            return len(self.executed)

    def executed_since(self, mark: int = 0) -> list[str]:
        with self._lock:
            return list(self.executed[mark:])

    def status(self) -> dict:
        with self._lock:
            return {"path": self.path, "plugged": self.plugged, "halted": self.halted, "boots": self.boots,
                    "baud": self.baud, "executed": len(self.executed), "last_line": self.last_n,
                    "received_lines": self.received_lines, "resends_requested": self.resends_requested,
                    "dropped_bytes": self.dropped_bytes, "rx_buffer": self.rx_buffer,
                    "nozzle": [round(v, 1) for v in self.temps["T"]], "bed": [round(v, 1) for v in self.temps["B"]],
                    "faults": {"resend_lines": sorted(self.resend_lines), "resend_random": self.resend_probability,
                               "checksum_errors": self.checksum_error_probability,
                               "ok_after_resend": self.ok_after_resend,
                               "silent_s": round(max(0.0, self._silent_until - time.monotonic()), 1),
                               "unplug_at_line": self._unplug_at}}

    # -- the wire (receive side, MarlinSerial's ISR) ---------------------------------------------
    def _throttle(self, clock: float, nbytes: int) -> float:
        """Wait until `nbytes` more could have crossed the wire; the new wire clock."""
        baud = self.baud
        now = time.monotonic()
        if not baud:
            return now
        clock = max(clock, now) + nbytes * 10 / baud
        delay = clock - time.monotonic()
        # A sleep costs about 0.1 ms itself: shorter waits are carried in the clock, so the
        # rate over any stretch stays the wire's while single bytes are not delayed twice.
        if delay > 0.0002:
            time.sleep(delay)
        return clock

    def _wire(self) -> None:
        parser = EmergencyParser()
        while self._running:
            master = self._master
            if master is None:
                time.sleep(0.02)
                continue
            try:
                ready, _, _ = select.select([master], [], [], 0.05)
                if not ready:
                    continue
                # No more than a UART's FIFO at a time: the rest waits in the kernel, where the
                # host can still discard it (tcflush), as it can with a real adapter.
                packet = os.read(master, 1 + 64)
            except OSError:  # unplugged under us, or no host has the port open
                time.sleep(0.02)
                continue
            if not packet:
                continue
            if packet[0] != 0:  # a control packet: the host flushed its input (it opened the port)
                if packet[0] & TIOCPKT_FLUSHREAD and self.reset_on_open:
                    with self._ring_cond:  # the board resets before it can read a byte
                        self._reboot_requested = True
                        self._ring.clear()
                        self._ring_cond.notify_all()
                continue
            data = packet[1:]
            self.received_bytes += len(data)
            for start in range(0, len(data), 32):
                chunk = data[start:start + 32]
                self._rx_clock = self._throttle(self._rx_clock, len(chunk))
                if self.emergency_parser and any(parser.feed(byte) for byte in chunk):
                    self._emergency_stop()  # EMERGENCY_PARSER: acted on as the bytes arrive
                with self._ring_cond:
                    room = max(0, self.rx_buffer - len(self._ring))
                    self._ring += chunk[:room]
                    if len(chunk) > room:
                        self.dropped_bytes += len(chunk) - room
                        if self._ring and self._ring[-1:] != DROPPED:
                            self._ring[-1:] = DROPPED  # marks the line that lost bytes
                    self._ring_cond.notify_all()

    # -- the firmware (main loop) -------------------------------------------------------------
    def _next_line(self, timeout: float) -> bytes | None:
        with self._ring_cond:
            if b"\n" not in self._ring and self._running and not self._reboot_requested:
                self._ring_cond.wait(timeout)
            if self._reboot_requested:
                return None
            at = self._ring.find(b"\n")
            if at < 0:
                if len(self._ring) < self.rx_buffer:
                    return None
                # Full without a line end (the end was dropped): Marlin's reader moves the bytes
                # on anyway, as an overlong line that fails its checks.
                at = len(self._ring)
            line = bytes(self._ring[:at])
            del self._ring[:at + 1]
            return line

    def _firmware(self) -> None:
        while self._running:
            if self._reboot_requested:
                self._reboot_requested = False
                self._boot(power_cycle=True)
            self._idle()
            line = self._next_line(0.05)
            if line is None:
                continue
            with self._lock:
                if self.halted or not self.plugged:
                    continue
                self._receive(line.strip(b" \r\n\t").decode("ascii", "replace"))

    def _idle(self) -> None:
        """Heaters move toward their targets; the temperature autoreport."""
        now = time.monotonic()
        with self._lock:
            step = (now - self._last_heat) * self.heat_rate
            self._last_heat = now
            for heater in self.temps.values():
                actual, target = heater
                goal = target if target > 0 else AMBIENT_C
                heater[0] = min(goal, actual + step) if goal > actual else max(goal, actual - step)
            if self.autoreport_s and now - self._last_report >= self.autoreport_s and not self.halted:
                self._last_report = now
                self._say(" " + self._temp_report())

    def _boot(self, power_cycle: bool) -> None:
        with self._lock:
            self.boots += 1
            self.halted = None
            self.last_n = 0
            self.autoreport_s = 0.0
            if power_cycle:
                for heater in self.temps.values():
                    heater[1] = 0.0
                self.position = dict.fromkeys(self.position, 0.0)
            with self._ring_cond:
                self._ring.clear()
            if self.boot_s:
                time.sleep(self.boot_s)
                with self._ring_cond:
                    self._ring.clear()  # what arrived while the bootloader ran is lost
            self._write(b"\xfe\x00\xff")  # bootloader noise
            self._say("start")
            self._say(f"echo:{FIRMWARE_NAME}")
            self._say("echo: Last Updated: 2024-02-01 | Author: (edge simulator)")
            self._say("echo:Free Memory: 5000  PlannerBufferBytes: 1232")

    def _halt(self, message: str) -> None:
        with self._lock:
            for heater in self.temps.values():
                heater[1] = 0.0
            if message:
                self._say(message)
            self._say("Error:Printer halted. kill() called!")
            self.halted = message or "kill() called"

    def _emergency_stop(self) -> None:
        with self._lock:
            self.last_m112_at = time.monotonic()
            self.executed.append("M112")
            self._halt("")

    def _receive(self, text: str) -> None:
        """One line from the host, checked as GCodeQueue::get_serial_commands does."""
        if not text:
            return
        self.received_lines += 1
        if "\x00" in text:
            return self._request_resend("checksum mismatch")
        m = _NUMBER.match(text)
        if m is None:
            if "*" in text:
                return self._request_resend("No Line Number with checksum")
            return self._execute(text)
        number = int(m.group(1))
        if self._unplug_at is not None and number == self._unplug_at:
            self._unplug_at = None
            self._unplug_now()
            return
        body, star, given = text.rpartition("*")
        if self.checksum_error_probability and self._random.random() < self.checksum_error_probability:
            given = str((int(given) + 1) % 256) if given.isdigit() else "0"  # one flipped bit on the wire
        command = body[m.end():] if star else ""
        if number != self.last_n + 1 and "M110" not in command:
            return self._request_resend("Line Number is not Last Line Number+1")
        if not star:
            return self._request_resend("No Checksum with line number")
        if not given.isdigit() or reduce(operator.xor, body.encode("ascii", "replace"), 0) != int(given):
            return self._request_resend("checksum mismatch")
        injected = number in self.resend_lines or (
            self.resend_probability and self._random.random() < self.resend_probability)
        if injected:
            self.resend_lines.discard(number)
            return self._request_resend("checksum mismatch")
        self.last_n = number
        self._execute(command.strip())
        if number in self.duplicate_lines:  # the line arrives twice (a USB adapter repeating a packet)
            self.duplicate_lines.discard(number)
            self._receive(text)

    def _request_resend(self, error: str) -> None:
        # Marlin's flush_and_request_resend: the ring is flushed, so every line after the bad
        # one must come again.
        self.resends_requested += 1
        with self._ring_cond:
            self._ring.clear()
        self._say(f"Error:{error}, Last Line: {self.last_n}")
        self._say(f"Resend: {self.last_n + 1}")
        if self.ok_after_resend:
            self._ok()  # Marlin's ok_to_send(): with ADVANCED_OK it names the last good line

    def _ok(self, extra: str = "") -> None:
        if self.advanced_ok:
            with self._ring_cond:
                queued = self._ring.count(b"\n")
            self._say(f"ok N{self.last_n} P{PLANNER_FREE} B{max(0, self.bufsize - 1 - queued)}")
        else:
            self._say("ok" + (" " + extra if extra else ""))

    def _temp_report(self) -> str:
        (t, tt), (b, bt) = self.temps["T"], self.temps["B"]
        return f"T:{t:.2f} /{tt:.2f} B:{b:.2f} /{bt:.2f} @:0 B@:0"

    def _execute(self, command: str) -> None:
        words = command.split(None, 1)
        code = words[0].upper() if words else ""
        if not code or code[0] not in "GMT":  # a fragment a flush left behind: refused, not run
            self._say(f'echo:Unknown command: "{command}"')
            return self._ok()
        self.executed.append(command)
        params = {k: float(v) for k, v in _PARAM.findall(command.upper()[len(code):])}
        if self._busy_next_s:
            seconds, self._busy_next_s = self._busy_next_s, 0.0
            self._wait(seconds, lambda: "echo:busy: processing")
        if code in ("G0", "G1"):
            for axis in self.position:
                if axis in params:
                    self.position[axis] = params[axis] + (self.position[axis] if self.relative else 0.0)
            if self.move_s:
                self._wait(self.move_s, None)
        elif code == "G28":
            self.position.update({a: 0.0 for a in "XYZ"})
        elif code == "G90":
            self.relative = False
        elif code == "G91":
            self.relative = True
        elif code == "G92":
            self.position.update({a: params[a] for a in self.position if a in params})
        elif code == "G4":
            self._wait(params.get("P", 0.0) / 1000 + params.get("S", 0.0), lambda: "echo:busy: processing")
        elif code == "M110":
            self.last_n = int(params.get("N", self.last_n))
        elif code == "M105":
            return self._ok(self._temp_report())
        elif code == "M114":
            p = self.position
            self._say(f"X:{p['X']:.2f} Y:{p['Y']:.2f} Z:{p['Z']:.2f} E:{p['E']:.2f} Count X:0 Y:0 Z:0")
        elif code == "M115":
            self._say(f"FIRMWARE_NAME:{FIRMWARE_NAME} SOURCE_CODE_URL:github.com/MarlinFirmware/Marlin "
                      f"PROTOCOL_VERSION:1.0 MACHINE_TYPE:Simulated EXTRUDER_COUNT:1 UUID:00000000-0000-0000-0000-edge")
            for cap, on in (("SERIAL_XON_XOFF", False), ("EEPROM", True), ("AUTOREPORT_TEMP", self.autoreport),
                            ("ADVANCED_OK", self.advanced_ok), ("EMERGENCY_PARSER", self.emergency_parser),
                            ("HOST_ACTION_COMMANDS", True), ("AUTOREPORT_POS", False)):
                self._say(f"Cap:{cap}:{int(on)}")
        elif code == "M155":
            self.autoreport_s = params.get("S", 1.0) if self.autoreport else 0.0
        elif code in ("M104", "M140", "M109", "M190"):
            heater = self.temps["T" if code in ("M104", "M109") else "B"]
            heater[1] = params.get("S", params.get("R", 0.0))
            if code in ("M109", "M190"):
                self._wait(600.0, lambda: self._temp_report() + " W:?", until=lambda: abs(heater[0] - heater[1]) < 1)
        elif code == "M112":
            self.last_m112_at = time.monotonic()
            return self._halt("")
        if command in self.lose_ok_after:
            self.lose_ok_after.discard(command)
            return
        self._ok()

    def _wait(self, seconds: float, keepalive, until=None) -> None:
        """A command that takes time (a busy period, a dwell, heating): keepalive lines meanwhile;
        M108 cancels the wait as Marlin's emergency parser does."""
        end = time.monotonic() + seconds
        next_say = time.monotonic() + (1.0 if until else self.keepalive_s)
        self._lock.release()  # the wire and the controls go on while the firmware waits
        try:
            while self._running and self.plugged and not self.halted and time.monotonic() < end:
                if until is not None:
                    self._idle()
                    if until():
                        return
                if keepalive is not None and time.monotonic() >= next_say:
                    next_say += 1.0 if until else self.keepalive_s
                    self._say(keepalive())
                with self._ring_cond:
                    if b"M108" in self._ring:
                        return
                time.sleep(min(0.01, max(0.0, end - time.monotonic())))
        finally:
            self._lock.acquire()

    # -- the transmit side ----------------------------------------------------------------------
    def _say(self, line: str) -> None:
        self._write(line.encode("ascii", "replace") + b"\n")

    def _write(self, data: bytes) -> None:
        if time.monotonic() < self._silent_until:
            return
        with self._write_lock:
            self._tx_clock = self._throttle(self._tx_clock, len(data))
            master = self._master
            if master is None:
                return
            try:
                os.write(master, data)
            except OSError:
                pass  # unplugged meanwhile: what the printer said is lost, as on a pulled cable
