"""Sync runs against the fake NetBox through pynetbox: what is created, what a second run
writes (nothing), what people's edits and other devices' objects keep, matching rules."""

from __future__ import annotations

import pynetbox
import pytest

from services.netbox.matching import Conflict
from services.netbox.sync import MissingPrerequisites, Sync

from netbox.helpers import netbox_config, node_facts, only, prerequisites, tags_of


def sync(api, cfg, facts=None, run="r1", cached=None, **kw):
    return Sync(api, cfg, facts or node_facts(), run_id=run, node="front", cached_device_id=cached, **kw).run()


def test_first_sync_creates_everything_and_a_second_run_writes_nothing(fake, cfg, api):
    first = sync(api, cfg)
    device = only(fake, "dcim/devices", name="front-door")
    assert device["custom_fields"]["edge_identity"] == "10000000a1b2c3d4" and device["serial"] == "10000000a1b2c3d4"
    assert {i["name"] for i in fake.all("dcim/interfaces")} == {"eth0", "wlan0"}
    assert {m["mac_address"] for m in fake.all("dcim/mac-addresses")} == {"DC:A6:32:01:02:03", "DC:A6:32:01:02:04"}
    assert {i["mac_address"] for i in fake.all("dcim/interfaces")} == {"DC:A6:32:01:02:03", "DC:A6:32:01:02:04"}
    addresses = {ip["address"] for ip in fake.all("ipam/ip-addresses")}
    assert addresses == {"192.0.2.10/24", "2001:db8::10/64", "192.0.2.11/24"}, "link-local fe80:: is left out"
    assert fake.get("dcim/devices", device["id"])["primary_ip4"]["address"] == "192.0.2.10/24", "wired first"
    items = {i["name"]: i for i in fake.all("dcim/inventory-items")}
    assert set(items) == {"Camera", "Printer"} and items["Printer"]["part_id"] == "Prusa i3 MK3S"
    assert "/dev/serial/by-id/usb-Prusa" in items["Printer"]["description"]
    for endpoint in ("dcim/devices", "dcim/interfaces", "dcim/mac-addresses", "ipam/ip-addresses",
                     "dcim/inventory-items"):
        assert all("edge-managed" in tags_of(o) for o in fake.all(endpoint)), endpoint
    assert all("node front, run r1" in entry["message"] for entry in fake.changelog)
    assert first.device_id == device["id"] and first.changes

    fake.reset_counters()
    second = sync(api, cfg, run="r2", cached=first.device_id)
    assert second.changes == [] and fake.counters.writes == 0
    assert fake.counters.requests <= 6, "an unchanged run only reads, and little"


def test_a_dry_run_lists_the_changes_and_writes_nothing(fake, cfg, api):
    result = sync(api, cfg, dry_run=True)
    assert fake.counters.writes == 0 and fake.all("dcim/devices") == []
    diff = result.diff()
    assert "create device front-door" in diff and "create IP address 192.0.2.10/24" in diff
    assert "custom_fields.edge_identity: (none) → 10000000a1b2c3d4" in diff


def test_a_persons_custom_field_and_tag_survive_a_sync_that_patches_the_device(fake, cfg, api):
    first = sync(api, cfg)
    device_id = first.device_id
    fake.add("extras/custom-fields", name="owner", type="text", object_types=["dcim.device"])
    fake.add("extras/tags", name="Critical", slug="critical")
    fake.edit("dcim/devices", device_id, custom_fields={"owner": "alice"},
              tags=[{"slug": "edge-managed"}, {"slug": "critical"}])
    # Between the sync's read of the device and its write, the person edits again.
    fake.before_write = lambda: fake.edit("dcim/devices", device_id, custom_fields={"owner": "bob"})
    newer = node_facts()
    newer = type(newer)(**{**newer.__dict__, "runtime_version": "0.2.0"})
    result = sync(api, cfg, newer, run="r2", cached=device_id)
    device = fake.get("dcim/devices", device_id)
    assert device["custom_fields"]["edge_runtime_version"] == "0.2.0"
    assert device["custom_fields"]["owner"] == "bob", "a minimal PATCH keeps the person's custom field"
    assert tags_of(device) == {"edge-managed", "critical"}
    patch = [c for c in fake.changelog if c["action"] == "update" and c["id"] == device_id][-1]
    assert patch["fields"] == ["custom_fields"]
    assert [c.label for c in result.changes] == ["device front-door"]


