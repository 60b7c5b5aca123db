"""Helpers for the MQTT link tests: a subscriber straight on the real broker, and a runtime
running in this process with the link pointed at a broker (or at a proxy in between)."""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt

from edge import config as configmod
from edge.mqtt.link import MqttLink
from edge.assembly import all_sections
from edge.runtime import Runtime
from edge.testing.waiting import wait_for

NODE = "testnode"
_ids = itertools.count()


class Recorder:
    """A subscriber straight on the broker that records (arrival, topic, payload, retain)."""

    def __init__(self, port: int, topics=("#",), client_id: str | None = None, clean: bool = True,
                 tls: dict | None = None):
        self.messages: list[tuple[float, str, bytes, bool]] = []
        self._lock = threading.Lock()
        self.topics = topics
        self.connected = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or f"rec-{next(_ids)}",
                                  clean_session=clean)
        if tls:
            self.client.tls_set(**tls)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self.connected.set()
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.connect_async("127.0.0.1", port, keepalive=5)
        self.client.loop_start()
        assert self.connected.wait(10), f"recorder could not connect to the broker on {port}"

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        client.subscribe([(t, 1) for t in self.topics])

    def _on_message(self, client, userdata, msg):
        with self._lock:
            self.messages.append((time.monotonic(), msg.topic, bytes(msg.payload), bool(msg.retain)))

    def of(self, topic: str | None = None, prefix: str | None = None) -> list[tuple[float, str, bytes, bool]]:
        with self._lock:
            return [m for m in self.messages if (topic is None or m[1] == topic)
                    and (prefix is None or m[1].startswith(prefix))]

    def latest(self, topic: str) -> bytes | None:
        got = self.of(topic)
        return got[-1][2] if got else None

    def wait_latest(self, topic: str, payload: bytes, timeout: float = 10.0) -> None:
        wait_for(lambda: self.latest(topic) == payload, timeout, message=f"{topic} = {payload!r} "
                 f"(latest: {self.latest(topic)!r})")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def make_runtime(state_dir: Path, port: int, classes=(MqttLink,), env: dict | None = None,
                 data: dict | None = None) -> Runtime:
    environ = {"EDGE_NODE_ID": NODE, "EDGE_NODE_NAME": "Test node", "EDGE_HEALTH_PORT": "0",
               "EDGE_MQTT_HOST": "127.0.0.1", "EDGE_MQTT_PORT": str(port),
               "EDGE_MQTT_RECONNECT_MIN_S": "0.1", "EDGE_MQTT_RECONNECT_MAX_S": "0.5",
               "EDGE_MQTT_BIRTH_DELAY_MIN_S": "0.5", "EDGE_MQTT_BIRTH_DELAY_MAX_S": "0.8",
               "EDGE_SUPERVISOR_BACKOFF_INITIAL_S": "0.1"}
    environ.update(env or {})
    config = configmod.build(all_sections(classes), data or {}, environ, "sim")
    return Runtime(config, list(classes), state_dir, sim=True, environ=environ)


@contextlib.contextmanager
def running_runtime(state_dir: Path, port: int, **kw):
    """A runtime in this process (real store, real link thread), stopped on the way out."""
    rt = make_runtime(state_dir, port, **kw)
    rt.start()
    try:
        yield rt
    finally:
        rt.stop()


def link_of(rt: Runtime) -> MqttLink:
    return rt.supervisor.runner("mqtt").worker


def wait_connected(rt: Runtime, timeout: float = 10.0) -> MqttLink:
    """Connected, and subscribed (so commands sent now are heard)."""
    wait_for(lambda: link_of(rt).connected and link_of(rt).subscribed.is_set(), timeout,
             message="the MQTT link to connect and subscribe")
    return link_of(rt)


def wait_outbox_empty(rt: Runtime, timeout: float = 20.0) -> None:
    def empty():
        counts = link_of(rt).outbox.counts()
        return counts["pending"] == 0 and counts["inflight"] == 0
    wait_for(empty, timeout, message="the outbox to drain")
