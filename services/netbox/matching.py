"""Which NetBox device is this node: never a guess.

In order: the id cached from the last successful sync, confirmed by the `edge_identity`
custom field (a device whose field names another node, or none, is not ours); then serial +
site; then name + site. A placeholder serial ("To Be Filled By O.E.M.", all zeros, ...) is
never a key (facts.py drops it before it gets here). More than one candidate, or a candidate
that carries another node's identity, is a Conflict: the run stops before any write and the
worker reports it, as netbox-agent's habit of picking the first match (and overwriting
another machine's record) is the failure this avoids.

Not responsible for: what is written to the device afterwards (sync.py).
"""

from __future__ import annotations

from typing import Callable

from services.netbox.facts import Facts, placeholder_serial

CF_IDENTITY = "edge_identity"


class Conflict(Exception):
    """More than one NetBox object could be this node: nothing was written."""


def _identity(device: dict) -> str | None:
    return (device.get("custom_fields") or {}).get(CF_IDENTITY)


def _names(devices: list[dict]) -> str:
    return ", ".join(f"{d.get('name') or '(unnamed)'} (id {d['id']})" for d in devices)


def match_device(endpoint, filter_fn: Callable[..., list[dict]], facts: Facts, site: str, name: str,
                 cached_id: int | None) -> dict | None:
    """The device record (a dict) that is this node, or None when NetBox has none yet."""
    if cached_id is not None:
        record = endpoint.get(cached_id)  # None when it was deleted
        if record is not None:
            device = dict(record)
            if facts.identity is not None and _identity(device) == facts.identity:
                return device
    if facts.serial and not placeholder_serial(facts.serial):
        found = filter_fn("dcim/devices", serial=facts.serial, site=site)
        if len(found) > 1:
            raise Conflict(f"{len(found)} devices in site {site} have this node's serial {facts.serial}: "
                           f"{_names(found)}; delete or correct the wrong ones in NetBox")
        if found:
            return _checked(found[0], facts, f"serial {facts.serial}")
    found = filter_fn("dcim/devices", name=name, site=site)
    if len(found) > 1:  # NetBox keeps names unique per site and tenant, so only across tenants
        raise Conflict(f"{len(found)} devices in site {site} are named {name}: {_names(found)}; set [netbox] name "
                       f"or rename one in NetBox")
    return _checked(found[0], facts, f"name {name}") if found else None


def _checked(device: dict, facts: Facts, how: str) -> dict:
    """A device found by serial or name is ours unless it says it is another node."""
    other = _identity(device)
    if other and facts.identity and other != facts.identity:
        raise Conflict(f"device {device.get('name')} (id {device['id']}) matches this node by {how} but belongs "
                       f"to another node ({CF_IDENTITY} = {other}); clear that field in NetBox if this node "
                       f"replaced it, or give this node another [netbox] name")
    if device.get("serial") and facts.serial and device["serial"] != facts.serial and how.startswith("name"):
        raise Conflict(f"device {device.get('name')} (id {device['id']}) has this node's name but another serial "
                       f"({device['serial']}); rename one of them or set [netbox] name")
    return device
