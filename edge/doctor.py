"""`edge doctor`: a smoke test of an installed device that a person runs when something is
wrong. The runtime's own checks (config valid, state directory writable, disk space, clock
synchronized) and every enabled worker's (`Worker.doctor(config)`: its hardware, its
outside link), each failure with the fix. Exit status 0 when nothing failed (warnings
allowed), 1 otherwise; `--json` prints one object per check for scripts.

Not responsible for: fixing anything, or watching a running device (that is /health).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable

from edge.config import ConfigError

OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"
DISK_WARN_BYTES, DISK_FAIL_BYTES = 200 * 2**20, 20 * 2**20
TIME_ERROR = 5  # ntp_adjtime(3)'s answer while the kernel clock is not synchronized


@dataclass(frozen=True)
class Check:
    component: str
    name: str
    status: str       # ok / warn / fail / skip
    detail: str
    fix: str = ""     # what to do, for warn and fail


def guarded(component: str, name: str, probe: Callable[[], Check]) -> Check:
    """Run one probe; a probe that raises is a failed check that names the error, never a
    traceback that hides the checks after it."""
    try:
        return probe()
    except Exception as exc:  # reported as this check's failure, with the error's own words
        return Check(component, name, FAIL, f"the check itself failed: {type(exc).__name__}: {exc}",
                     "report this with the output of `edge doctor --json`")


def clock_synchronized(libc_path: str | None = None) -> bool | None:
    """The kernel's view (ntp_adjtime with no changes): True when NTP (systemd-timesyncd,
    chrony) has synchronized the clock, None when it cannot be asked. A Pi has no
    real-time clock: before this, timestamps and TLS certificate checks are wrong."""
    libc = ctypes.CDLL(libc_path or ctypes.util.find_library("c"), use_errno=True)
    if not hasattr(libc, "ntp_adjtime"):
        return None
    timex = ctypes.create_string_buffer(512)  # struct timex is ~208 bytes; modes = 0 reads only
    state = libc.ntp_adjtime(timex)
    return None if state < 0 else state != TIME_ERROR


def _state_dir(state_dir: Path) -> Check:
    if not state_dir.exists():
        return Check("runtime", "state directory", WARN, f"{state_dir} does not exist yet",
                     "it is created at the first `edge run`; or set EDGE_STATE_DIR")
    try:
        with tempfile.NamedTemporaryFile(dir=state_dir, prefix=".doctor-"):
            pass
    except OSError as exc:
        return Check("runtime", "state directory", FAIL, f"{state_dir} is not writable ({exc.strerror})",
                     f"run as the device's user (sudo -u edge edge doctor) or fix the owner of {state_dir}; "
                     f"a read-only SD card needs remounting read-write")
    return Check("runtime", "state directory", OK, f"{state_dir} is writable")


def _disk(state_dir: Path) -> Check:
    where = state_dir if state_dir.exists() else Path(os.path.abspath(os.sep))
    free = shutil.disk_usage(where).free
    text = f"{free / 2**20:.0f} MiB free under {where}"
    if free < DISK_FAIL_BYTES:
        return Check("runtime", "disk space", FAIL, text, "free space: old snapshots, journals (journalctl --vacuum-size=50M)")
    if free < DISK_WARN_BYTES:
        return Check("runtime", "disk space", WARN, text, "free some space before events stop being stored")
    return Check("runtime", "disk space", OK, text)


def _clock() -> Check:
    synced = clock_synchronized()
    if synced is None:
        return Check("runtime", "clock", SKIP, "cannot ask the kernel whether the clock is synchronized")
    if not synced:
        return Check("runtime", "clock", WARN, "the system clock is not synchronized (no NTP yet)",
                     "check the network and `timedatectl timesync-status`; times shown before sync are wrong")
    return Check("runtime", "clock", OK, "synchronized by NTP")


def collect(device) -> list[Check]:
    """Every check for `device` (an edge.cli_device.CliDevice)."""
    try:
        config, classes = device.load()
    except ConfigError as exc:
        checks = [Check("runtime", "config", FAIL, f"{exc.source}: {problem}", "fix it; `edge config check` "
                        f"lists every problem") for problem in exc.problems]
        config, classes = None, []
    else:
        checks = [Check("runtime", "config", OK, f"{config.source} is valid (profile {config.profile})")]
        checks += [Check("runtime", "config", WARN, warning, "see the warning") for warning in config.warnings]
    checks.append(guarded("runtime", "state directory", lambda: _state_dir(device.state_dir)))
    checks.append(guarded("runtime", "disk space", lambda: _disk(device.state_dir)))
    checks.append(guarded("runtime", "clock", _clock))
    for cls in classes:
        if config is None or not cls.enabled(config):
            continue
        checks.extend(_worker_checks(cls, config))
    return checks


def _worker_checks(cls, config) -> Iterable[Check]:
    try:
        return list(cls.doctor(config))
    except Exception as exc:  # one worker's broken checks must not hide the others'
        return [Check(cls.name, "checks", FAIL, f"its checks failed: {type(exc).__name__}: {exc}",
                      "report this with the output of `edge doctor --json`")]


def run_doctor(device, as_json: bool = False, out=sys.stdout) -> int:
    checks = collect(device)
    if as_json:
        for check in checks:
            print(json.dumps(asdict(check)), file=out)
    else:
        width = max(len(f"{c.component} {c.name}") for c in checks)
        for c in checks:
            print(f"{c.status.upper():<4}  {f'{c.component} {c.name}':<{width}}  {c.detail}", file=out)
            if c.fix and c.status in (WARN, FAIL):
                print(f"{'':<4}  {'':<{width}}  fix: {c.fix}", file=out)
        failed = sum(c.status == FAIL for c in checks)
        print(f"{len(checks)} checks: {failed} failed, {sum(c.status == WARN for c in checks)} warnings", file=out)
    return 1 if any(c.status == FAIL for c in checks) else 0
