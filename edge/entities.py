"""Declarations of what a worker shows in Home Assistant. A worker lists its entities in
its `entities` class attribute, next to its code; the MQTT link turns each declaration into
a discovery config, a state topic and an availability list. Adding an entity is one
declaration: no change to the link.

Where the value comes from:
- `state`: a key of the in-memory state board (`ctx.states.set(key, value)`); dict values
  are published as JSON and `value_template` picks a field (e.g. "{{ value_json.load_1m }}").
- `event`: a bus event kind (e.g. "doorbell.ring"); published through the durable outbox,
  never retained. Event entities (component "event") take `event_types` in `options`.
- `command`: a command name; buttons publish to `edge/<node>/cmd/<command>`.

Availability: an entity declared by a worker is available while the node is online and that
worker is running (`availability_mode: all` over the node's and the worker's status topics),
so a dead printer link greys out only the printer's entities. Outside links show as
`connectivity()` binary sensors fed by their circuit breaker (`breaker.<name>` on the state
board, "ON" while the breaker is closed), which the MQTT link keeps current.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Entity:
    component: str                 # sensor, binary_sensor, button, event, image, camera, update
    object_id: str                 # [a-z0-9_]+, unique within the node; part of unique_id
    name: str | None               # without the device's name ("CPU temperature"); None: the device's own
    state: str | None = None       # state-board key the value is read from
    value_template: str | None = None
    event: str | None = None       # bus event kind that feeds this entity
    command: str | None = None     # command name a button sends
    device_class: str | None = None
    state_class: str | None = None
    unit: str | None = None
    entity_category: str | None = None  # "diagnostic" or "config"
    icon: str | None = None
    attributes: str | None = None  # state-board key whose dict becomes json_attributes
    device: str | None = None      # child device ("camera", "printer", "sip_line"); None: the node
    options: dict[str, Any] = field(default_factory=dict)  # other documented options (payload_on, event_types, ...)
    # Config keys ("section.key") that must all be true for the entity to be announced, e.g.
    # a button whose command would be refused otherwise.
    requires: tuple[str, ...] = ()


def shown(entity: Entity, config) -> bool:
    """Whether `entity` is announced under `config` (every key in `requires` is true)."""
    for key in entity.requires:
        section, _, name = key.partition(".")
        if not config[section][name]:
            return False
    return True


def connectivity(breaker: str, name: str, device: str | None = None, object_id: str | None = None) -> Entity:
    """A connectivity binary_sensor for an outside link, on while its breaker is closed
    (e.g. `connectivity("camera", "Connection", device="camera")`)."""
    return Entity("binary_sensor", object_id or f"{breaker}_connected", name, state=f"breaker.{breaker}",
                  device_class="connectivity", entity_category="diagnostic", device=device)
