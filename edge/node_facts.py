"""What this machine is, for Home Assistant's device card (and later NetBox): the board's
model, its serial number and its network addresses, read from files under an injectable
root (tests use recorded Raspberry Pi and x86 files). Every source is optional: a missing
or unreadable one gives None, never an error.

Raspberry Pi: /proc/device-tree/model and /proc/device-tree/serial-number (NUL-terminated
strings from the firmware), else the `Serial` line of /proc/cpuinfo; x86 and others: DMI
(/sys/class/dmi/id/product_name, product_serial; often root-only or placeholders).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# Serials that boards ship with when nobody filled them in: never an identity.
PLACEHOLDER_SERIALS = {"", "0", "0000000000000000", "00000000", "0123456789", "to be filled by o.e.m.",
                       "default string", "not specified", "none", "system serial number"}


def placeholder_serial(serial: str | None) -> bool:
    """Serials boards ship with when nobody filled them in ("To Be Filled By O.E.M.", all
    zeros, "0123456789", ...): no identity, never a key to match a device on."""
    if serial is None:
        return True
    text = serial.strip().lower()
    return text in PLACEHOLDER_SERIALS or set(text) <= {"0", " ", "-", ":"}


def read_fact(root: Path, relative: str) -> str | None:
    """A small text file under `root` (device tree, DMI, /etc), stripped of the NULs the
    device tree ends strings with; None when missing or empty."""
    try:
        text = (root / relative).read_bytes().decode("utf-8", "replace")
    except OSError:
        return None
    text = text.replace("\0", "").strip()
    return text or None


@dataclass(frozen=True)
class NodeFacts:
    model: str | None
    serial: str | None
    macs: tuple[str, ...]

    @classmethod
    def read(cls, root: Path = Path("/")) -> "NodeFacts":
        model = read_fact(root, "proc/device-tree/model") or read_fact(root, "sys/class/dmi/id/product_name")
        serial = read_fact(root, "proc/device-tree/serial-number") or _cpuinfo_serial(root) or \
            read_fact(root, "sys/class/dmi/id/product_serial")
        if placeholder_serial(serial):
            serial = None
        return cls(model, serial, _macs(root))


def _cpuinfo_serial(root: Path) -> str | None:
    for line in (read_fact(root, "proc/cpuinfo") or "").splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Serial":
            return value.strip() or None
    return None


def pi_serial(root: Path) -> str | None:
    """A Raspberry Pi's SoC serial (device tree, else /proc/cpuinfo on older kernels);
    None elsewhere or when it is a placeholder."""
    serial = read_fact(root, "proc/device-tree/serial-number") or _cpuinfo_serial(root)
    return None if placeholder_serial(serial) else serial


def _macs(root: Path) -> tuple[str, ...]:
    """Hardware addresses of the physical interfaces (not loopback, bridges or virtual
    ones), upper-case, in name order."""
    net = root / "sys/class/net"
    found = []
    try:
        names = sorted(p.name for p in net.iterdir())
    except OSError:
        return ()
    for name in names:
        if name == "lo" or not (net / name / "device").exists():
            continue  # virtual interfaces have no device link
        mac = read_fact(root, f"sys/class/net/{name}/address")
        if mac and mac != "00:00:00:00:00:00":
            found.append(mac.upper())
    return tuple(found)