def test_our_tag_is_added_to_a_persons_device_without_dropping_their_tags(fake, cfg, api):
    refs = prerequisites(fake)
    fake.add("extras/tags", name="Rack A", slug="rack-a")
    theirs = fake.add("dcim/devices", name="front-door", tags=[{"slug": "rack-a"}], **refs)
    result = sync(api, cfg)
    assert result.device_id == theirs["id"], "matched by name and site"
    assert tags_of(fake.get("dcim/devices", theirs["id"])) == {"rack-a", "edge-managed"}


def test_duplicate_serials_in_netbox_are_a_conflict_and_nothing_is_written(fake, cfg, api):
    refs = prerequisites(fake)
    fake.add("dcim/devices", name="old-pi", serial="10000000a1b2c3d4", **refs)
    fake.add("dcim/devices", name="spare-pi", serial="10000000a1b2c3d4", **refs)
    fake.reset_counters()
    with pytest.raises(Conflict, match="2 devices in site home have this node's serial"):
        sync(api, cfg)
    assert fake.counters.writes == 0


def test_a_device_carrying_another_nodes_identity_is_a_conflict(fake, cfg, api):
    sync(api, cfg)
    fake.reset_counters()
    with pytest.raises(Conflict, match="belongs to another node"):
        sync(api, cfg, node_facts(identity="6f1e2d3c4b5a69788796a5b4c3d2e1f0"), run="r2")
    assert fake.counters.writes == 0


def test_a_placeholder_serial_is_never_used_to_match(fake, cfg, api):
    refs = prerequisites(fake)
    other = fake.add("dcim/devices", name="nas", serial="To Be Filled By O.E.M.", **refs)
    result = sync(api, cfg, node_facts(serial="To Be Filled By O.E.M."))
    assert result.device_id != other["id"]
    assert ("dcim/devices", "serial") not in fake.used_filters
    assert fake.get("dcim/devices", other["id"])["name"] == "nas" and fake.get("dcim/devices", other["id"])["tags"] == []


def test_an_ip_assigned_to_another_device_is_left_alone(fake, cfg, api):
    refs = prerequisites(fake)
    printer = fake.add("dcim/devices", name="printer-pi", **refs)
    port = fake.add("dcim/interfaces", device=printer["id"], name="eth0", type="1000base-t")
    theirs = fake.add("ipam/ip-addresses", address="192.0.2.10/24", assigned_object_type="dcim.interface",
                      assigned_object_id=port["id"])
    result = sync(api, cfg)
    assert fake.get("ipam/ip-addresses", theirs["id"])["assigned_object_id"] == port["id"]
    assert any("192.0.2.10/24" in note and "printer-pi" in note for note in result.notes)
    assert fake.get("dcim/devices", result.device_id)["primary_ip4"]["address"] == "192.0.2.11/24"


def test_an_unplugged_peripheral_is_marked_stale_not_deleted_and_comes_back(fake, cfg, api):
    first = sync(api, cfg)
    sync(api, cfg, node_facts(printer_present=False), run="r2", cached=first.device_id)
    printer = only(fake, "dcim/inventory-items", name="Printer")
    assert tags_of(printer) == {"edge-managed", "edge-stale"} and printer["custom_fields"]["edge_last_seen"]
    fake.reset_counters()
    sync(api, cfg, node_facts(printer_present=False), run="r3", cached=first.device_id)
    assert fake.counters.writes == 0, "already stale: nothing more to write"
    sync(api, cfg, run="r4", cached=first.device_id)
    printer = only(fake, "dcim/inventory-items", name="Printer")
    assert tags_of(printer) == {"edge-managed"} and printer["custom_fields"]["edge_last_seen"] is None


def test_a_new_address_is_added_the_old_one_marked_stale_and_the_primary_follows(fake, cfg, api):
    first = sync(api, cfg)
    sync(api, cfg, node_facts(eth0=("192.0.2.20/24",)), run="r2", cached=first.device_id)
    by_address = {ip["address"]: ip for ip in fake.all("ipam/ip-addresses")}
    assert "edge-stale" in tags_of(by_address["192.0.2.10/24"]) and "edge-stale" not in tags_of(by_address["192.0.2.20/24"])
    assert fake.get("dcim/devices", first.device_id)["primary_ip4"]["address"] == "192.0.2.20/24"


