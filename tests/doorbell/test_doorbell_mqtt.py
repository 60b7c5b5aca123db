"""A press on the mock button reaches a subscriber on a real mosquitto broker as a `ring`
event, the visitor follows with the same event_id, a long press arrives as its own event,
and a broker that cannot be reached delays the announcement without touching the chime:
the whole runtime, doorbell and MQTT link."""

from __future__ import annotations

import json
import queue
import subprocess
import sys

import paho.mqtt.client as mqtt
import pytest

from edge import config as configmod
from edge.entities import shown
from edge.mqtt.link import MqttLink
from edge.assembly import all_sections
from edge.store import DB_NAME
from edge.testing.tcp_proxy import TcpProxy
from edge.testing.waiting import wait_for
from services.doorbell.worker import DoorbellWorker


NODE = "front-door"


class Subscriber:
    """A paho client collecting every message under `topic` (default: edge/<node>/event/)."""

    def __init__(self, port: int, topic: str = f"edge/{NODE}/event/#", client_id: str = "test-subscriber"):
        self.messages: queue.Queue = queue.Queue()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_message = lambda c, u, m: self.messages.put((m.topic, m.payload))
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def wait_raw(self, kind: str, timeout: float = 15.0, topic: str | None = None) -> bytes:
        topic = topic or f"edge/{NODE}/event/{kind}"
        while True:
            got_topic, payload = self.messages.get(timeout=timeout)
            if got_topic == topic:
                return payload

    def wait(self, kind: str, timeout: float = 15.0) -> dict:
        return json.loads(self.wait_raw(kind, timeout))

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def subscriber(mosquitto):
    sub = Subscriber(mosquitto.port)
    wait_for(lambda: sub.client.is_connected(), timeout=10, message="the subscriber")
    yield sub
    sub.close()


def config(port: int) -> dict:
    return {"node": {"id": NODE}, "mqtt": {"host": "127.0.0.1", "port": port, "reconnect_min_s": 0.05,
                                           "reconnect_max_s": 0.5},
            "doorbell": {"cooldown_s": 0}, "faces": {"enabled": False}}


def test_press_reaches_a_broker_subscriber_as_ring_then_visitor_with_the_same_event_id(
        make_bell, mosquitto, subscriber):
    bell = make_bell(config(mosquitto.port), classes=(DoorbellWorker, MqttLink))
    wait_for(lambda: bell.runtime.supervisor.runner("mqtt").worker.connected, timeout=15,
             message="the MQTT link to connect")
    bell.press()
    assert bell.chime.state is True
    ring = subscriber.wait("doorbell.ring")
    assert ring["event_type"] == "ring"
    assert ring["event_id"] == bell.events("doorbell.ring")[0].event_id
    visitor = subscriber.wait("doorbell.visitor")
    assert visitor["event_id"] == ring["event_id"]
    assert visitor["event_type"] == "recognition_off"  # what the Visitor event entity shows
    assert visitor["data"]["frames"] == 3
    assert subscriber.wait_raw("doorbell.snapshot")[:2] == b"\xff\xd8"  # the image entity's JPEG


def test_broker_unreachable_leaves_the_chime_alone_and_the_ring_is_delivered_when_it_is_back(
        make_bell, mosquitto, subscriber):
    # The link goes through a proxy that can cut it; the subscriber (Home Assistant) stays
    # on the broker throughout, so it cannot miss the late ring by subscribing late.
    with TcpProxy(mosquitto.port) as proxy:
        bell = make_bell(config(proxy.port), classes=(DoorbellWorker, MqttLink))
        mqtt_link = bell.runtime.supervisor.runner("mqtt").worker
        wait_for(lambda: mqtt_link.connected, timeout=15, message="the MQTT link to connect")
        proxy.pause()  # new connections hang from now on ...
        proxy.drop_connections()  # ... and the current one is gone
        wait_for(lambda: not mqtt_link.connected, timeout=15, message="the link to notice the broker is gone")
        bell.press()
        assert bell.chime.state is True  # the chime never depends on the network
        ring_id = bell.events("doorbell.ring")[0].event_id
        proxy.resume()
        ring = subscriber.wait("doorbell.ring", timeout=30)
        assert ring["event_id"] == ring_id
        bell.stop()


def test_long_press_reaches_the_broker_as_its_own_event_with_the_rings_event_id(make_bell, mosquitto, subscriber):
    discovery = Subscriber(mosquitto.port, f"homeassistant/event/{NODE}/+/config", client_id="test-discovery")
    try:
        settings = config(mosquitto.port)
        settings["doorbell"]["long_press_s"] = 0.3
        bell = make_bell(settings, classes=(DoorbellWorker, MqttLink))
        wait_for(lambda: bell.runtime.supervisor.runner("mqtt").worker.connected, timeout=15,
                 message="the MQTT link to connect")
        bell.button.drive_low()  # held past long_press_s ...
        bell.wait_event("doorbell.long_press")
        bell.button.drive_high()  # ... then let go
        ring = subscriber.wait("doorbell.ring")
        long_press = subscriber.wait("doorbell.long_press")  # on edge/<node>/event/doorbell.long_press
        assert long_press["event_type"] == "long_press"
        assert long_press["event_id"] == ring["event_id"]

        # Each event entity is fed by its own topic and announces the event type it gets.
        long_press_entity = json.loads(discovery.wait_raw(
            "", topic=f"homeassistant/event/{NODE}/long_press/config"))
        assert long_press_entity["state_topic"] == f"edge/{NODE}/event/doorbell.long_press"
        assert long_press_entity["event_types"] == ["long_press"]
        assert long_press_entity["device_class"] == "button"  # not a second doorbell
    finally:
        discovery.close()


