"""Entity declarations → Home Assistant MQTT discovery configs.

Follows https://www.home-assistant.io/integrations/mqtt/ ("MQTT Discovery") and each
component's page (sensor.mqtt, binary_sensor.mqtt, button.mqtt, update.mqtt, event.mqtt):

- one config per entity, retained, on `<prefix>/<component>/<node_id>/<object_id>/config`;
  ids match `[a-zA-Z0-9_-]+`; `unique_id` is `<node_id>_<object_id>`, stable across restarts;
- `default_entity_id` (HA 2025.10+, replacing the deprecated `object_id`, which stops
  working in 2026.4; older HA ignores the unknown key) suggests `<component>.<node>_<object>`;
- a `device` block per physical thing: the node, and child devices (camera, printer, SIP
  line) linked to it with `via_device`; an `origin` block naming this software;
- availability: the node's status topic and, for a worker's own entities, that worker's
  status topic, with `availability_mode: all`;
- names never repeat the device's name (HA prefixes it).

HA drops an unknown key silently and rejects a config with a bad value, so only documented
keys are produced; tests/mqtt check every key against the documented tables.

Not responsible for sending (the link) or for the values (the state board).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass

from edge.entities import Entity
from edge.mqtt.topics import ID_RE, Topics

log = logging.getLogger("edge.mqtt.discovery")

# Child devices a worker may attach entities to (Entity.device): label and model.
CHILD_DEVICES = {
    "camera": ("Camera", "Doorbell camera"),
    "printer": ("3D printer", "Marlin 3D printer"),
    "sip_line": ("SIP line", "SIP intercom line"),
}
WORKER_LABELS = {"sip": "SIP", "mqtt": "MQTT", "netbox": "NetBox"}
NODE_STATES = ("OK", "DEGRADED", "FAILED")  # HealthRegistry.overall()
# The option naming the topic an entity reads (image.mqtt: image_topic; camera.mqtt: topic).
VALUE_TOPIC = {"image": "image_topic", "camera": "topic"}
PICTURE_COMPONENTS = frozenset(VALUE_TOPIC)


def worker_label(worker: str) -> str:
    return WORKER_LABELS.get(worker, worker.replace("_", " ").replace("-", " ").capitalize())


def _slug(text: str) -> str:
    """Entity ids allow lower-case letters, digits and underscores only."""
    return re.sub(r"[^a-z0-9_]", "_", text.lower())


@dataclass(frozen=True)
class NodeInfo:
    node_id: str
    name: str
    version: str
    model: str | None = None      # the board (Raspberry Pi 4 Model B Rev 1.4), from edge.node_facts
    serial: str | None = None
    macs: tuple[str, ...] = ()
    area: str = ""                # [node] area: Home Assistant's suggested area
    configuration_url: str | None = None


@dataclass(frozen=True)
class Declared:
    """An entity and the worker whose status gates its availability (None: the node's own
    entities, available whenever the node is online, so a dead worker's problem sensor
    still shows the problem)."""

    entity: Entity
    owner: str | None


def node_entities(workers: list[str], not_restartable: frozenset[str] = frozenset()) -> list[Declared]:
    """What the node shows about itself and each worker: device status (no firmware update
    entity until there are updates to install: one that always says "up to date" misleads),
    restart buttons (none for `not_restartable` workers: the button path is never restarted
    on request), and per worker a problem sensor (reason as attribute) and a restart
    counter."""
    out = [
        Declared(Entity("sensor", "status", "Status", state="node", value_template="{{ value_json.state }}",
                        device_class="enum", attributes="node", options={"options": list(NODE_STATES)}), None),
        Declared(Entity("button", "restart", "Restart", command="restart_runtime", device_class="restart",
                        entity_category="config"), None),
    ]
    for w in workers:
        label = worker_label(w)
        out += [
            Declared(Entity("binary_sensor", f"{w}_problem", f"{label} problem", state=f"worker.{w}",
                            value_template="{{ value_json.problem }}", device_class="problem",
                            entity_category="diagnostic", attributes=f"worker.{w}",
                            options={"json_attributes_template":
                                     "{{ {'state': value_json.state, 'reason': value_json.reason} | tojson }}"}),
                     None),
            Declared(Entity("sensor", f"{w}_restarts", f"{label} restarts", state=f"worker.{w}",
                            value_template="{{ value_json.restarts }}", state_class="total_increasing",
                            entity_category="diagnostic", icon="mdi:restart"), None),
        ]
        if w not in not_restartable:
            out.append(
                Declared(Entity("button", f"{w}_restart", f"Restart {label if w in WORKER_LABELS else label.lower()}",
                                command="restart_worker", device_class="restart", entity_category="config",
                                options={"payload_press": json.dumps({"worker": w})}), None))
    return out


class Discovery:
    def __init__(self, node: NodeInfo, topics: Topics):
        self.node = node
        self.topics = topics
        self.node_identifier = f"edge_{node.node_id}"
        self.origin = {"name": "edge", "sw_version": node.version}

    def device(self, child: str | None) -> dict:
        if child is None:
            node = self.node
            # The model is the board (never the default name, which made a second node's
            # entity ids end in _2); what is unknown is left out rather than made up.
            device = {"identifiers": [self.node_identifier], "name": node.name, "manufacturer": "edge-appliance",
                      "model": node.model or "Edge appliance", "sw_version": node.version}
            optional = {"serial_number": node.serial, "suggested_area": node.area or None,
                        "configuration_url": node.configuration_url,
                        "connections": [["mac", mac] for mac in node.macs] or None}
            device.update({k: v for k, v in optional.items() if v})
            return device
        label, model = CHILD_DEVICES.get(child, (child.replace("_", " ").capitalize(), None))
        device = {"identifiers": [f"{self.node_identifier}_{child}"], "name": f"{self.node.name} {label}",
                  "manufacturer": "edge-appliance", "via_device": self.node_identifier}
        if model:
            device["model"] = model
        return device

    def availability(self, owner: str | None) -> list[dict]:
        items = [{"topic": self.topics.status}]
        if owner is not None:
            items.append({"topic": self.topics.worker_status(owner)})
        return items

    def config(self, declared: Declared) -> tuple[str, dict]:
        """(topic, payload) for one declaration; raises ValueError for a bad one."""
        e, owner = declared.entity, declared.owner
        topic = self.topics.config(e.component, e.object_id)
        cfg: dict = {
            "name": e.name,
            "unique_id": f"{self.node.node_id}_{e.object_id}",
            "default_entity_id": f"{e.component}.{_slug(self.node.node_id)}_{_slug(e.object_id)}",
            "device": self.device(e.device),
            "origin": self.origin,
            "availability": self.availability(owner),
            "availability_mode": "all",
        }
        value_topic = VALUE_TOPIC.get(e.component, "state_topic")
        if e.state:
            cfg[value_topic] = self.topics.state(e.state)
        if e.event:
            cfg[value_topic] = self.topics.event(e.event)
            if e.component == "event" and "event_types" not in e.options:
                cfg["event_types"] = [e.event.rsplit(".", 1)[-1]]
        if e.command:
            cfg["command_topic"] = self.topics.command(e.command)
            if e.component == "button":
                cfg["payload_press"] = "{}"  # commands are JSON objects (edge.commands)
        for key, value in (("value_template", e.value_template), ("device_class", e.device_class),
                           ("state_class", e.state_class), ("unit_of_measurement", e.unit),
                           ("entity_category", e.entity_category), ("icon", e.icon)):
            if value is not None:
                cfg[key] = value
        if e.attributes:
            cfg["json_attributes_topic"] = self.topics.state(e.attributes)
        protected = {"unique_id", "device", "origin", "availability", "availability_mode"}
        cfg.update({k: v for k, v in e.options.items() if k not in protected})
        return topic, cfg

    def build(self, declared: list[Declared]) -> dict[str, dict]:
        """Topic → config for every valid declaration; a bad or duplicate one is logged and
        skipped (a worker's typo must not take the device's other entities down)."""
        configs: dict[str, dict] = {}
        seen: dict[str, str | None] = {}
        for d in declared:
            e = d.entity
            where = f"entity {e.component}/{e.object_id} of {d.owner or 'the node'}"
            if e.object_id in seen:
                log.error("%s: object_id already used by %s; skipped (object ids must be unique on the node)",
                          where, seen[e.object_id] or "the node")
                continue
            if not ID_RE.match(e.object_id):
                log.error("%s: object_id must match [a-zA-Z0-9_-]+; skipped", where)
                continue
            if e.device is not None and not ID_RE.match(e.device):
                log.error("%s: device %r must match [a-zA-Z0-9_-]+; skipped", where, e.device)
                continue
            try:
                topic, cfg = self.config(d)
            except ValueError as exc:
                log.error("%s: %s; skipped", where, exc)
                continue
            seen[e.object_id] = d.owner
            configs[topic] = cfg
        return configs


def owned(entities, owner: str | None) -> list[Declared]:
    return [Declared(e, owner) for e in entities]
