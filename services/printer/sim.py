"""The printer's simulator controls, offered only under `edge run --sim`:
`edge sim printer ACTION [VALUE]` unplugs, replugs, resets or halts the simulated Marlin
printer, injects protocol faults into it, throttles it to a baud rate, or shows its status.

The simulated printer itself is started here when the printer is enabled with no port:
kept in `ctx.lasting`, so it outlives restarts of the worker as a real printer would.

Not responsible for: the fake firmware (hardware/printer/simulated_marlin.py), the command
line (cli.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge.worker import WorkerContext
from hardware.printer import SimulatedMarlin

if TYPE_CHECKING:
    from services.printer.worker import PrinterWorker

# action -> (what VALUE is, help)
ACTIONS = {
    "status": (None, "what the simulated printer is doing"),
    "unplug": (None, "pull the USB cable (the board keeps its heaters)"),
    "replug": (None, "plug it back in"),
    "reset": (None, "the firmware restarts (heaters off, banner)"),
    "thermal-runaway": (None, "the firmware halts with a thermal runaway error"),
    "busy": ("SECONDS", "the next command takes this long, with echo:busy keepalives"),
    "silence": ("SECONDS", "no replies for this long"),
    "resend": ("LINE", "ask for this line number again when it arrives"),
    "resend-random": ("PROBABILITY", "ask for lines again at random (0..1)"),
    "checksum-errors": ("PROBABILITY", "corrupt received lines at random (0..1)"),
    "no-ok-after-resend": ("on|off", "leave out the ok after a resend request"),
    "overrun": ("BYTES", "a receive buffer this small (Marlin's is 128): the host's extra bytes are dropped"),
    "baud": ("BAUD|off", "throttle the simulated wire to this speed"),
    "clear": (None, "remove every injected fault"),
}


def start_simulated(ctx: WorkerContext) -> SimulatedMarlin:
    """The simulator's printer, on a pty with a stable link in the state directory."""
    link = (ctx.state_dir / "printer-sim" / "ttyMarlin") if ctx.state_dir else None
    return ctx.lasting.get("printer.simulated", lambda: SimulatedMarlin(link, reset_on_open=False).start(),
                           close=lambda fake: fake.close())


class PrinterSimControls:
    def __init__(self, worker: "PrinterWorker"):
        self._worker = worker

    def register(self, ctx: WorkerContext) -> None:
        if ctx.sim is None:
            return
        ctx.register_sim("printer", self.handle)
        if self._worker.simulated is not None:
            ctx.announce(f"printer: simulated Marlin on {self._worker.simulated.path}; `edge printer status`, "
                         f"`edge sim printer unplug`")

    def handle(self, args: dict) -> dict:
        fake = self._worker.simulated
        if fake is None:
            raise ValueError("the printer is not simulated ([printer] port is set, or the printer is disabled); "
                             "enable it with an empty port under `edge run --sim`")
        action, value = args.get("action"), args.get("value")
        if action not in ACTIONS:
            raise ValueError(f"unknown printer action {action!r}; one of {', '.join(ACTIONS)}")
        needs = ACTIONS[action][0]
        if needs and value in (None, ""):
            raise ValueError(f"edge sim printer {action} needs {needs}")
        try:
            self._apply(fake, action, value)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"edge sim printer {action}: {needs} expected, got {value!r} ({exc})") from None
        return {"action": action, **fake.status()}

    @staticmethod
    def _apply(fake: SimulatedMarlin, action: str, value) -> None:
        if action == "unplug":
            fake.unplug()
        elif action == "replug":
            fake.replug()
        elif action == "reset":
            fake.reset()
        elif action == "thermal-runaway":
            fake.thermal_runaway()
        elif action == "busy":
            fake.busy(_bounded(value, 0, 600))
        elif action == "silence":
            fake.silence(_bounded(value, 0, 600))
        elif action == "resend":
            fake.resend_lines.add(int(value))
        elif action == "resend-random":
            fake.resend_probability = _bounded(value, 0, 1)
        elif action == "checksum-errors":
            fake.checksum_error_probability = _bounded(value, 0, 1)
        elif action == "no-ok-after-resend":
            if value not in ("on", "off"):
                raise ValueError("on or off")
            fake.ok_after_resend = value == "off"
        elif action == "overrun":
            fake.rx_buffer = int(_bounded(value, 8, 65536))
        elif action == "baud":
            fake.set_baud(None if value == "off" else int(_bounded(value, 300, 4_000_000)))
        elif action == "clear":
            fake.clear_faults()
            fake.rx_buffer = 128


def _bounded(value, low: float, high: float) -> float:
    number = float(value)
    if not low <= number <= high:
        raise ValueError(f"must be from {low:g} to {high:g}")
    return number
