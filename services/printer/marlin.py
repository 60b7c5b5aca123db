"""The Marlin serial protocol as pure functions: framing of host lines (`N<n> <cmd>*<cs>`,
comments stripped, the firmware's line-length limit) and classification of every line the
firmware sends (ok with or without ADVANCED_OK fields, resend requests, busy and wait
keepalives, temperature and position reports, host actions, capabilities, errors and the
fatal ones that mean the firmware has stopped).

No I/O and no state: the sender (sender.py) decides what a reply means for the lines in
flight; this module only says what a line is. Reply shapes are Marlin's (and what OctoPrint's
comm.py accepts from Marlin forks); the table-driven tests in tests/printer/test_marlin.py
use real reply lines.
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass, field
from functools import reduce

# Marlin's MAX_CMD_SIZE is 96 bytes including the terminating NUL: a framed line (number,
# command, checksum) must fit in 95 characters or the firmware truncates it.
MAX_LINE_BYTES = 95

OK, RESEND, BUSY, WAIT, TEMPERATURE, POSITION, ACTION, FATAL, ERROR, START, CAPABILITY, FIRMWARE, ECHO, OTHER = (
    "ok", "resend", "busy", "wait", "temperature", "position", "action", "fatal", "error", "start", "capability",
    "firmware", "echo", "other")


class LineTooLong(ValueError):
    """A command that would not fit the firmware's line buffer once framed."""


def strip_comment(line: str) -> str:
    """The command of a G-code line: `;` comments and surrounding whitespace removed (an
    escaped `\\;` stays, as OctoPrint's strip_comment keeps it). Empty for a comment or
    blank line."""
    if ";" in line:
        escaped = False
        for i, ch in enumerate(line):
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == ";":
                line = line[:i]
                break
    return line.strip()


def checksum(payload: bytes) -> int:
    """Marlin's (and RepRap's) line checksum: the XOR of every byte before the `*`."""
    return reduce(operator.xor, payload, 0)


def frame(number: int, command: str, max_bytes: int = MAX_LINE_BYTES) -> bytes:
    """`N<number> <command>*<checksum>\\n`; LineTooLong when it would not fit the firmware's
    buffer (rejected before sending: a truncated line would fail its checksum forever)."""
    payload = f"N{number} {command}".encode("ascii", "replace")
    line = payload + b"*%d" % checksum(payload)
    if len(line) > max_bytes:
        raise LineTooLong(f"{command[:40]!r}... is {len(line)} bytes framed, more than the firmware's "
                          f"{max_bytes}; split or shorten the command")
    return line + b"\n"


_SET_LINE_NUMBER = re.compile(r"^M110(?:\s.*?)?\bN(\d+)", re.IGNORECASE)


def line_number_set_by(command: str) -> int | None:
    """The line number `M110 N<n>` gives the firmware's counter (the next line it expects is
    n + 1), or None for any other command: a job or a person may send one."""
    m = _SET_LINE_NUMBER.match(command.strip())
    return int(m.group(1)) if m else None


def check_command(command: str, max_bytes: int = MAX_LINE_BYTES) -> str:
    """The stripped command, or ValueError with why it cannot be sent (used for commands
    typed by a person and for every line of a job before it starts)."""
    stripped = strip_comment(command)
    if not stripped:
        raise ValueError("no command left once comments and whitespace are removed")
    if "\n" in stripped or "\r" in stripped:
        raise ValueError("one command per line: it contains a line break")
    if not stripped.isascii():
        raise ValueError("G-code is ASCII; the command contains other characters")
    # The longest frame this command can get: line numbers up to 7 digits, checksum 3.
    longest = len("N9999999 ") + len(stripped) + len("*255")
    if longest > max_bytes:
        raise LineTooLong(f"the command is {len(stripped)} characters; framed it can reach {longest} bytes, more "
                          f"than the firmware's {max_bytes}")
    return stripped


@dataclass(frozen=True)
class Reply:
    """One classified line from the firmware. `line`: the line number of an `ok N..` or a
    resend request; `planner_free` / `buffer_free`: ADVANCED_OK's P and B; `temps`: heater
    -> (actual, target or None); `name` / `value`: a host action and its argument, or a
    capability and its value; `message`: the text of an error, echo or busy line."""

    kind: str
    raw: str
    line: int | None = None
    planner_free: int | None = None
    buffer_free: int | None = None
    temps: dict[str, tuple[float, float | None]] = field(default_factory=dict)
    position: dict[str, float] = field(default_factory=dict)
    name: str = ""
    value: str = ""
    message: str = ""
    fields: dict[str, str] = field(default_factory=dict)


