"""What this node is and what is attached to it, as the NetBox sync needs it: hostname, a
stable identity, model and maker, serial, OS and runtime version, network interfaces with
their MAC and IP addresses, and the peripherals the other workers report.

Every source is optional: a missing or unreadable one is skipped, never an error (netbox-agent
crashes on a Raspberry Pi, which has no DMI). Files are read under an injectable root, so tests
use recorded Raspberry Pi and x86 files; interfaces come from psutil (injectable too).

Identity: the Raspberry Pi's SoC serial (device tree, else /proc/cpuinfo), else
/etc/machine-id; never a DMI serial, which is often a placeholder or shared by a batch.

Peripherals come from the state board, never from importing another worker:
- `peripheral.<id>` keys: a dict with `kind` (camera, printer, sip_line, ...), `name`, and
  optionally `model`, `serial`, `port` (a /dev/serial/by-id path), `firmware`, `state`
  ("connected", "disconnected", ...). This is the contract for workers that own a device.
- the doorbell, which publishes its own states: its button, chime and relay while it runs
  (`doorbell.rings`, or its worker state from the MQTT link), its camera from the camera
  breaker (`breaker.camera`: ON while it answers).

Not responsible for: deciding what NetBox should hold (desired.py), talking to NetBox.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from edge import __version__
from edge.node_facts import NodeFacts, pi_serial, placeholder_serial, read_fact

# States in which a peripheral counts as not seen (its inventory item is marked stale).
ABSENT_STATES = frozenset({"disconnected", "unplugged", "absent", "missing", "off"})


@dataclass(frozen=True)
class Interface:
    name: str
    mac: str | None                 # upper-case, as NetBox stores it
    addresses: tuple[str, ...]      # "192.0.2.10/24", "2001:db8::10/64"
    wireless: bool = False


@dataclass(frozen=True)
class Peripheral:
    key: str                        # stable id: the state-board key's suffix ("camera", "printer")
    kind: str
    name: str                       # the inventory item's name in NetBox
    model: str | None = None
    serial: str | None = None
    port: str | None = None
    firmware: str | None = None
    present: bool = True


@dataclass(frozen=True)
class Facts:
    hostname: str
    identity: str | None            # stable node identity (SoC serial or machine-id)
    serial: str | None              # for NetBox's serial field; None for placeholders
    model: str | None
    manufacturer: str | None
    os: str | None
    runtime_version: str
    interfaces: tuple[Interface, ...]
    # None: not known here (the CLI outside the runtime), so inventory items are left alone.
    peripherals: tuple[Peripheral, ...] | None = field(default=None)


def _os_name(root: Path) -> str | None:
    values = {}
    for line in (read_fact(root, "etc/os-release") or read_fact(root, "usr/lib/os-release") or "").splitlines():
        key, _, value = line.partition("=")
        values[key.strip()] = value.strip().strip('"')
    return values.get("PRETTY_NAME") or values.get("NAME")


def _manufacturer(root: Path, model: str | None) -> str | None:
    if model and model.startswith("Raspberry Pi"):
        return "Raspberry Pi Ltd"
    vendor = read_fact(root, "sys/class/dmi/id/sys_vendor")
    return None if vendor is None or placeholder_serial(vendor) else vendor


def psutil_interfaces(root: Path = Path("/")) -> tuple[Interface, ...]:
    """This machine's physical interfaces with MAC and addresses, from psutil: not loopback,
    and not the virtual ones (docker0, veth*, bridges: no `device` link in sysfs)."""
    import psutil  # imported when used: the runtime does not need it otherwise

    found = []
    net = root / "sys/class/net"
    for name, addrs in sorted(psutil.net_if_addrs().items()):
        if net.is_dir() and not (net / name / "device").exists():
            continue
        mac, ips = None, []
        for a in addrs:
            if a.family == psutil.AF_LINK:
                mac = a.address.upper() if a.address and a.address != "00:00:00:00:00:00" else None
            elif a.family in (socket.AF_INET, socket.AF_INET6) and a.netmask:
                ip = a.address.split("%")[0]  # fe80::1%eth0: the zone is not part of the address
                prefix = _prefix(a.netmask)
                if prefix is not None:
                    ips.append(f"{ip}/{prefix}")
        if name == "lo" or (mac is None and not ips):
            continue
        found.append(Interface(name, mac, tuple(sorted(ips)), wireless=name.startswith("wl")))
    return tuple(found)


def _prefix(netmask: str) -> int | None:
    import ipaddress
    try:
        return ipaddress.ip_network(f"0.0.0.0/{netmask}" if "." in netmask else f"::/{netmask}").prefixlen
    except ValueError:
        return None


def peripherals_from_states(states: Mapping[str, Any]) -> tuple[Peripheral, ...]:
    """The peripherals the workers report on the state board (see the module docstring)."""
    found: dict[str, Peripheral] = {}
    doorbell_state = states.get("worker.doorbell")
    doorbell_runs = "doorbell.rings" in states or (isinstance(doorbell_state, dict)
                                                   and doorbell_state.get("state") not in (None, "STOPPED"))
    if doorbell_runs:
        for key, name in (("doorbell_button", "Doorbell button"), ("chime", "Chime"), ("door_relay", "Door relay")):
            found[key] = Peripheral(key, "gpio", name)
    if "breaker.camera" in states:
        found["camera"] = Peripheral("camera", "camera", "Camera", present=states["breaker.camera"] == "ON")
    for key, value in states.items():
        if not key.startswith("peripheral.") or not isinstance(value, dict):
            continue
        pid = key[len("peripheral."):]
        state = str(value.get("state") or "connected").lower()
        serial = value.get("serial")
        found[pid] = Peripheral(pid, str(value.get("kind") or pid), str(value.get("name") or pid.title()),
                                model=value.get("model"), serial=None if placeholder_serial(serial) else serial,
                                port=value.get("port"), firmware=value.get("firmware"),
                                present=state not in ABSENT_STATES)
    return tuple(sorted(found.values(), key=lambda p: p.key))


def read_facts(root: Path = Path("/"), *, interfaces: Callable[[], tuple[Interface, ...]] = psutil_interfaces,
               states: Mapping[str, Any] | None = None, hostname: str | None = None) -> Facts:
    """Everything this node knows about itself now. `states` is the state board's snapshot
    (None: peripherals unknown)."""
    node = NodeFacts.read(root)
    soc_serial = pi_serial(root)
    machine_id = read_fact(root, "etc/machine-id")
    serial = soc_serial or (None if placeholder_serial(node.serial) else node.serial)
    try:
        found_interfaces = interfaces()
    except OSError:
        found_interfaces = ()
    name = hostname or read_fact(root, "etc/hostname") or socket.gethostname()
    return Facts(
        hostname=name.split(".")[0],
        identity=soc_serial or machine_id,
        serial=serial,
        model=node.model,
        manufacturer=_manufacturer(root, node.model),
        os=_os_name(root),
        runtime_version=__version__,
        interfaces=found_interfaces,
        peripherals=peripherals_from_states(states) if states is not None else None,
    )
