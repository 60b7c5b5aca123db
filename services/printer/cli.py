"""`edge printer ...` (through the `edge.cli` entry point) and `edge sim printer ...`
(through `edge.sim`).

`status`, `pause`, `resume`, `cancel`, `send` and `print` talk to the running device's
printer worker over its control socket (control.py), so they get the same validation and
refusals as Home Assistant; `print FILE` first copies the file into the job folder.
`jobs` reads the store directly and works while the device is stopped.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

from edge.cli_device import CliDevice
from services.printer import commands
from services.printer.control import SOCKET_NAME, request
from services.printer.jobs import JOB_SUFFIXES, OPEN, JobStore
from services.printer.sim import ACTIONS

WAIT_POLL_S = 0.5


def _call(device: CliDevice, name: str, payload: dict | None = None, timeout: float = 30.0) -> dict:
    """The command's result, or exit with why it was refused or why nobody answered."""
    path = device.state_dir / SOCKET_NAME
    try:
        reply = request(path, name, payload, timeout)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"edge printer: no printer worker answers on {path} ({getattr(exc, 'strerror', None) or exc}); "
                         f"is the device running (`edge status`) with [printer] enabled = true? "
                         f"({device.describe()})") from None
    if not reply.get("ok"):
        raise SystemExit(f"edge printer: {reply.get('error', 'refused')}")
    return reply["result"]


def _jobs_dir(device: CliDevice) -> Path:
    cfg = device.config["printer"]
    return Path(cfg.jobs_dir) if cfg.jobs_dir else device.state_dir / "printer-jobs"


def _fmt_time(seconds) -> str:
    seconds = int(seconds or 0)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _temps_line(link: dict | None) -> str:
    temps = (link or {}).get("temps") or {}
    parts = []
    for key, label in (("T", "nozzle"), ("B", "bed")):
        if key in temps:
            actual, target = temps[key]
            parts.append(f"{label} {actual:.1f}/{target or 0:.0f} °C")
    return ", ".join(parts) or "unknown"


def cmd_status(args) -> int:
    status = _call(CliDevice(args), commands.STATUS)
    link, job = status.get("link"), status["job"]
    print(f"state:       {status['state']}")
    print(f"port:        {status['port']}{' (simulated)' if status['simulated'] else ''}")
    if link:
        firmware = link["firmware"]
        print(f"firmware:    {firmware['name']} ({', '.join(firmware['capabilities']) or 'no capabilities'})")
        print(f"temperature: {_temps_line(link)}")
        counters = link["counters"]
        print(f"link:        window {link['window']['lines']} line(s)/{link['window']['bytes']} bytes, "
              f"{counters['lines_sent']} lines sent, {counters['resends']} resends, {counters['timeouts']} timeouts")
    if job["state"] != "none":
        print(f"job:         {job['file']} {job['state']} {job['progress']:.1f}% (line {job['line']} of "
              f"{job['total_lines']} commands), {_fmt_time(job['elapsed_s'])} elapsed, "
              f"{_fmt_time(job['remaining_s'])} left")
    if status.get("last_error"):
        print(f"last error:  {status['last_error']}")
    return 0


def _bar(job: dict, width: int = 30) -> str:
    filled = int(width * job["progress"] / 100)
    return (f"{job['file']} [{'#' * filled}{'.' * (width - filled)}] {job['progress']:5.1f}% "
            f"line {job['line']}, {_fmt_time(job['elapsed_s'])} elapsed, {_fmt_time(job['remaining_s'])} left")


def cmd_print(args) -> int:
    device = CliDevice(args)
    source = Path(args.file).expanduser()
    if not source.is_file():
        print(f"edge printer print: no such file {source}", file=sys.stderr)
        return 2
    if source.suffix.lower() not in JOB_SUFFIXES:
        print(f"edge printer print: {source.name} is not a G-code file ({', '.join(JOB_SUFFIXES)})", file=sys.stderr)
        return 2
    folder = _jobs_dir(device)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if source.resolve() != (folder / source.name).resolve():
            shutil.copyfile(source, folder / (source.name + ".part"))
            (folder / (source.name + ".part")).replace(folder / source.name)  # never half a file in the folder
    except OSError as exc:
        print(f"edge printer print: cannot copy into the job folder {folder} ({exc.strerror}); run as the "
              f"device's user (sudo -u edge ...)", file=sys.stderr)
        return 1
    job = _call(device, commands.PRINT, {"file": source.name})
    print(f"printing {job['file']} ({job['total_lines']} commands), job {job['id']}")
    if not args.wait:
        return 0
    stream, tty = sys.stderr, sys.stderr.isatty()
    last = None
    while True:
        status = _call(device, commands.STATUS)
        job = status["job"]
        line = _bar(job)
        if line != last:
            stream.write(("\r\033[K" + line) if tty else line + "\n")
            stream.flush()
            last = line
        if job["id"] is not None and job["state"] not in ("printing", "paused"):
            break
        time.sleep(WAIT_POLL_S)
    if tty:
        stream.write("\n")
    print(f"job {job['id']} {job['state']}{': ' + job['reason'] if job.get('reason') else ''}")
    return 0 if job["state"] == "finished" else 1