# " T:21.56 /0.00 B:21.34 /0.00 @:0 B@:0", "T0:210.0 /210.0 T1:25.0 /0.0", "T:201.5 E:0 W:?"
_TEMP = re.compile(r"(?<![A-Za-z@])([TBCP]\d*):\s*(-?\d+(?:\.\d+)?)(?:\s*/\s*(-?\d+(?:\.\d+)?))?")
_TEMP_LINE = re.compile(r"^\s*(?:ok\s+)?T\d*:\s*-?\d")
_ADVANCED_OK = re.compile(r"^ok\s+(?:N(\d+)\s+)?P(\d+)\s+B(\d+)")
_OK_LINE = re.compile(r"^ok\s+N(\d+)\b")
_RESEND = re.compile(r"^(?:resend|rs)\s*:?\s*N?\s*(\d+)", re.IGNORECASE)
_POSITION = re.compile(r"\b([XYZE]):\s*(-?\d+(?:\.\d+)?)")
_FIRMWARE_FIELD = re.compile(r"([A-Z_]+):(.*?)(?=\s+[A-Z_]+:|$)")

# Errors after which Marlin has stopped (kill(), a thermal protection): the print is lost and
# the board needs a reset. OctoPrint's comm.py treats the same texts as fatal.
_FATAL = ("kill() called", "printer halted", "thermal runaway", "maxtemp", "mintemp", "heating failed",
          "system stopped", "printer stopped", "emergency stop")
# Errors that belong to a resend request that follows them (not fatal, not the job's fault).
_COMMUNICATION = ("checksum mismatch", "line number is not last line number+1", "no checksum with line number",
                  "no line number with checksum", "expected line", "format error", "wrong checksum",
                  "missing checksum", "line number is not", "expected checksum")


def _temps(text: str) -> dict[str, tuple[float, float | None]]:
    temps = {}
    for name, actual, target in _TEMP.findall(text):
        temps[name] = (float(actual), float(target) if target else None)
    return temps


def parse_reply(raw: str) -> Reply:
    """Classify one line (its line ending removed) from the firmware."""
    line = raw.strip().strip("\x00")
    lower = line.lower()
    if lower.startswith("ok"):
        m = _ADVANCED_OK.match(line)
        if m:
            return Reply(OK, raw, line=int(m.group(1)) if m.group(1) else None, planner_free=int(m.group(2)),
                         buffer_free=int(m.group(3)))
        m = _OK_LINE.match(line)
        return Reply(OK, raw, line=int(m.group(1)) if m else None, temps=_temps(line) if "T:" in line else {})
    m = _RESEND.match(line)
    if m:
        return Reply(RESEND, raw, line=int(m.group(1)))
    if lower.startswith("//action:"):
        action, _, argument = line[len("//action:"):].strip().partition(" ")
        return Reply(ACTION, raw, name=action.lower(), value=argument.strip())
    if lower.startswith("error:") or lower.startswith("!!"):
        message = line.split(":", 1)[1].strip() if lower.startswith("error:") else line[2:].strip()
        if any(text in message.lower() for text in _FATAL):
            return Reply(FATAL, raw, message=message)
        return Reply(ERROR, raw, message=message, name="communication" if any(
            text in message.lower() for text in _COMMUNICATION) else "")
    if lower.startswith("echo:busy") or lower.startswith("busy:"):
        # Whatever follows "busy", with or without its colon ("echo:busy processing" on a
        # noisy line, "echo:BUSY: ..." from a fork).
        return Reply(BUSY, raw, message=line[lower.index("busy") + 4:].lstrip(":").strip())
    if lower == "wait":
        return Reply(WAIT, raw)
    if lower == "start" or (lower.endswith("start") and any(ord(c) < 32 or ord(c) > 126 for c in lower[:-5])):
        # Boards reset when the port opens: the banner may follow bootloader noise.
        return Reply(START, raw)
    if _TEMP_LINE.match(line):
        return Reply(TEMPERATURE, raw, temps=_temps(line))
    if lower.startswith("cap:"):
        name, _, value = line[4:].partition(":")
        return Reply(CAPABILITY, raw, name=name.strip().upper(), value=value.strip())
    if line.startswith("FIRMWARE_NAME:"):
        return Reply(FIRMWARE, raw, fields={k: v.strip() for k, v in _FIRMWARE_FIELD.findall(line)})
    if line.startswith("X:") and "Y:" in line:
        return Reply(POSITION, raw, position={k: float(v) for k, v in _POSITION.findall(line.split("Count")[0])})
    if lower.startswith("echo:"):
        message = line[5:].strip()
        if any(text in message.lower() for text in _FATAL[:2]):  # some forks echo the halt instead
            return Reply(FATAL, raw, message=message)
        return Reply(ECHO, raw, message=message)
    return Reply(OTHER, raw, message=line)


@dataclass
class Firmware:
    """What M115 said: the FIRMWARE_NAME line's fields and the `Cap:` lines."""

    fields: dict[str, str] = field(default_factory=dict)
    capabilities: dict[str, bool] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.fields.get("FIRMWARE_NAME", "unknown firmware")

    def has(self, capability: str) -> bool:
        return self.capabilities.get(capability, False)

    def add(self, reply: Reply) -> None:
        if reply.kind == FIRMWARE:
            self.fields.update(reply.fields)
        elif reply.kind == CAPABILITY:
            self.capabilities[reply.name] = reply.value == "1"

    def as_dict(self) -> dict:
        return {"name": self.name, "capabilities": sorted(k for k, v in self.capabilities.items() if v)}
