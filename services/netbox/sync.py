# About 590 lines, one file on purpose: one run of the sync. Matching the node, planning the
# changes and applying them share what the run read (the NetBox objects, the ids it learns,
# the change list that --dry-run prints and the store keeps), and the FILTERS/FIELDS tables
# at the top are what tests/netbox/test_openapi_names.py checks against NetBox's schema.
"""One sync run: what NetBox should hold about this node, against what it holds, writing only
the differences (or, with `dry_run`, only listing them).

Phases, each reading what it needs and writing its differences in chunked bulk requests:
the device (matching.py finds it), its interfaces, their MAC address objects, their IP
addresses and the primary IPv4, and one inventory item per peripheral. Prerequisites (site,
role, manufacturer, device type, platform, tenant, our tags and custom fields) are looked up
only when a write needs them, so a run with nothing changed only reads (six requests).

Rules that keep NetBox a place people can edit too:
- writes are minimal PATCH bodies: only the fields that differ, custom fields only the keys
  we own (NetBox merges them), tags read, unioned with ours and written back whole;
- what the sync creates carries its tag (`edge-managed`); only tagged objects are ever
  updated, marked stale (tag `edge-stale` + `edge_last_seen`) or, with `prune_after_days`,
  deleted; what a person created is matched and left alone;
- an IP address assigned to an object the sync does not own is never moved;
- every write carries `changelog_message` naming the node and the run.

Not responsible for: finding the device (matching.py), HTTP concerns (client.py), when to run
(worker.py).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable

import pynetbox

from services.netbox.facts import Facts, Peripheral
from services.netbox.matching import match_device

MANAGED_TAG, STALE_TAG = "edge-managed", "edge-stale"
CF_IDENTITY, CF_RUNTIME, CF_LAST_SEEN = "edge_identity", "edge_runtime_version", "edge_last_seen"
CUSTOM_FIELDS = {
    CF_IDENTITY: (["dcim.device"], "Node identity (SoC serial or machine-id), set by the edge NetBox sync"),
    CF_RUNTIME: (["dcim.device"], "Edge runtime version, set by the edge NetBox sync"),
    CF_LAST_SEEN: (["dcim.interface", "dcim.inventoryitem", "ipam.ipaddress", "dcim.macaddress"],
                   "When the edge NetBox sync last saw this object (set when it went missing)"),
}
TAGS = {MANAGED_TAG: ("Edge managed", "2196f3", "created and kept current by the edge NetBox sync"),
        STALE_TAG: ("Edge stale", "9e9e9e", "no longer seen by the edge NetBox sync")}

# Every filter and request field the sync uses, per endpoint: tests/netbox checks them against
# NetBox's OpenAPI schema (NetBox ignores unknown filters, so a misspelt one returns
# everything), and `_filter` / `_body` refuse any name not listed here.
FILTERS = {
    "dcim/devices": {"serial", "site", "name"},
    "dcim/interfaces": {"device_id"},
    "dcim/mac-addresses": {"device_id"},
    "ipam/ip-addresses": {"device_id", "address"},
    "dcim/inventory-items": {"device_id"},
    "dcim/sites": {"slug"}, "dcim/device-roles": {"slug"}, "dcim/manufacturers": {"slug"},
    "dcim/device-types": {"slug"}, "dcim/platforms": {"slug"}, "tenancy/tenants": {"slug"},
    "extras/tags": {"slug"}, "extras/custom-fields": {"name"},
}
FIELDS = {
    "dcim/devices": {"name", "device_type", "role", "site", "tenant", "platform", "serial", "status",
                     "primary_ip4", "tags", "custom_fields"},
    "dcim/interfaces": {"device", "name", "type", "primary_mac_address", "tags", "custom_fields"},
    "dcim/mac-addresses": {"mac_address", "assigned_object_type", "assigned_object_id", "tags", "custom_fields"},
    "ipam/ip-addresses": {"address", "status", "assigned_object_type", "assigned_object_id", "tags",
                          "custom_fields"},
    "dcim/inventory-items": {"device", "name", "serial", "part_id", "description", "discovered", "tags",
                             "custom_fields"},
    "dcim/sites": {"name", "slug", "status"}, "dcim/device-roles": {"name", "slug", "color"},
    "dcim/manufacturers": {"name", "slug"}, "dcim/device-types": {"manufacturer", "model", "slug"},
    "dcim/platforms": {"name", "slug"}, "tenancy/tenants": {"name", "slug"},
    "extras/tags": {"name", "slug", "color", "description"},
    "extras/custom-fields": {"name", "label", "type", "object_types", "description", "required"},
}
CHANGELOG_FIELD = "changelog_message"  # NetBox 4.4 keeps it with the change (not in its schema)
GENERIC_MODEL, GENERIC_MAKER = "Generic Linux host", "Generic"  # a board that names neither


def slugify(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:100] or "unknown"


@dataclass
class Change:
    """One write, as a person reads it: `action` object `label`, field: old → new."""

    action: str                      # create, update, stale, prune
    endpoint: str
    label: str
    fields: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    id: int | None = None

    def lines(self) -> list[str]:
        head = f"{self.action} {self.label}"
        return [head] + [f"    {name}: {_show(old)} → {_show(new)}" for name, (old, new) in self.fields.items()]


def _show(value: Any) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, list):
        return "[" + ", ".join(map(str, value)) + "]"
    return str(value)


class MissingPrerequisites(Exception):
    """Objects the sync needs but may not create ([netbox] create_prerequisites = false)."""


class Rejected(Exception):
    """NetBox refused a write (400): names the object and the field."""


@dataclass
class Result:
    changes: list[Change] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)   # what was left alone, and why
    device_id: int | None = None
    ids: dict[str, int] = field(default_factory=dict)  # label → NetBox id of what the sync keeps

    def diff(self) -> str:
        if not self.changes:
            return "no changes"
        return "\n".join(line for c in self.changes for line in c.lines())


def _tag_slugs(obj: dict) -> list[str]:
    return [t["slug"] for t in obj.get("tags") or ()]


def _ours(obj: dict) -> bool:
    return MANAGED_TAG in _tag_slugs(obj)


def _slug(obj: Any) -> str | None:
    return obj.get("slug") if isinstance(obj, dict) else None


def _host(address: str) -> str:
    return str(ipaddress.ip_interface(address).ip)


def _interesting(address: str) -> bool:
    """Addresses worth registering: not loopback or link-local (fe80:: changes with nothing)."""
    ip = ipaddress.ip_interface(address).ip
    return not (ip.is_loopback or ip.is_link_local)


class Sync:
    def __init__(self, api: pynetbox.api, cfg, facts: Facts, *, run_id: str, node: str, dry_run: bool = False,
                 cached_device_id: int | None = None, now: datetime | None = None):
        self.api = api
        self.cfg = cfg
        self.facts = facts
        self.dry_run = dry_run
        self.cached_device_id = cached_device_id
        self.now = now or datetime.now(timezone.utc)
        self.message = f"edge NetBox sync of node {node}, run {run_id}"
        self.result = Result()
        self._refs: dict[str, int | None] = {}
        self._tags_checked = False
        self.name = cfg.name or facts.hostname

    # -- NetBox access: every filter and field name goes through these ---------------------------
    def _endpoint(self, endpoint: str):
        app, name = endpoint.split("/")
        return getattr(getattr(self.api, app), name.replace("-", "_"))

    def _filter(self, endpoint: str, **filters) -> list[dict]:
        unknown = set(filters) - FILTERS[endpoint]
        if unknown:
            raise ValueError(f"filter {sorted(unknown)} on {endpoint} is not declared in FILTERS")
        return [dict(r) for r in self._endpoint(endpoint).filter(**filters)]

    def _body(self, endpoint: str, values: dict) -> dict:
        unknown = set(values) - FIELDS[endpoint] - {"id"}
        if unknown:
            raise ValueError(f"field {sorted(unknown)} on {endpoint} is not declared in FIELDS")
        return {**values, CHANGELOG_FIELD: self.message}

    def _write(self, action: str, endpoint: str, items: list[tuple[Change, dict]]) -> list[int | None]:
        """Create, update or delete `items` (change, body) in chunks; ids of the objects."""
        if not items:
            return []
        if endpoint not in ("extras/tags", "extras/custom-fields"):
            self._ensure_tags_and_fields()  # every other write carries our tag or fields
        self.result.changes.extend(c for c, _ in items)
        if self.dry_run:
            return [c.id for c, _ in items]
        ep = self._endpoint(endpoint)
        ids: list[int | None] = []
        size = self.cfg.chunk_size
        for start in range(0, len(items), size):
            chunk = items[start:start + size]
            bodies = [self._body(endpoint, b) for _, b in chunk]
            try:
                if action == "create":
                    made = ep.create(bodies)
                    ids.extend(r.id for r in made)
                elif action == "prune":
                    ep.delete([b["id"] for b in bodies])
                    ids.extend(b["id"] for b in bodies)
                else:
                    ep.update(bodies)
                    ids.extend(b["id"] for b in bodies)
            except pynetbox.RequestError as exc:
                if exc.req.status_code != 400:
                    raise
                raise Rejected(f"NetBox rejected the {action} of " + _rejection(exc, [c.label for c, _ in chunk])) \
                    from None
        for (change, _), new_id in zip(items, ids):
            change.id = new_id
        return ids

    # -- prerequisites ------------------------------------------------------------------------------
    def _missing_tags_and_fields(self) -> list[tuple[str, str, dict]]:
        """Our tags and custom fields that NetBox lacks (looked up once per run)."""
        if self._tags_checked:
            return []
        self._tags_checked = True
        have_tags = {t["slug"] for t in self._filter("extras/tags", slug=list(TAGS))}
        have_fields = {f["name"] for f in self._filter("extras/custom-fields", name=list(CUSTOM_FIELDS))}
        return [("extras/tags", f"tag {slug}", {"name": name, "slug": slug, "color": color, "description": text})
                for slug, (name, color, text) in TAGS.items() if slug not in have_tags] + \
               [("extras/custom-fields", f"custom field {name}",
                 {"name": name, "label": name.replace("_", " ").capitalize(), "type": "text", "object_types": types,
                  "description": text, "required": False})
                for name, (types, text) in CUSTOM_FIELDS.items() if name not in have_fields]

    def _ensure_tags_and_fields(self) -> None:
        self._create_missing(self._missing_tags_and_fields())

    def _create_missing(self, missing: list[tuple[str, str, dict]], shown: dict | None = None) -> list[int | None]:
        """Create prerequisites in the order given, or (create_prerequisites = false) report
        them all at once with what to create. `shown`: values to show instead of ids."""
        if missing and not self.cfg.create_prerequisites:
            raise MissingPrerequisites(
                "missing in NetBox: " + "; ".join(f"{label} ({_describe(body)})" for _, label, body in missing) +
                "; create them, or set [netbox] create_prerequisites = true")
        return [self._write("create", endpoint, [(Change("create", endpoint, label,
                                                         _created({**body, **(shown or {})})), body)])[0]
                for endpoint, label, body in missing]

    def _ref(self, endpoint: str, slug: str, body: dict, label: str, missing: list) -> int | None:
        """The id of the object with `slug`; when there is none, (endpoint, label, body) is
        added to `missing` and None returned."""
        key = f"{endpoint}:{slug}"
        if key not in self._refs:
            found = self._filter(endpoint, slug=slug)
            self._refs[key] = found[0]["id"] if found else None
        if self._refs[key] is None:
            missing.append((endpoint, label, {**body, "slug": slug}))
        return self._refs[key]

    def _device_refs(self) -> dict[str, int | None]:
        """Site, role, device type (and its maker), platform and tenant for a new device: all
        the missing ones at once, created in dependency order or reported together."""
        f, cfg = self.facts, self.cfg
        model, maker = f.model or GENERIC_MODEL, f.manufacturer or GENERIC_MAKER
        missing: list[tuple[str, str, dict]] = []
        wanted = [("site", "dcim/sites", cfg.site, {"name": cfg.site, "status": "active"}, f"site {cfg.site}"),
                  ("role", "dcim/device-roles", cfg.role, {"name": cfg.role.replace("-", " ").title(),
                                                           "color": "607d8b"}, f"device role {cfg.role}"),
                  ("manufacturer", "dcim/manufacturers", slugify(maker), {"name": maker}, f"manufacturer {maker}"),
                  ("device_type", "dcim/device-types", slugify(model), {"model": model}, f"device type {model}")]
        if cfg.tenant:
            wanted.append(("tenant", "tenancy/tenants", cfg.tenant, {"name": cfg.tenant}, f"tenant {cfg.tenant}"))
        if f.os:
            wanted.append(("platform", "dcim/platforms", slugify(f.os), {"name": f.os}, f"platform {f.os}"))
        refs = {key: self._ref(endpoint, slug, body, label, missing) for key, endpoint, slug, body, label in wanted}
        if missing:
            missing += self._missing_tags_and_fields()  # reported together with the rest
            if not cfg.create_prerequisites:
                self._create_missing(missing)  # raises, naming them all
            for key, endpoint, slug, body, label in wanted:  # in order: the maker before its device type
                if refs[key] is None:
                    shown = None
                    if key == "device_type":
                        body, shown = {**body, "manufacturer": refs["manufacturer"]}, {"manufacturer": maker}
                    refs[key] = self._create_missing([(endpoint, label, {**body, "slug": slug})], shown)[0]
            self._create_missing([m for m in missing if m[0] in ("extras/tags", "extras/custom-fields")])
        refs.pop("manufacturer")
        return refs

    # -- the run ------------------------------------------------------------------------------------
    def run(self) -> Result:
        device = self._device()
        device_id = self.result.device_id = device.get("id") if device else None
        self._keep({"device": device_id})
        interfaces = self._interfaces(device_id)
        self._macs(device_id, interfaces)
        self._addresses(device, interfaces)
        if self.facts.peripherals is not None:
            self._inventory(device_id)
        return self.result

    def _device(self) -> dict | None:
        f = self.facts
        device = match_device(self._endpoint("dcim/devices"), self._filter, f, self.cfg.site, self.name,
                              self.cached_device_id)
        owned_cf = {CF_IDENTITY: f.identity, CF_RUNTIME: f.runtime_version}
        if device is None:
            refs = self._device_refs()
            body = {"name": self.name, "status": "active", **{k: v for k, v in refs.items() if v is not None},
                    "tags": [{"slug": MANAGED_TAG, "name": TAGS[MANAGED_TAG][0]}], "custom_fields": owned_cf}
            if f.serial:
                body["serial"] = f.serial
            change = Change("create", "dcim/devices", f"device {self.name}", _created(
                {"site": self.cfg.site, "role": self.cfg.role, "tenant": self.cfg.tenant or None,
                 "device_type": f.model or GENERIC_MODEL, "platform": f.os, "serial": f.serial,
                 **{f"custom_fields.{k}": v for k, v in owned_cf.items()}}))
            new_id = self._write("create", "dcim/devices", [(change, body)])[0]
            return {"id": new_id, "name": self.name, "primary_ip4": None, "tags": [{"slug": MANAGED_TAG}],
                    "custom_fields": owned_cf} if new_id is not None or self.dry_run else None
        patch: dict[str, Any] = {}
        diffs: dict[str, tuple[Any, Any]] = {}
        cf = device.get("custom_fields") or {}
        changed_cf = {k: v for k, v in owned_cf.items() if cf.get(k) != v}
        if changed_cf:
            patch["custom_fields"] = changed_cf  # only our keys: NetBox merges, a person's keys stay
            diffs.update({f"custom_fields.{k}": (cf.get(k), v) for k, v in changed_cf.items()})
        if f.serial and device.get("serial") != f.serial:
            patch["serial"] = f.serial
            diffs["serial"] = (device.get("serial") or None, f.serial)
        if f.os and _slug(device.get("platform")) != slugify(f.os):
            missing: list[tuple[str, str, dict]] = []
            platform = self._ref("dcim/platforms", slugify(f.os), {"name": f.os}, f"platform {f.os}", missing)
            if missing:
                platform = self._create_missing(missing)[0]
            if platform is not None or self.dry_run:
                patch["platform"] = platform
                diffs["platform"] = ((device.get("platform") or {}).get("name"), f.os)
        tags = _tag_slugs(device)
        if MANAGED_TAG not in tags:
            patch["tags"] = [{"slug": s} for s in tags + [MANAGED_TAG]]  # theirs kept, ours added
            diffs["tags"] = (tags, tags + [MANAGED_TAG])
        if patch:
            self._write("update", "dcim/devices",
                        [(Change("update", "dcim/devices", f"device {device['name']}", diffs, device["id"]),
                          {"id": device["id"], **patch})])
        return device

    def _interfaces(self, device_id: int | None) -> dict[str, dict]:
        existing = {i["name"]: i for i in self._filter("dcim/interfaces", device_id=device_id)} if device_id else {}
        wanted = {i.name: i for i in self.facts.interfaces}
        creates = []
        for name, iface in wanted.items():
            if name not in existing:
                body = {"device": device_id, "name": name, "type": "other-wireless" if iface.wireless else "other",
                        "tags": [{"slug": MANAGED_TAG}]}
                creates.append((Change("create", "dcim/interfaces", f"interface {name}",
                                       {"type": (None, body["type"])}), body))
        for (change, body), new_id in zip(creates, self._write("create", "dcim/interfaces", creates)):
            existing[body["name"]] = {"id": new_id, "name": body["name"], "tags": [{"slug": MANAGED_TAG}],
                                      "primary_mac_address": None, "custom_fields": {}}
        self._mark_seen("dcim/interfaces", "interface", existing, set(wanted))
        self._keep({f"interface {name}": existing[name]["id"] for name in wanted})
        return existing

    def _macs(self, device_id: int | None, interfaces: dict[str, dict]) -> None:
        existing = self._filter("dcim/mac-addresses", device_id=device_id) if device_id else []
        by_iface = {(m.get("assigned_object_id"), m["mac_address"].upper()): m for m in existing}
        creates, primaries = [], []
        for iface in self.facts.interfaces:
            if not iface.mac:
                continue
            nb = interfaces[iface.name]
            mac = by_iface.get((nb["id"], iface.mac))
            if mac is None:
                body = {"mac_address": iface.mac, "assigned_object_type": "dcim.interface",
                        "assigned_object_id": nb["id"], "tags": [{"slug": MANAGED_TAG}]}
                creates.append((Change("create", "dcim/mac-addresses", f"MAC address {iface.mac} on {iface.name}"),
                                body))
            elif nb.get("primary_mac_address") is None:
                primaries.append((nb, mac["id"], iface.mac))
        self._keep({f"MAC address {m['mac_address'].upper()}": m["id"] for m in existing
                    if m["mac_address"].upper() in {i.mac for i in self.facts.interfaces}})
        for (change, body), new_id in zip(creates, self._write("create", "dcim/mac-addresses", creates)):
            self._keep({f"MAC address {body['mac_address']}": new_id})
            nb = next(i for i in interfaces.values() if i["id"] == body["assigned_object_id"])
            if nb.get("primary_mac_address") is None:
                primaries.append((nb, new_id, body["mac_address"]))
        self._mark_seen("dcim/mac-addresses", "MAC address", {m["mac_address"].upper(): m for m in existing},
                        {i.mac for i in self.facts.interfaces if i.mac})
        # A primary MAC a person chose is kept; only an interface without one gets ours.
        self._write("update", "dcim/interfaces", [
            (Change("update", "dcim/interfaces", f"interface {nb['name']}", {"primary_mac_address": (None, mac)},
                    nb["id"]), {"id": nb["id"], "primary_mac_address": mac_id})
            for nb, mac_id, mac in primaries])

    def _addresses(self, device: dict | None, interfaces: dict[str, dict]) -> None:
        device_id = device.get("id") if device else None
        existing = self._filter("ipam/ip-addresses", device_id=device_id) if device_id else []
        on_device = {_host(ip["address"]): ip for ip in existing}  # host → IP on one of our interfaces
        creates, moves, wanted = [], [], set()
        for iface in self.facts.interfaces:
            nb = interfaces[iface.name]
            for address in filter(_interesting, iface.addresses):
                host = _host(address)
                wanted.add(host)
                ip = on_device.get(host)
                if ip is None:
                    ip = self._unassigned_or_note(address)  # None: create it; {}: someone else's
                    if ip == {}:
                        continue
                if ip is None:
                    creates.append((Change("create", "ipam/ip-addresses", f"IP address {address}",
                                           {"interface": (None, iface.name)}),
                                    {"address": address, "status": "active", "assigned_object_type": "dcim.interface",
                                     "assigned_object_id": nb["id"], "tags": [{"slug": MANAGED_TAG}]}))
                elif ip.get("assigned_object_id") != nb["id"] and _ours(ip):  # moved here, or unassigned
                    moves.append((Change("update", "ipam/ip-addresses", f"IP address {address}",
                                         {"interface": (None, iface.name)}, ip["id"]),
                                  {"id": ip["id"], "assigned_object_type": "dcim.interface",
                                   "assigned_object_id": nb["id"]}))
                    on_device[host] = ip
        self._write("update", "ipam/ip-addresses", moves)
        for (_, body), new_id in zip(creates, self._write("create", "ipam/ip-addresses", creates)):
            on_device[_host(body["address"])] = {"id": new_id, "address": body["address"],
                                                 "tags": [{"slug": MANAGED_TAG}]}
        self._keep({f"IP address {ip['address']}": ip["id"] for host, ip in on_device.items() if host in wanted})
        self._mark_seen("ipam/ip-addresses", "IP address", {ip["address"]: ip for ip in existing},
                        {ip["address"] for host, ip in on_device.items() if host in wanted})
        if device is not None:
            self._primary_ip4(device, on_device, wanted)

    def _unassigned_or_note(self, address: str) -> dict | None:
        """An address not on our device, looked up in NetBox's global table: None when it is
        not there, our own unassigned record to take back, or {} (with a note) when it belongs
        to something else, which is never moved."""
        found = self._filter("ipam/ip-addresses", address=_host(address))
        if not found:
            return None
        other = found[0]
        if other.get("assigned_object_id") is None and _ours(other):
            return other
        holder = ((other.get("assigned_object") or {}).get("device") or {}).get("name") or \
            other.get("assigned_object_type") or "nothing (a reservation)"
        self.result.notes.append(f"IP address {address} is already in NetBox, assigned to {holder}; left alone")
        return {}

    def _primary_ip4(self, device: dict, on_device: dict[str, dict], wanted: set[str]) -> None:
        """The first IPv4 of a wired interface (else any) becomes the primary when there is
        none, or when ours went away; a primary a person chose is kept."""
        current = device.get("primary_ip4")
        if current:
            host = _host(current["address"])
            mine = on_device.get(host)
            if host in wanted or mine is None or not _ours(mine):
                return
        for iface in sorted(self.facts.interfaces, key=lambda i: (i.wireless, i.name)):
            for address in iface.addresses:
                ip = on_device.get(_host(address))
                if ipaddress.ip_interface(address).version == 4 and ip is not None:
                    self._write("update", "dcim/devices", [
                        (Change("update", "dcim/devices", f"device {device['name']}",
                                {"primary_ip4": (current["address"] if current else None, address)}, device["id"]),
                         {"id": device["id"], "primary_ip4": ip["id"]})])
                    return

    def _inventory(self, device_id: int | None) -> None:
        items = self._filter("dcim/inventory-items", device_id=device_id) if device_id else []
        by_name: dict[str, list[dict]] = {}
        for item in items:
            if item.get("parent") is None:
                by_name.setdefault(item["name"], []).append(item)
        creates, updates, seen = [], [], set()
        for p in self.facts.peripherals or ():
            if not p.present:
                continue
            seen.add(p.name)
            wanted = _item_fields(p)
            same = by_name.get(p.name, [])
            mine = [i for i in same if _ours(i)]
            if len(mine) > 1:
                self.result.notes.append(f"inventory item {p.name}: {len(mine)} items of that name carry our tag "
                                         f"(ids {', '.join(str(i['id']) for i in mine)}); delete the extra ones")
                continue
            if not mine and same:
                self.result.notes.append(f"inventory item {p.name} exists and was not created by this sync; left "
                                         f"alone")
                continue
            if not mine:
                body = {"device": device_id, "name": p.name, "discovered": True, "tags": [{"slug": MANAGED_TAG}],
                        **wanted}
                creates.append((Change("create", "dcim/inventory-items", f"inventory item {p.name}",
                                       _created(wanted)), body))
                continue
            item = mine[0]
            diffs = {k: (item.get(k) or None, v) for k, v in wanted.items() if (item.get(k) or None) != v}
            patch = {k: v for k, (_, v) in diffs.items()}
            stale_patch = self._unstale(item)
            patch.update(stale_patch)
            if stale_patch:
                diffs["tags"] = (_tag_slugs(item), [s["slug"] for s in stale_patch["tags"]])
            if patch:
                updates.append((Change("update", "dcim/inventory-items", f"inventory item {p.name}", diffs,
                                       item["id"]), {"id": item["id"], **patch}))
        made = self._write("create", "dcim/inventory-items", creates)
        self._write("update", "dcim/inventory-items", updates)
        self._keep({f"inventory item {name}": group[0]["id"] for name, group in by_name.items()
                    if name in seen and _ours(group[0])})
        self._keep({f"inventory item {body['name']}": new_id for (_, body), new_id in zip(creates, made)})
        self._mark_stale("dcim/inventory-items", "inventory item",
                         [i for name, group in by_name.items() if name not in seen for i in group if _ours(i)])

    def _keep(self, ids: dict[str, int | None]) -> None:
        """Remember what this node is in NetBox (label → id), for the store."""
        self.result.ids.update({label: i for label, i in ids.items() if i is not None})

    # -- stale marking ---------------------------------------------------------------------------
    def _unstale(self, obj: dict) -> dict:
        tags = _tag_slugs(obj)
        if STALE_TAG not in tags:
            return {}
        return {"tags": [{"slug": s} for s in tags if s != STALE_TAG],
                "custom_fields": {CF_LAST_SEEN: None}}

    def _mark_seen(self, endpoint: str, kind: str, existing: dict[str, dict], seen: set[str]) -> None:
        """Ours and seen again: no longer stale. Ours and not seen: stale (or pruned)."""
        back = []
        for key, obj in existing.items():
            patch = self._unstale(obj) if key in seen and obj.get("id") and _ours(obj) else {}
            if patch:
                back.append((Change("update", endpoint, f"{kind} {key}",
                                    {"tags": (_tag_slugs(obj), [t["slug"] for t in patch["tags"]])}, obj["id"]),
                             {"id": obj["id"], **patch}))
        self._write("update", endpoint, back)
        self._mark_stale(endpoint, kind, [o for key, o in existing.items() if key not in seen and _ours(o)])

    def _mark_stale(self, endpoint: str, kind: str, gone: Iterable[dict]) -> None:
        stale, prune = [], []
        horizon = self.now - timedelta(days=self.cfg.prune_after_days)
        for obj in gone:
            label = f"{kind} {obj.get('name') or obj.get('address') or obj.get('mac_address')}"
            tags = _tag_slugs(obj)
            if STALE_TAG in tags:
                last_seen = (obj.get("custom_fields") or {}).get(CF_LAST_SEEN)
                if self.cfg.prune_after_days and last_seen and _parse(last_seen) < horizon:
                    prune.append((Change("prune", endpoint, label, {"last seen": (last_seen, None)}, obj["id"]),
                                  {"id": obj["id"]}))
                continue
            now = self.now.isoformat(timespec="seconds")
            stale.append((Change("stale", endpoint, label, {"tags": (tags, tags + [STALE_TAG]),
                                                           f"custom_fields.{CF_LAST_SEEN}": (None, now)}, obj["id"]),
                          {"id": obj["id"], "tags": [{"slug": s} for s in tags + [STALE_TAG]],
                           "custom_fields": {CF_LAST_SEEN: now}}))
        self._write("stale", endpoint, stale)
        self._write("prune", endpoint, prune)


def _item_fields(p: Peripheral) -> dict[str, Any]:
    """The inventory item fields the sync owns for a peripheral."""
    description = ", ".join(x for x in (p.kind, f"firmware {p.firmware}" if p.firmware else None,
                                         f"port {p.port}" if p.port else None) if x)
    return {"serial": p.serial, "part_id": (p.model or p.firmware or None), "description": description}


def _parse(text: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return datetime.max.replace(tzinfo=timezone.utc)  # unreadable: never pruned
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _rejection(exc: pynetbox.RequestError, labels: list[str]) -> str:
    """'IP address 192.0.2.10/24: address: Duplicate IP address ...' from a 400's body (a
    bulk write answers one error dict per object, in order)."""
    try:
        body = exc.req.json()
    except ValueError:
        return f"{', '.join(labels)}: {exc.req.text[:200]}"
    errors = body if isinstance(body, list) else [body] * len(labels)
    parts = [f"{label}: " + "; ".join(f"{k}: {' '.join(map(str, v)) if isinstance(v, list) else v}"
                                      for k, v in err.items())
             for label, err in zip(labels, errors) if isinstance(err, dict) and err]
    return ", ".join(parts) or ", ".join(labels)


def _created(values: dict) -> dict[str, tuple[Any, Any]]:
    """The fields of a created object, as diff lines (unset ones left out)."""
    return {k: (None, v) for k, v in values.items() if v is not None}


def _describe(body: dict) -> str:
    return ", ".join(f"{k} {v!r}" for k, v in body.items() if k in ("name", "slug", "model", "type", "object_types"))
