"""Helpers of the NetBox tests: the [netbox] section for a fake NetBox, and the facts of a
node with two interfaces and two peripherals."""

from __future__ import annotations

from edge.config import build
from edge.testing.fake_netbox import FakeNetbox
from services.netbox.facts import Facts, Interface, Peripheral
from services.netbox.sections import SECTION


def netbox_config(fake: FakeNetbox, token: str | None = None, **values):
    """The [netbox] section for `fake`: timeouts and backoff short enough for tests."""
    table = {"enabled": True, "url": fake.url, "site": "home", "create_prerequisites": True,
             "connect_timeout_s": 0.5, "read_timeout_s": 0.5, "retries": 2, **values}
    return build([SECTION], {"netbox": table}, {"EDGE_NETBOX_TOKEN": token or fake.token}, "pi")["netbox"]


def node_facts(*, eth0=("192.0.2.10/24", "2001:db8::10/64", "fe80::dea6:32ff:fe01:203/64"), serial="10000000a1b2c3d4",
               peripherals=("camera", "printer"), printer_present=True, identity="10000000a1b2c3d4") -> Facts:
    known = {"camera": Peripheral("camera", "camera", "Camera"),
             "printer": Peripheral("printer", "printer", "Printer", model="Prusa i3 MK3S", firmware="Prusa-Firmware 3.13.3",
                                   port="/dev/serial/by-id/usb-Prusa_Research__prusa3d.com__Original_Prusa_i3_MK3_CZPX-if00",
                                   present=printer_present)}
    return Facts(hostname="front-door", identity=identity, serial=serial, model="Raspberry Pi 4 Model B Rev 1.4",
                 manufacturer="Raspberry Pi Ltd", os="Debian GNU/Linux 12 (bookworm)", runtime_version="0.1.0",
                 interfaces=(Interface("eth0", "DC:A6:32:01:02:03", tuple(eth0)),
                             Interface("wlan0", "DC:A6:32:01:02:04", ("192.0.2.11/24",), wireless=True)),
                 peripherals=tuple(known[p] for p in peripherals))


def prerequisites(fake: FakeNetbox) -> dict:
    """What a NetBox admin set up by hand: site, role, maker and device type (ids)."""
    site = fake.add("dcim/sites", name="Home", slug="home", status="active")
    role = fake.add("dcim/device-roles", name="Edge node", slug="edge-node")
    maker = fake.add("dcim/manufacturers", name="Raspberry Pi Ltd", slug="raspberry-pi-ltd")
    dtype = fake.add("dcim/device-types", manufacturer=maker["id"], model="Raspberry Pi 4 Model B Rev 1.4",
                     slug="raspberry-pi-4-model-b-rev-1-4")
    return {"site": site["id"], "role": role["id"], "device_type": dtype["id"]}


def tags_of(obj: dict) -> set[str]:
    return {t["slug"] for t in obj["tags"]}


def only(fake: FakeNetbox, endpoint: str, **match) -> dict:
    found = [o for o in fake.all(endpoint) if all(o.get(k) == v for k, v in match.items())]
    assert len(found) == 1, f"{endpoint} {match}: {len(found)} found"
    return found[0]
