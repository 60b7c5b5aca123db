"""The printer's commands, the same from Home Assistant's buttons, the CLI (through the
control socket) and other workers: print a file from the job folder, pause, resume, cancel,
emergency stop, send one G-code line, status.

Each is validated by the command registry (edge/commands.py) against the fields declared
here, and again by the worker (an unknown file, a printer that is offline or busy is refused
with the reason). The emergency stop is authorized for anyone who can send commands at all:
stopping a printer must never wait for a permission. None of them is `dangerous`: they do
not open the door or change who is known, and printing is what the printer is for.

Not responsible for: what the commands do (worker.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge.commands import Command
from edge.worker import WorkerContext

if TYPE_CHECKING:
    from services.printer.worker import PrinterWorker

PRINT, PAUSE, RESUME, CANCEL, EMERGENCY_STOP, SEND, STATUS = (
    "printer_print", "printer_pause", "printer_resume", "printer_cancel", "printer_emergency_stop",
    "printer_send", "printer_status")
NAMES = (PRINT, PAUSE, RESUME, CANCEL, EMERGENCY_STOP, SEND, STATUS)


def register(ctx: WorkerContext, worker: "PrinterWorker") -> None:
    ctx.commands.register(Command(PRINT, worker.print_file, fields={"file": str}))
    ctx.commands.register(Command(PAUSE, worker.pause, fields={}))
    ctx.commands.register(Command(RESUME, worker.resume, fields={}))
    ctx.commands.register(Command(CANCEL, worker.cancel, fields={}))
    ctx.commands.register(Command(EMERGENCY_STOP, worker.emergency_stop, fields={}))
    ctx.commands.register(Command(SEND, worker.send_gcode, fields={"gcode": str}, optional={"timeout_s": float}))
    ctx.commands.register(Command(STATUS, worker.status, fields={}))
