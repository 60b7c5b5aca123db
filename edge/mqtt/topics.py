"""Every MQTT topic the node uses, in one place, so the layout can be read at a glance.

    edge/<node>/status                       node availability: "online" / "offline" (Last Will), retained
    edge/<node>/<worker>/status              a worker's availability, retained, kept current by the node
    edge/<node>/state/<key>                  a state-board value (JSON or text), retained, latest wins
    edge/<node>/event/<kind>                 a bus event (JSON), QoS 1, never retained
    edge/<node>/cmd/<name>                   a command from Home Assistant (JSON object)
    edge/<node>/cmd/<name>/result            the reply to a command (JSON), not retained
    <prefix>/<component>/<node>/<object_id>/config   Home Assistant discovery, retained
    <prefix>/status                          Home Assistant's birth and last will

Not responsible for what goes in the payloads (see `discovery`, `link`).
"""

from __future__ import annotations

import re

ID_RE = re.compile(r"^[a-zA-Z0-9_-]+$")  # Home Assistant's rule for node_id and object_id in discovery topics
# Worker names that would collide with the node's own sub-trees.
RESERVED_WORKER_NAMES = frozenset({"state", "event", "cmd"})


def segment(text: str) -> str:
    """One topic level: MQTT forbids nothing but '+', '#', '/' and NUL there; we also keep
    it to characters that need no quoting in a shell (`mosquitto_sub -t ...`)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text) or "_"


class Topics:
    def __init__(self, node_id: str, discovery_prefix: str = "homeassistant"):
        if not ID_RE.match(node_id):
            raise ValueError(f"node id {node_id!r} may contain only letters, digits, _ and -")
        self.node_id = node_id
        self.prefix = discovery_prefix.strip("/") or "homeassistant"
        self.base = f"edge/{node_id}"
        self.status = f"{self.base}/status"
        self.commands = f"{self.base}/cmd/+"
        self.birth = f"{self.prefix}/status"
        self.configs = f"{self.prefix}/+/{node_id}/+/config"

    def worker_status(self, worker: str) -> str:
        if worker in RESERVED_WORKER_NAMES or not ID_RE.match(worker):
            raise ValueError(f"worker name {worker!r} cannot have a status topic (reserved or not [a-zA-Z0-9_-])")
        return f"{self.base}/{worker}/status"

    def state(self, key: str) -> str:
        """A dotted state key becomes topic levels: `worker.system` → `.../state/worker/system`."""
        return f"{self.base}/state/" + "/".join(segment(part) for part in key.split("."))

    def event(self, kind: str) -> str:
        return f"{self.base}/event/{segment(kind)}"

    def command(self, name: str) -> str:
        return f"{self.base}/cmd/{segment(name)}"

    def reply(self, name: str) -> str:
        return f"{self.base}/cmd/{segment(name)}/result"

    def command_name(self, topic: str) -> str | None:
        """The command named by a topic matching `self.commands`, else None."""
        head = f"{self.base}/cmd/"
        if topic.startswith(head) and "/" not in topic[len(head):]:
            return topic[len(head):]
        return None

    def config(self, component: str, object_id: str) -> str:
        if not ID_RE.match(object_id) or not ID_RE.match(component):
            raise ValueError(f"discovery ids must match [a-zA-Z0-9_-]+: {component!r}/{object_id!r}")
        return f"{self.prefix}/{component}/{self.node_id}/{object_id}/config"

    def is_own_config(self, topic: str) -> bool:
        parts = topic.split("/")
        prefix_parts = self.prefix.split("/")
        return (len(parts) == len(prefix_parts) + 4 and parts[:len(prefix_parts)] == prefix_parts
                and parts[-3] == self.node_id and parts[-1] == "config")
