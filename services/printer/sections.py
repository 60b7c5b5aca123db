"""The printer's config section, [printer], with its defaults and the checks the schema
alone cannot make (a port when enabled outside the simulator, a window of "auto" or a
number). Off by default: a device without a printer has nothing to show.

Not responsible for: using the values (worker.py).
"""

from __future__ import annotations

from edge.config import Key, Section

BAUDS = (9600, 19200, 38400, 57600, 115200, 230400, 250000, 500000, 1000000)
MAX_WINDOW = 16


def check_printer(config, problems: list[str], warnings: list[str]) -> None:
    cfg = config["printer"]
    window = str(cfg.window).strip().lower()
    if window != "auto" and not (window.isdigit() and 1 <= int(window) <= MAX_WINDOW):
        problems.append(f"[printer] window: {cfg.window!r} is neither \"auto\" nor a number of lines from 1 to "
                        f"{MAX_WINDOW}; for example: window = \"auto\"")
    if cfg.enabled and not cfg.port and config.profile != "sim":
        problems.append("[printer] port: the printer is enabled but no serial port is set; for example: "
                        "port = \"/dev/serial/by-id/usb-1a86_USB_Serial-if00-port0\" (see ls /dev/serial/by-id/)")


PRINTER_SECTION = Section("printer", (
    Key("enabled", bool, False, "drive a 3D printer (Marlin G-code over USB serial)"),
    Key("port", str, "", "serial port: a path (/dev/serial/by-id/... survives replugs) or a pyserial URL "
        "(socket://host:port); empty with `edge run --sim`: the simulated printer",
        example="/dev/serial/by-id/usb-1a86_USB_Serial-if00-port0"),
    Key("baud", int, 115200, "the firmware's BAUDRATE", choices=BAUDS),
    Key("jobs_dir", str, "", "where G-code files to print are kept (default: <state dir>/printer-jobs)",
        example="/var/lib/edge/printer-jobs"),
    Key("window", str, "auto", "lines in flight: \"auto\" (one, or more when the firmware says ADVANCED_OK) or a "
        f"fixed 1..{MAX_WINDOW}", example="auto"),
    Key("rx_buffer", int, 128, "the firmware's receive buffer in bytes (Marlin RX_BUFFER_SIZE); unacknowledged "
        "bytes never exceed it", min=16, max=65536),
    Key("timeout_s", float, 10.0, "silence after which an M105 asks the printer for an answer (busy messages "
        "extend it)", min=0.2, max=600),
    Key("pause_script", str, "M400\nG91\nG1 Z5 F600\nG90", "G-code run when a job pauses (one command per line)"),
    Key("resume_script", str, "G91\nG1 Z-5 F600\nG90", "G-code run before a paused job resumes"),
    Key("cancel_script", str, "M104 S0\nM140 S0\nM107\nM84", "G-code run when a job is cancelled: heaters, "
        "fan and motors off"),
    Key("checkpoint_interval_s", float, 10.0, "how often a printing job's position is saved (a restart resumes "
        "from the last one)", min=0.5, max=3600),
), "a 3D printer on a serial port", checks=(check_printer,))