def test_doorbell_event_entities_and_the_open_door_condition():
    entities = {e.object_id: e for e in DoorbellWorker.entities}
    assert (entities["doorbell"].event, entities["doorbell"].options["event_types"]) == ("doorbell.ring", ["ring"])
    assert (entities["long_press"].event, entities["long_press"].options["event_types"]) == (
        "doorbell.long_press", ["long_press"])

    def open_door_shown(allow_remote_open: bool, allow_dangerous_commands: bool) -> bool:
        values = {"doorbell": {"allow_remote_open": allow_remote_open},
                  "mqtt": {"allow_dangerous_commands": allow_dangerous_commands}}
        built = configmod.build(all_sections([DoorbellWorker, MqttLink]), values, {}, "sim", source="test")
        return shown(entities["open_door"], built)

    assert open_door_shown(True, True)
    assert not open_door_shown(True, False) and not open_door_shown(False, True)


def test_in_safe_mode_rings_still_reach_home_assistant_with_the_reason(make_bell, mosquitto, subscriber):
    bell = make_bell(config(mosquitto.port), classes=(DoorbellWorker, MqttLink), failed_boots=3)
    assert bell.runtime.safe_mode
    assert sorted(r.name for r in bell.runtime.supervisor.runners) == ["doorbell", "mqtt"]
    wait_for(lambda: bell.runtime.supervisor.runner("mqtt").worker.connected, timeout=15,
             message="the MQTT link to connect in safe mode")
    bell.press()
    ring = subscriber.wait("doorbell.ring")
    assert ring["event_id"] == bell.events("doorbell.ring")[0].event_id
    node = wait_for(lambda: bell.runtime.states.get("node"), timeout=10, message="the node state")
    assert node["safe_mode"] is True and "3 failed boots in a row" in node["safe_mode_reason"]


# Another process (a backup tool, the sqlite3 shell) holding the store's write lock until killed.
LOCK_HOLDER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(600)
"""


def test_an_outside_lock_on_the_store_delays_no_ring_and_loses_none(make_bell, mosquitto, subscriber):
    bell = make_bell(config(mosquitto.port), classes=(DoorbellWorker, MqttLink))
    wait_for(lambda: bell.runtime.supervisor.runner("mqtt").worker.connected, timeout=15,
             message="the MQTT link to connect")
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(bell.state_dir / DB_NAME)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        rang = []
        for n in range(5):
            bell.press()
            ring = subscriber.wait("doorbell.ring", timeout=5)  # a 10 s busy wait once held it 20-70 s
            rang.append(ring["event_id"])
            bell.wait_event("doorbell.visitor", lambda e, i=ring["event_id"]: e.event_id == i)
        assert holder.poll() is None  # the lock was held all along
        assert rang == [e.event_id for e in bell.events("doorbell.ring")]
        store = bell.runtime.health.get("store")
        assert store.state == "DEGRADED" and "locked by another process" in store.reason
        assert "event(s) wait in memory" in store.reason
        assert bell.runtime.supervisor.runner("mqtt").state != "HUNG"
    finally:
        holder.kill()
        holder.wait()
    recorded = lambda: {e["event_id"] for e in bell.runtime.store.recent_events("doorbell.ring")}  # noqa: E731
    wait_for(lambda: set(rang) <= recorded(), 10, message="every ring in the store once the lock is gone")
    wait_for(lambda: bell.runtime.health.get("store").state == "OK", 10, message="the store healthy again")


def test_the_chime_switch_as_home_assistant_drives_it(make_bell, mosquitto, subscriber):
    """HA reads the switch's discovery config, publishes its payload_off to the command
    topic, and sees state_off on the state topic; the next ring still reaches the broker."""
    seen = Subscriber(mosquitto.port, f"homeassistant/switch/{NODE}/chime/config", client_id="test-discovery")
    states = Subscriber(mosquitto.port, f"edge/{NODE}/state/doorbell/chime", client_id="test-state")
    try:
        settings = config(mosquitto.port)
        settings["doorbell"]["allow_remote_mute"] = True
        bell = make_bell(settings, classes=(DoorbellWorker, MqttLink))
        switch = json.loads(seen.wait_raw("", topic=f"homeassistant/switch/{NODE}/chime/config"))
        assert states.wait_raw("", topic=switch["state_topic"]) == switch["state_on"].encode()
        publisher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-ha")
        publisher.connect("127.0.0.1", mosquitto.port)
        publisher.loop_start()
        try:
            # The link subscribes to commands just after its discovery is out: until then a
            # command is lost, as for Home Assistant, so press the switch until it answers.
            def turned_off() -> bool:
                publisher.publish(switch["command_topic"], switch["payload_off"], qos=1).wait_for_publish(5)
                try:
                    return states.wait_raw("", timeout=1, topic=switch["state_topic"]) == switch["state_off"].encode()
                except queue.Empty:
                    return False
            wait_for(turned_off, timeout=20, message="the chime state OFF after the switch was turned off")
        finally:
            publisher.loop_stop()
            publisher.disconnect()
        bell.press()
        assert subscriber.wait("doorbell.ring")["data"]["chime"] == "muted"
        assert not any(state.state for state in bell.chime.states)
    finally:
        seen.close()
        states.close()