def test_a_persons_inventory_item_of_the_same_name_is_left_alone(fake, cfg, api):
    first = sync(api, cfg, node_facts(peripherals=()))
    theirs = fake.add("dcim/inventory-items", device=first.device_id, name="Camera", description="porch cam")
    result = sync(api, cfg, node_facts(peripherals=("camera",)), run="r2", cached=first.device_id)
    assert [i["id"] for i in fake.all("dcim/inventory-items")] == [theirs["id"]]
    assert fake.get("dcim/inventory-items", theirs["id"])["description"] == "porch cam"
    assert any("Camera" in note for note in result.notes)


def test_missing_prerequisites_are_reported_with_what_to_create_and_nothing_is_written(fake, api):
    cfg = netbox_config(fake, create_prerequisites=False)
    with pytest.raises(MissingPrerequisites) as caught:
        sync(api, cfg)
    message = str(caught.value)
    for expected in ("site home", "device role edge-node", "device type Raspberry Pi 4", "tag edge-managed",
                     "custom field edge_identity", "create_prerequisites"):
        assert expected in message
    assert fake.counters.writes == 0


def test_prune_after_days_deletes_only_what_the_sync_created_and_long_stale(fake, api):
    cfg = netbox_config(fake, prune_after_days=1)
    first = sync(api, cfg)
    sync(api, cfg, node_facts(printer_present=False), run="r2", cached=first.device_id)
    printer = only(fake, "dcim/inventory-items", name="Printer")
    fake.edit("dcim/inventory-items", printer["id"], custom_fields={"edge_last_seen": "2020-01-01T00:00:00+00:00"})
    sync(api, cfg, node_facts(printer_present=False), run="r3", cached=first.device_id)
    assert [i["name"] for i in fake.all("dcim/inventory-items")] == ["Camera"]


def test_a_400_names_the_object_and_the_field_and_the_bulk_write_is_all_or_nothing(fake, cfg, api):
    from services.netbox.sync import Rejected
    first = sync(api, cfg, node_facts(eth0=()))
    mark = len(fake.log)
    # Someone registers 192.0.2.10 for another machine just before our write.
    fake.before_write = lambda: fake.add("ipam/ip-addresses", address="192.0.2.10/16")
    with pytest.raises(Rejected) as caught:
        sync(api, cfg, node_facts(eth0=("192.0.2.10/24", "192.0.2.12/24")), run="r2", cached=first.device_id)
    assert "IP address 192.0.2.10/24: address: Duplicate IP address found in global table" in str(caught.value)
    assert "192.0.2.12/24" not in {ip["address"] for ip in fake.all("ipam/ip-addresses")}, "all or nothing"
    assert [e[3] for e in fake.log[mark:] if e[1] == "POST"] == [400], "a 400 is not retried"


def test_a_5xx_on_a_write_is_not_repeated_inside_the_call_and_the_next_run_creates_it_once(fake, cfg, api):
    first = sync(api, cfg)
    mark = len(fake.log)
    fake.fail_next(1, 500, method="POST")
    with pytest.raises(pynetbox.RequestError):
        sync(api, cfg, node_facts(eth0=("192.0.2.40/24",)), run="r2", cached=first.device_id)
    posts = [entry for entry in fake.log[mark:] if entry[1] == "POST"]
    assert [entry[3] for entry in posts] == [500], "a POST that may have been stored is not sent again"
    sync(api, cfg, node_facts(eth0=("192.0.2.40/24",)), run="r3", cached=first.device_id)
    assert [ip["address"] for ip in fake.all("ipam/ip-addresses")].count("192.0.2.40/24") == 1


def test_bulk_writes_go_in_chunks_of_chunk_size(fake, api):
    cfg = netbox_config(fake, chunk_size=2)
    sync(api, cfg, node_facts(eth0=("192.0.2.10/24", "192.0.2.12/24", "192.0.2.13/24", "2001:db8::10/64")))
    ip_posts = [entry for entry in fake.log if entry[1] == "POST" and entry[2] == "/api/ipam/ip-addresses/"]
    assert [entry[4] for entry in ip_posts] == [2, 2, 1]


def test_a_cached_id_is_used_only_when_the_device_still_carries_our_identity(fake, cfg, api):
    first = sync(api, cfg)
    # NetBox restored from an old backup: the cached id now names someone else's device.
    fake.edit("dcim/devices", first.device_id, name="someone-else", serial="", custom_fields={"edge_identity": None})
    fake.reset_counters()
    result = sync(api, cfg, run="r2", cached=first.device_id)
    assert result.device_id != first.device_id, "not confirmed by edge_identity: matched afresh"
    assert fake.get("dcim/devices", first.device_id)["name"] == "someone-else"
