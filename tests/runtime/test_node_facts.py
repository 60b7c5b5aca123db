"""What the device card in Home Assistant says about the machine, from recorded files."""

from __future__ import annotations

from edge.mqtt.discovery import Discovery, NodeInfo
from edge.mqtt.topics import Topics
from edge.node_facts import NodeFacts


def write(root, relative, data: bytes):
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_a_raspberry_pi_is_read_from_its_device_tree(tmp_path):
    write(tmp_path, "proc/device-tree/model", b"Raspberry Pi 4 Model B Rev 1.4\0")
    write(tmp_path, "proc/device-tree/serial-number", b"10000000a1b2c3d4\0")
    write(tmp_path, "sys/class/net/eth0/address", b"dc:a6:32:01:02:03\n")
    (tmp_path / "sys/class/net/eth0/device").mkdir()
    write(tmp_path, "sys/class/net/docker0/address", b"02:42:ac:11:00:01\n")  # virtual: no device link
    write(tmp_path, "sys/class/net/lo/address", b"00:00:00:00:00:00\n")
    facts = NodeFacts.read(tmp_path)
    assert facts == NodeFacts("Raspberry Pi 4 Model B Rev 1.4", "10000000a1b2c3d4", ("DC:A6:32:01:02:03",))


def test_an_older_pi_gives_its_serial_in_cpuinfo_and_placeholders_are_no_serial(tmp_path):
    write(tmp_path, "proc/cpuinfo", b"processor\t: 0\nHardware\t: BCM2835\nSerial\t\t: 00000000c0ffee42\n")
    assert NodeFacts.read(tmp_path).serial == "00000000c0ffee42"
    write(tmp_path, "proc/cpuinfo", b"Serial\t\t: 0000000000000000\n")
    write(tmp_path, "sys/class/dmi/id/product_serial", b"To Be Filled By O.E.M.\n")
    assert NodeFacts.read(tmp_path) == NodeFacts(None, None, ())
    write(tmp_path, "sys/class/dmi/id/product_serial", b"0123456789\n")  # a common board placeholder
    assert NodeFacts.read(tmp_path).serial is None


def test_the_device_card_carries_the_facts_and_never_repeats_the_name_as_model():
    card = Discovery(NodeInfo("front", "Edge node", "1.0", model="Raspberry Pi 4 Model B Rev 1.4", serial="abc",
                              macs=("DC:A6:32:01:02:03",), area="Hallway"), Topics("front")).device(None)
    assert card["model"] == "Raspberry Pi 4 Model B Rev 1.4" and card["serial_number"] == "abc"
    assert card["connections"] == [["mac", "DC:A6:32:01:02:03"]] and card["suggested_area"] == "Hallway"
    bare = Discovery(NodeInfo("front", "Edge node", "1.0"), Topics("front")).device(None)
    assert bare["model"] != bare["name"] and "serial_number" not in bare and "connections" not in bare
    camera = Discovery(NodeInfo("front", "Edge node", "1.0"), Topics("front")).device("camera")
    assert camera["manufacturer"] == "edge-appliance" and camera["via_device"] == "edge_front"
