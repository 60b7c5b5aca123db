"""Reads the device's vital signs from /sys and /proc (roots injectable, so tests feed
files recorded on a Pi). A source that does not exist on this machine is skipped, not an
error: a laptop has no firmware throttling flags, a container may have no thermal zone.

The Raspberry Pi paths are written to the documented kernel/firmware interfaces and are
untested on hardware here (tested with recorded values only).
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import psutil

log = logging.getLogger("edge.worker.system")

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


def ipv4_addresses() -> dict[str, list[str]]:
    """This machine's IPv4 addresses by interface (psutil: getifaddrs(3))."""
    return {name: [a.address for a in addrs if a.family == socket.AF_INET]
            for name, addrs in psutil.net_if_addrs().items()}


@dataclass
class Roots:
    sys: Path = Path("/sys")
    proc: Path = Path("/proc")
    addresses: Callable[[], dict[str, list[str]]] = field(default=ipv4_addresses)


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        return None


# Sources whose garbage was logged already: once per process, not at every sample.
_REPORTED: set[str] = set()


def _temperature(roots: Roots, disk_path: Path, own: Path) -> dict:
    temp = _read(roots.sys / "class/thermal/thermal_zone0/temp")
    return {"cpu_temp_c": round(int(temp) / 1000, 1)} if temp else {}


def _throttling(roots: Roots, disk_path: Path, own: Path) -> dict:
    for rel in THROTTLED_PATHS:
        raw = _read(roots.sys / rel)
        if raw:
            value = parse_throttled(raw)
            return {"throttled_raw": f"0x{value:x}", **decode_throttled(value)}
    return {}


def _load(roots: Roots, disk_path: Path, own: Path) -> dict:
    loadavg = _read(roots.proc / "loadavg")
    if not loadavg:
        return {}
    one, five, fifteen = loadavg.split()[:3]  # ValueError when short
    return {"load_1m": float(one), "load_5m": float(five), "load_15m": float(fifteen)}


def _memory(roots: Roots, disk_path: Path, own: Path) -> dict:
    meminfo = _read(roots.proc / "meminfo")
    if not meminfo:
        return {}
    fields = {line.split(":")[0]: int(line.split()[1]) for line in meminfo.splitlines() if line.count(":") == 1
              and len(line.split()) >= 2 and line.split()[1].isdigit()}
    if "MemTotal" in fields and "MemAvailable" in fields:
        return {"memory_used_pct": round(100 * (1 - fields["MemAvailable"] / fields["MemTotal"]), 1),
                "memory_available_mb": round(fields["MemAvailable"] / 1024, 1)}
    return {}


def _uptime(roots: Roots, disk_path: Path, own: Path) -> dict:
    uptime = _read(roots.proc / "uptime")
    return {"uptime_s": int(float(uptime.split()[0]))} if uptime else {}


def _cpu_jiffies(roots: Roots, disk_path: Path, own: Path) -> dict:
    """The machine's CPU time so far (the first line of /proc/stat, proc(5)): busy and
    total jiffies; usage is the change between two samples (`cpu_usage_pct`)."""
    stat = _read(roots.proc / "stat")
    if not stat:
        return {}
    fields = [int(v) for v in stat.splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user (proc(5))
    return {"cpu_jiffies": [total - idle, total]}


def cpu_usage_pct(before: list[int] | None, after: list[int] | None) -> float | None:
    """Busy share of the CPU time between two `cpu_jiffies` samples, in percent."""
    if not before or not after or after[1] <= before[1]:
        return None
    return round(100 * (after[0] - before[0]) / (after[1] - before[1]), 1)


def _disk(roots: Roots, disk_path: Path, own: Path) -> dict:
    try:
        usage = shutil.disk_usage(disk_path)
    except OSError:
        return {}
    return {"disk_used_pct": round(100 * usage.used / usage.total, 1), "disk_free_mb": round(usage.free / 2**20, 1)}


def _rss(roots: Roots, disk_path: Path, own: Path) -> dict:
    status = _read(own / "status")
    for line in (status or "").splitlines():
        if line.startswith("VmRSS:"):
            return {"rss_mb": round(int(line.split()[1]) / 1024, 1)}
    return {}


def _io(roots: Roots, disk_path: Path, own: Path) -> dict:
    """`bytes_written` is what reached the block layer (`write_bytes`), i.e. what wears the
    SD card; `io_wchar` counts every write() call, sockets and the log pipe included (proc(5),
    /proc/pid/io)."""
    io = _read(own / "io")
    if not io:
        return {}
    fields = dict(line.split(": ", 1) for line in io.splitlines() if ": " in line)
    out = {}
    if "write_bytes" in fields:
        out["bytes_written"] = int(fields["write_bytes"])
    if "wchar" in fields:
        out["io_wchar"] = int(fields["wchar"])
    return out


def _default_interface(route: str) -> str | None:
    """The interface of the IPv4 default route with the lowest metric (/proc/net/route:
    destination and mask 00000000, flag RTF_UP 0x1)."""
    best = None
    for line in route.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 8 and fields[1] == "00000000" and fields[7] == "00000000" and int(fields[3], 16) & 1:
            metric = int(fields[6])
            if best is None or metric < best[0]:
                best = (metric, fields[0])
    return best[1] if best else None


def _network(roots: Roots, disk_path: Path, own: Path) -> dict:
    """The address Home Assistant users reach the device at (the default route's interface)
    and, when that link is wireless, its signal level in dBm (/proc/net/wireless, as
    ESPHome's "WiFi Signal" sensor shows it)."""
    out: dict = {}
    interface = _default_interface(_read(roots.proc / "net" / "route") or "")
    if interface is None:
        return out
    out["interface"] = interface
    addresses = roots.addresses().get(interface) or []
    if addresses:
        out["ip_address"] = addresses[0]
    for line in (_read(roots.proc / "net" / "wireless") or "").splitlines()[2:]:
        name, _, rest = line.partition(":")
        if name.strip() == interface:
            out["wifi_signal_dbm"] = int(float(rest.split()[2].rstrip(".")))
    return out


SOURCES = {"thermal_zone0/temp": _temperature, "get_throttled": _throttling, "loadavg": _load,
           "meminfo": _memory, "uptime": _uptime, "stat": _cpu_jiffies, "disk usage": _disk,
           "status VmRSS": _rss, "io": _io, "net/route": _network}


def read_all(roots: Roots, disk_path: Path, pid: int | None = None, reported: set[str] | None = None) -> dict:
    """Every reading this machine offers. A missing source is skipped; so is one whose
    content cannot be parsed (logged once per source, tracked in `reported`), so one odd
    file cannot crash-loop the worker."""
    reported = _REPORTED if reported is None else reported
    out: dict = {}
    own = roots.proc / str(pid or os.getpid())
    for source, read in SOURCES.items():
        try:
            out.update(read(roots, disk_path, own))
        except (ValueError, IndexError, KeyError, ZeroDivisionError) as exc:
            if source not in reported:
                reported.add(source)
                log.warning("system reading %s skipped: unexpected content (%s)", source, exc)
    return out