def _simple(name: str, verb: str):
    def cmd(args) -> int:
        job = _call(CliDevice(args), name)
        print(f"{verb} {job['file']} (line {job['line']} of {job['total_lines']} commands): {job['state']}")
        return 0
    return cmd


def cmd_send(args) -> int:
    result = _call(CliDevice(args), commands.SEND, {"gcode": args.gcode, "timeout_s": float(args.timeout)},
                   timeout=args.timeout + 5)
    for line in result["replies"]:
        print(line)
    print("ok")
    return 0


def cmd_emergency_stop(args) -> int:
    result = _call(CliDevice(args), commands.EMERGENCY_STOP)
    print(f"M112 sent ({'acted on at once: EMERGENCY_PARSER' if result['emergency_parser'] else 'run next'}); "
          f"the printer must be reset before it prints again")
    return 0


def cmd_jobs(args) -> int:
    device = CliDevice(args)
    store = device.open_store()
    try:
        jobs = JobStore(store).recent(args.limit)
    finally:
        store.close()
    if not jobs:
        print(f"no print jobs yet on {device.describe()}; start one with `edge printer print FILE`")
        return 0
    print(f"{'ID':>4}  {'STATE':<11}  {'LINE':>13}  {'STARTED':<16}  FILE")
    for job in jobs:
        started = time.strftime("%Y-%m-%d %H:%M", time.localtime(job.started_wall))
        note = f"  ({job.reason})" if job.reason and job.state != "finished" else ""
        print(f"{job.id:>4}  {job.state:<11}  {f'{job.line}/{job.total_lines}':>13}  {started:<16}  {job.file}{note}")
    waiting = [j for j in jobs if j.state in OPEN and j.state == "interrupted"]
    if waiting:
        print(f"job {waiting[0].id} was interrupted at line {waiting[0].line}: `edge printer resume` continues it, "
              f"`edge printer cancel` drops it")
    return 0


def _sub(sub, add_device_args, name: str, func, text: str):
    p = sub.add_parser(name, help=text, description=text)
    add_device_args(p)
    p.set_defaults(func=func)
    return p


def register_printer(subparsers, add_device_args) -> None:
    p = subparsers.add_parser("printer", help="the 3D printer: status, print, pause, resume, cancel, send, jobs",
                              description="the 3D printer: status, print, pause, resume, cancel, send, jobs")
    sub = p.add_subparsers(dest="printer_command", required=True)
    _sub(sub, add_device_args, "status", cmd_status, "the printer's state, temperatures and job")
    printing = _sub(sub, add_device_args, "print", cmd_print, "copy a G-code file into the job folder and print it")
    printing.add_argument("file", metavar="FILE", help="a .gcode file")
    printing.add_argument("--wait", action="store_true", help="show a progress bar until the job ends; exit 0 "
                          "only when it finished")
    _sub(sub, add_device_args, "pause", _simple(commands.PAUSE, "paused"), "pause the job (and park the head)")
    _sub(sub, add_device_args, "resume", _simple(commands.RESUME, "resumed"),
         "resume a paused job, or an interrupted one from its checkpoint")
    _sub(sub, add_device_args, "cancel", _simple(commands.CANCEL, "cancelled"),
         "cancel the job (heaters and motors off), or drop an interrupted one")
    send = _sub(sub, add_device_args, "send", cmd_send, "send one G-code command and show the printer's replies")
    send.add_argument("gcode", metavar="GCODE", help="e.g. M114, or \"G28 X Y\"")
    send.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS", help="wait this long for the ok")
    _sub(sub, add_device_args, "emergency-stop", cmd_emergency_stop, "M112: halt the printer at once")
    jobs = _sub(sub, add_device_args, "jobs", cmd_jobs, "recent print jobs from the store")
    jobs.add_argument("--limit", type=int, default=20, help="how many (newest first)")


def cmd_sim_printer(args) -> int:
    payload = {"action": args.action}
    if args.value is not None:
        payload["value"] = args.value
    return CliDevice(args).post_sim("printer", payload)


def register_sim(sub, add_device_args) -> None:
    text = "the simulated printer: " + ", ".join(
        f"{name}{' ' + value if value else ''}" for name, (value, _) in ACTIONS.items())
    p = sub.add_parser("printer", help=text, description=text)
    add_device_args(p)
    p.set_defaults(func=cmd_sim_printer, sim=True)
    p.add_argument("action", choices=list(ACTIONS), help="; ".join(f"{n}: {h}" for n, (_, h) in ACTIONS.items()))
    p.add_argument("value", nargs="?", help="the action's value, where it takes one")
