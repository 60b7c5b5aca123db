"""What the node says about itself, read from recorded Raspberry Pi and x86 files (samples/)
and from the state board; every source optional."""

from __future__ import annotations

import socket
from pathlib import Path

import psutil

from services.netbox.facts import Interface, Peripheral, peripherals_from_states, placeholder_serial, \
    psutil_interfaces, read_facts

SAMPLES = Path(__file__).parent / "samples"


def no_interfaces():
    return ()


def test_a_raspberry_pi_is_known_by_its_soc_serial_and_device_tree_model():
    facts = read_facts(SAMPLES / "pi4", interfaces=no_interfaces, states={})
    assert facts.identity == facts.serial == "10000000a1b2c3d4"
    assert facts.model == "Raspberry Pi 4 Model B Rev 1.4" and facts.manufacturer == "Raspberry Pi Ltd"
    assert facts.os == "Debian GNU/Linux 12 (bookworm)" and facts.hostname == "front-door"
    assert facts.peripherals == ()


def test_a_pi_without_device_tree_serial_takes_the_cpuinfo_serial(tmp_path):
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/cpuinfo").write_bytes((SAMPLES / "pi4/proc/cpuinfo").read_bytes())
    facts = read_facts(tmp_path, interfaces=no_interfaces, hostname="pi")
    assert facts.identity == "10000000a1b2c3d4" and facts.model is None


def test_an_x86_box_with_a_placeholder_serial_has_no_serial_and_the_machine_id_as_identity():
    facts = read_facts(SAMPLES / "x86", interfaces=no_interfaces)
    assert facts.serial is None, "To Be Filled By O.E.M. is never a serial"
    assert facts.identity == "0a1b2c3d4e5f60718293a4b5c6d7e8f9"
    assert facts.model == "NUC8i5BEH" and facts.manufacturer == "Intel(R) Client Systems"
    assert facts.hostname == "lab-nuc" and facts.os == "Ubuntu 24.04.1 LTS"
    assert facts.peripherals is None, "without the state board the peripherals are unknown, not absent"


def test_an_empty_root_gives_facts_without_crashing(tmp_path):
    facts = read_facts(tmp_path, interfaces=no_interfaces, hostname="bare")
    assert (facts.identity, facts.serial, facts.model, facts.manufacturer, facts.os) == (None,) * 5


def test_placeholder_serials_are_recognised():
    for serial in ("", "0", "00000000", "0000000000000000", "0123456789", "To Be Filled By O.E.M.",
                   "Default string", "Not Specified", None):
        assert placeholder_serial(serial), serial
    assert not placeholder_serial("10000000a1b2c3d4") and not placeholder_serial("CZPX1234X004XK12345")


def test_interfaces_come_from_psutil_with_upper_case_macs_and_prefixed_addresses():
    found = psutil_interfaces(Path("/nonexistent"))  # no sysfs there: every interface but loopback
    names = set(psutil.net_if_addrs()) - {"lo"}
    assert {i.name for i in found} <= names
    for iface in found:
        assert iface.mac is None or iface.mac == iface.mac.upper()
        assert all("/" in a for a in iface.addresses)
    addrs = {a.address for i in psutil.net_if_addrs().values() for a in i if a.family == socket.AF_INET}
    assert {a.split("/")[0] for i in found for a in i.addresses if "." in a} <= addrs


def test_peripherals_come_from_what_the_workers_publish_on_the_state_board():
    states = {
        "doorbell.rings": 3, "breaker.camera": "OFF",
        "peripheral.printer": {"kind": "printer", "name": "Printer", "firmware": "Marlin 2.1.2.1",
                               "port": "/dev/serial/by-id/usb-1a86_USB_Serial-if00-port0", "state": "connected",
                               "serial": "0123456789"},
        "peripheral.sip_line": {"kind": "sip_line", "name": "SIP line 101", "state": "unplugged"},
        "system": {"load_1m": 0.1},
    }
    found = {p.key: p for p in peripherals_from_states(states)}
    assert set(found) == {"camera", "chime", "door_relay", "doorbell_button", "printer", "sip_line"}
    assert found["camera"].present is False, "camera breaker open: not seen"
    assert found["printer"] == Peripheral("printer", "printer", "Printer", firmware="Marlin 2.1.2.1",
                                          port="/dev/serial/by-id/usb-1a86_USB_Serial-if00-port0", serial=None)
    assert found["sip_line"].present is False
    assert peripherals_from_states({}) == ()


def test_interfaces_are_injectable():
    facts = read_facts(SAMPLES / "pi4", interfaces=lambda: (Interface("eth0", "DC:A6:32:01:02:03", ("192.0.2.5/24",)),))
    assert facts.interfaces[0].addresses == ("192.0.2.5/24",)
