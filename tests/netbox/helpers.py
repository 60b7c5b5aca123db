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
