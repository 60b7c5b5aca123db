"""Reads the device's vital signs from /sys and /proc (roots injectable, so tests feed
files recorded on a Pi). A source that does not exist on this machine is skipped, not an
error: a laptop has no firmware throttling flags, a container may have no thermal zone.

The Raspberry Pi paths are written to the documented kernel/firmware interfaces and are
untested on hardware here (tested with recorded values only).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

# Bits of the firmware's get_throttled value (Raspberry Pi documentation, "vcgencmd
# get_throttled"): low bits are "now", bits 16-19 are "has occurred since boot".
THROTTLE_BITS = {
    0: "under_voltage",
    1: "arm_freq_capped",
    2: "throttled",
    3: "soft_temp_limit",
    16: "under_voltage_occurred",
    17: "arm_freq_capped_occurred",
    18: "throttled_occurred",
    19: "soft_temp_limit_occurred",
}
# Newer Pi kernels expose the same value in sysfs, so no vcgencmd subprocess is needed.
THROTTLED_PATHS = ("devices/platform/soc/soc:firmware/get_throttled",)


def decode_throttled(value: int) -> dict[str, bool]:
    return {name: bool(value >> bit & 1) for bit, name in THROTTLE_BITS.items()}


def parse_throttled(text: str) -> int:
    """Accepts sysfs's bare hex ("50005") and vcgencmd's "throttled=0x50005"."""
    text = text.strip().split("=")[-1]
    return int(text, 16)


@dataclass
class Roots:
    sys: Path = Path("/sys")
    proc: Path = Path("/proc")


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def read_all(roots: Roots, disk_path: Path, pid: int | None = None) -> dict:
    out: dict = {}
    temp = _read(roots.sys / "class/thermal/thermal_zone0/temp")
    if temp and temp.strip().lstrip("-").isdigit():
        out["cpu_temp_c"] = round(int(temp) / 1000, 1)
    for rel in THROTTLED_PATHS:
        raw = _read(roots.sys / rel)
        if raw:
            value = parse_throttled(raw)
            out["throttled_raw"] = f"0x{value:x}"
            out.update(decode_throttled(value))
            break
    loadavg = _read(roots.proc / "loadavg")
    if loadavg:
        one, five, fifteen = loadavg.split()[:3]
        out.update(load_1m=float(one), load_5m=float(five), load_15m=float(fifteen))
    meminfo = _read(roots.proc / "meminfo")
    if meminfo:
        fields = {line.split(":")[0]: int(line.split()[1]) for line in meminfo.splitlines() if line.count(":") == 1
                  and len(line.split()) >= 2 and line.split()[1].isdigit()}
        if "MemTotal" in fields and "MemAvailable" in fields:
            out["memory_used_pct"] = round(100 * (1 - fields["MemAvailable"] / fields["MemTotal"]), 1)
            out["memory_available_mb"] = round(fields["MemAvailable"] / 1024, 1)
    uptime = _read(roots.proc / "uptime")
    if uptime:
        out["uptime_s"] = int(float(uptime.split()[0]))
    try:
        usage = shutil.disk_usage(disk_path)
        out["disk_used_pct"] = round(100 * usage.used / usage.total, 1)
        out["disk_free_mb"] = round(usage.free / 2**20, 1)
    except OSError:
        pass
    own = roots.proc / str(pid or os.getpid())
    status = _read(own / "status")
    if status:
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                out["rss_mb"] = round(int(line.split()[1]) / 1024, 1)
    io = _read(own / "io")
    if io:
        fields = dict(line.split(": ") for line in io.splitlines() if ": " in line)
        if "wchar" in fields:
            out["bytes_written"] = int(fields["wchar"])
    return out
